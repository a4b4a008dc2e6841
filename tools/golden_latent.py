#!/usr/bin/env python3
"""Golden LatentMAS / TextMAS / single-agent runs on the tiny Qwen3 fixtures.

A short reimplementation of /work/shared/reference/LATENTMAS.md (docs: LATENTMAS semantics) on top of
Hugging Face transformers' Qwen3 in float32, greedy everywhere, so the Rust engine can be checked token by
token and latent vector by latent vector. Writes tests/data/golden/latent_<model>.json for tiny-tied and
tiny-untied; the schema and the tolerances are in tests/data/golden/README.md.

Run from the repository root (after tools/make_tiny_model.py):

    python3 tools/golden_latent.py

What the reference code (Gen-Verse/LatentMAS @ 1430ad6, HF-transformers path) does, checked by reading it,
and mirrored here:
- Agents are always planner, critic, refiner, judger, in that order. Every agent's messages are
  [system, user]; the string is rendered by the tokenizer's chat template with add_generation_prompt=True
  (thinking not disabled) and tokenised with add_special_tokens=False.
- `think` switch: the string "<think>" is appended to the rendered prompt text (no newline) before
  tokenising, for the non-final agents AND for the judger (latent_mas.py does it in both branches).
  TextMAS and the single baseline have no such switch.
- Latent agents (models.py, generate_latent_batch): one forward of the prompt on top of the running cache
  (positions continue from the cache length), h = hidden_states[-1][:, -1] (after the final norm), then
  m times: e = realign(h); one forward with inputs_embeds=e on top of the cache (appends one entry);
  h = hidden_states[-1][:, -1] of that step. The h after the m-th step is never used.
  The cache is never trimmed in the default configuration (latent_only / sequential_info_only are off).
- realign(h) (models.py, _apply_latent_realignment): a = h.float() @ W_a;
  e = a * (target_norm / max(|a|, 1e-6)), cast back to the activation dtype. With
  --latent_space_realign off, W_a is the identity but the rescale is still applied.
- W_a (models.py, _build_latent_realign_matrix): W_in = input embedding, W_out = output embedding, f32;
  W_a = solve(W_out^T W_out + 1e-5 I, W_out^T W_in); target_norm = mean row L2 norm of W_in. In the HF path the
  model was resized to len(tokenizer) rows just after loading (resize_token_embeddings), so both matrices
  have V = len(tokenizer) rows. (In the vLLM path the second HF model is NOT resized: all padded rows are used.)
- Judger (latent_mas.py): prompt prefilled on top of the cache, then decoding. With latent_steps == 0 the
  reference passes past_key_values=None, i.e. the judger sees an empty cache (the earlier agents' prompts
  were computed and thrown away). Our default keeps the cache for m = 0; the compat case reproduces the
  reference.
- The reference's "hierarchical" LatentMAS is the same chain with the expert prompts; no agent gets a
  text context (context="" for every latent agent).
- TextMAS (text_mas.py): every agent decodes from an empty cache. After each NON-final agent the context
  string grows by f"[{name}]:\n{text}\n\n" with name Planner / Critic / Refiner (sequential) or
  Math Agent / Science Agent / Code Agent (hierarchical); text is the decoded output, special tokens
  skipped, stripped. The prompt builder receives context[:text_mas_context_length] and that flag defaults
  to -1, so every prompt gets the context minus its LAST character (one of the two trailing newlines).
  Sequential: critic gets the planner block, refiner planner+critic, judger all three. Hierarchical: the
  experts' prompts have no {ctx}; the summarizer gets all three expert blocks.
- Decoding: the generated ids, decoded with skip_special_tokens=True, stripped. The reference samples
  (temperature / top-k / top-p); here greedy over ids < V (the reference's resized model has only V logits)
  with stop tokens <|im_end|> and <|endoftext|>, max_new_tokens 12.
- The single baseline is one agent with the baseline prompt and an empty cache.
"""

import argparse
import json
import os
import re

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["tiny-tied", "tiny-untied"]
PROMPTS = os.path.join(REPO, "tests", "data", "prompts_tiny.json")
Q1 = "What is 12 plus 30?"
Q2 = "Tom has 3 apples and buys 4 more. How many?"
MAX_NEW = 12
REG = 1e-5
FAMILY = "math"
ROLES = ["planner", "critic", "refiner", "judger"]
TEXT_NAMES = {
    "sequential": {"planner": "Planner", "critic": "Critic", "refiner": "Refiner"},
    "hierarchical": {"planner": "Math Agent", "critic": "Science Agent", "refiner": "Code Agent"},
}


def prompt_template(prompts, key):
    """Look-up order of LATENTMAS.md: <key>/<family>, then <key>."""
    return prompts.get(f"{key}/{FAMILY}", prompts.get(key))


def fill(template, question, ctx=""):
    """Single-pass substitution of {question} and {ctx} (text inserted is never rescanned)."""
    return re.sub(r"\{(question|ctx)\}", lambda m: question if m.group(1) == "question" else ctx, template)


def flist(x):
    return [float(v) for v in x.reshape(-1).tolist()]


class Runner:
    def __init__(self, model_dir, prompts):
        self.name = os.path.basename(os.path.normpath(model_dir))
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.prompts = prompts
        self.V = len(self.tok)
        self.stop_ids = [self.tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self.W_a, self.target_norm = self.alignment()

    # --- alignment (once per model) ---------------------------------------------------------------
    @torch.no_grad()
    def alignment(self):
        w_in = self.model.get_input_embeddings().weight[: self.V].float()
        w_out = self.model.get_output_embeddings().weight[: self.V].float()
        gram = w_out.T @ w_out + REG * torch.eye(w_out.shape[1], dtype=torch.float32)
        w_a = torch.linalg.solve(gram, w_out.T @ w_in)
        return w_a, w_in.norm(dim=1).mean()

    def realign(self, h, realign_on):
        w_a = self.W_a if realign_on else torch.eye(h.shape[-1], dtype=torch.float32)
        a = h.float() @ w_a
        return a * (self.target_norm / a.norm().clamp_min(1e-6))  # same op order as the reference

    # --- model calls --------------------------------------------------------------------------------
    def render(self, user, think):
        msgs = [{"role": "system", "content": self.prompts["_system"]}, {"role": "user", "content": user}]
        text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if think:
            text += "<think>"
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return text, ids

    @torch.no_grad()
    def step(self, cache, ids=None, embed=None):
        """One forward on top of `cache` (mutated: appends); returns (h_last after final norm, logits_last)."""
        if ids is not None:
            out = self.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True,
                             output_hidden_states=True)
        else:
            out = self.model(inputs_embeds=embed.view(1, 1, -1), past_key_values=cache, use_cache=True,
                             output_hidden_states=True)
        return out.hidden_states[-1][0, -1], out.logits[0, -1]

    def new_cache(self):
        return DynamicCache(config=self.model.config)

    def decode(self, cache, logits):
        """Greedy over ids < V; stops on a stop id (kept in generated_ids) or after MAX_NEW tokens.
        The last generated token is never fed back."""
        gen, margins = [], []
        while True:
            top2 = torch.topk(logits[: self.V], 2)
            margins.append(float(top2.values[0] - top2.values[1]))
            nxt = int(top2.indices[0])
            gen.append(nxt)
            if nxt in self.stop_ids or len(gen) == MAX_NEW:
                break
            _, logits = self.step(cache, ids=[nxt])
        raw = self.tok.decode(gen, skip_special_tokens=True)
        # Python's strip() also removes U+001C..U+001F, Rust's trim() does not: keep goldens out of that case.
        assert not re.match(r"^[\x1c-\x1f]|.*[\x1c-\x1f]$", raw.strip(" \t\n\r\v\f"), re.S), repr(raw)
        return gen, raw.strip(), margins

    def agent_record(self, role, text, ids, before, after):
        return {
            "role": role, "prompt_text": text, "prompt_ids": ids, "ctx": None,
            "kv_len_before": before, "kv_len_after": after, "latent_inputs": [],
            "generated_ids": [], "text": None, "stopped": None, "margins": [], "min_margin": None,
        }

    # --- methods ------------------------------------------------------------------------------------
    def latent_mas(self, topology, question, m, realign_on, think=False, m0_empty_cache=False):
        cache = self.new_cache()
        agents = []
        for role in ROLES:
            tmpl = prompt_template(self.prompts, f"latent_{topology}/{role}")
            text, ids = self.render(fill(tmpl, question), think)
            if role == "judger" and m == 0 and m0_empty_cache:
                cache = self.new_cache()  # reference quirk: past_key_values=None when latent_steps == 0
            before = cache.get_seq_length()
            h, logits = self.step(cache, ids=ids)
            rec = self.agent_record(role, text, ids, before, None)
            if role != "judger":
                for _ in range(m):
                    e = self.realign(h, realign_on)
                    rec["latent_inputs"].append({"h": flist(h), "e": flist(e), "norm": float(e.norm())})
                    h, _ = self.step(cache, embed=e)
                rec["kv_len_after"] = cache.get_seq_length()
            else:
                rec["kv_len_after"] = cache.get_seq_length()
                self.fill_decoding(rec, cache, logits)
            agents.append(rec)
        return agents

    def fill_decoding(self, rec, cache, logits):
        gen, text, margins = self.decode(cache, logits)
        rec.update(generated_ids=gen, text=text, stopped=gen[-1] in self.stop_ids, margins=margins,
                   min_margin=min(margins))

    def text_mas(self, topology, question):
        context, agents = "", []
        for role in ROLES:
            tmpl = prompt_template(self.prompts, f"text_{topology}/{role}")
            ctx = context[:-1]  # reference: context[:text_mas_context_length], default -1
            text, ids = self.render(fill(tmpl, question, ctx), think=False)
            cache = self.new_cache()
            _, logits = self.step(cache, ids=ids)
            rec = self.agent_record(role, text, ids, 0, cache.get_seq_length())
            rec["ctx"] = ctx if "{ctx}" in tmpl else None
            self.fill_decoding(rec, cache, logits)
            if role != "judger":
                context += f"[{TEXT_NAMES[topology][role]}]:\n{rec['text']}\n\n"
            agents.append(rec)
        return agents

    def baseline(self, question):
        text, ids = self.render(fill(prompt_template(self.prompts, "baseline"), question), think=False)
        cache = self.new_cache()
        _, logits = self.step(cache, ids=ids)
        rec = self.agent_record("single", text, ids, 0, cache.get_seq_length())
        self.fill_decoding(rec, cache, logits)
        return [rec]


def cases(r):
    """(name, settings, thunk) for every golden case."""
    lat = lambda topo, q, m, ra, think=False, compat=False: (  # noqa: E731
        {"method": "latent_mas", "topology": topo, "question": q, "latent_steps": m, "realign": ra,
         "think": think, "m0_empty_cache": compat},
        lambda: r.latent_mas(topo, q, m, ra, think, compat),
    )
    out = {}
    for topo, short in [("sequential", "seq"), ("hierarchical", "hier")]:
        for ra in (False, True):
            out[f"latent_{short}_m3_realign_{'on' if ra else 'off'}"] = lat(topo, Q1, 3, ra)
    out["latent_seq_m0"] = lat("sequential", Q1, 0, False)
    out["latent_seq_m0_compat"] = lat("sequential", Q1, 0, False, compat=True)
    out["latent_seq_m3_realign_off_think"] = lat("sequential", Q1, 3, False, think=True)
    for ra in (False, True):
        out[f"latent_seq_m3_realign_{'on' if ra else 'off'}_q2"] = lat("sequential", Q2, 3, ra)
    for topo, short in [("sequential", "seq"), ("hierarchical", "hier")]:
        out[f"text_{short}"] = (
            {"method": "text_mas", "topology": topo, "question": Q1, "latent_steps": None, "realign": None,
             "think": False, "m0_empty_cache": False},
            (lambda t: lambda: r.text_mas(t, Q1))(topo),
        )
    out["baseline"] = (
        {"method": "baseline", "topology": None, "question": Q1, "latent_steps": None, "realign": None,
         "think": False, "m0_empty_cache": False},
        lambda: r.baseline(Q1),
    )
    return out


def dump(obj, indent=0):
    """JSON with one key per line but number lists (and lists of number lists' rows) on one line each."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not all(isinstance(x, (int, float)) for x in obj):
        return "[\n" + ",\n".join(pad1 + dump(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "golden"))
    ap.add_argument("--prompts", default=PROMPTS, help="prompt set (JSON shape of reference_prompts.json)")
    ap.add_argument("--models", nargs="+", default=[os.path.join(REPO, "tests", "data", m) for m in MODELS])
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)

    for model_dir in args.models:
        r = Runner(model_dir, prompts)
        name = r.name
        doc = {
            "model": name,
            "generator": "python3 tools/golden_latent.py",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "prompts_file": os.path.relpath(os.path.abspath(args.prompts), REPO),
            "V": r.V,
            "vocab_size": r.model.config.vocab_size,
            "hidden_size": r.model.config.hidden_size,
            "stop_ids": r.stop_ids,
            "max_new_tokens": MAX_NEW,
            "decoding": "greedy over ids < V",
            "alignment": {"reg": REG, "target_norm": float(r.target_norm), "W_a": [flist(row) for row in r.W_a]},
            "cases": {},
        }
        for cname, (settings, run) in cases(r).items():
            agents = run()
            margins = [x for a in agents for x in a["margins"]]
            doc["cases"][cname] = dict(settings, agents=agents, final_text=agents[-1]["text"],
                                       min_margin=min(margins))
            print(f"{name} {cname:34s} kv={[a['kv_len_after'] for a in agents]} "
                  f"final={agents[-1]['generated_ids']} min_margin={min(margins):.3g}")
        path = os.path.join(args.out, f"latent_{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(dump(doc) + "\n")
        eye_err = float((r.W_a - torch.eye(r.W_a.shape[0])).abs().max())
        print(f"{name}: target_norm={float(r.target_norm):.6f} max|W_a - I|={eye_err:.3g} -> "
              f"{os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
