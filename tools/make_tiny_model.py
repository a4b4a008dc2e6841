#!/usr/bin/env python3
"""Make the tiny Qwen3 fixtures used by the golden tests.

What it writes (under --out, default tests/data):
  tiny-tied/         Qwen3ForCausalLM, tie_word_embeddings=true (no lm_head.weight tensor)
  tiny-untied/       same body weights, plus its own lm_head.weight
  tiny-untied-bf16/  tiny-untied with every tensor cast to bf16 (dtype-loading tests)
Each directory holds config.json, generation_config.json, model.safetensors, tokenizer.json and
tokenizer_config.json.

The tokenizer is a byte-level BPE trained here on a small embedded corpus with the same
normalizer / pre-tokenizer / decoder layout as Qwen3's tokenizer.json, followed by five added tokens in
Qwen3's order: <|endoftext|>, <|im_start|>, <|im_end|> (special) and <think>, </think> (not special).
The chat template is copied verbatim from tests/data/qwen3-tokenizer/tokenizer_config.json.

Everything is seeded and no network is used; rerunning gives byte-identical files. Run from the
repository root:

    python3 tools/make_tiny_model.py            # writes tests/data/tiny-*
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QWEN_TOKENIZER_CONFIG = os.path.join(REPO, "tests", "data", "qwen3-tokenizer", "tokenizer_config.json")

SEED = 20251125
BPE_VOCAB = 350  # 256 byte symbols + 94 merges

# Model shape (Qwen3 layout, tiny sizes).
HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
ROPE_THETA = 1_000_000.0
RMS_EPS = 1e-6
MAX_POS = 4096
INIT_STD = 0.1  # linear / embedding weights ~ N(0, 0.1^2); norm weights 1 + N(0, 0.1^2)

# The <|im_end|> rows of embed_tokens and lm_head are scaled by this, so that greedy decoding of the
# random model sometimes picks it and golden runs exercise stopping (with 1.0 no case stops in 12 tokens).
IM_END_SCALE = 2.0

# Qwen3's pre-tokenizer split (single digits, letters runs, punctuation runs, whitespace rules).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

ADDED = [  # (content, special) in id order, as in Qwen3
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<think>", False),
    ("</think>", False),
]

CORPUS = """
What is 12 plus 30? The answer is 42.
What is 7 plus 5? The answer is 12.
What is 9 times 8? The answer is 72.
What is 100 minus 58? The answer is 42.
Tom has 3 apples and buys 4 more. How many apples does Tom have? Tom has 7 apples.
Anna has 10 pens and gives 2 away. How many pens are left? 8 pens are left.
A question asks for a number. Read the question, make a plan, then answer.
You are a helpful assistant. You are a planner. You are a critic. You are a refiner. You are a judge.
Plan: add the two numbers. Check the plan. Refine the plan. Give the final answer.
The plan is to add 12 and 30, which gives 42.
Feedback: the plan is correct. The answer is correct.
Put the final answer inside \\boxed{42}. The final answer is \\boxed{7}.
Solve the question step by step and put the answer in \\boxed{}.
system user assistant system user assistant
system
user
assistant
system
user
assistant
<think> Let me think about the question. </think>
Question: What is 12 plus 30?
Question: Tom has 3 apples and buys 4 more. How many?
Math agent, science agent, code agent, summarizer.
The math agent solves the question. The science agent checks it. The code agent writes code.
One, two, three, four, five, six, seven, eight, nine, ten.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 30 40 42 50 100
plus minus times divided by equals sum total number answer question plan
"""


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # Repeat the corpus so pair counts are well separated; order is fixed, so training is deterministic.
    lines = [ln for ln in CORPUS.strip().splitlines()] * 4
    tok.train_from_iterator(lines, trainer=trainer)
    assert tok.get_vocab_size() == BPE_VOCAB, tok.get_vocab_size()
    specials = [AddedToken(c, special=True, normalized=False) for c, s in ADDED if s]
    plain = [AddedToken(c, special=False, normalized=False) for c, s in ADDED if not s]
    tok.add_special_tokens(specials)
    tok.add_tokens(plain)
    for i, (content, _) in enumerate(ADDED):
        assert tok.token_to_id(content) == BPE_VOCAB + i, content
    return tok


def tokenizer_config(tok: Tokenizer) -> dict:
    with open(QWEN_TOKENIZER_CONFIG, encoding="utf-8") as f:
        qwen = json.load(f)
    decoder = {}
    for content, special in ADDED:
        decoder[str(tok.token_to_id(content))] = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": qwen["chat_template"],
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MAX_POS,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def padded_vocab(v: int) -> int:
    """Round up to a multiple of 64 with at least 8 rows beyond the tokenizer (like 151669 -> 151936)."""
    return ((v + 8 + 63) // 64) * 64


def model_config(v: int, vocab_size: int, tied: bool, dtype: str) -> dict:
    # Field set and spelling follow the Hugging Face hub's Qwen3 config.json files.
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BPE_VOCAB,  # <|endoftext|>, as Qwen3's 151643
        "eos_token_id": BPE_VOCAB + 2,  # <|im_end|>, as Qwen3's 151645
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "max_window_layers": LAYERS,
        "model_type": "qwen3",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "tie_word_embeddings": tied,
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def generation_config(v: int) -> dict:
    # Same shape as Qwen3's generation_config.json (sampling defaults of the Qwen3 release).
    endoftext, im_end = BPE_VOCAB, BPE_VOCAB + 2
    return {
        "bos_token_id": endoftext,
        "do_sample": True,
        "eos_token_id": [im_end, endoftext],
        "pad_token_id": endoftext,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
    }


def make_weights(vocab_size: int) -> dict:
    """Body weights shared by both checkpoints, in a fixed draw order, plus an lm_head for the untied one."""
    g = torch.Generator().manual_seed(SEED)

    def lin(rows, cols):
        return torch.randn(rows, cols, generator=g, dtype=torch.float32) * INIT_STD

    def norm(n):
        return 1.0 + torch.randn(n, generator=g, dtype=torch.float32) * INIT_STD

    w = {"model.embed_tokens.weight": lin(vocab_size, HIDDEN)}
    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = lin(q_dim, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = lin(kv_dim, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = lin(kv_dim, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = lin(HIDDEN, q_dim)
        w[p + "self_attn.q_norm.weight"] = norm(HEAD_DIM)
        w[p + "self_attn.k_norm.weight"] = norm(HEAD_DIM)
        w[p + "post_attention_layernorm.weight"] = norm(HIDDEN)
        w[p + "mlp.gate_proj.weight"] = lin(INTERMEDIATE, HIDDEN)
        w[p + "mlp.up_proj.weight"] = lin(INTERMEDIATE, HIDDEN)
        w[p + "mlp.down_proj.weight"] = lin(HIDDEN, INTERMEDIATE)
    w["model.norm.weight"] = norm(HIDDEN)
    lm_head = lin(vocab_size, HIDDEN)
    # <|im_end|> likelier to win greedy decoding (see IM_END_SCALE); lm_head is only used when untied.
    im_end = BPE_VOCAB + 2
    w["model.embed_tokens.weight"][im_end] *= IM_END_SCALE
    lm_head[im_end] *= IM_END_SCALE
    return w, lm_head


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_model(dirpath, tok, tok_cfg, tensors, v, vocab_size, tied, dtype):
    if os.path.isdir(dirpath):
        shutil.rmtree(dirpath)
    os.makedirs(dirpath)
    tok.save(os.path.join(dirpath, "tokenizer.json"), pretty=True)
    write_json(os.path.join(dirpath, "tokenizer_config.json"), tok_cfg)
    write_json(os.path.join(dirpath, "config.json"), model_config(v, vocab_size, tied, dtype))
    write_json(os.path.join(dirpath, "generation_config.json"), generation_config(v))
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    out = {k: t.to(tdtype).contiguous() for k, t in sorted(tensors.items())}
    save_file(out, os.path.join(dirpath, "model.safetensors"), metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data"))
    args = ap.parse_args()

    tok = train_tokenizer()
    v = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = padded_vocab(v)
    tok_cfg = tokenizer_config(tok)
    body, lm_head = make_weights(vocab_size)

    write_model(os.path.join(args.out, "tiny-tied"), tok, tok_cfg, body, v, vocab_size, True, "float32")
    untied = dict(body, **{"lm_head.weight": lm_head})
    write_model(os.path.join(args.out, "tiny-untied"), tok, tok_cfg, untied, v, vocab_size, False, "float32")
    write_model(os.path.join(args.out, "tiny-untied-bf16"), tok, tok_cfg, untied, v, vocab_size, False, "bfloat16")
    print(f"V (tokenizer length) = {v}, vocab_size (embedding rows) = {vocab_size}")


if __name__ == "__main__":
    main()
