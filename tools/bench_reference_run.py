#!/usr/bin/env python3
"""Runs the authors' run.py (a checkout of Gen-Verse/LatentMAS) for tools/bench_reference.sh, timing each
question. Their files are neither modified nor copied: this process imports them from the checkout, patches
the few things listed below in memory, then executes run.py as __main__ with the arguments after `--`.

    bench_reference_run.py --checkout DIR --data FILE --threads N --times OUT.jsonl [--dtype as-run|bf16] \
        -- --method latent_mas --model_name MODEL_DIR --task gsm8k --generate_bs 1 ...

What is patched, and why:
- `datasets`: their data.py loads gsm8k from the Hugging Face hub, which an offline machine cannot reach. A
  stand-in module answers `load_dataset("gsm8k", "main", split=...)` with the records of --data (a JSONL file
  in the hub dataset's layout: `question`, `answer`); any other dataset is an error, never a silent swap.
- `vllm`: methods/latent_mas.py imports vLLM's SamplingParams at module level although the transformers path
  never uses it. A stand-in module provides that one class only, so models.py's guarded
  `from vllm import LLM, SamplingParams` still fails and the transformers backend is taken.
- `--model_name`: run.py accepts three hub ids only; the restriction is lifted so a local directory passes.
- greedy: their generate call always samples (do_sample=True with run.py's temperature and top-p). Here
  do_sample is forced off, so both engines decode greedily and their texts can be compared.
- threads: torch.set_num_threads(N) before their code runs (the caller also sets OMP_NUM_THREADS).
- dtype: without CUDA, their ModelWrapper loads the weights as float32 (`as-run`, what their code does on a
  CPU); `bf16` keeps the stored bfloat16 instead.
- timing: every call of LatentMASMethod.run_batch (one question with --generate_bs 1) is timed with
  perf_counter and written as one JSON line to --times: seconds, tokens generated (counted in generate),
  the final text, prediction and gold.
"""

import argparse
import importlib.machinery
import json
import os
import runpy
import sys
import time
import types


def stand_in(name):
    """An empty module registered under `name`, with the spec that transformers' package probes expect."""
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return mod


def fake_datasets(data_path):
    """A `datasets` module whose load_dataset serves gsm8k from a local JSONL file."""
    mod = stand_in("datasets")

    def load_dataset(path, name=None, split=None, cache_dir=None, **_):
        if path not in ("gsm8k", "openai/gsm8k") or name not in (None, "main"):
            raise ValueError(f"bench_reference_run: only gsm8k is served from {data_path}, not {path!r}/{name!r}")
        with open(data_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    mod.load_dataset = load_dataset
    return mod


def fake_vllm():
    """A `vllm` module with SamplingParams only (a record of its arguments)."""
    mod = stand_in("vllm")

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    mod.SamplingParams = SamplingParams
    return mod


def main():
    if "--" not in sys.argv:
        sys.exit("bench_reference_run: usage: ... -- RUN_PY_ARGS (the arguments of their run.py)")
    split = sys.argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkout", required=True, help="a checkout of Gen-Verse/LatentMAS (holds run.py)")
    ap.add_argument("--data", required=True, help="gsm8k records (JSONL: question, answer)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--times", required=True, help="per-question timings are appended here (JSONL)")
    ap.add_argument("--dtype", choices=["as-run", "bf16"], default="as-run")
    a = ap.parse_args(sys.argv[1:split])
    run_py = os.path.join(os.path.abspath(a.checkout), "run.py")
    if not os.path.isfile(run_py):
        sys.exit(f"bench_reference_run: {run_py} not found: --checkout must be a checkout of Gen-Verse/LatentMAS")

    sys.modules["datasets"] = fake_datasets(a.data)
    sys.modules["vllm"] = fake_vllm()

    import torch

    torch.set_num_threads(a.threads)

    orig_add_argument = argparse.ArgumentParser.add_argument

    def add_argument(self, *names, **kwargs):
        if "--model_name" in names:
            kwargs.pop("choices", None)
        return orig_add_argument(self, *names, **kwargs)

    argparse.ArgumentParser.add_argument = add_argument

    import transformers
    from transformers.generation.utils import GenerationMixin

    generated = [0]
    orig_generate = GenerationMixin.generate

    def generate(self, *args, **kwargs):
        kwargs["do_sample"] = False
        kwargs.pop("temperature", None)
        kwargs.pop("top_p", None)
        out = orig_generate(self, *args, **kwargs)
        seqs = out.sequences if hasattr(out, "sequences") else out
        prompt = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        # One row per call (--generate_bs 1): everything past the prompt was generated.
        generated[0] += int(seqs.shape[0]) * (int(seqs.shape[1]) - int(prompt.shape[1]))
        return out

    GenerationMixin.generate = generate

    if a.dtype == "bf16":
        auto = transformers.AutoModelForCausalLM
        orig_from_pretrained = auto.from_pretrained.__func__

        def from_pretrained(cls, *args, **kwargs):
            kwargs["torch_dtype"] = torch.bfloat16
            return orig_from_pretrained(cls, *args, **kwargs)

        auto.from_pretrained = classmethod(from_pretrained)

    sys.path.insert(0, os.path.dirname(run_py))
    from methods.latent_mas import LatentMASMethod

    orig_run_batch = LatentMASMethod.run_batch

    def run_batch(self, items):
        generated[0] = 0
        t = time.perf_counter()
        results = orig_run_batch(self, items)
        seconds = time.perf_counter() - t
        rec = {
            "questions": len(items),
            "seconds": seconds,
            "generated_tokens": generated[0],
            "texts": [r.get("raw_prediction", "") for r in results],
            "predictions": [r.get("prediction") for r in results],
            "golds": [r.get("gold") for r in results],
            "dtype": str(self.model.model.dtype),
        }
        with open(a.times, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        return results

    LatentMASMethod.run_batch = run_batch

    sys.argv = [run_py] + sys.argv[split + 1 :]
    runpy.run_path(run_py, run_name="__main__")


if __name__ == "__main__":
    main()
