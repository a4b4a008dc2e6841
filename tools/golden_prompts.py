#!/usr/bin/env python3
"""Expected token ids of the reference's prompts, rendered the way the reference renders them.

For a handful of (method, topology, role, family) keys of ../shared/reference/reference_prompts.json (the
authors' prompt strings, exported as data), substitute {question} and {ctx}, render
[{system: _system}, {user: prompt}] with the real Qwen3 chat template (tests/data/qwen3-tokenizer) through
transformers' own apply_chat_template (add_generation_prompt=True, thinking not disabled), optionally append
"<think>", tokenize without special-token additions, and write the ids to
tests/data/golden/reference_prompt_ids.json. The Rust fidelity test (tests/prompt_fidelity.rs) renders the
same prompts with our PromptSet + minijinja + tokenizers and requires identical ids.

Run from the repository root:  python3 tools/golden_prompts.py
"""
import json
import os

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "reference", "reference_prompts.json")
OUT = os.path.join(ROOT, "tests", "data", "golden", "reference_prompt_ids.json")

QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
CTX = "[Planner]:\nStep 1: add.\n\n[Critic]:\nLooks right.\n"

CASES = [
    # (method_topology, role, family, think)
    ("latent_sequential", "planner", "math", False),
    ("latent_sequential", "critic", "math", True),
    ("latent_sequential", "judger", "math", True),
    ("latent_sequential", "judger", "mc", False),
    ("latent_hierarchical", "refiner", "code", False),
    ("latent_hierarchical", "judger", "medqa", False),
    ("text_sequential", "refiner", "math", False),
    ("text_hierarchical", "judger", "mc", False),
    ("baseline", None, "math", False),
    ("baseline", None, "code", False),
]


def lookup(prompts, mt, role, family):
    if role is None:
        keys = [f"baseline/{family}"] + (["baseline/mc"] if family == "medqa" else [])
    else:
        keys = [f"{mt}/{role}/{family}"] + ([f"{mt}/{role}/mc"] if family == "medqa" else []) + [f"{mt}/{role}"]
    for k in keys:
        if k in prompts:
            return k, prompts[k]
    raise KeyError(keys)


def main():
    prompts = json.load(open(SHARED))
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "tests", "data", "qwen3-tokenizer"))
    out = []
    for mt, role, family, think in CASES:
        key, template = lookup(prompts, mt, role, family)
        user = template.replace("{question}", QUESTION).replace("{ctx}", CTX)
        msgs = [{"role": "system", "content": prompts["_system"]}, {"role": "user", "content": user}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if think:
            text += "<think>"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append({"method_topology": mt, "role": role, "family": family, "key": key, "think": think,
                    "question": QUESTION, "ctx": CTX, "ids": ids})
    json.dump({"generator": "python3 tools/golden_prompts.py", "cases": out}, open(OUT, "w"), indent=1)
    print(f"wrote {len(out)} cases to {OUT}")


if __name__ == "__main__":
    main()
