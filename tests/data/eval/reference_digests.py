#!/usr/bin/env python3
"""Digests of (question, gold) for every item of the real benchmark files, computed the way the
reference's data.py builds them (Gen-Verse/LatentMAS @ 1430ad6), without the `datasets` library.

crates/cli/tests/eval_real_data.rs computes the same digest from our loader and compares. Rerun after changing the
data files:  python3 tests/data/eval/reference_digests.py ../shared/data
Digest: sha256 over, for each item in file order, question + "\\0" + gold + "\\0" (UTF-8).
"""
import hashlib
import json
import re
import sys
from pathlib import Path


def extract_gold(text):
    m = re.search(r"####\s*([-+]?\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def normalize(ans):
    return None if ans is None else ans.strip().lower()


def map_label(label):
    s = str(label).strip()
    return {"1": "a", "2": "b", "3": "c", "4": "d"}.get(s, s.lower())


CODE_HEAD = ("Please provide a self-contained Python script that solves the following problem in a markdown "
             "code block:\n```python\nYOUR_PYTHON_CODE\n```:\n")


def build(task, item):
    if task == "gsm8k":
        return item["question"].strip(), normalize(extract_gold(item["answer"]))
    if task in ("aime2024", "aime2025"):
        return item["problem"].strip(), normalize(str(item["answer"]).strip())
    if task in ("arc_easy", "arc_challenge"):
        texts, labels = item["choices"]["text"], item["choices"]["label"]
        formatted, order = {}, []
        for label, text in zip(labels, texts):
            formatted[map_label(label)] = text.strip()
            order.append(map_label(label))
        question = item["question"].strip() + "\n" + "\n".join(f"{l}: {formatted[l]}" for l in order)
        raw = item.get("answerKey", "").strip()
        return question, normalize(map_label(raw) if raw else "")
    if task == "medqa":
        answer = None
        for idx, op in enumerate(item["options"]):
            if str(item["answer"]) in op:
                answer = "abcd"[idx]
                break
        return item["query"], normalize(answer)
    if task == "mbppplus":
        t = item["test_list"]
        question = (CODE_HEAD + f"{item['prompt']}\nYour answer will be tested on test cases like:\n"
                    f"{t[0]}\n{t[1]}\n{t[2]}\n")
        return question, str(item["test"])
    if task == "humanevalplus":
        gold = str(item["test"]).replace("candidate", item["entry_point"]) + f"\n\ncheck({item['entry_point']})"
        return CODE_HEAD + f"{item['prompt']}\n", gold
    raise ValueError(task)


FILES = {
    "gsm8k": "gsm8k_test.jsonl", "aime2024": "aime2024_test.jsonl", "aime2025": "aime2025_test.jsonl",
    "arc_easy": "arc_easy_test.jsonl", "arc_challenge": "arc_challenge_test.jsonl", "medqa": "medqa.json",
    "mbppplus": "mbppplus_test.jsonl", "humanevalplus": "humanevalplus_test.jsonl",
}


def main(data):
    for task, name in FILES.items():
        text = (Path(data) / name).read_text(encoding="utf-8")
        items = json.loads(text) if name.endswith(".json") else [json.loads(l) for l in text.splitlines() if l.strip()]
        h = hashlib.sha256()
        for item in items:
            q, g = build(task, item)
            h.update(q.encode() + b"\0" + g.encode() + b"\0")
        print(f'("{task}", {len(items)}, "{h.hexdigest()}"),')


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
