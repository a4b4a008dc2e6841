//! Criterion benches of the cpu ops, each reporting its rate: matmul as weight bytes/s (GEMV, the decode
//! case) or FLOP/s (GEMM, reported by criterion as "elements/s" with one element = one FLOP), attention
//! as KV bytes/s, RMSNorm as bytes/s. Shapes are Qwen3-0.6B's. The `kernels` group times each of our CUDA
//! kernels alone on a GPU (`backend::gpu::microbench`: bytes/s against the least traffic a launch needs; the
//! copy bandwidth of `latentmas bench --device cuda` is the ceiling) and prints SKIP without a device.
//!
//!     cargo bench --bench ops                 # everything
//!     cargo bench --bench ops -- gemv         # one group

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use latentmas::backend::cpu::attention::{attention, AttnShape, AttnSpan};
use latentmas::backend::cpu::matmul::{matmul_with, Precision};
use latentmas::backend::cpu::norm::add_rms_norm;
use latentmas::backend::cpu::prefill_attention::{attention_rows, blocked_isa};
use latentmas::kernels::Row;
use latentmas::model::matrix::WeightMatrix;

/// (name, output features m, input features k) of the Qwen3-0.6B projections.
const SHAPES: &[(&str, usize, usize)] = &[("qkv", 4096, 1024), ("gate_up", 6144, 1024), ("down", 1024, 3072)];

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 9) % 2001) as f32 / 1e5 - 0.01)
        .collect()
}

fn weights(m: usize, k: usize, bf: bool) -> WeightMatrix {
    let v = values(m * k, 7);
    if bf {
        WeightMatrix::bf16(m, k, v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>())
    } else {
        WeightMatrix::f32(m, k, v)
    }
}

/// Distinct bf16 weights per layer (a cheap pattern: the stream bench needs bytes, not realism).
fn weights_seeded(m: usize, k: usize, seed: usize) -> WeightMatrix {
    let v: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32(((i + seed) % 97) as f32 / 1e4 - 0.005)).collect();
    WeightMatrix::bf16(m, k, v)
}

fn gemv(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemv");
    g.sample_size(20);
    for &(name, m, k) in SHAPES {
        for bf in [true, false] {
            let w = weights(m, k, bf);
            let x = values(k, 1);
            let mut y = vec![0f32; m];
            g.throughput(Throughput::Bytes(w.bytes() as u64));
            let id = BenchmarkId::new(if bf { "bf16" } else { "f32" }, name);
            g.bench_function(id, |b| b.iter(|| matmul_with(black_box(&x), 1, &w, &mut y, Precision::Exact)));
        }
    }
    g.finish();
}

/// The decode case for real: a whole Qwen3-0.6B step's projections (28 layers, 881 MB of bf16), far beyond
/// any last-level cache, so every weight byte comes from memory as it does in `latentmas generate`.
/// Compare its GB/s with the read-only stream ceiling of `latentmas bench`.
fn gemv_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemv_stream");
    g.sample_size(10);
    let layers: Vec<Vec<WeightMatrix>> = (0..28)
        .map(|l| SHAPES.iter().chain([("o", 1024, 2048)].iter()).map(|&(_, m, k)| weights_seeded(m, k, l)).collect())
        .collect();
    let bytes: usize = layers.iter().flatten().map(|w| w.bytes()).sum();
    let x = values(3072, 1);
    let mut y = vec![0f32; 6144];
    g.throughput(Throughput::Bytes(bytes as u64));
    for (label, p) in [("exact", Precision::Exact), ("bf16-act", Precision::Bf16Activations)] {
        g.bench_function(BenchmarkId::new("28-layers", label), |b| {
            b.iter(|| {
                for w in layers.iter().flatten() {
                    matmul_with(black_box(&x[..w.cols]), 1, w, &mut y[..w.rows], p);
                }
            })
        });
    }
    // The tied lm_head of the same model (311 MB, one matrix of 151936 rows).
    let head = weights_seeded(151_936, 1024, 0);
    let mut logits = vec![0f32; head.rows];
    g.throughput(Throughput::Bytes(head.bytes() as u64));
    for (label, p) in [("exact", Precision::Exact), ("bf16-act", Precision::Bf16Activations)] {
        g.bench_function(BenchmarkId::new("lm_head", label), |b| {
            b.iter(|| matmul_with(black_box(&x[..1024]), 1, &head, &mut logits, p))
        });
    }
    g.finish();
}

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    for &(name, m, k) in SHAPES {
        let w = weights(m, k, true);
        for n in [4usize, 16, 256] {
            let x = values(n * k, 2);
            let mut y = vec![0f32; n * m];
            g.throughput(Throughput::Elements((2 * n * m * k) as u64));
            for (label, p) in [("exact", Precision::Exact), ("bf16-act", Precision::Bf16Activations)] {
                let id = BenchmarkId::new(format!("bf16-weights/{label}/n{n}"), name);
                g.bench_function(id, |b| b.iter(|| matmul_with(black_box(&x), n, &w, &mut y, p)));
            }
        }
    }
    g.finish();
}

fn attn(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(20);
    let shape = AttnShape { n_heads: 16, n_kv_heads: 8, head_dim: 128 };
    let width = shape.n_kv_heads * shape.head_dim;
    for (label, tokens, ctx) in
        [("decode/ctx300", 1usize, 300usize), ("decode/ctx2000", 1, 2000), ("prefill/256", 256, 256)]
    {
        let k = values(ctx * width, 3);
        let v = values(ctx * width, 4);
        let q = values(tokens * shape.n_heads * shape.head_dim, 5);
        let mut out = vec![0f32; q.len()];
        let spans: Vec<AttnSpan> = (0..tokens).map(|t| AttnSpan { slot_base: 0, len: ctx - tokens + t + 1 }).collect();
        let read: usize = spans.iter().map(|s| 2 * s.len * width * 4).sum();
        g.throughput(Throughput::Bytes(read as u64));
        g.bench_function(label, |b| b.iter(|| attention(black_box(&q), &k, &v, &spans, shape, &mut out)));
        if tokens > 1 {
            // the blocked kernel of the fast prefill (where the CPU has it; the reference otherwise)
            let rows = [Row {
                q_start: 0,
                q_len: tokens as u32,
                slot_base: 0,
                past_len: (ctx - tokens) as u32,
                pos_base: 0,
                _pad: 0,
            }];
            let mut kt = Vec::new();
            let id = format!("{label}/blocked-{}", blocked_isa(shape).map_or("none".into(), |i| format!("{i:?}")));
            g.bench_function(id, |b| {
                b.iter(|| attention_rows(black_box(&q), &k, &v, &rows, &spans, shape, &mut out, &mut kt))
            });
        }
    }
    g.finish();
}

fn rmsnorm(c: &mut Criterion) {
    let mut g = c.benchmark_group("rmsnorm");
    let d = 1024;
    let w = values(d, 6);
    for n in [1usize, 256] {
        let mut res = values(n * d, 8);
        let delta = values(n * d, 9);
        let mut out = vec![0f32; n * d];
        g.throughput(Throughput::Bytes((3 * n * d * 4) as u64));
        g.bench_function(BenchmarkId::new("add_rms_norm", n), |b| {
            b.iter(|| add_rms_norm(black_box(&mut res), &delta, &w, 1e-6, &mut out))
        });
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    use latentmas::backend::cuda::{probe, CudaDevice};
    use latentmas::backend::gpu::{microbench::kernel_cases, Device};
    if let Err(e) = probe() {
        println!("kernels: SKIP (no CUDA device): {e}");
        return;
    }
    let mut dev = CudaDevice::open().expect("open the CUDA device");
    let cfg = latentmas::model::synth::shape("qwen3-0.6b").unwrap();
    let cases = kernel_cases(&mut dev, &cfg, 256, 300, 16).expect("allocate the kernel cases");
    let mut g = c.benchmark_group("kernels");
    g.sample_size(20);
    for case in &cases {
        g.throughput(Throughput::Bytes(case.bytes));
        g.bench_function(case.name.as_str(), |b| {
            // launches are asynchronous: time a batch of them up to the stream's end
            b.iter_custom(|iters| {
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    case.launch(&mut dev).unwrap();
                }
                dev.synchronize().unwrap();
                t.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gemv, gemv_stream, gemm, attn, rmsnorm, kernels);
criterion_main!(benches);
