#!/usr/bin/env python3
"""Make tests/data/tiny-trained: a tiny Qwen3 TRAINED until its greedy choices are confident.

Why: the random tiny models (tools/make_tiny_model.py) have near-uniform logits, so their top-1/top-2 margins
go down to ~3e-3 while a bf16 device differs from the f32 cpu backend by ~2e-2 of the logits' magnitude;
greedy tokens then legitimately flip between devices. This model learns a fixed next-token function
f: id -> id (a random map over the tokenizer's 355 ids, ~8% of ids mapping to <|im_end|> so that decoding
sometimes stops), from random token sequences, so that at every position the logit of f(current token)
stands far above the rest whatever the context. Its top-1 margins (printed at the end) are orders of
magnitude above the bf16 error, which lets tests/emu_backend.rs require the emu device to equal the cpu
backend token for token on whole LatentMAS runs.

Shape, tokenizer and chat template are tiny-untied's (copied from tests/data/tiny-untied). Seeded, one
thread: rerunning with the same torch version gives the same weights. Run from the repository root:

    python3 tools/make_trained_tiny_model.py       # writes tests/data/tiny-trained (~400 KB)
"""

import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "tests", "data", "tiny-untied")
OUT = os.path.join(REPO, "tests", "data", "tiny-trained")

SEED = 20261122
IDS = 355  # the tokenizer's ids (the embedding has 384 rows; 355.. are padding)
IM_END = 352
STOP_SHARE = 0.08  # share of ids whose next token is <|im_end|>
STEPS = 1500
BATCH = 32
SEQ = 48
LR = 3e-3


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    cfg_json = json.load(open(os.path.join(SRC, "config.json")))
    cfg = Qwen3Config(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "torch_dtype")})
    model = Qwen3ForCausalLM(cfg).float()
    model.train()

    g = torch.Generator().manual_seed(SEED)
    f = torch.randint(0, 350, (IDS,), generator=g)
    f[torch.rand(IDS, generator=g) < STOP_SHARE] = IM_END

    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    for step in range(STEPS):
        x = torch.randint(0, IDS, (BATCH, SEQ), generator=g)
        logits = model(input_ids=x).logits[..., :IDS]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, IDS), f[x].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == STEPS - 1:
            print(f"step {step}: loss {loss.item():.4f}")

    model.eval()
    with torch.no_grad():
        x = torch.randint(0, IDS, (16, SEQ), generator=g)
        logits = model(input_ids=x).logits[..., :IDS]
        top2 = logits.topk(2, dim=-1).values
        margin = top2[..., 0] - top2[..., 1]
        acc = (logits.argmax(-1) == f[x]).float().mean().item()
        scale = logits.abs().amax(-1)
        print(
            f"held-out accuracy {acc:.4f}; top-1 margin min {margin.min().item():.3f} "
            f"(min margin / max |logit| {(margin / scale).min().item():.3f})"
        )

    os.makedirs(OUT, exist_ok=True)
    tensors = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(SRC, name), os.path.join(OUT, name))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
