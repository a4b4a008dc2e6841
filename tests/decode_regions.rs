//! How many parallel regions (fork-joins on the rayon pool) one cpu decode step opens. Each region costs
//! a wake-up of every pool thread and a wait for the slowest, so a decode step must open as few as it can;
//! this pins the count so that a change adding one is seen (and a change removing one updates it here).

use std::path::Path;

use latentmas::backend::cpu::parallel_regions;
use latentmas::kv::{KvBudget, KvBuffer};
use latentmas::model::matrix::WeightData;
use latentmas::model::qwen3::{Input, Qwen3, RowStep, Select, Workspace};

/// Regions of one decoder layer at decode (one token):
/// 1. the attention block: q|k|v projection, q/k norm, RoPE, KV write and attention, fused (each task owns
///    a block of kv heads: their q, k, v rows, then attention of their q heads);
/// 2. the output projection (its residual add and the post-attention norm run on the calling thread);
/// 3. the fused gate|up projection (SwiGLU of one token runs on the calling thread);
/// 4. the down projection (its residual add is fused into the next layer's norm, on the calling thread).
///
/// The projections cannot share a region: each reads all of the previous one's output.
const REGIONS_PER_LAYER: u64 = 4;
/// Regions after the last layer: the lm_head projection (the final norm runs on the calling thread).
const REGIONS_AFTER_LAYERS: u64 = 1;

/// Regions opened by each of a few decode steps after a prefill, on a pool of `threads` threads.
fn regions_per_decode_step(name: &str, threads: usize) -> (usize, Vec<u64>) {
    let m = Qwen3::load(Path::new(&format!("tests/data/{name}"))).expect("load tiny model");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut kv = KvBuffer::new(&m.config, KvBudget::Tokens(64)).unwrap();
        let mut ws = Workspace::default();
        let mut row = kv.reserve(32).unwrap();
        let prompt = [1u32, 7, 42, 99, 3];
        let step = |kv: &mut KvBuffer, ws: &mut Workspace, row: &mut _, ids: &[u32]| {
            m.forward(kv, ws, &mut [RowStep { row, input: Input::Tokens(ids), select: Select::Last }], true).unwrap()
        };
        step(&mut kv, &mut ws, &mut row, &prompt);
        // The first decode step may size per-thread buffers once (a broadcast region); count the later ones.
        step(&mut kv, &mut ws, &mut row, &[5]);
        let counts = (0..3u32)
            .map(|i| {
                let before = parallel_regions();
                step(&mut kv, &mut ws, &mut row, &[10 + i]);
                parallel_regions() - before
            })
            .collect();
        (m.config.num_hidden_layers, counts)
    })
}

#[test]
fn a_decode_step_opens_a_fixed_number_of_parallel_regions() {
    for name in ["tiny-untied", "tiny-untied-bf16"] {
        for threads in [1, 2, 3] {
            let (layers, counts) = regions_per_decode_step(name, threads);
            let want = layers as u64 * REGIONS_PER_LAYER + REGIONS_AFTER_LAYERS;
            assert!(layers > 0, "{name}: the model must have layers for the count to mean anything");
            for (i, &got) in counts.iter().enumerate() {
                assert_eq!(
                    got, want,
                    "{name}, {threads} threads, decode step {i}: {got} parallel regions, want {want} \
                     ({layers} layers × {REGIONS_PER_LAYER} + {REGIONS_AFTER_LAYERS})"
                );
            }
        }
    }
    // The bf16 model really has bf16 weights (so both weight types are pinned).
    let m = Qwen3::load(Path::new("tests/data/tiny-untied-bf16")).unwrap();
    assert!(matches!(m.weights.layers[0].qkv.data, WeightData::Bf16(_)));
}
