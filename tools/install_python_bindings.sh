#!/usr/bin/env bash
# Builds the Python bindings (python/, pyo3 + maturin) into a virtual environment with pytest and numpy,
# and prints the environment's python. Idempotent: the venv is made once; the bindings are reinstalled
# each time (cargo rebuilds only what changed, in this checkout's target/).
#
#   usage: tools/install_python_bindings.sh [VENV_DIR]      (default: ~/.cache/latentmas/python-bindings)
#   then:  "$(tools/install_python_bindings.sh)" -c "import latentmas"
#
# Export CUDA_HOME as for cargo (tools/install_cuda.sh), or the kernels are rebuilt without a fatbin.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-${XDG_CACHE_HOME:-${HOME}/.cache}/latentmas/python-bindings}"
PINS=(maturin==1.9.6 pytest==8.4.2 numpy==2.3.5)
log() { echo "install_python_bindings: $*" >&2; }
if [[ ! -x "$DIR/bin/python" ]] || ! "$DIR/bin/python" -c "import maturin, pytest, numpy" >/dev/null 2>&1; then
  log "making the venv in $DIR"
  python3 -m venv "$DIR" >&2
  "$DIR/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}" >&2
fi
# --no-build-isolation: build with the venv's pinned maturin (found on PATH) instead of fetching one per install.
export PATH="$DIR/bin:$PATH"
"$DIR/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps . >&2
echo "$DIR/bin/python"
