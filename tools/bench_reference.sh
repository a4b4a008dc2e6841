#!/usr/bin/env bash
# LatentMAS against the authors' own code, like for like: the same questions through `latentmas eval` and
# through their run.py (a local checkout of Gen-Verse/LatentMAS, transformers backend), each question timed,
# and the ratio printed.
#
#   tools/bench_reference.sh CHECKOUT [--model DIR] [--questions N] [--latent-steps M] [--max-new-tokens T]
#       [--threads N] [--data FILE] [--reference-dtype as-run|bf16] [--json OUT] [--keep DIR]
#   latentmas bench --model DIR --threads N --compare OUT      # shows the pair as a row of its own
#
# What is the same on both sides:
# - model: DIR (default: a random-weight qwen3-0.6b, bf16, with the real Qwen3 tokenizer, synthesized once into
#   ${XDG_CACHE_HOME:-~/.cache}/latentmas/synth-qwen3-0.6b-bf16-seed0, the checkpoint `latentmas bench
#   --shape qwen3-0.6b` uses);
# - prompts: their prompts.py builders. run.py calls them itself; ours are imported from the same checkout
#   with `latentmas prompts import CHECKOUT` (run here every time) and used with `--prompts reference`;
# - method: LatentMAS (`latent_mas`), sequential, m latent steps per thinking agent, realign off, no think;
#   the judger generates at most T tokens, greedily on both sides;
# - questions: the first N records of a gsm8k file in the Hugging Face layout (`question`, `answer`; default
#   tests/data/eval/gsm8k.jsonl, four short questions of our own; `--data` for others, e.g. the real test set
#   exported as docs/DATA.md says), one question per batch (their --generate_bs 1, our --batch 1);
# - threads: `--threads N` for latentmas; torch.set_num_threads(N) and OMP_NUM_THREADS=N for theirs.
#
# Their code cannot run unchanged offline, so tools/bench_reference_run.py runs their run.py with a few things
# patched in memory (its docstring lists them): gsm8k is served from the local file instead of the
# Hugging Face hub (a stand-in `datasets` module), vLLM's SamplingParams is stubbed (imported but unused on
# their transformers path), `--model_name` accepts a directory, and their always-sampling generate call is
# made greedy. Their files are neither modified nor copied, and nothing is written into the checkout.
#
# One difference is theirs by design: on a machine without CUDA their ModelWrapper loads the weights as
# float32 (`--reference-dtype as-run`, the default, what their code does on a CPU); `bf16` keeps the stored
# bfloat16. latentmas keeps bf16 weights and computes decode and latent steps in f32 either way.
#
# Timing: per question, wall seconds; ours is `seconds` of each `latentmas eval` record (prompt building,
# prefill, latent steps, decode and scoring of that question), theirs is each call of their
# LatentMASMethod.run_batch (the same work). Model loading is outside both and reported apart, as the whole
# process's wall time. The first question of each side includes its warm-up; the medians are the figures.
#
# Writes (--json): engine, cpu, threads, workload, `latentmas_question_s` and `reference_question_s`
# (medians), `reference_vs_latentmas` (their median / ours), per-question seconds, tokens and texts, process
# times, versions and load averages. The python environment for their code is set up on first use by
# tools/install_bench_python.sh (torch, transformers 4.57.1; a few GB).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
log() { echo "bench_reference: $*" >&2; }
usage() {
  sed -n '6,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
}

[[ $# -ge 1 && "$1" != -* ]] || usage
checkout="$1"
shift
model="" questions=4 steps=10 new_tokens=32 threads="$(nproc)" data="$REPO/tests/data/eval/gsm8k.jsonl"
dtype="as-run" json="" keep=""
while [[ $# -gt 0 ]]; do
  [[ $# -ge 2 ]] || { log "error: $1 needs a value"; usage; }
  case "$1" in
    --model) model="$2" ;;
    --questions) questions="$2" ;;
    --latent-steps) steps="$2" ;;
    --max-new-tokens) new_tokens="$2" ;;
    --threads) threads="$2" ;;
    --data) data="$2" ;;
    --reference-dtype) dtype="$2" ;;
    --json) json="$2" ;;
    --keep) keep="$2" ;;
    *) log "error: unknown argument $1"; usage ;;
  esac
  shift 2
done
for v in questions steps new_tokens threads; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { log "error: --${v//_/-} must be a whole number (got '${!v}')"; exit 64; }
done
((questions >= 1 && threads >= 1 && new_tokens >= 1)) || { log "error: --questions, --threads and --max-new-tokens must be at least 1"; exit 64; }
[[ "$dtype" == as-run || "$dtype" == bf16 ]] || { log "error: --reference-dtype must be as-run or bf16 (got '$dtype')"; exit 64; }
for f in run.py prompts.py methods/latent_mas.py; do
  [[ -f "$checkout/$f" ]] || { log "error: $checkout/$f not found: CHECKOUT must be a checkout of Gen-Verse/LatentMAS"; exit 64; }
done
checkout="$(cd "$checkout" && pwd)"
[[ -f "$data" ]] || { log "error: --data $data: no such file"; exit 64; }
if [[ -n "$json" ]]; then
  touch "$json" 2>/dev/null || { log "error: --json $json cannot be written"; exit 64; }
  json="$(cd "$(dirname "$json")" && pwd)/$(basename "$json")"
fi

LM="${LATENTMAS:-$REPO/target/release/latentmas}"
[[ -x "$LM" ]] || LM="$(command -v latentmas || true)"
[[ -n "$LM" && -x "$LM" ]] || { log "error: no latentmas binary: run 'cargo build --release' (or set LATENTMAS)"; exit 1; }

PY="$("$REPO/tools/install_bench_python.sh")"

if [[ -z "$model" ]]; then
  model="${XDG_CACHE_HOME:-$HOME/.cache}/latentmas/synth-qwen3-0.6b-bf16-seed0"
  if [[ ! -f "$model/model.safetensors" ]]; then
    log "synthesizing a random-weight qwen3-0.6b (bf16) into $model (once)"
    "$LM" synth --shape qwen3-0.6b --out "$model" --force >&2
  fi
fi
[[ -f "$model/config.json" ]] || { log "error: --model $model must be a model directory (config.json, *.safetensors, tokenizer)"; exit 64; }
model="$(cd "$model" && pwd)"

if [[ -n "$keep" ]]; then
  mkdir -p "$keep"
  work="$(cd "$keep" && pwd)"
  rm -f "$work/ours.jsonl" "$work/reference.jsonl"
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/latentmas-bench-reference.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
fi

# The same N questions for both sides, in one file (their loader strips the question, ours too).
"$PY" - "$data" "$questions" "$work/questions.jsonl" <<'EOF'
import json, sys
src, n, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
recs = []
with open(src, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
        if not line.strip():
            continue
        r = json.loads(line)
        if not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), str):
            sys.exit(f"bench_reference: {src}:{i}: a gsm8k record needs string fields question and answer")
        recs.append({"question": r["question"], "answer": r["answer"]})
        if len(recs) == n:
            break
if len(recs) < n:
    sys.exit(f"bench_reference: {src} has {len(recs)} questions, fewer than --questions {n}")
with open(dst, "w", encoding="utf-8") as f:
    for r in recs:
        f.write(json.dumps(r) + "\n")
EOF

"$LM" prompts import "$checkout" >&2

load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" TOKENIZERS_PARALLELISM=false

log "latentmas: $questions question(s), latent_mas sequential, m = $steps, $new_tokens new tokens, $threads threads"
t0="$(date +%s.%N)"
"$LM" eval --model "$model" --task gsm8k --data "$work/questions.jsonl" --out "$work/ours.jsonl" \
  --method latent --topology sequential --latent-steps "$steps" --max-new-tokens "$new_tokens" --greedy \
  --prompts reference --compat reference --batch 1 --threads "$threads" --device cpu >"$work/ours.log" 2>&1 ||
  { tail -20 "$work/ours.log" >&2; log "error: latentmas eval failed (log above)"; exit 1; }
t1="$(date +%s.%N)"

log "reference (run.py in $checkout, weights $dtype): the same questions"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 \
  "$PY" -B "$REPO/tools/bench_reference_run.py" --checkout "$checkout" --data "$work/questions.jsonl" \
  --threads "$threads" --times "$work/reference.jsonl" --dtype "$dtype" -- \
  --method latent_mas --model_name "$model" --task gsm8k --prompt sequential --device cpu \
  --max_samples "$questions" --latent_steps "$steps" --max_new_tokens "$new_tokens" --generate_bs 1 \
  >"$work/reference.log" 2>&1 ||
  { tail -20 "$work/reference.log" >&2; log "error: their run.py failed (log above)"; exit 1; }
t2="$(date +%s.%N)"
load_after="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"

"$PY" - "$work" "$json" "$model" "$checkout" "$threads" "$steps" "$new_tokens" "$dtype" \
  "$(awk "BEGIN{print $t1-$t0}")" "$(awk "BEGIN{print $t2-$t1}")" "$load_before" "$load_after" \
  "$("$LM" --version 2>/dev/null || echo latentmas)" <<'EOF'
import json, os, platform, statistics, sys
(work, out, model, checkout, threads, steps, new_tokens, dtype, ours_proc, ref_proc, load_before, load_after,
 lm_version) = sys.argv[1:]
ours = [json.loads(l) for l in open(os.path.join(work, "ours.jsonl")) if l.strip()]
theirs = [json.loads(l) for l in open(os.path.join(work, "reference.jsonl")) if l.strip()]
if len(ours) != len(theirs) or any(t["questions"] != 1 for t in theirs):
    sys.exit(f"bench_reference: {len(ours)} latentmas records but {len(theirs)} reference batches of one question")

def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

def loads(s):
    return [float(x) for x in s.split()] if s else None

def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}

import torch, transformers
rows = []
for i, (o, t) in enumerate(zip(ours, theirs)):
    rows.append({
        "question": i,
        "latentmas_s": o["seconds"],
        "reference_s": t["seconds"],
        "latentmas_tokens": o["output_tokens"],
        "reference_tokens": t["generated_tokens"],
        "same_text": o["output"].strip() == t["texts"][0].strip(),
        "latentmas_text": o["output"],
        "reference_text": t["texts"][0],
    })
ls, rs = [r["latentmas_s"] for r in rows], [r["reference_s"] for r in rows]
ref_dtype = theirs[0].get("dtype", "?").replace("torch.", "")
label = (f"gsm8k x{len(rows)}, latent_mas sequential, m = {steps}, {new_tokens} new tokens, greedy, "
         f"reference {ref_dtype}")
rep = {
    "engine": "reference",
    "engine_detail": f"Gen-Verse/LatentMAS run.py (transformers {transformers.__version__}, torch {torch.__version__}, "
                     f"weights {ref_dtype})",
    "cpu": cpu_name(),
    "threads": int(threads),
    "model": model,
    "checkout": checkout,
    "workload": {"task": "gsm8k", "method": "latent_mas", "topology": "sequential", "latent_steps": int(steps),
                 "max_new_tokens": int(new_tokens), "greedy": True, "questions": len(rows),
                 "prompts": "reference (their prompts.py)", "reference_dtype": dtype},
    "workload_label": label,
    "latentmas_question_s": statistics.median(ls),
    "reference_question_s": statistics.median(rs),
    "reference_vs_latentmas": statistics.median(rs) / statistics.median(ls),
    "stats": {"latentmas_question_s": stats(ls), "reference_question_s": stats(rs)},
    "process_s": {"latentmas": float(ours_proc), "reference": float(ref_proc)},
    "per_question": rows,
    "versions": {"latentmas": lm_version, "transformers": transformers.__version__, "torch": torch.__version__},
    "load_avg_before": loads(load_before),
    "load_avg_after": loads(load_after),
}
print(f"\nLatentMAS vs the authors' run.py: {label}")
print(f"{rep['cpu']}, {threads} threads; load average {load_before} -> {load_after}")
print(f"{'question':>8} {'latentmas s':>12} {'reference s':>12} {'ratio':>7} {'tokens (ours/theirs)':>21} same text")
for r in rows:
    print(f"{r['question']:>8} {r['latentmas_s']:>12.2f} {r['reference_s']:>12.2f} "
          f"{r['reference_s'] / r['latentmas_s']:>6.2f}x {r['latentmas_tokens']:>10}/{r['reference_tokens']:<10} "
          f"{'yes' if r['same_text'] else 'no'}")
print(f"{'median':>8} {rep['latentmas_question_s']:>12.2f} {rep['reference_question_s']:>12.2f} "
      f"{rep['reference_vs_latentmas']:>6.2f}x")
print(f"whole process (model load included): latentmas {float(ours_proc):.1f} s, reference {float(ref_proc):.1f} s")
if out:
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rep, f, indent=2)
    os.replace(tmp, out)
    print(f"wrote {out} (show it beside the bench: latentmas bench --model {model} --threads {threads} --compare {out})")
EOF
