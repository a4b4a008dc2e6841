#!/usr/bin/env python3
"""The `latentmas bench` workloads on Hugging Face transformers, for a side-by-side table.

Same model directory, same threads, same workloads, same JSON keys as `latentmas bench --json`, so

    python3 tools/bench_transformers.py --model DIR --threads 2 --json transformers.json
    latentmas bench --model DIR --threads 2 --compare transformers.json

prints ours, theirs and the ratio per row. The model runs with its weights as stored (bf16 stays bf16:
transformers then computes in bf16, oneDNN/AMX where the CPU has it), SDPA attention, torch.no_grad.

Rows (medians of --runs timed runs after one warm-up, with min and max in "stats"):
- bandwidth_gbs / read_bandwidth_gbs: torch triad (a = b + s*c, 12 bytes per element) and sum over 3 x 256 MiB.
- peak_gflops / peak_bf16_gflops: torch f32 / bf16 2048^3 matmul (torch's achieved GEMM rate; latentmas
  reports register-resident FMA peaks there, so these rows compare machines, not engines).
- prefill_tok_s: a 256-token prompt (the same synthetic ids as latentmas), logits of the last position only.
- ttft_ms: the single-agent chat prompt of the bench question to its first greedy token.
- decode_ms_per_token {"1","4","16"}: one greedy decode step for every row of the batch at context 300.
- latent_step_ms: hidden state -> h/|h|*target_norm -> inputs_embeds through the base model (no lm_head,
  as a LatentMAS latent step), at context 300.
- end_to_end_s {"single","text","latent"}: one question, sequential topology, greedy, 32 new tokens per
  decoding agent, m = 10 latent steps per thinking agent, stop at <|im_end|> / <|endoftext|>; prompts from
  src/mas/default_prompts.json rendered with the model's chat template. The LatentMAS loop is written with
  past_key_values and inputs_embeds (below, `latent`).
"""

import argparse
import json
import math
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Kept in sync with crates/cli/src/bench/workloads.rs.
QUESTION = (
    "A bakery sells muffins for $3 each and cookies for $2 each. On Monday it sold 45 muffins and twice as many "
    "cookies as muffins. On Tuesday it sold 20% more muffins than on Monday and 30 cookies fewer than on Monday. "
    "How much money did the bakery make over the two days?"
)
AGENTS = [("planner", "Planner"), ("critic", "Critic"), ("refiner", "Refiner"), ("judger", "Judger")]
TRIAD_FLOATS = 64 << 20


def synthetic_ids(n, vocab_limit):
    """The prompt ids latentmas uses (crates/cli/src/bench/workloads.rs)."""
    return [(1000 + i * 7919) % min(150_000, vocab_limit) for i in range(n)]


def stats(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "runs": len(samples)}


def timed(fn, runs, warmup=1, per=1):
    """Seconds per unit (`per` units per call) of `runs` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) / per)
    return out


def truncate(cache, length):
    """Drops the cache entries past `length` (transformers 5 crops by a negative count)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def load_avg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


class Bench:
    def __init__(self, model_dir, threads):
        torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto", attn_implementation="sdpa")
        self.model.eval()
        self.vocab_limit = min(len(self.tok), self.model.config.vocab_size)
        self.stops = {self.tok.convert_tokens_to_ids("<|im_end|>"), self.tok.convert_tokens_to_ids("<|endoftext|>")}
        prompts = json.load(open(os.path.join(REPO, "src", "mas", "default_prompts.json")))
        self.prompts = prompts
        self.system = prompts["_system"]
        emb = self.model.model.embed_tokens.weight[: self.vocab_limit].float()
        self.target_norm = float(emb.detach().norm(dim=1).mean())

    # -- helpers --------------------------------------------------------------------------------------------
    def chat_ids(self, user):
        msgs = [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def template(self, method_topology, role):
        p = self.prompts
        return p.get(f"{method_topology}/{role}/math") or p[f"{method_topology}/{role}"]

    def argmax(self, logits):
        return logits[..., : self.vocab_limit].argmax(-1)

    def forward_ids(self, ids, cache, keep=1):
        return self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=keep)

    def generate(self, ids, cache, max_new):
        """Greedy decode of up to max_new tokens after prefilling `ids` on `cache`; stops on a stop id."""
        out = self.forward_ids(torch.tensor([ids]), cache)
        new = []
        while True:
            nxt = int(self.argmax(out.logits[0, -1]))
            new.append(nxt)
            if nxt in self.stops or len(new) >= max_new:
                return new
            out = self.forward_ids(torch.tensor([[nxt]]), cache)

    def latent(self, ids, cache, m):
        """A LatentMAS thinking agent: prefill `ids` on the shared cache, then m latent steps, each feeding
        the last final-norm hidden state back as an input embedding (realign off: h / |h| * target_norm)."""
        out = self.model.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
        h = out.last_hidden_state[:, -1:, :]
        for _ in range(m):
            e = h / h.float().norm(dim=-1, keepdim=True).clamp_min(1e-6).to(h.dtype) * self.target_norm
            out = self.model.model(inputs_embeds=e, past_key_values=cache, use_cache=True)
            h = out.last_hidden_state[:, -1:, :]

    # -- rows -----------------------------------------------------------------------------------------------
    def ceilings(self, runs):
        a, b, c = (torch.full((TRIAD_FLOATS,), v, dtype=torch.float32) for v in (1.0, 2.0, 3.0))
        triad = [12 * TRIAD_FLOATS / s / 1e9 for s in timed(lambda: torch.add(b, c, alpha=0.5, out=a), runs)]
        read = [4 * TRIAD_FLOATS / s / 1e9 for s in timed(lambda: b.sum(), runs)]
        del a, b, c
        res = {"bandwidth_gbs": stats(triad), "read_bandwidth_gbs": stats(read)}
        for key, dt in (("peak_gflops", torch.float32), ("peak_bf16_gflops", torch.bfloat16)):
            x = torch.randn(2048, 2048, dtype=dt)
            y = torch.randn(2048, 2048, dtype=dt)
            res[key] = stats([2 * 2048**3 / s / 1e9 for s in timed(lambda: torch.mm(x, y), runs)])
        return res

    def prefill(self, n, runs):
        ids = torch.tensor([synthetic_ids(n, self.vocab_limit)])
        return timed(lambda: self.forward_ids(ids, DynamicCache()), runs)

    def ttft(self, runs):
        user = self.prompts["baseline/math"].replace("{question}", QUESTION)
        ids = self.chat_ids(user)
        t = torch.tensor([ids])
        return timed(lambda: int(self.argmax(self.forward_ids(t, DynamicCache()).logits[0, -1])), runs), len(ids)

    def context(self, batch, ctx):
        cache = DynamicCache()
        ids = torch.tensor([synthetic_ids(ctx, self.vocab_limit)] * batch)
        out = self.forward_ids(ids, cache)
        return cache, self.argmax(out.logits[:, -1])

    def decode(self, batch, ctx, steps, runs):
        cache, first = self.context(batch, ctx)

        def run():
            truncate(cache, ctx)
            nxt = first
            for _ in range(steps):
                nxt = self.argmax(self.forward_ids(nxt[:, None], cache).logits[:, -1])

        return timed(run, runs, per=steps)

    def latent_step(self, ctx, steps, runs):
        cache = DynamicCache()
        out = self.model.model(input_ids=torch.tensor([synthetic_ids(ctx, self.vocab_limit)]), past_key_values=cache, use_cache=True)
        h0 = out.last_hidden_state[:, -1:, :]

        def run():
            truncate(cache, ctx)
            h = h0
            for _ in range(steps):
                e = h / h.float().norm(dim=-1, keepdim=True).clamp_min(1e-6).to(h.dtype) * self.target_norm
                h = self.model.model(inputs_embeds=e, past_key_values=cache, use_cache=True).last_hidden_state

        return timed(run, runs, per=steps)

    def end_to_end(self, method, m, new_tokens):
        """One question; returns the token accounting (prompt, latent, generated)."""
        counts = {"prompt_tokens": 0, "latent_steps": 0, "generated_tokens": 0}
        if method == "single":
            ids = self.chat_ids(self.prompts["baseline/math"].replace("{question}", QUESTION))
            counts["prompt_tokens"] += len(ids)
            counts["generated_tokens"] += len(self.generate(ids, DynamicCache(), new_tokens))
        elif method == "text":
            ctx = ""
            for i, (role, label) in enumerate(AGENTS):
                passed = ctx[:-1]  # the reference passes the context minus its last character
                user = self.template("text_sequential", role).replace("{question}", QUESTION).replace("{ctx}", passed)
                ids = self.chat_ids(user)
                new = self.generate(ids, DynamicCache(), new_tokens)
                counts["prompt_tokens"] += len(ids)
                counts["generated_tokens"] += len(new)
                if i < len(AGENTS) - 1:
                    text = self.tok.decode(new, skip_special_tokens=True).strip()
                    ctx += f"[{label}]:\n{text}\n\n"
        else:
            cache = DynamicCache()  # the shared latent working memory
            for role, _ in AGENTS[:-1]:
                ids = self.chat_ids(self.template("latent_sequential", role).replace("{question}", QUESTION))
                self.latent(ids, cache, m)
                counts["prompt_tokens"] += len(ids)
                counts["latent_steps"] += m
            ids = self.chat_ids(self.template("latent_sequential", "judger").replace("{question}", QUESTION))
            counts["prompt_tokens"] += len(ids)
            counts["generated_tokens"] += len(self.generate(ids, cache, new_tokens))
        return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (e.g. one `latentmas synth` wrote)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (latentmas: --threads)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed decode / latent-step run")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end rows")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args()

    before = load_avg()
    b = Bench(a.model, a.threads)
    weights = b.model.model.layers
    layer_bytes = sum(p.numel() * p.element_size() for n, p in weights.named_parameters() if p.dim() == 2)
    head = b.model.lm_head.weight
    decode_bytes = layer_bytes + head.numel() * head.element_size()
    rep = {"engine": "transformers", "model": a.model, "device": "cpu", "threads": a.threads, "runs": a.runs}
    rep["versions"] = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
    rep["dtype"] = str(head.dtype)
    s = {}
    with torch.no_grad():
        print("ceilings ...", flush=True)
        s.update(b.ceilings(a.runs))
        bw = s["bandwidth_gbs"]["median"] * 1e9
        print("prefill ...", flush=True)
        t = b.prefill(256, a.runs)
        s["prefill_tok_s"] = stats([256 / x for x in t])
        print("ttft ...", flush=True)
        t, rep["ttft_prompt_tokens"] = b.ttft(a.runs)
        s["ttft_ms"] = stats([x * 1e3 for x in t])
        rep["decode_ms_per_token"], rep["decode_tok_s"], rep["decode_roofline_pct_by_batch"] = {}, {}, {}
        for batch in (1, 4, 16):
            print(f"decode batch {batch} ...", flush=True)
            t = b.decode(batch, 300, a.steps, a.runs)
            key = f"decode_ms_per_token.{batch}"
            s[key] = stats([x * 1e3 for x in t])
            med = statistics.median(t)
            rep["decode_ms_per_token"][str(batch)] = med * 1e3
            rep["decode_tok_s"][str(batch)] = batch / med
            rep["decode_roofline_pct_by_batch"][str(batch)] = 100 * decode_bytes / bw / med
        rep["decode_roofline_pct"] = rep["decode_roofline_pct_by_batch"]["1"]
        print("latent steps ...", flush=True)
        t = b.latent_step(300, a.steps, a.runs)
        s["latent_step_ms"] = stats([x * 1e3 for x in t])
        rep["latent_roofline_pct"] = 100 * layer_bytes / bw / statistics.median(t)
        rep["end_to_end_s"], rep["end_to_end_tokens"] = {}, {}
        if not a.no_e2e:
            for method in ("single", "text", "latent"):
                print(f"end to end: {method} ...", flush=True)
                counts = {}

                def once():
                    counts.update(b.end_to_end(method, 10, 32))

                t = timed(once, a.runs, warmup=0)
                s[f"end_to_end_s.{method}"] = stats(t)
                rep["end_to_end_s"][method] = statistics.median(t)
                rep["end_to_end_tokens"][method] = counts
    for key in ("bandwidth_gbs", "read_bandwidth_gbs", "peak_gflops", "peak_bf16_gflops", "prefill_tok_s", "ttft_ms",
                "latent_step_ms"):
        rep[key] = s[key]["median"]
    rep["decode_bytes"] = decode_bytes
    rep["stats"] = s
    rep["load_avg_before"], rep["load_avg_after"] = before, load_avg()

    print(f"\ntransformers {rep['versions']['transformers']} / torch {rep['versions']['torch']}, {a.threads} threads, "
          f"{rep['dtype']}, median of {a.runs} [min, max]; load average {before} -> {rep['load_avg_after']}")
    for key, st in s.items():
        print(f"  {key:<28} {st['median']:>10.2f}   [{st['min']:.2f}, {st['max']:.2f}]")
    if rep["end_to_end_tokens"]:
        print("  tokens:", json.dumps(rep["end_to_end_tokens"]))
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rep, f, indent=2)
        os.replace(tmp, a.json)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
