#!/usr/bin/env bash
# Builds the emulated CUDA driver + cuBLAS (cuda-emu/, one shared library) and lays it out under the names
# the dynamic loader looks for: libcuda.so(.1) and libcublas.so(.13), all the SAME file, so that a process
# maps it once and cuBLAS shares the driver's memory and streams. Prints only the directory on stdout:
#
#   LD_LIBRARY_PATH="$(tools/cuda_emu.sh)" target/release/latentmas run --device cuda ...
#
# The cuda tests find it through LATENTMAS_CUDA_EMU (tools/test.sh sets it); see tests/common/cuda_emu.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p cuda-emu >&2
DIR="${TARGET}/cuda-emu"
mkdir -p "$DIR"
for name in libcuda.so libcuda.so.1 libcublas.so libcublas.so.13; do
  ln -sf ../release/libcuda_emu.so "${DIR}/${name}"
done
echo "$(cd "$DIR" && pwd)"
