#!/usr/bin/env bash
# Sets up the Python that `latentmas eval` runs model-written code with (mbppplus, humanevalplus): a virtual
# environment with the pinned numpy that the benchmarks' tests import, which the sandbox's user can run.
# Idempotent: when DIR already holds a working one, nothing is installed.
#
#   usage: tools/install_sandbox_python.sh [DIR]
#   then:  latentmas eval --python "$(tools/install_sandbox_python.sh)" ...
#          (or export LATENTMAS_PYTHON="$(tools/install_sandbox_python.sh)"; the script prints only the path)
#
# Why a world-readable place when run as root: as root the sandbox runs the code as `nobody`, who cannot
# enter /root, so neither a venv under /root/.cache nor an interpreter from pyenv or conda under /root works
# for it. Then DIR defaults to /var/cache/latentmas/sandbox-python and the base interpreter must be one that
# `nobody` can run (the system's /usr/bin/python3 usually is); on Debian/Ubuntu the script installs one with
# apt-get when there is none. As an ordinary user the code runs as that user: DIR defaults to
# ${XDG_CACHE_HOME:-$HOME/.cache}/latentmas/sandbox-python and any python3 will do.
set -euo pipefail

NUMPY="numpy==2.3.5" # has CPython 3.11-3.14 wheels for x86_64 and aarch64 Linux
NOBODY=65534
log() { echo "install_sandbox_python: $*" >&2; }

if [[ "$(id -u)" == 0 ]]; then
  DIR="${1:-/var/cache/latentmas/sandbox-python}"
else
  DIR="${1:-${XDG_CACHE_HOME:-${HOME}/.cache}/latentmas/sandbox-python}"
fi
PY="${DIR}/bin/python"

# Runs "$@" as the user the sandbox will run code as.
as_sandbox_user() {
  if [[ "$(id -u)" == 0 ]]; then
    setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups -- "$@"
  else
    "$@"
  fi
}

# Inside the sandbox /tmp is a fresh tmpfs, and as root the code runs as nobody in a user namespace, where
# /root (mode 700) is out of reach even on file systems that let a plain `setpriv` nobody through. So an
# interpreter whose real path lies there is refused by path, not only by trying it.
reachable() {
  local real
  real="$(readlink -f "$1")"
  case "$real" in
    /tmp/*) return 1 ;;
    /root/*) [[ "$(id -u)" != 0 ]] ;;
    *) return 0 ;;
  esac
}

works() { [[ -x "$PY" ]] && reachable "$PY" && as_sandbox_user "$PY" -c "import numpy" >/dev/null 2>&1; }

if works; then
  log "already set up in ${DIR}"
  echo "$PY"
  exit 0
fi

# A base interpreter the sandbox's user can run, with the venv module (and so ensurepip).
base=""
for cand in "${PYTHON:-}" "$(command -v python3 || true)" /usr/bin/python3 /usr/local/bin/python3; do
  [[ -n "$cand" && -x "$cand" ]] || continue
  real="$(readlink -f "$cand")"
  reachable "$real" || continue
  if as_sandbox_user "$real" -c "import venv, ensurepip" >/dev/null 2>&1; then
    base="$real"
    break
  fi
done
if [[ -z "$base" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  log "no python3 that uid ${NOBODY} can run has venv; installing Debian's python3 and python3-venv"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
  as_sandbox_user /usr/bin/python3 -c "import venv, ensurepip" >/dev/null 2>&1 && base=/usr/bin/python3
fi
if [[ -z "$base" ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    log "error: no python3 with the venv module that uid ${NOBODY} can run (interpreters under /root are out of its reach); install one system-wide (e.g. apt-get install python3 python3-venv) or set PYTHON to one"
  else
    log "error: no python3 with the venv module; install it (e.g. apt-get install python3-venv) or set PYTHON to one"
  fi
  exit 1
fi

log "creating ${DIR} from ${base} with ${NUMPY}"
rm -rf "$DIR"
mkdir -p "$(dirname "$DIR")"
"$base" -m venv "$DIR"
"$PY" -m pip install --quiet --disable-pip-version-check --no-input "$NUMPY" >&2
chmod -R a+rX "$DIR"
if ! works; then
  log "error: ${PY} was set up but cannot import numpy as the sandbox's user"
  exit 1
fi
echo "$PY"
