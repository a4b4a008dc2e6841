#!/usr/bin/env bash
# The full test suite, as CI runs it: installs the pinned CUDA 13.0 compiler wheels (so build.rs compiles the
# kernels with nvcc; nothing CUDA is needed to RUN the tests), runs every test, then reruns the kernel tests
# with the emulator in ThreadSanitizer mode (one OS thread per CUDA thread; catches missing barriers).
# Usage: tools/test.sh [extra cargo test args, e.g. --test golden_forward]
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME="$(tools/install_cuda.sh)"
export CUDA_HOME
# --nocapture: tests that cannot run here (no ../shared, no CUDA device, no valgrind) say SKIP in the log.
cargo test --release "$@" -- --nocapture
LATENTMAS_EMU_TSAN=1 cargo test --release --test kernels_emu -- --nocapture
