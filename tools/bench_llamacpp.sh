#!/usr/bin/env bash
# The `latentmas bench` prefill and decode rows on llama.cpp, for a side-by-side table:
#
#   tools/bench_llamacpp.sh --model DIR --threads 2 --json llamacpp.json
#   latentmas bench --model DIR --threads 2 --compare llamacpp.json
#
# llama.cpp comes from the pinned llama-cpp-python sdist on PyPI (its vendored tree), built the way llama.cpp
# builds for the machine it is on: Release, GGML_NATIVE (-march=native: AVX2 / AVX-512 / AVX512-BF16 / AMX as
# the CPU has them, found at build time), OpenMP threads and llamafile's tinyBLAS GEMMs, the defaults of its
# own CMake files, written out so that a changed default cannot make the build slower unnoticed. A bf16
# model's matrix products run tinyBLAS's AVX512-BF16 (or AVX2 / AVX-512F) kernel: ggml's AMX kernels exist
# only for quantized types (Q4_0, Q4_1, Q8_0, K-quants, IQ4_XS), so on an AMX CPU llama.cpp's bf16 prefill
# stays far below that of an engine with AMX bf16 GEMMs. The sdist has no git history, so the version shown
# is the sdist's (and ggml's, from its CMake file). The model is converted to a
# bf16 GGUF with that tree's own convert_hf_to_gguf.py (needs torch and transformers, installed into the
# tool's venv). Everything is cached in ${XDG_CACHE_HOME:-~/.cache}/latentmas/llamacpp; the first run
# downloads ~3 GB (torch) and compiles llama-bench (minutes), later runs only benchmark.
#
# Rows written (same keys and shapes as `latentmas bench --json`):
# - prefill_tok_s: llama-bench -p 256 -n 0 (a 256-token prompt), per-run samples -> median/min/max;
# - decode_ms_per_token {"1"}: llama-bench -p 0 -n 32 -d 300 (32 tokens generated on top of 300 of context);
# - decode_effective_gbs: the GGUF's tensor bytes (what one decode step streams, the tied embedding
#   counted once as the lm_head) divided by the median step time: the bandwidth llama.cpp reaches.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
LLAMA_CPP_PYTHON="llama-cpp-python==0.3.36"
PY_DEPS=("torch" "transformers" "numpy" "safetensors" "sentencepiece" "cmake" "ninja")
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/latentmas/llamacpp"
model="" threads="$(nproc)" runs=5 json=""
log() { echo "bench_llamacpp: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --runs) runs="$2"; shift ;;
    --json) json="$2"; shift ;;
    *) log "unknown argument $1 (usage: --model DIR [--threads N] [--runs R] [--json FILE])"; exit 64 ;;
  esac
  shift
done
[[ -n "$model" && -f "$model/config.json" ]] || { log "error: --model DIR must hold config.json (got '$model')"; exit 64; }
model="$(cd "$model" && pwd)"
mkdir -p "$CACHE"

# 1. The tool venv (torch, transformers, cmake, ninja).
VENV="$CACHE/venv"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import torch, transformers, cmake, ninja" 2>/dev/null; then
  log "setting up $VENV (${PY_DEPS[*]})"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_DEPS[@]}" >&2
fi
export PATH="$VENV/bin:$PATH"

# 2. llama.cpp's source, from the sdist's vendored tree.
SRC="$CACHE/src"
if [[ ! -f "$SRC/CMakeLists.txt" || "$(cat "$SRC/.sdist" 2>/dev/null)" != "$LLAMA_CPP_PYTHON" ]]; then
  log "fetching the $LLAMA_CPP_PYTHON sdist"
  dl="$(mktemp -d)"
  "$VENV/bin/python" -m pip download --quiet --no-deps --no-binary llama-cpp-python "$LLAMA_CPP_PYTHON" -d "$dl" >&2
  tar -xzf "$dl"/llama_cpp_python-*.tar.gz -C "$dl"
  rm -rf "$SRC"
  mv "$dl"/llama_cpp_python-*/vendor/llama.cpp "$SRC"
  rm -rf "$dl"
  echo "$LLAMA_CPP_PYTHON" >"$SRC/.sdist"
fi
sdist_version="${LLAMA_CPP_PYTHON#*==}"
ggml_version="$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))$/\2/p' "$SRC/ggml/CMakeLists.txt" | paste -sd.)"

# 3. llama-bench, built for this CPU.
# A build whose source or options differ from these is redone.
BENCH="$CACHE/build/bin/llama-bench"
CMAKE_OPTS=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_LLAMAFILE=ON
  -DGGML_CPU_REPACK=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=OFF "-DLLAMA_BUILD_COMMIT=llama-cpp-python-$sdist_version")
build_id="$LLAMA_CPP_PYTHON ${CMAKE_OPTS[*]}"
if [[ ! -x "$BENCH" || "$(cat "$CACHE/build/.options" 2>/dev/null)" != "$build_id" ]]; then
  log "building llama-bench (${CMAKE_OPTS[*]})"
  rm -rf "$CACHE/build"
  cmake -S "$SRC" -B "$CACHE/build" -G Ninja "${CMAKE_OPTS[@]}" >&2
  cmake --build "$CACHE/build" --target llama-bench -j "$(nproc)" >&2
  echo "$build_id" >"$CACHE/build/.options"
fi
# What -march=native turned on, from the compiler that built it (the fairness of the build, on record).
isa="$(${CC:-cc} -march=native -Q --help=target 2>/dev/null |
  awk '$2 == "[enabled]" && $1 ~ /^-m(avx2|avx512(f|bw|vl|vnni|bf16|fp16)|amx-(tile|int8|bf16)|fma|f16c)$/ {
    sub(/^-m/, "", $1); printf "%s%s", sep, $1; sep = " " }')"

# 4. The model as a bf16 GGUF, cached by the checkpoint's identity (path, sizes and times of its files).
key="$(cd "$model" && stat -c '%n %s %Y' config.json ./*.safetensors | sha256sum | cut -c1-16)"
GGUF="$CACHE/models/$(basename "$model")-$key-bf16.gguf"
if [[ ! -s "$GGUF" ]]; then
  log "converting $model to $GGUF"
  mkdir -p "$CACHE/models"
  PYTHONPATH="$SRC/gguf-py${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" "$SRC/convert_hf_to_gguf.py" "$model" \
    --outtype bf16 --outfile "$GGUF.tmp" >&2
  mv "$GGUF.tmp" "$GGUF"
fi

# 5. Benchmark and write our JSON keys.
out_pp="$(mktemp)" out_tg="$(mktemp)"
trap 'rm -f "$out_pp" "$out_tg"' EXIT
log "prefill: llama-bench -p 256 -n 0 -t $threads -r $runs"
"$BENCH" -m "$GGUF" -t "$threads" -r "$runs" -p 256 -n 0 -o json >"$out_pp"
log "decode: llama-bench -p 0 -n 32 -d 300 -t $threads -r $runs"
"$BENCH" -m "$GGUF" -t "$threads" -r "$runs" -p 0 -n 32 -d 300 -o json >"$out_tg"
"$VENV/bin/python" - "$out_pp" "$out_tg" "$GGUF" "$threads" "${json:-}" "$sdist_version" "$ggml_version" \
  "${CMAKE_OPTS[*]}" "$isa" <<'EOF'
import json, os, statistics, sys
pp, tg, gguf_path, threads, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
sdist_version, ggml_version, cmake_opts, isa = sys.argv[6:10]
pp, tg = json.load(open(pp))[0], json.load(open(tg))[0]

def stats(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "runs": len(samples)}

prefill = stats(pp["samples_ts"])
decode_ms = stats([1000.0 / s for s in tg["samples_ts"]])
tensor_bytes = pp.get("model_size") or os.path.getsize(gguf_path)
rep = {
    "engine": f"llama.cpp of llama-cpp-python {sdist_version} (ggml {ggml_version}; llama-bench, bf16 GGUF)",
    "version": {"llama_cpp_python": sdist_version, "ggml": ggml_version},
    "build": {"cmake": cmake_opts.split(), "march_native": isa.split()},
    "cpu": pp.get("cpu_info", ""),
    "threads": threads,
    "stats": {"prefill_tok_s": prefill, "decode_ms_per_token": {"1": decode_ms}},
    "prefill_tok_s": prefill["median"],
    "decode_ms_per_token": {"1": decode_ms["median"]},
    "decode_bytes": tensor_bytes,
    "decode_effective_gbs": tensor_bytes / (decode_ms["median"] / 1000.0) / 1e9,
}
print(f"prefill {rep['prefill_tok_s']:.1f} tok/s, decode {decode_ms['median']:.2f} ms/token "
      f"({rep['decode_effective_gbs']:.1f} GB/s effective) on {rep['cpu']}, {threads} threads")
if out:
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rep, f, indent=2)
    os.replace(tmp, out)
    print(f"wrote {out}")
EOF
