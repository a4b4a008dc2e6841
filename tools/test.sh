#!/usr/bin/env bash
# The full test suite, as CI runs it: installs the pinned CUDA 13.0 compiler wheels (so build.rs compiles the
# kernels with nvcc; nothing CUDA is needed to RUN the tests), then runs every test.
# Usage: tools/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x tools/install_cuda.sh ]; then
    CUDA_HOME="$(tools/install_cuda.sh | tail -n 1)"
    export CUDA_HOME
fi
cargo test --release "$@"
