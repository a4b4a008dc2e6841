#!/usr/bin/env python3
"""What the demo's run spends outside its phases: process start, startup (model, tokenizer, KV, alignment)
and exit, as wall time minus the prefill + latent + decode time the run reports.

Runs `latentmas run --json` with the question and settings of tools/demo.sh RUNS times from a warm page
cache (one unmeasured run first) and prints the median and range of each figure.

    tools/bench_demo_overhead.py MODEL_DIR [--runs 5] [--bin target/release/latentmas]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

# the demo's question and settings (tools/demo.sh)
DEMO_ARGS = [
    "--method", "latent", "--topology", "sequential", "--task-family", "math",
    "--question", "A baker makes 12 muffins per tray and bakes 7 trays. She sells all but 9. How many did she sell?",
    "--latent-steps", "10", "--max-new-tokens", "32",
]


def one_run(binary, model):
    start = time.perf_counter()
    out = subprocess.run([binary, "run", "--model", model, "--json", *DEMO_ARGS], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"latentmas run failed ({out.returncode}): {out.stderr.strip()}")
    report = json.loads(out.stdout.splitlines()[0])
    t = report["totals"]
    phases = t["prefill_s"] + t["latent_s"] + t["decode_s"]
    return {"wall": wall, "phases": phases, "outside": wall - phases, "startup": report["startup"]["total_s"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--bin", default="target/release/latentmas")
    a = p.parse_args()
    if a.runs < 1:
        sys.exit("--runs must be at least 1")
    one_run(a.bin, a.model)  # warms the page cache and the alignment cache
    runs = [one_run(a.bin, a.model) for _ in range(a.runs)]
    print(f"demo run of {a.model}, {a.runs} runs: median [min, max] in seconds")
    for key, label in [("wall", "wall time"), ("phases", "phases (prefill + latent + decode)"),
                       ("outside", "wall - phases"), ("startup", "startup (as the run reports it)")]:
        v = [r[key] for r in runs]
        print(f"  {label:36} {statistics.median(v):7.3f} [{min(v):.3f}, {max(v):.3f}]")


if __name__ == "__main__":
    main()
