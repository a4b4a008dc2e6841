//! Criterion benches of whole forward steps on a Qwen3-0.6B-shaped bf16 model (random weights,
//! synthesized once into the cache dir like `latentmas bench --shape qwen3-0.6b`; or the model in
//! `LATENTMAS_BENCH_MODEL`): a decode step at context 300 for batch 1 and 4 (throughput: weight bytes
//! streamed per step), and a latent step (no lm_head). The `forward_gpu` group runs the same steps on the
//! cuda device (graph replays after the first steps; every step ends with its outputs on the host, so the
//! GPU work is inside the timing), and prints SKIP without a device.
//!
//!     cargo bench --bench forward

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use latentmas::engine::{DeviceKind, Engine};
use latentmas::kv::{KvBudget, KvRow};
use latentmas::latent::Alignment;
use latentmas::model::qwen3::{Input, RowStep, Select};
use latentmas::model::synth::SynthDtype;
use latentmas::sample::argmax;
use latentmas_cli::bench::{synth_model, ModelCosts};

const CONTEXT: usize = 300;
/// Steps before a row is rewound to CONTEXT (its capacity is CONTEXT + this).
const WINDOW: usize = 64;

fn model() -> PathBuf {
    match std::env::var_os("LATENTMAS_BENCH_MODEL") {
        Some(p) => PathBuf::from(p),
        None => synth_model("qwen3-0.6b", SynthDtype::Bf16, None, |d| eprintln!("synthesizing {} (once)", d.display()))
            .expect("synthesize the bench model"),
    }
}

/// `batch` rows holding the same CONTEXT prompt tokens.
fn rows(engine: &mut Engine, batch: usize) -> Vec<KvRow> {
    engine.kv.reset();
    let mut rows: Vec<KvRow> = (0..batch).map(|_| engine.kv.reserve(CONTEXT + WINDOW).unwrap()).collect();
    let ids = latentmas_cli::bench::workloads::synthetic_ids(CONTEXT, engine.vocab_limit());
    let prompts: Vec<&[u32]> = (0..batch).map(|_| ids.as_slice()).collect();
    engine.prefill(&mut rows, &prompts, true).unwrap();
    rows
}

fn forward(c: &mut Criterion) {
    latentmas::engine::set_threads(None);
    steps(c, "forward", DeviceKind::Cpu);
}

fn gpu(c: &mut Criterion) {
    match latentmas::backend::cuda::probe() {
        Ok(_) => steps(c, "forward_gpu", DeviceKind::Cuda),
        Err(e) => println!("forward_gpu: SKIP (no CUDA device): {e}"),
    }
}

/// Decode steps (batch 1 and 4) and latent steps at context CONTEXT on `device`.
fn steps(c: &mut Criterion, group: &str, device: DeviceKind) {
    let mut engine = Engine::open_on(&model(), KvBudget::Tokens(4 * (CONTEXT + WINDOW)), device).unwrap();
    let costs = ModelCosts::of(&engine.model);
    let vocab = engine.model.config.vocab_size;
    let mut g = c.benchmark_group(group);
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    for batch in [1usize, 4] {
        let mut rows = rows(&mut engine, batch);
        let mut next = vec![1u32; batch];
        g.throughput(Throughput::Bytes(costs.decode_bytes as u64));
        g.bench_function(BenchmarkId::new("decode_step_ctx300", batch), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    if rows[0].len >= CONTEXT + WINDOW {
                        rows.iter_mut().for_each(|r| r.len = CONTEXT);
                    }
                    let mut steps: Vec<RowStep> = rows
                        .iter_mut()
                        .zip(&next)
                        .map(|(row, id)| RowStep {
                            row,
                            input: Input::Tokens(std::slice::from_ref(id)),
                            select: Select::Last,
                        })
                        .collect();
                    engine.forward(&mut steps, true).unwrap();
                    for (j, id) in next.iter_mut().enumerate() {
                        *id = argmax(engine.ws.logits_row(j, vocab), vocab);
                    }
                }
                t.elapsed()
            })
        });
    }
    let mut rows = rows(&mut engine, 1);
    let hidden = engine.ws.hidden.clone();
    let align = Alignment::identity(1.0);
    g.throughput(Throughput::Bytes(costs.latent_bytes as u64));
    g.bench_function("latent_step_ctx300", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let m = left.min(WINDOW);
                rows[0].len = CONTEXT;
                engine.ws.hidden.clone_from(&hidden);
                let t = Instant::now();
                engine.latent_steps(&mut rows, m, &align, |_, _| {}).unwrap();
                total += t.elapsed();
                left -= m;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, forward, gpu);
criterion_main!(benches);
