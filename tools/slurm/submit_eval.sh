#!/usr/bin/env bash
# Runs a `latentmas eval` as a Slurm job array of N shards, then merges the shard files with
# `latentmas report` in a job that starts when every shard succeeded. GPUs are requested (one per shard) when
# the eval args say `--device cuda`.
#
#   usage: tools/slurm/submit_eval.sh [--wait] [--cpus C] [--sbatch "ARGS"] N OUT_DIR -- EVAL_ARGS...
#   e.g.:  tools/slurm/submit_eval.sh --wait 4 runs/gsm8k -- --model /shared/Qwen3-4B --task gsm8k \
#            --data /shared/gsm8k_test.jsonl --method latent --device cuda
#   prints: the array job id and the merge job id; with --wait, blocks until the merge job ended and prints
#           OUT_DIR/report.txt.
#   env:   LATENTMAS_BIN (default: latentmas on PATH, else this checkout's target/release/latentmas)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
wait_for=0 cpus=1 extra=""
while [[ $# -gt 0 && "$1" == --* && "$1" != -- ]]; do
  case "$1" in
    --wait) wait_for=1 ;;
    --cpus) cpus="$2"; shift ;;
    --sbatch) extra="$2"; shift ;;
    *) echo "submit_eval: unknown option $1" >&2; exit 64 ;;
  esac
  shift
done
N="${1:?usage: submit_eval.sh [--wait] N OUT_DIR -- EVAL_ARGS}"
OUT_DIR="${2:?usage: submit_eval.sh [--wait] N OUT_DIR -- EVAL_ARGS}"
shift 2
[[ "${1:-}" == -- ]] && shift
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "submit_eval: N must be a positive integer, got '$N'" >&2; exit 64; }
for a in "$@"; do
  case "$a" in --out|--out=*|--shard|--shard=*) echo "submit_eval: $a is set per shard; leave it out" >&2; exit 64 ;; esac
done
if [[ -z "${LATENTMAS_BIN:-}" ]]; then
  LATENTMAS_BIN="$(command -v latentmas || echo "$HERE/../../target/release/latentmas")"
fi
[[ -x "$LATENTMAS_BIN" ]] || { echo "submit_eval: no latentmas binary at $LATENTMAS_BIN (set LATENTMAS_BIN)" >&2; exit 1; }
LATENTMAS_BIN="$(readlink -f "$LATENTMAS_BIN")"
export LATENTMAS_BIN
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
gpu=()
for a in "$@"; do [[ "$a" == cuda || "$a" == --device=cuda ]] && gpu=(--gres=gpu:1); done
# shellcheck disable=SC2086 # $extra is the user's sbatch arguments, split as on a command line
array=$(sbatch --parsable --array="0-$((N - 1))" --cpus-per-task="$cpus" "${gpu[@]}" $extra \
  --output="$OUT_DIR/slurm-%A_%a.log" --export=ALL "$HERE/eval.sbatch" "$OUT_DIR" "$N" "$@")
shards=()
for ((i = 0; i < N; i++)); do shards+=("$OUT_DIR/shard-$i-of-$N.jsonl"); done
merge=$(sbatch --parsable --dependency="afterok:${array%%;*}" --job-name=latentmas-merge \
  --kill-on-invalid-dep=yes --output="$OUT_DIR/report.txt" --export=ALL \
  --wrap="\"$LATENTMAS_BIN\" report ${shards[*]}")
echo "array job ${array%%;*} (${N} shards), merge job ${merge%%;*}; results in $OUT_DIR"
if [[ $wait_for == 1 ]]; then
  while squeue -h -j "${merge%%;*}" 2>/dev/null | grep -q .; do sleep 1; done
  state=$(sacct -n -X -j "${merge%%;*}" -o State 2>/dev/null | head -1 | tr -d ' ' || true)
  cat "$OUT_DIR/report.txt" 2>/dev/null || { echo "submit_eval: the merge job wrote no report (shards failed? see $OUT_DIR/slurm-*.log)" >&2; exit 1; }
  [[ -z "$state" || "$state" == COMPLETED ]] || { echo "submit_eval: merge job $state" >&2; exit 1; }
fi
