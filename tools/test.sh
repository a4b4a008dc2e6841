#!/usr/bin/env bash
# The full test suite, as CI runs it, on a machine with only a Rust toolchain and python3:
# - installs the pinned CUDA 13.0 compiler wheels (so crates/kernels/build.rs compiles the kernels with nvcc; nothing CUDA is
#   needed to RUN the tests) and the code sandbox's Python (a venv with numpy, tools/install_sandbox_python.sh);
# - runs every test (as root, the code sandbox's tests also without user namespaces and as nobody);
# - reruns the kernel tests with the emulator in ThreadSanitizer mode (one OS thread per CUDA thread; catches
#   missing barriers), built in its own target directory (target/tsan) so that target/release keeps binaries
#   free of libtsan; the last steps check that it did and that the C library holds only the engine;
# - builds the Python bindings into a venv (tools/install_python_bindings.sh) and runs their pytest tests.
# Usage: tools/test.sh [extra cargo test args, e.g. --test golden_forward, or -p latentmas-cli --test cli]
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME="$(tools/install_cuda.sh)"
export CUDA_HOME
LATENTMAS_PYTHON="$(tools/install_sandbox_python.sh)"
export LATENTMAS_PYTHON
LATENTMAS_CUDA_EMU="$(tools/cuda_emu.sh)"
export LATENTMAS_CUDA_EMU
# The C library, built alone (a workspace build unifies features and would put the emulator, the hub
# client and the CLI back into it): it holds only the engine, and the C tests of crates/capi link it (cargo
# test does not build a crate's staticlib / cdylib for its own tests).
cargo build --release -p latentmas-capi
tools/check_capi_contents.sh target/release/liblatentmas.a
# --nocapture: tests that cannot run here (no ../shared, no valgrind) say SKIP in the log; the GPU tests
# (crates/cli/tests/cuda_backend.rs, its own harness) are reported as ignored, with the reason, without a device.
cargo test --release "$@" -- --nocapture
cargo test --release -p cuda-emu
# The Python bindings, built by pip (maturin) into their own venv, against the CLI built above.
if [[ $# == 0 ]]; then
  PYTHON_BINDINGS="$(tools/install_python_bindings.sh)"
  LATENTMAS_CLI="$PWD/target/release/latentmas" "$PYTHON_BINDINGS" -m pytest -q python/tests
fi
# The code sandbox's other two paths, when we are root: root-owned namespaces (where the kernel refuses
# user namespaces), and an ordinary user (nobody) running the evaluator.
if [[ "$(id -u)" == 0 && $# == 0 ]]; then
  LATENTMAS_SANDBOX_NO_USERNS=1 cargo test --release -p latentmas-cli --test sandbox_escapes --test eval_code_exec -- --nocapture
  for t in sandbox_escapes eval_code_exec; do
    bin="$(cargo test --release -p latentmas-cli --test "$t" --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json, sys; print([json.loads(l)["executable"] for l in sys.stdin if "\"executable\":\"" in l][-1])')"
    if setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$bin"; then
      setpriv --reuid=65534 --regid=65534 --clear-groups env LATENTMAS_PYTHON="$LATENTMAS_PYTHON" "$bin" --nocapture
    else
      echo "SKIP ($t as nobody: uid 65534 cannot reach $bin)"
    fi
  done
fi
# A first sanitizer build starts from a copy of the release build (cargo's fingerprints are relative to the
# target directory), so only this crate is rebuilt, not every dependency.
if [[ ! -d target/tsan/release ]]; then
  mkdir -p target/tsan
  cp -a target/release target/tsan/
fi
LATENTMAS_EMU_TSAN=1 CARGO_TARGET_DIR=target/tsan cargo test --release --test kernels_emu -- --nocapture
# None of target/release links a sanitizer.
tools/check_no_sanitizer.sh target/release/latentmas target/release/liblatentmas.so
