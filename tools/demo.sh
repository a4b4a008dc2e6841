#!/usr/bin/env bash
# The main job on a fresh machine: synthesize a random-weight Qwen3-0.6B-shaped model (no download needed),
# then run one LatentMAS question on it (sequential planner → critic → refiner → judger, 10 latent steps per
# agent) and print the answer with the per-agent table. Pass a model directory or hub id to use a real model:
#   tools/demo.sh Qwen/Qwen3-4B
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
model="${1:-models/qwen3-0.6b-random}"
if [ "$model" = "models/qwen3-0.6b-random" ] && [ ! -f "$model/model.safetensors" ]; then
    ./target/release/latentmas synth --shape qwen3-0.6b --out "$model"
fi
./target/release/latentmas run --model "$model" --method latent --topology sequential --task-family math \
    --question "A baker makes 12 muffins per tray and bakes 7 trays. She sells all but 9. How many did she sell?" \
    --latent-steps 10 --max-new-tokens 32
