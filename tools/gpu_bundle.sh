#!/usr/bin/env bash
# Builds the GPU check bundle: everything a first run on a GPU machine needs, for a machine with no network,
# no cargo and no pip. Builds here with the kernels compiled (tools/install_cuda.sh), strips the binaries, and
# packs into DIR:
#   bin/latentmas          the CLI (bench, devices, run)
#   tests/<name>           the GPU test binaries (TESTS below), run from DIR so tests/data resolves
#   tests/data/            the fixtures those tests read
#   run.sh                 the check itself (tools/gpu_bundle/run.sh): see its header
#   cuda-emu/              the emulated CUDA driver + cuBLAS (tools/cuda_emu.sh), used only by run.sh --emulated:
#                          proves the bundle here, on a machine without a GPU
#   MANIFEST               git revision, build host, sizes
# The bundle must stay under 60 MiB (checked here).
#
#   usage: tools/gpu_bundle.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:?usage: tools/gpu_bundle.sh DIR}"
MAX_MIB=60
log() { echo "gpu_bundle: $*" >&2; }

CUDA_HOME="$(tools/install_cuda.sh)"
export CUDA_HOME
mkdir -p "$DIR"
[[ -z "$(ls -A "$DIR")" ]] || { log "error: $DIR is not empty"; exit 1; }

# The test files that run on a GPU (each binary is ~11 MiB stripped: list only what a GPU run needs).
TESTS=(cuda_backend)
args=()
for t in "${TESTS[@]}"; do args+=(--test "$t"); done
log "building the CLI and ${TESTS[*]} (release, kernels compiled)"
cargo build --release -p latentmas-cli --bin latentmas >&2
exes="$(cargo test --release -p latentmas-cli --no-run --message-format=json "${args[@]}" 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])')"
target/release/latentmas kernels | grep -q . || { log "error: this build has no kernels"; exit 1; }

mkdir -p "$DIR/bin" "$DIR/tests"
strip -o "$DIR/bin/latentmas" target/release/latentmas
while read -r name exe; do
  strip -o "$DIR/tests/$name" "$exe"
done <<<"$exes"
for t in "${TESTS[@]}"; do
  [[ -x "$DIR/tests/$t" ]] || { log "error: no test binary for crates/cli/tests/$t.rs"; exit 1; }
done
# The fixtures the tests read (relative paths from the bundle root, as from crates/cli, whose tests/data links
# to the root's).
mkdir -p "$DIR/tests/data"
cp -r tests/data/golden tests/data/qwen3-tokenizer tests/data/prompts_tiny.json "$DIR/tests/data/"
for m in tests/data/tiny-*; do cp -r "$m" "$DIR/tests/data/"; done
EMU="$(tools/cuda_emu.sh)"
mkdir -p "$DIR/cuda-emu"
strip -o "$DIR/cuda-emu/libcuda_emu.so" "$(readlink -f "$EMU/libcuda.so.1")"
for name in libcuda.so libcuda.so.1 libcublas.so libcublas.so.13; do ln -s libcuda_emu.so "$DIR/cuda-emu/$name"; done
cp tools/gpu_bundle/run.sh "$DIR/run.sh"
chmod +x "$DIR/run.sh"
{
  echo "revision: $(git rev-parse HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%FT%TZ) on $(uname -m)"
  echo "tests: ${TESTS[*]}"
} >"$DIR/MANIFEST"

mib=$(( $(du -sk "$DIR" | cut -f1) / 1024 ))
echo "size: ${mib} MiB" >>"$DIR/MANIFEST"
if (( mib > MAX_MIB )); then
  log "error: the bundle is ${mib} MiB, over ${MAX_MIB} MiB"
  exit 1
fi
log "wrote $DIR (${mib} MiB); on the GPU machine: $DIR/run.sh [OUT]"
