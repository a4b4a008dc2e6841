//! The cpu forward against transformers' own Qwen3 (goldens from tools/golden.py; see
//! tests/data/golden/README.md for provenance, shapes and the tolerances used here).

mod common;

use std::path::Path;

use common::Golden;
use latentmas::kv::{KvBudget, KvBuffer};
use latentmas::model::qwen3::{Input, Qwen3, RowStep, Select, Workspace};
use latentmas::sample::argmax;

/// |rust − golden| bound for f32 logits, hidden states and K/V (values are O(1)).
const F32_TOL: f32 = 1e-5;

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (i, err) = got.iter().zip(want).map(|(a, b)| (a - b).abs()).enumerate().fold((0, 0f32), |acc, (i, e)| {
        if e > acc.1 {
            (i, e)
        } else {
            acc
        }
    });
    assert!(err <= tol, "{what}: max |diff| {err:e} at {i} (got {}, want {}) > {tol:e}", got[i], want[i]);
}

fn model(name: &str) -> Qwen3 {
    Qwen3::load(Path::new(&format!("tests/data/{name}"))).expect("load tiny model")
}

fn check_prefill_and_decode(name: &str) {
    let m = model(name);
    let g = Golden::load(name);
    let cfg = m.config.clone();
    let (d, vocab) = (cfg.hidden_size, cfg.vocab_size);
    let mut kv = KvBuffer::new(&cfg, KvBudget::Tokens(64)).unwrap();
    let mut ws = Workspace::default();
    ws.capture_layers = Some(Vec::new());
    let ids = g.ids("prefill.input_ids");
    let t = ids.len();
    let mut row = kv.reserve(32).unwrap();
    m.forward(
        &mut kv,
        &mut ws,
        &mut [RowStep { row: &mut row, input: Input::Tokens(&ids), select: Select::All }],
        true,
    )
    .unwrap();
    assert_close(&format!("{name} prefill.logits"), &ws.logits, &g.f32("prefill.logits"), F32_TOL);
    assert_close(&format!("{name} prefill.hidden.2 (final norm)"), &ws.hidden, &g.f32("prefill.hidden.2"), F32_TOL);
    let captured = ws.capture_layers.take().unwrap();
    // captured[0] = input of layer 0 (the embeddings), captured[1] = residual after layer 0.
    assert_eq!(captured[0], g.f32("prefill.hidden.0"), "{name}: embedding gather must be exact");
    assert_close(&format!("{name} prefill.hidden.1"), &captured[1], &g.f32("prefill.hidden.1"), F32_TOL);
    // KV: golden [kv_head, position, head_dim]; ours [slot, kv_head, head_dim].
    for layer in 0..cfg.num_hidden_layers {
        let (k, v) = kv.layer(layer);
        for (which, plane) in [("k", k), ("v", v)] {
            let want = g.f32(&format!("prefill.{which}.{layer}"));
            let (kvh, hd) = (cfg.num_key_value_heads, cfg.head_dim);
            let mut got = vec![0f32; want.len()];
            for h in 0..kvh {
                for p in 0..t {
                    for i in 0..hd {
                        got[(h * t + p) * hd + i] = plane[(row.slot_base + p) * kvh * hd + h * hd + i];
                    }
                }
            }
            assert_close(&format!("{name} prefill.{which}.{layer}"), &got, &want, F32_TOL);
        }
    }
    // Decode one token on top of the cache.
    let next = g.ids("decode.input_ids");
    m.forward(
        &mut kv,
        &mut ws,
        &mut [RowStep { row: &mut row, input: Input::Tokens(&next), select: Select::Last }],
        true,
    )
    .unwrap();
    assert_eq!(row.len, t + 1);
    assert_close(&format!("{name} decode.logits"), &ws.logits, &g.f32("decode.logits"), F32_TOL);
    assert_eq!(ws.hidden.len(), d);
    assert_eq!(ws.logits.len(), vocab);
}

fn check_embeddings_input(name: &str) {
    let m = model(name);
    let g = Golden::load(name);
    let mut kv = KvBuffer::new(&m.config, KvBudget::Tokens(16)).unwrap();
    let mut ws = Workspace::default();
    let inputs = g.f32("embeds.inputs");
    let mut row = kv.reserve(16).unwrap();
    m.forward(
        &mut kv,
        &mut ws,
        &mut [RowStep { row: &mut row, input: Input::Embeddings(&inputs), select: Select::All }],
        true,
    )
    .unwrap();
    assert_close(&format!("{name} embeds.logits"), &ws.logits, &g.f32("embeds.logits"), F32_TOL);
    assert_close(&format!("{name} embeds.final_hidden"), &ws.hidden, &g.f32("embeds.final_hidden"), F32_TOL);
}

fn check_greedy(name: &str) {
    let m = model(name);
    let g = Golden::load(name);
    let limit = 355; // V = len(tokenizer) of the tiny tokenizer; rows 355..383 are padding
    let mut kv = KvBuffer::new(&m.config, KvBudget::Tokens(64)).unwrap();
    let mut ws = Workspace::default();
    let prompt = g.ids("greedy.prompt_ids");
    let mut row = kv.reserve(64).unwrap();
    m.forward(
        &mut kv,
        &mut ws,
        &mut [RowStep { row: &mut row, input: Input::Tokens(&prompt), select: Select::Last }],
        true,
    )
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..16 {
        let id = argmax(&ws.logits, limit);
        got.push(id);
        m.forward(
            &mut kv,
            &mut ws,
            &mut [RowStep { row: &mut row, input: Input::Tokens(&[id]), select: Select::Last }],
            true,
        )
        .unwrap();
    }
    assert_eq!(got, g.ids("greedy.tokens"), "{name}: 16 greedy tokens");
}

#[test]
fn tied_prefill_decode_kv_match_transformers() {
    check_prefill_and_decode("tiny-tied");
}

#[test]
fn untied_prefill_decode_kv_match_transformers() {
    check_prefill_and_decode("tiny-untied");
}

#[test]
fn embedding_input_matches_transformers() {
    check_embeddings_input("tiny-tied");
    check_embeddings_input("tiny-untied");
}

#[test]
fn greedy_16_tokens_match_transformers() {
    check_greedy("tiny-tied");
    check_greedy("tiny-untied");
}

#[test]
fn bf16_weights_load_and_stay_close() {
    // tiny-untied-bf16 is tiny-untied rounded to bf16: no golden of its own; the README's bf16 bound is 2e-2.
    let m = model("tiny-untied-bf16");
    let g = Golden::load("tiny-untied");
    let mut kv = KvBuffer::new(&m.config, KvBudget::Tokens(16)).unwrap();
    let mut ws = Workspace::default();
    let ids = g.ids("prefill.input_ids");
    let mut row = kv.reserve(16).unwrap();
    m.forward(
        &mut kv,
        &mut ws,
        &mut [RowStep { row: &mut row, input: Input::Tokens(&ids), select: Select::All }],
        true,
    )
    .unwrap();
    let want = g.f32("prefill.logits");
    let max = want.iter().fold(0f32, |a, b| a.max(b.abs()));
    assert_close("bf16 logits", &ws.logits, &want, 2e-2 * max.max(1.0) * 4.0);
}
