#!/usr/bin/env bash
# The GPU check, run from a bundle made by tools/gpu_bundle.sh, on a machine with a GPU and nothing else of
# ours: no network, no cargo, no pip, no python needed. Writes OUT/gpu_check.log (everything printed) and
# OUT/gpu_check.json (the verdicts and figures).
#   1. finds the machine's cuBLAS (already on LD_LIBRARY_PATH; CUDA_HOME; /usr/local/cuda*; the loader cache;
#      a Python package's nvidia/*/lib) and puts its directory first on LD_LIBRARY_PATH;
#   2. `latentmas devices --require cuda`: a machine without a usable device stops here, exit 2,
#      "no CUDA device" and the reason;
#   3. the cuda tests (tests/*: goldens, cpu vs cuda token for token, graphs vs eager, device sampling);
#   4. `latentmas bench --device cuda` on the qwen3-0.6b and qwen3-8b shapes (random weights, synthesized
#      once into $MODELS, 17 GB for both);
#   5. the cuda tests again under compute-sanitizer memcheck, racecheck, synccheck, initcheck, where it exists.
# Exit status: 0 all passed, 1 something failed, 2 no CUDA device.
# --emulated runs everything on the bundle's emulated CUDA driver and cuBLAS (cuda-emu/) instead of the
# machine's: the check of the bundle itself on a machine without a GPU (slow: use it with --no-bench).
#
#   usage: run.sh [--emulated] [--no-bench] [--no-sanitizer] [OUT]     (OUT default: ./gpu_check_out)
#   env:   MODELS (default ${TMPDIR:-/tmp}/latentmas-gpu-check-models), STEP_TIMEOUT seconds per step (300),
#          SANITIZER_TIMEOUT seconds per sanitizer run (90; four tools x each test binary)
set -uo pipefail
BUNDLE="$(cd "$(dirname "$0")" && pwd)"
bench=1 sanitizer=1
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --emulated) export LD_LIBRARY_PATH="$BUNDLE/cuda-emu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    --no-bench) bench=0 ;;
    --no-sanitizer) sanitizer=0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 64 ;;
  esac
  shift
done
OUT="$(mkdir -p "${1:-gpu_check_out}" && cd "${1:-gpu_check_out}" && pwd)"
MODELS="${MODELS:-${TMPDIR:-/tmp}/latentmas-gpu-check-models}"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
SANITIZER_TIMEOUT="${SANITIZER_TIMEOUT:-90}"
LOG="$OUT/gpu_check.log"
: >"$LOG"
cd "$BUNDLE"
say() { echo "$*" | tee -a "$LOG"; }
results=()   # "name": value pairs of the JSON
json_str() { local s="${1//\\/\\\\}"; s="${s//\"/\\\"}"; printf '"%s"' "${s//$'\n'/ }"; }
failed=0

say "gpu_check: bundle $(head -1 MANIFEST 2>/dev/null)"
say "gpu_check: host $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
fi

# 1. cuBLAS. A directory already on LD_LIBRARY_PATH with libcublas wins (that is also how the emulated driver
# of the test suite is put in front).
has_cublas() { compgen -G "$1/libcublas.so*" >/dev/null; }
cublas_dir=""
IFS=: read -ra ld_dirs <<<"${LD_LIBRARY_PATH:-}"
for d in "${ld_dirs[@]}"; do [[ -n "$d" ]] && has_cublas "$d" && { cublas_dir="$d"; break; }; done
if [[ -z "$cublas_dir" ]]; then
  cands=()
  [[ -n "${CUDA_HOME:-}" ]] && cands+=("$CUDA_HOME/lib64" "$CUDA_HOME/lib")
  for c in /usr/local/cuda /usr/local/cuda-*; do cands+=("$c/lib64" "$c"/targets/*/lib); done
  while read -r p; do cands+=("$(dirname "$p")"); done < <(ldconfig -p 2>/dev/null | awk '/libcublas\.so/{print $NF}')
  # Python packages: site-packages/nvidia/cu13/lib (CUDA 13 wheels) or nvidia/cublas/lib (CUDA 12 wheels).
  for py in python3 python; do
    command -v "$py" >/dev/null || continue
    while read -r sp; do cands+=("$sp"/nvidia/*/lib); done < <("$py" -c \
      'import site,sys; print("\n".join(site.getsitepackages()+[site.getusersitepackages()]+sys.path))' 2>/dev/null)
  done
  for sp in /usr/lib/python3*/site-packages /usr/local/lib/python3*/*-packages /opt/conda/lib/python3*/site-packages; do
    cands+=("$sp"/nvidia/*/lib)
  done
  for d in "${cands[@]}"; do [[ -d "$d" ]] && has_cublas "$d" && { cublas_dir="$d"; break; }; done
fi
if [[ -n "$cublas_dir" ]]; then
  export LD_LIBRARY_PATH="$cublas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "gpu_check: cuBLAS from $cublas_dir ($(cd "$cublas_dir" && ls libcublas.so* | tr '\n' ' '))"
else
  say "gpu_check: no cuBLAS found (searched LD_LIBRARY_PATH, CUDA_HOME, /usr/local/cuda*, ldconfig, python nvidia/*/lib)"
fi
results+=("\"cublas_dir\": $(json_str "$cublas_dir")")

# 2. The device.
bin/latentmas kernels >>"$LOG" 2>&1
if ! devices="$(bin/latentmas devices --require cuda 2>&1)"; then
  say "gpu_check: no CUDA device: ${devices##*error: }"
  results+=("\"device\": null" "\"verdict\": \"no CUDA device\"")
  printf '{%s}\n' "$(IFS=,; echo "${results[*]}")" >"$OUT/gpu_check.json"
  exit 2
fi
say "$devices"
results+=("\"device\": $(json_str "$(grep '^cuda:' <<<"$devices")")")

# Runs one test binary; records "name": {"passed": P, "failed": F, "skipped": S, "rc": RC}.
run_tests() {
  local label="$1" limit="$2"; shift 2
  local t0=$SECONDS tmp rc
  tmp="$(mktemp)"
  timeout "$limit" "$@" --nocapture --test-threads 1 >"$tmp" 2>&1
  rc=$?
  cat "$tmp" >>"$LOG"
  local n_passed n_failed n_skipped
  n_passed=$(grep -oE '[0-9]+ passed' "$tmp" | awk '{s+=$1} END {print s+0}')
  n_failed=$(grep -oE '[0-9]+ failed' "$tmp" | awk '{s+=$1} END {print s+0}')
  # a test that could not run says SKIP, or (tests with their own harness) is ignored with the device's reason
  n_skipped=$(grep -cE '^SKIP|\.\.\. ignored \(device: ' "$tmp")
  rm -f "$tmp"
  say "gpu_check: $label: rc $rc, $n_passed passed, $n_failed failed, $n_skipped skipped, $((SECONDS - t0)) s"
  results+=("\"$label\": {\"rc\": $rc, \"passed\": $n_passed, \"failed\": $n_failed, \"skipped\": $n_skipped}")
  [[ $rc == 0 && $n_skipped == 0 ]] || failed=1
}

# 3. The cuda tests.
for t in tests/*; do
  [[ -f "$t" && -x "$t" ]] && run_tests "$(basename "$t")" "$STEP_TIMEOUT" "$t"
done

# 4. Bench.
if [[ $bench == 1 ]]; then
  for shape in qwen3-0.6b qwen3-8b; do
    t0=$SECONDS
    timeout "$STEP_TIMEOUT" bin/latentmas bench --shape "$shape" --device cuda --cache-dir "$MODELS" --runs 5 \
      --json "$OUT/bench_$shape.json" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    say "gpu_check: bench $shape: rc $rc, $((SECONDS - t0)) s"
    if [[ $rc == 0 && -s "$OUT/bench_$shape.json" ]]; then
      results+=("\"bench_$shape\": $(cat "$OUT/bench_$shape.json")")
    else
      results+=("\"bench_$shape\": {\"rc\": $rc}")
      failed=1
    fi
  done
fi

# 5. compute-sanitizer.
if [[ $sanitizer == 1 ]]; then
  cs="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1 || true)"
  if [[ -z "$cs" ]]; then
    say "gpu_check: SKIP compute-sanitizer (not found on PATH or in /usr/local/cuda*/bin)"
    results+=("\"sanitizer\": null")
  else
    for tool in memcheck racecheck synccheck initcheck; do
      for t in tests/*; do
        [[ -f "$t" && -x "$t" ]] || continue
        run_tests "$tool:$(basename "$t")" "$SANITIZER_TIMEOUT" "$cs" --tool "$tool" --error-exitcode 3 "$t"
      done
    done
  fi
fi

verdict=$([[ $failed == 0 ]] && echo passed || echo failed)
results+=("\"verdict\": \"$verdict\"")
printf '{%s}\n' "$(IFS=,; echo "${results[*]}")" >"$OUT/gpu_check.json"
say "gpu_check: $verdict; log $LOG, summary $OUT/gpu_check.json"
[[ $failed == 0 ]]
