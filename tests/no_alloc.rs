//! A decode step allocates nothing once warm: neither `Qwen3::forward` (workspace, attention scores,
//! matmul buffers, the rayon fork-joins) nor `Engine::decode`'s loop. Counted by the library's global allocator (`latentmas::alloc_guard`).

use std::path::Path;

use latentmas::alloc_guard::count_allocations;
use latentmas::engine::Engine;
use latentmas::kv::KvBudget;
use latentmas::model::qwen3::{Input, RowStep, Select};
use latentmas::sample::{argmax, SamplingParams};

/// Allocations made while `f` runs (on any thread), counted by the library's global allocator.
fn allocations(f: impl FnOnce()) -> usize {
    count_allocations(f)
}

/// Decodes `steps` greedy tokens on two rows through `Qwen3::forward`.
fn forward_steps(engine: &mut Engine, rows: &mut [latentmas::kv::KvRow], next: &mut [u32], steps: usize) {
    let vocab = engine.model.config.vocab_size;
    for _ in 0..steps {
        let (a, b) = rows.split_at_mut(1);
        let mut s = [
            RowStep { row: &mut a[0], input: Input::Tokens(std::slice::from_ref(&next[0])), select: Select::Last },
            RowStep { row: &mut b[0], input: Input::Tokens(std::slice::from_ref(&next[1])), select: Select::Last },
        ];
        engine.model.forward(&mut engine.kv, &mut engine.ws, &mut s, true).unwrap();
        for (j, id) in next.iter_mut().enumerate() {
            *id = argmax(engine.ws.logits_row(j, vocab), vocab);
        }
    }
}

#[test]
fn warm_decode_steps_allocate_nothing() {
    // The engine's thread is a worker of the pool (as the CLI sets it up), so its parallel loops are not
    // injected from outside (rayon's injector queue allocates a block every 64 injections).
    latentmas::engine::set_threads(Some(2));
    // f32 and bf16 weights take different matmul paths (bf16 permutes the activations into a buffer).
    for model in ["tiny-untied", "tiny-untied-bf16"] {
        let mut engine = Engine::open(Path::new(&format!("tests/data/{model}")), KvBudget::Tokens(512)).unwrap();
        let mut rows = vec![engine.kv.reserve(200).unwrap(), engine.kv.reserve(200).unwrap()];
        let prompts: [&[u32]; 2] = [&[5, 9, 13, 2, 77], &[40, 41, 42]];
        engine.prefill(&mut rows, &prompts, true).unwrap();
        let mut next = [1u32, 2];
        forward_steps(&mut engine, &mut rows, &mut next, 3);
        let n = allocations(|| forward_steps(&mut engine, &mut rows, &mut next, 20));
        assert_eq!(n, 0, "{model}: 20 warm two-row forward steps allocated {n} times");

        // Engine::decode allocates its buffers once per call, never per token.
        let mut decode = |max_new: usize| {
            engine.kv.reset();
            let mut rows = vec![engine.kv.reserve(100).unwrap(), engine.kv.reserve(100).unwrap()];
            engine.prefill(&mut rows, &prompts, true).unwrap();
            let params = SamplingParams::greedy();
            let mut produced = 0;
            let n = allocations(|| {
                produced =
                    engine.decode(&mut rows, &params, max_new, |_, _, _| {}).unwrap().iter().map(|d| d.ids.len()).sum();
            });
            (n, produced)
        };
        decode(4);
        let (short, made_short) = decode(4);
        let (long, made_long) = decode(24);
        assert!(made_long > made_short, "{model}: the longer decode should produce more tokens");
        assert_eq!(
            short, long,
            "{model}: decode allocated {short} times for {made_short} tokens, {long} for {made_long}"
        );
    }
}
