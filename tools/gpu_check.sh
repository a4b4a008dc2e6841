#!/usr/bin/env bash
# The first thing to run on a machine with a GPU: builds with the kernels, runs the GPU tests (the checks of
# tests/gpu_checks/ on the cuda device, cuda vs emu, graphs vs eager, device sampling), then the bench and the
# kernel microbenchmarks. Everything it prints goes to OUT (default ./gpu_check_out) as well.
#
#   usage: tools/gpu_check.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_out}"
mkdir -p "$OUT"
CUDA_HOME="$(tools/install_cuda.sh)"
export CUDA_HOME
nvidia-smi | tee "$OUT/nvidia-smi.txt" || true
cargo build --release 2>&1 | tail -3
target/release/latentmas kernels | tee "$OUT/kernels.txt"
# the GPU tests; a SKIP line here means the device was not usable (the probe's reason follows it)
cargo test --release --test cuda_backend -- --nocapture --test-threads 1 2>&1 | tee "$OUT/cuda_backend.txt"
target/release/latentmas bench --shape qwen3-0.6b --device cuda --runs 5 --json "$OUT/bench_cuda.json" \
  2>&1 | tee "$OUT/bench_cuda.txt"
cargo bench --bench ops -- kernels 2>&1 | tee "$OUT/bench_kernels.txt"
cargo bench --bench forward -- forward_gpu 2>&1 | tee "$OUT/bench_forward_gpu.txt"
if command -v nsys >/dev/null; then
  nsys profile -o "$OUT/timeline" --trace=cuda,nvtx,cublas --cuda-graph-trace=node --force-overwrite true \
    target/release/latentmas run --device cuda --model "${XDG_CACHE_HOME:-$HOME/.cache}/latentmas/synth-qwen3-0.6b-bf16-seed0" \
    --question "What is 12 plus 30?" --method latent --latent-steps 10 --max-new-tokens 32
  nsys stats --report cuda_gpu_kern_sum,nvtx_sum "$OUT/timeline.nsys-rep" | tee "$OUT/nsys_stats.txt"
fi
echo "gpu_check: done; results in $OUT"
