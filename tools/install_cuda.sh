#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler toolchain that crates/kernels/build.rs needs to compile crates/kernels/cuda/<op>.cu into the fatbin:
# the five pinned PyPI wheels of DESIGN.md ("Build") plus the NVTX headers, into a cache directory (no root, no driver,
# ~270 MB, a few seconds). Idempotent: when every pinned wheel is already there, nothing is downloaded.
#
#   usage: tools/install_cuda.sh [DIR]        (default DIR: $HOME/.cache/latentmas/cuda13)
#   then:  export CUDA_HOME="$(tools/install_cuda.sh)"   # the script prints only the CUDA_HOME on stdout
#          cargo build                                   # crates/kernels/build.rs finds $CUDA_HOME/bin/nvcc
#
# Why these: nvcc (driver + ptxas + fatbinary), nvvm (cicc, the device front end), crt (device headers),
# runtime (cuda_runtime.h and friends), cccl (required by cuda_bf16.h), and nvtx (the header-only NVTX v3 that
# crates/kernels/nvtx_shim.c compiles; 148 KB). All pinned to CUDA 13.0, whose PTX the
# GPU machines' 580 driver accepts. There is no libcuda stub here, which is fine: nothing CUDA is linked at build
# time; the binary loads the driver at run time through cudarc.
set -euo pipefail

DIR="${1:-${HOME}/.cache/latentmas/cuda13}"
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-nvtx==13.0.85"
)
CUDA_HOME_DIR="${DIR}/nvidia/cu13"

log() { echo "install_cuda: $*" >&2; }

# A wheel "name==version" is installed when DIR holds its dist-info directory (name with _ for -).
installed() {
  local spec="$1" name version
  name="${spec%%==*}"
  version="${spec##*==}"
  [[ -d "${DIR}/${name//-/_}-${version}.dist-info" ]]
}

missing=()
for w in "${WHEELS[@]}"; do
  installed "$w" || missing+=("$w")
done

if [[ ${#missing[@]} -eq 0 && -x "${CUDA_HOME_DIR}/bin/nvcc" ]]; then
  log "already installed in ${DIR}"
else
  PY="${PYTHON:-python3}"
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    log "error: '$PY -m pip' is not available; install pip (e.g. apt-get install python3-pip) or set PYTHON"
    exit 1
  fi
  mkdir -p "$DIR"
  log "installing ${WHEELS[*]} into ${DIR}"
  # --no-deps: exactly the pinned wheels; --upgrade: replace other versions already in DIR
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$DIR" "${WHEELS[@]}" >&2
  for w in "${WHEELS[@]}"; do
    installed "$w" || { log "error: $w did not install into ${DIR}"; exit 1; }
  done
fi

for f in bin/nvcc bin/ptxas bin/fatbinary nvvm/bin/cicc include/cuda_bf16.h; do
  if [[ ! -e "${CUDA_HOME_DIR}/$f" ]]; then
    log "error: ${CUDA_HOME_DIR}/$f is missing; remove ${DIR} and rerun"
    exit 1
  fi
done
log "$("${CUDA_HOME_DIR}/bin/nvcc" --version | tail -n 1)"
echo "${CUDA_HOME_DIR}"
