#!/usr/bin/env bash
# Sets up the Python that tools/bench_reference.sh runs the authors' LatentMAS code (Gen-Verse/LatentMAS) with:
# a virtual environment holding what their run.py imports on its transformers path. Idempotent: when DIR
# already holds a working one, nothing is installed. Prints only the interpreter's path.
#
#   usage: tools/install_bench_python.sh [DIR]    (default ${XDG_CACHE_HOME:-~/.cache}/latentmas/bench-venv)
#
# Their requirements.txt names transformers, torch, numpy, tqdm, accelerate and datasets without versions.
# Pinned here: transformers 4.57.1 (the 4.x release current when their code was published; their code runs
# with it) and the torch that installed beside it. accelerate is not imported on their transformers path
# (no device_map) and datasets is replaced by a local-file stand-in (tools/bench_reference_run.py), so
# neither is installed; matplotlib is imported by their models.py although it is not in the list. PyPI's
# torch wheel brings CUDA libraries (about 5 GB in all); on a CPU they are loaded by nothing.
set -euo pipefail

PKGS=("torch==2.15.0" "transformers==4.57.1" "numpy==2.4.6" "tqdm==4.70.1" "matplotlib==3.11.2")
log() { echo "install_bench_python: $*" >&2; }

DIR="${1:-${XDG_CACHE_HOME:-${HOME}/.cache}/latentmas/bench-venv}"
PY="${DIR}/bin/python"

works() {
  [[ -x "$PY" ]] && "$PY" -c "
import torch, transformers, numpy, tqdm, matplotlib
assert transformers.__version__ == '4.57.1', transformers.__version__
" >/dev/null 2>&1
}

if works; then
  log "already set up in ${DIR}"
  echo "$PY"
  exit 0
fi
base="$(command -v python3 || true)"
[[ -n "$base" ]] || { log "error: no python3 on PATH to make the virtual environment with"; exit 1; }
log "setting up ${DIR} (${PKGS[*]}; a few GB, minutes)"
"$base" -m venv "$DIR"
"$PY" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}" >&2
works || { log "error: ${DIR} was set up but does not import torch and transformers 4.57.1"; exit 1; }
echo "$PY"
