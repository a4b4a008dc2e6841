#!/usr/bin/env python3
"""Expected token ids of the reference's prompts, rendered the way the reference renders them.

For a handful of (method, topology, role, family) keys of ../shared/reference/reference_prompts.json (the
authors' prompt strings, exported as data), substitute {question} and {ctx}, render
[{system: _system}, {user: prompt}] with the real Qwen3 chat template (tests/data/qwen3-tokenizer) through
transformers' own apply_chat_template (add_generation_prompt=True, thinking not disabled), optionally append
"<think>", tokenize without special-token additions, and write the ids to
tests/data/golden/reference_prompt_ids.json. The Rust fidelity test (tests/prompt_fidelity.rs) renders the
same prompts with our PromptSet + minijinja + tokenizers and requires identical ids.

"runs" holds, for every task family and every method and topology, the prompt ids of each agent whose
prompt does not depend on generated text (all LatentMAS agents; the single agent; the TextMAS agents that see
no context), rendered as the reference's run.py renders them with its defaults (think off). tests/
prompt_fidelity.rs compares them with the `--trace` of `latentmas run --preset reference --prompts reference`.

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


# One question per family, written for these goldens, shaped like that family's formatted questions.
RUN_QUESTIONS = {
    "math": QUESTION,
    "mc": "Which of these is a mammal?\na: shark\nb: dolphin\nc: trout\nd: octopus",
    "medqa": "A patient has a fever and a cough. What is the next step?\nA. rest\nB. antibiotics\nC. surgery\nD. x-ray",
    "code": "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n```python\nYOUR_PYTHON_CODE\n```:\nWrite a function add(a, b) returning a + b.\nYour answer will be tested on test cases like:\nassert add(1, 2) == 3\n",
}
ROLES = ["planner", "critic", "refiner", "judger"]
# (method, topology, roles whose prompt ids are known before any text is generated)
RUNS = [
    ("latent", "sequential", ROLES),
    ("latent", "hierarchical", ROLES),
    ("single", "sequential", ["judger"]),
    ("text", "sequential", ["planner"]),
    ("text", "hierarchical", ["planner", "critic", "refiner"]),
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
    runs = []
    for family, question in RUN_QUESTIONS.items():
        for method, topology, roles in RUNS:
            agents = []
            for role in roles:
                if method == "single":
                    key, template = lookup(prompts, None, None, family)
                else:
                    key, template = lookup(prompts, f"{method}_{topology}", role, family)
                user = template.replace("{question}", question).replace("{ctx}", "")
                msgs = [{"role": "system", "content": prompts["_system"]}, {"role": "user", "content": user}]
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                agents.append({"role": role, "key": key, "ids": tok(text, add_special_tokens=False)["input_ids"]})
            runs.append({"method": method, "topology": topology, "family": family, "question": question,
                         "agents": agents})
    json.dump({"generator": "python3 tools/golden_prompts.py", "cases": out, "runs": runs}, open(OUT, "w"), indent=1)
    print(f"wrote {len(out)} cases and {len(runs)} runs to {OUT}")


if __name__ == "__main__":
    main()
