#!/usr/bin/env bash
# The full test suite, as CI runs it, on a machine with only a Rust toolchain and python3:
# - installs the pinned CUDA 13.0 compiler wheels (so build.rs compiles the kernels with nvcc; nothing CUDA is
#   needed to RUN the tests) and the code sandbox's Python (a venv with numpy, tools/install_sandbox_python.sh);
# - runs every test;
# - reruns the kernel tests with the emulator in ThreadSanitizer mode (one OS thread per CUDA thread; catches
#   missing barriers), built in its own target directory (target/tsan) so that target/release keeps binaries
#   free of libtsan; the last step checks that it did.
# Usage: tools/test.sh [extra cargo test args, e.g. --test golden_forward]
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME="$(tools/install_cuda.sh)"
export CUDA_HOME
LATENTMAS_PYTHON="$(tools/install_sandbox_python.sh)"
export LATENTMAS_PYTHON
# --nocapture: tests that cannot run here (no ../shared, no CUDA device, no valgrind) say SKIP in the log.
cargo test --release "$@" -- --nocapture
# A first sanitizer build starts from a copy of the release build (cargo's fingerprints are relative to the
# target directory), so only this crate is rebuilt, not every dependency.
if [[ ! -d target/tsan/release ]]; then
  mkdir -p target/tsan
  cp -a target/release target/tsan/
fi
LATENTMAS_EMU_TSAN=1 CARGO_TARGET_DIR=target/tsan cargo test --release --test kernels_emu -- --nocapture
tools/check_no_sanitizer.sh target/release/latentmas target/release/liblatentmas.so
