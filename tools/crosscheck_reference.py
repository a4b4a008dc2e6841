#!/usr/bin/env python3
"""Check tools/golden_latent.py against the authors' own code (Gen-Verse/LatentMAS, HF-transformers path).

The reference is imported from a local checkout (nothing of it is copied here) and run on the tiny models,
greedy instead of sampling (its model.generate is wrapped to do_sample=False), with the reference prompt
set. golden_latent.py is run with the same prompt set; this script compares, per case: every agent's
prompt ids, every fed latent vector, and the final text.

Steps (run from the repository root; the reference asserts that "qwen" is in the model path):

    mkdir -p /tmp/qwen && ln -sfn $PWD/tests/data/tiny-tied /tmp/qwen/qwen-tiny-tied \\
        && ln -sfn $PWD/tests/data/tiny-untied /tmp/qwen/qwen-tiny-untied
    python3 tools/golden_latent.py --prompts /path/to/reference_prompts.json \\
        --models /tmp/qwen/qwen-tiny-tied /tmp/qwen/qwen-tiny-untied --out /tmp/refgolden
    python3 tools/crosscheck_reference.py --reference /path/to/LatentMAS-checkout \\
        --golden /tmp/refgolden --models /tmp/qwen/qwen-tiny-tied /tmp/qwen/qwen-tiny-untied

The reference has no "keep the cache at m = 0" mode, so latent_seq_m0 (our default) is not compared;
latent_seq_m0_compat is.
"""

import argparse
import json
import os
import sys
import types
from argparse import Namespace

import torch


def stub_modules():
    """The HF path of the reference imports vllm and matplotlib at module level but does not use them."""
    vllm = types.ModuleType("vllm")
    vllm.LLM = object
    vllm.SamplingParams = lambda **kw: kw
    sys.modules.setdefault("vllm", vllm)
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = types.ModuleType("matplotlib.pyplot")
    sys.modules.setdefault("matplotlib", mpl)
    sys.modules.setdefault("matplotlib.pyplot", mpl.pyplot)


def past_length(past):
    """The reference indexes the cache as a legacy tuple (transformers 4.x); DynamicCache of 5.x is not."""
    return 0 if past is None else past.get_seq_length()


def run_reference(model_path, case, max_new):
    import methods.latent_mas
    import models
    from methods.baseline import BaselineMethod
    from methods.latent_mas import LatentMASMethod
    from methods.text_mas import TextMASMethod
    from models import ModelWrapper

    models._past_length = past_length  # adapter for transformers 5 (see past_length)
    methods.latent_mas._past_length = past_length

    method = case["method"]
    args = Namespace(
        method=method, model_name=model_path, task="gsm8k", prompt=case["topology"] or "sequential",
        latent_steps=case["latent_steps"] or 0, think=case["think"], latent_space_realign=bool(case["realign"]),
        text_mas_context_length=-1, max_new_tokens=max_new, temperature=0.6, top_p=0.95, generate_bs=1,
        device="cpu", device2="cpu", use_vllm=False, latent_only=False, sequential_info_only=False,
    )
    wrapper = ModelWrapper(model_path, torch.device("cpu"), use_vllm=False, args=args)

    generate = wrapper.model.generate

    def greedy_generate(**kw):
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        # transformers 5 rejects `cache_position`; it derives the same positions from the full-length
        # attention mask the reference passes (past + new), and feeds only the new ids.
        kw.pop("cache_position", None)
        return generate(**kw)

    wrapper.model.generate = greedy_generate
    fed = []
    realign = wrapper._apply_latent_realignment

    def capture(hidden, model):
        out = realign(hidden, model)
        fed.append(out[0].detach().clone())
        return out

    wrapper._apply_latent_realignment = capture
    common = dict(temperature=0.6, top_p=0.95, generate_bs=1, args=args)
    if method == "latent_mas":
        m = LatentMASMethod(wrapper, latent_steps=args.latent_steps, judger_max_new_tokens=max_new, **common)
    elif method == "text_mas":
        m = TextMASMethod(wrapper, max_new_tokens_each=max_new, **common)
    else:
        m = BaselineMethod(wrapper, max_new_tokens=max_new, use_vllm=False, **common)
    res = m.run_item({"question": case["question"], "gold": "", "solution": ""})
    return res, fed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="checkout of Gen-Verse/LatentMAS")
    ap.add_argument("--golden", required=True, help="directory of golden_latent.py output (reference prompts)")
    ap.add_argument("--models", nargs="+", required=True)
    args = ap.parse_args()
    stub_modules()
    sys.path.insert(0, os.path.abspath(args.reference))
    torch.set_num_threads(1)

    failures = 0
    for model_path in args.models:
        name = os.path.basename(os.path.normpath(model_path))
        with open(os.path.join(args.golden, f"latent_{name}.json"), encoding="utf-8") as f:
            gold = json.load(f)
        for cname, case in gold["cases"].items():
            if case["method"] == "latent_mas" and case["latent_steps"] == 0 and not case["m0_empty_cache"]:
                continue
            res, fed = run_reference(model_path, case, gold["max_new_tokens"])
            ours = case["agents"]
            ref_agents = res["agents"]
            problems = []
            if [a["input_ids"] for a in ref_agents] != [a["prompt_ids"] for a in ours]:
                problems.append("prompt ids differ")
            ours_e = [torch.tensor(x["e"]) for a in ours for x in a["latent_inputs"]]
            if len(ours_e) != len(fed):
                problems.append(f"{len(fed)} latent vectors in the reference, {len(ours_e)} ours")
            else:
                err = max([float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours_e, fed)], default=0.0)
                if err > 1e-4:
                    problems.append(f"latent vectors differ (max rel {err:.2e})")
            if res["raw_prediction"] != case["final_text"]:
                problems.append(f"final text differs: ref {res['raw_prediction']!r} ours {case['final_text']!r}")
            if case["method"] == "text_mas":
                ref_texts = [a["output"] for a in ref_agents]
                if ref_texts != [a["text"] for a in ours]:
                    problems.append("agent texts differ")
            status = "OK  " if not problems else "FAIL"
            failures += bool(problems)
            print(f"{status} {name} {cname}: {len(fed)} latent vectors; " + "; ".join(problems))
    print("all cases match the reference" if failures == 0 else f"{failures} case(s) differ")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
