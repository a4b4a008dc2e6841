//! The fast bf16 path (activations rounded to bf16, on the CPU's best kernel family: AMX, AVX512-BF16,
//! AVX-512, AVX2 + FMA or portable; `LATENTMAS_CPU_GEMM` forces one) stays close to the exact path and keeps
//! batch = single: a row decodes the same tokens alone and in a batch.

use std::path::Path;

use latentmas::backend::cpu::bf16_gemm::Bf16Kernel;
use latentmas::backend::cpu::matmul::Precision;
use latentmas::engine::Engine;
use latentmas::kv::KvBudget;
use latentmas::sample::SamplingParams;

fn engine(prefill: Precision, decode: Precision) -> Engine {
    let mut e = Engine::open(Path::new("tests/data/tiny-untied-bf16"), KvBudget::Tokens(1024)).unwrap();
    e.prefill_precision = prefill;
    e.decode_precision = decode;
    e
}

const PROMPTS: [&[u32]; 3] = [&[5, 9, 13, 2, 77, 101, 3], &[40, 41, 42], &[7; 19]];

#[test]
fn fast_prefill_logits_stay_within_the_bf16_bound_of_the_exact_ones() {
    println!("bf16-activation kernel: {}", Bf16Kernel::selected().label());
    let mut exact = engine(Precision::Exact, Precision::Exact);
    let mut fast = engine(Precision::Bf16Activations, Precision::Exact);
    for p in PROMPTS {
        let mut logits = Vec::new();
        for e in [&mut exact, &mut fast] {
            e.kv.reset();
            let mut row = [e.kv.reserve(64).unwrap()];
            e.prefill(&mut row, &[p], true).unwrap();
            logits.push(e.ws.logits.clone());
        }
        let max = logits[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = logits[0].iter().zip(&logits[1]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // The README's bf16 bound (the same one the bf16-weight golden test uses).
        assert!(err <= 2e-2 * max.max(1.0) * 4.0, "max |exact - fast| = {err} (max |logit| {max})");
        assert!(err > 0.0, "the fast path should round something");
    }
}

#[test]
fn fast_prefill_and_decode_keep_batch_equal_to_single() {
    let params = SamplingParams::greedy();
    let mut e = engine(Precision::Bf16Activations, Precision::Bf16Activations);
    let run = |e: &mut Engine, prompts: &[&[u32]]| -> Vec<Vec<u32>> {
        e.kv.reset();
        let mut rows: Vec<_> = prompts.iter().map(|_| e.kv.reserve(64).unwrap()).collect();
        e.prefill(&mut rows, prompts, true).unwrap();
        e.decode(&mut rows, &params, 12, |_, _, _| {}).unwrap().into_iter().map(|d| d.ids).collect()
    };
    let batch = run(&mut e, &PROMPTS);
    for (i, p) in PROMPTS.iter().enumerate() {
        assert_eq!(run(&mut e, &[p]), vec![batch[i].clone()], "row {i}: alone ≠ in the batch");
    }
}

/// A small bf16 model with the real head dim (128): the blocked prefill attention runs on it (the tiny
/// fixtures' head dim 16 keeps them on the reference kernel).
fn head128_model() -> std::path::PathBuf {
    use latentmas::model::synth::{shape, write_checkpoint, SynthDtype};
    let dir = std::env::temp_dir().join(format!("latentmas-fast-head128-{}", std::process::id()));
    let mut cfg = shape("tiny").unwrap();
    cfg.head_dim = 128;
    write_checkpoint(&cfg, SynthDtype::Bf16, 7, &dir).unwrap();
    dir
}

#[test]
fn blocked_prefill_attention_stays_close_to_exact_and_keeps_batch_equal_to_single() {
    // The blocked attention needs AVX-512 (elsewhere the fast path keeps the reference attention); the
    // bf16-activation projections run on every CPU.
    println!("bf16-activation kernel: {}", Bf16Kernel::selected().label());
    let dir = head128_model();
    let open = |p: Precision| {
        let mut e = Engine::open(&dir, KvBudget::Tokens(1024)).unwrap();
        e.prefill_precision = p;
        e
    };
    let (mut exact, mut fast) = (open(Precision::Exact), open(Precision::Bf16Activations));
    let ids = |len: usize, s: usize| -> Vec<u32> { (0..len).map(|i| ((i * 7919 + s * 131) % 4000) as u32).collect() };
    // A 70-token prompt, then 37 more on top of it (a later agent's prefill over past context).
    let (first, second) = (ids(70, 1), ids(37, 2));
    let mut out = Vec::new();
    for e in [&mut exact, &mut fast] {
        e.kv.reset();
        let mut row = [e.kv.reserve(128).unwrap()];
        e.prefill(&mut row, &[&first], true).unwrap();
        let a = e.ws.logits.clone();
        e.prefill(&mut row, &[&second], true).unwrap();
        out.push((a, e.ws.logits.clone()));
    }
    for (x, y) in [(&out[0].0, &out[1].0), (&out[0].1, &out[1].1)] {
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = x.iter().zip(y).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 2e-2 * max.max(1.0) * 4.0, "max |exact - fast| = {err} (max |logit| {max})");
    }
    // batch = single: the long rows and a short one together, then each alone
    let prompts: [&[u32]; 3] = [&first, &[5, 6, 7], &second];
    let run = |e: &mut Engine, ps: &[&[u32]]| -> Vec<Vec<f32>> {
        e.kv.reset();
        let mut rows: Vec<_> = ps.iter().map(|_| e.kv.reserve(128).unwrap()).collect();
        e.prefill(&mut rows, ps, true).unwrap();
        let v = e.model.config.vocab_size;
        (0..ps.len()).map(|i| e.ws.logits_row(i, v).to_vec()).collect()
    };
    let batch = run(&mut fast, &prompts);
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(run(&mut fast, &[p]), vec![batch[i].clone()], "row {i}: alone ≠ in the batch");
    }
    std::fs::remove_dir_all(&dir).ok();
}
