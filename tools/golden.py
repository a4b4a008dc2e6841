#!/usr/bin/env python3
"""Golden forward-pass values for the tiny Qwen3 fixtures, computed by Hugging Face transformers' Qwen3.

For each of tests/data/tiny-tied and tests/data/tiny-untied this writes tests/data/golden/<model>.safetensors
(f32 values, i64 ids). The tensor list and the tolerances are in tests/data/golden/README.md.

The model runs in float32 with eager attention on the CPU. Run from the repository root, after
tools/make_tiny_model.py:

    python3 tools/golden.py
"""

import argparse
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["tiny-tied", "tiny-untied"]

PREFILL_TEXT = "What is 12 plus 30?<|im_end|>"  # 11 tokens, ends with a special token
DECODE_TOKEN = "\n"  # fed at position T after the prefill
EMBEDS_T = 5
EMBEDS_STD = 0.1  # per element; row norms ~0.8, like the embedding rows and the latent vectors
EMBEDS_SEED = 1234
GREEDY_PROMPT = [{"role": "user", "content": "What is 12 plus 30?"}]
GREEDY_NEW = 16


def load(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cfg = model.config
    # Guard the fixture: the loaded config must be the one make_tiny_model.py wrote.
    assert cfg.rope_parameters["rope_theta"] == 1e6 and cfg.rope_parameters["rope_type"] == "default"
    assert model.model.embed_tokens.weight.dtype == torch.float32
    return tok, model


def kv_of(cache, layer):
    """(K, V) of one layer as [num_kv_heads, T, head_dim] (batch 1): K after k_norm and RoPE."""
    lay = cache.layers[layer]
    return lay.keys[0].contiguous(), lay.values[0].contiguous()


@torch.no_grad()
def greedy(model, prompt_ids, n_new, v):
    """Greedy decode over ids < v (padding rows of the embedding are never chosen); no stop tokens."""
    out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
    cache, logits = out.past_key_values, out.logits[0, -1]
    tokens, margins = [], []
    for _ in range(n_new):
        top2 = torch.topk(logits[:v], 2)
        margins.append(float(top2.values[0] - top2.values[1]))
        nxt = int(top2.indices[0])
        tokens.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[0, -1]
    return tokens, margins


@torch.no_grad()
def golden_for(name, out_dir):
    model_dir = os.path.join(REPO, "tests", "data", name)
    tok, model = load(model_dir)
    cfg = model.config
    v = len(tok)
    L = cfg.num_hidden_layers
    t = {}

    # 1. Prefill from an empty cache.
    ids = tok(PREFILL_TEXT, add_special_tokens=False)["input_ids"]
    assert max(ids) < v
    out = model(input_ids=torch.tensor([ids]), use_cache=True, output_hidden_states=True)
    assert len(out.hidden_states) == L + 1
    t["prefill.input_ids"] = torch.tensor(ids, dtype=torch.int64)
    t["prefill.logits"] = out.logits[0]
    for i, h in enumerate(out.hidden_states):
        t[f"prefill.hidden.{i}"] = h[0]
    # Conventions checked, not assumed: index 0 = embedding rows, index L = after the final norm.
    assert torch.equal(out.hidden_states[0][0], model.model.embed_tokens.weight[ids])
    assert torch.allclose(out.hidden_states[L][0] @ model.lm_head.weight.T, out.logits[0], atol=1e-5)
    cache = out.past_key_values
    for layer in range(L):
        k, vv = kv_of(cache, layer)
        assert k.shape == (cfg.num_key_value_heads, len(ids), cfg.head_dim)
        t[f"prefill.k.{layer}"], t[f"prefill.v.{layer}"] = k, vv

    # 2. One decode step on top of that cache (position T).
    dec = tok(DECODE_TOKEN, add_special_tokens=False)["input_ids"]
    assert len(dec) == 1
    out = model(input_ids=torch.tensor([dec]), past_key_values=cache, use_cache=True)
    t["decode.input_ids"] = torch.tensor(dec, dtype=torch.int64)
    t["decode.logits"] = out.logits[0]

    # 3. Forward from input embeddings (positions 0..T2-1, empty cache).
    g = torch.Generator().manual_seed(EMBEDS_SEED)
    emb = torch.randn(EMBEDS_T, cfg.hidden_size, generator=g, dtype=torch.float32) * EMBEDS_STD
    out = model(inputs_embeds=emb[None], use_cache=True, output_hidden_states=True)
    t["embeds.inputs"] = emb
    t["embeds.logits"] = out.logits[0]
    t["embeds.final_hidden"] = out.hidden_states[-1][0]

    # 4. Greedy decoding, restricted to ids < V.
    text = tok.apply_chat_template(GREEDY_PROMPT, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    tokens, margins = greedy(model, prompt_ids, GREEDY_NEW, v)
    t["greedy.prompt_ids"] = torch.tensor(prompt_ids, dtype=torch.int64)
    t["greedy.tokens"] = torch.tensor(tokens, dtype=torch.int64)
    t["greedy.margins"] = torch.tensor(margins, dtype=torch.float32)
    t["greedy.min_margin"] = torch.tensor([min(margins)], dtype=torch.float32)

    t = {k: x.detach().to(x.dtype).contiguous().clone() for k, x in t.items()}
    meta = {
        "model": name,
        "V": str(v),
        "vocab_size": str(cfg.vocab_size),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prefill_text": PREFILL_TEXT,
    }
    path = os.path.join(out_dir, f"{name}.safetensors")
    save_file(t, path, metadata=meta)
    print(f"{name}: T={len(ids)} greedy={tokens} min_margin={min(margins):.4g} -> {os.path.relpath(path, REPO)}")
    for k in ["prefill.logits", "prefill.hidden.0", f"prefill.hidden.{L}", "prefill.k.0", "decode.logits",
              "embeds.logits", "embeds.final_hidden"]:
        print(f"  {k:22s} max|x|={t[k].abs().max():.3f} rms={t[k].pow(2).mean().sqrt():.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "golden"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for name in MODELS:
        golden_for(name, args.out)


if __name__ == "__main__":
    main()
