//! `latentmas bench`: the machine's ceilings and the engine's workloads, measured side by side in one
//! process, each with its share of the roofline, as a table and as JSON (see [`BenchReport`]).
//!
//! Operations: [`run`] (everything, on an open [`Engine`]), [`synth_model`] (a cached random-weight
//! checkpoint of a real shape), [`BenchReport::table`],
//! [`compare_table`] (ours vs other engines' reports with the same keys: `tools/bench_transformers.py`,
//! `tools/bench_llamacpp.sh`; plus the per-question row of `tools/bench_reference.sh`, which timed both).
//!
//! Rooflines: decode and latent steps stream their weights once per step, so their floor is
//! `weight bytes / stream bandwidth` (the best read-only stream on the engine's threads); prefill is compute bound, so its floor is `FLOPs / peak FLOP/s` of the
//! arithmetic it uses (AMX tiles for the fast bf16 prefill, f32 FMAs for the exact one); an end-to-end
//! question's floor is the sum of its phases' floors.

pub mod roofline;
pub mod stats;
pub mod workloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::table::{self, Align::Left, Align::Right};
use latentmas::backend::cpu::bf16_gemm::Bf16Kernel;
use latentmas::backend::cpu::matmul::{ExactKernel, Precision};
use latentmas::engine::{Device, Engine};
use latentmas::error::Result;
use latentmas::latent::Alignment;
use latentmas::mas::method::Method;
use latentmas::model::matrix::WeightData;
use latentmas::model::qwen3::Qwen3;
use latentmas::model::synth::{self, SynthDtype};
use roofline::Ceilings;
use stats::Stats;
use workloads::TokenCounts;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Timed runs per row (after one warm-up run).
    pub runs: usize,
    /// Prompt length of the prefill row.
    pub prefill_tokens: usize,
    /// Context length the decode and latent rows run at.
    pub context: usize,
    /// Batch sizes of the decode rows.
    pub batches: Vec<usize>,
    /// Steps per timed decode / latent run.
    pub steps: usize,
    /// m of the end-to-end LatentMAS row.
    pub latent_steps: usize,
    /// New tokens per decoding agent in the end-to-end rows.
    pub new_tokens: usize,
    /// Run the end-to-end rows.
    pub end_to_end: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            runs: 5,
            prefill_tokens: 256,
            context: 300,
            batches: vec![1, 4, 16],
            steps: 8,
            latent_steps: 10,
            new_tokens: 32,
            end_to_end: true,
        }
    }
}

/// Work per step of the model, for the rooflines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ModelCosts {
    /// Bytes a decode step streams: every layer matrix and the lm_head.
    pub decode_bytes: usize,
    /// Bytes a latent step streams: the layer matrices (no lm_head).
    pub latent_bytes: usize,
    /// FLOPs per prompt token through the layer matrices (2 per weight).
    pub flops_per_token: f64,
    /// FLOPs of the lm_head for one position.
    pub lm_head_flops: f64,
    /// Attention FLOPs per (query, visible key) pair over all layers: q·k and p·v, 2·2·H·d.
    pub attn_flops_per_pair: f64,
}

impl ModelCosts {
    pub fn of(model: &Qwen3) -> Self {
        let w = &model.weights;
        let layer_elems: usize = w
            .layers
            .iter()
            .map(|l| [&l.qkv, &l.o_proj, &l.gate_up, &l.down].iter().map(|m| m.rows * m.cols).sum::<usize>())
            .sum();
        let head = w.lm_head();
        let decode_bytes = w.decode_bytes();
        let c = &model.config;
        ModelCosts {
            decode_bytes,
            latent_bytes: decode_bytes - head.bytes(),
            flops_per_token: 2.0 * layer_elems as f64,
            lm_head_flops: 2.0 * (head.rows * head.cols) as f64,
            attn_flops_per_pair: (4 * c.num_attention_heads * c.head_dim * c.num_hidden_layers) as f64,
        }
    }

    /// FLOPs of prefilling `n` tokens on an empty row, logits for the last one.
    pub fn prefill_flops(&self, n: usize) -> f64 {
        let pairs = (n * (n + 1) / 2) as f64;
        n as f64 * self.flops_per_token + pairs * self.attn_flops_per_pair + self.lm_head_flops
    }

    /// Lower bound on an end-to-end run: prompts at peak FLOP/s, latent and decode steps at bandwidth.
    pub fn end_to_end_floor_s(&self, t: &TokenCounts, peak_flops: f64, bytes_per_s: f64) -> f64 {
        t.prompt_tokens as f64 * self.flops_per_token / peak_flops
            + (t.latent_steps * self.latent_bytes + t.generated_tokens * self.decode_bytes) as f64 / bytes_per_s
    }
}

/// One measured row: what the table shows and `--compare` matches on (by `key`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// JSON key of the row's median, dotted for nested objects (`decode_ms_per_token.4`).
    pub key: String,
    pub label: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub stats: Stats,
    /// Share of the roofline this row reaches (None for the ceilings themselves).
    pub roofline_pct: Option<f64>,
}

/// Everything `latentmas bench` measured. Serialised as the JSON report; the top-level keys
/// `bandwidth_gbs`, `prefill_tok_s`, `decode_ms_per_token` ({"1","4","16"}), `latent_step_ms`,
/// `decode_roofline_pct` and `end_to_end_s` (keyed by method) are the contract shared with
/// `tools/bench_transformers.py`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub engine: String,
    pub model: String,
    pub device: String,
    pub threads: usize,
    pub runs: usize,
    /// `/proc/loadavg` (1, 5, 15 min) before and after the run: other work on the machine skews timings.
    pub load_avg_before: Option<[f64; 3]>,
    pub load_avg_after: Option<[f64; 3]>,
    pub costs: ModelCosts,
    pub ceilings: Ceilings,
    pub bandwidth_gbs: f64,
    pub read_bandwidth_gbs: f64,
    /// The decode rooflines' bandwidth: the best read-only stream of the runs, GB/s.
    #[serde(default)]
    pub stream_gbs: f64,
    pub peak_gflops: f64,
    pub peak_bf16_gflops: Option<f64>,
    pub peak_amx_gflops: Option<f64>,
    /// The arithmetic of the prefill rows and the kernel family that ran it: "bf16 activations, AMX tiles",
    /// "bf16 activations, AVX2+FMA", "exact f32, AVX2+FMA", ...
    pub prefill_precision: String,
    pub prefill_tok_s: f64,
    pub prefill_roofline_pct: f64,
    /// Prefill with exact f32 activations (when the default is the fast path).
    pub prefill_exact_tok_s: Option<f64>,
    /// Loading the model and tokenizer again, the checkpoint in the page cache (0 in older reports).
    #[serde(default)]
    pub load_ms: f64,
    pub ttft_ms: f64,
    pub ttft_prompt_tokens: usize,
    /// Milliseconds per decode step (each row of the batch gains one token), keyed by batch size.
    pub decode_ms_per_token: BTreeMap<String, f64>,
    /// Tokens per second over all rows, keyed by batch size.
    pub decode_tok_s: BTreeMap<String, f64>,
    /// Batch 1.
    pub decode_roofline_pct: f64,
    pub decode_roofline_pct_by_batch: BTreeMap<String, f64>,
    /// The opt-in fast decode (`Engine::decode_precision = Bf16Activations`), keyed by batch size.
    pub decode_fast_ms_per_token: BTreeMap<String, f64>,
    pub latent_step_ms: f64,
    pub latent_roofline_pct: f64,
    /// Seconds for one question, keyed by method (`single`, `text`, `latent`).
    pub end_to_end_s: BTreeMap<String, f64>,
    pub end_to_end_roofline_pct: BTreeMap<String, f64>,
    pub end_to_end_tokens: BTreeMap<String, TokenCounts>,
    pub rows: Vec<Row>,
}

pub use latentmas::cache::cache_dir;

/// A random-weight checkpoint of `shape` (see [`latentmas::model::synth::shape`]) in `cache` (default
/// [`cache_dir`]), synthesized on first use (seed 0) and reused after. `on_synth` is told when it has to
/// be written (seconds, a 1.2 GB file for qwen3-0.6b).
pub fn synth_model(
    shape: &str,
    dtype: SynthDtype,
    cache: Option<&Path>,
    on_synth: impl FnOnce(&Path),
) -> Result<PathBuf> {
    let cfg = synth::shape(shape)?;
    let tag = if dtype == SynthDtype::Bf16 { "bf16" } else { "f32" };
    let dir = cache.map(Path::to_path_buf).unwrap_or_else(cache_dir).join(format!("synth-{shape}-{tag}-seed0"));
    // model.safetensors is written last (under a temporary name, then renamed): its presence means complete.
    if !dir.join("model.safetensors").exists() {
        on_synth(&dir);
        synth::write_checkpoint(&cfg, dtype, 0, &dir)?;
    }
    Ok(dir)
}

/// `/proc/loadavg`, if readable.
pub fn load_avg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = text.split_whitespace().take(3).filter_map(|s| s.parse().ok()).collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

/// Runs every row on `engine` (whose KV buffer must hold `needed_slots(engine, opts)` tokens).
/// `progress` is told what is about to run.
pub fn run(engine: &mut Engine, opts: &BenchOptions, mut progress: impl FnMut(&str)) -> Result<BenchReport> {
    let load_before = load_avg();
    let runs = opts.runs.max(1);
    let costs = ModelCosts::of(&engine.model);
    let mut rows = Vec::new();

    progress("memory bandwidth and peak FLOP/s");
    let on_gpu = matches!(engine.device, Device::Cuda(_));
    let ceilings = match &mut engine.device {
        Device::Cuda(m) => gpu_ceilings(m, runs)?,
        _ => roofline::measure(runs),
    };
    // Decode and latent steps are judged against the read-only stream at the engine's thread count, best
    // of the runs: what the machine can really stream (a triad's writes cost more than a weight stream's
    // reads, and its median is a noisy neighbour's figure), as the fastest engines measure it.
    let bw = ceilings.read_gbs.max * 1e9;
    let peak = ceilings.f32_gflops.median * 1e9;
    if on_gpu {
        rows.push(row(
            "bandwidth_gbs",
            "HBM bandwidth (device copy, read + write)",
            "GB/s",
            true,
            ceilings.triad_gbs,
            None,
        ));
        rows.push(row("peak_gflops", "peak bf16 GEMM (cuBLAS 8192³)", "GFLOP/s", true, ceilings.f32_gflops, None));
    } else {
        rows.push(row("bandwidth_gbs", "memory bandwidth (triad)", "GB/s", true, ceilings.triad_gbs, None));
        rows.push(row("read_bandwidth_gbs", "memory bandwidth (read only)", "GB/s", true, ceilings.read_gbs, None));
        let best = ceilings.read_gbs.map(|_| ceilings.read_gbs.max);
        let label = format!("memory stream ceiling (read only, best of {})", ceilings.read_gbs.runs);
        rows.push(row("stream_gbs", &label, "GB/s", true, best, None));
        rows.push(row("peak_gflops", "peak f32 FMA", "GFLOP/s", true, ceilings.f32_gflops, None));
    }
    if let Some(s) = ceilings.bf16_gflops {
        rows.push(row("peak_bf16_gflops", "peak bf16 dot (AVX512-BF16)", "GFLOP/s", true, s, None));
    }
    if let Some(s) = ceilings.amx_gflops {
        rows.push(row("peak_amx_gflops", "peak bf16 tiles (AMX)", "GFLOP/s", true, s, None));
    }

    // Prefill runs at the engine's precision; its ceiling is that arithmetic's peak.
    let precision = engine.prefill_precision;
    let fast = !on_gpu
        && precision == Precision::Bf16Activations
        && matches!(engine.model.weights.layers.first().map(|l| &l.qkv.data), Some(WeightData::Bf16(_)));
    // The bf16-activation kernel family that runs (chosen at run time, or forced by LATENTMAS_CPU_GEMM).
    let kernel = Bf16Kernel::selected();
    let prefill_peak = match (fast, kernel, ceilings.amx_gflops) {
        (true, Bf16Kernel::Amx, Some(a)) => a.median * 1e9,
        (true, Bf16Kernel::Avx512Bf16, _) => ceilings.bf16_gflops.map_or(peak, |s| s.median * 1e9),
        _ => peak,
    };
    let precision_label = match (on_gpu, fast) {
        (true, _) => "bf16, cuBLAS + kernels".to_string(),
        (false, true) => format!("bf16 activations, {}", kernel.label()),
        (false, false) => format!("exact f32, {}", ExactKernel::detect().name()),
    };
    progress("prefill");
    let n = opts.prefill_tokens;
    let ids = workloads::synthetic_ids(n, engine.vocab_limit());
    let s = workloads::prefill(engine, &ids, runs)?;
    let prefill = s.map(|t| n as f64 / t);
    let prefill_pct = 100.0 * costs.prefill_flops(n) / prefill_peak / s.median;
    let label = format!("prefill {n} tokens ({precision_label})");
    rows.push(row("prefill_tok_s", &label, "tok/s", true, prefill, Some(prefill_pct)));
    let mut prefill_exact = None;
    if fast {
        progress("prefill, exact f32");
        engine.prefill_precision = Precision::Exact;
        let s = workloads::prefill(engine, &ids, runs);
        engine.prefill_precision = precision;
        let s = s?;
        let pct = 100.0 * costs.prefill_flops(n) / peak / s.median;
        let r = s.map(|t| n as f64 / t);
        let label = format!("prefill {n} tokens (exact f32, {})", ExactKernel::detect().name());
        rows.push(row("prefill_exact_tok_s", &label, "tok/s", true, r, Some(pct)));
        prefill_exact = Some(r.median);
    }

    progress("model and tokenizer load");
    let load = workloads::load(&engine.model_dir, runs)?.map(|t| t * 1e3);
    rows.push(row("load_ms", "model + tokenizer load (warm page cache)", "ms", false, load, None));

    progress("time to first token");
    let (s, ttft_tokens) = workloads::ttft(engine, runs)?;
    let ttft_pct = 100.0 * costs.prefill_flops(ttft_tokens) / prefill_peak / s.median;
    let ttft = s.map(|t| t * 1e3);
    rows.push(row("ttft_ms", &format!("TTFT ({ttft_tokens}-token chat prompt)"), "ms", false, ttft, Some(ttft_pct)));

    let ctx = opts.context;
    let mut decode_ms = BTreeMap::new();
    let mut decode_tok_s = BTreeMap::new();
    let mut decode_pct = BTreeMap::new();
    for &b in &opts.batches {
        progress(&format!("decode, batch {b}"));
        let s = workloads::decode(engine, b, ctx, opts.steps, runs)?;
        let pct = 100.0 * costs.decode_bytes as f64 / bw / s.median;
        let ms = s.map(|t| t * 1e3);
        rows.push(row(
            &format!("decode_ms_per_token.{b}"),
            &format!("decode batch {b} @ctx {ctx} (ms/step)"),
            "ms",
            false,
            ms,
            Some(pct),
        ));
        decode_ms.insert(b.to_string(), ms.median);
        decode_tok_s.insert(b.to_string(), b as f64 / s.median);
        decode_pct.insert(b.to_string(), pct);
    }

    // The opt-in fast decode (bf16 activations on AMX) at the smallest and largest batch.
    let mut decode_fast_ms = BTreeMap::new();
    if fast {
        let saved = engine.decode_precision;
        engine.decode_precision = Precision::Bf16Activations;
        for &b in [opts.batches.first(), opts.batches.last()].into_iter().flatten() {
            if decode_fast_ms.contains_key(&b.to_string()) {
                continue;
            }
            progress(&format!("decode, batch {b}, bf16 activations"));
            let s = workloads::decode(engine, b, ctx, opts.steps, runs);
            let s = match s {
                Ok(s) => s,
                Err(e) => {
                    engine.decode_precision = saved;
                    return Err(e);
                }
            };
            let pct = 100.0 * costs.decode_bytes as f64 / bw / s.median;
            let ms = s.map(|t| t * 1e3);
            rows.push(row(
                &format!("decode_fast_ms_per_token.{b}"),
                &format!("decode batch {b} @ctx {ctx}, bf16 activations ({})", kernel.label()),
                "ms",
                false,
                ms,
                Some(pct),
            ));
            decode_fast_ms.insert(b.to_string(), ms.median);
        }
        engine.decode_precision = saved;
    }

    progress("latent steps");
    let align = Alignment::identity(Alignment::target_norm(&engine.model, engine.vocab_limit()));
    let s = workloads::latent_step(engine, &align, ctx, opts.steps, runs)?;
    let latent_pct = 100.0 * costs.latent_bytes as f64 / bw / s.median;
    let latent = s.map(|t| t * 1e3);
    rows.push(row("latent_step_ms", &format!("latent step @ctx {ctx}"), "ms", false, latent, Some(latent_pct)));

    let mut e2e = BTreeMap::new();
    let mut e2e_pct = BTreeMap::new();
    let mut e2e_tokens = BTreeMap::new();
    if opts.end_to_end {
        for &m in Method::ALL {
            progress(&format!("end to end: {m}"));
            let (s, t) = workloads::end_to_end(engine, &align, m, opts.latent_steps, opts.new_tokens, runs)?;
            let pct = 100.0 * costs.end_to_end_floor_s(&t, prefill_peak, bw) / s.median;
            let label = format!(
                "one question, {m} ({} prompt + {} latent + {} new tokens)",
                t.prompt_tokens, t.latent_steps, t.generated_tokens
            );
            rows.push(row(&format!("end_to_end_s.{m}"), &label, "s", false, s, Some(pct)));
            e2e.insert(m.to_string(), s.median);
            e2e_pct.insert(m.to_string(), pct);
            e2e_tokens.insert(m.to_string(), t);
        }
    }
    engine.kv.reset();

    Ok(BenchReport {
        engine: "latentmas".into(),
        model: engine.model_dir.display().to_string(),
        device: if on_gpu { "cuda" } else { "cpu" }.into(),
        threads: rayon::current_num_threads(),
        runs,
        load_avg_before: load_before,
        load_avg_after: load_avg(),
        costs,
        bandwidth_gbs: ceilings.triad_gbs.median,
        read_bandwidth_gbs: ceilings.read_gbs.median,
        stream_gbs: bw / 1e9,
        peak_gflops: ceilings.f32_gflops.median,
        peak_bf16_gflops: ceilings.bf16_gflops.map(|s| s.median),
        peak_amx_gflops: ceilings.amx_gflops.map(|s| s.median),
        ceilings,
        prefill_precision: precision_label,
        prefill_tok_s: prefill.median,
        prefill_exact_tok_s: prefill_exact,
        prefill_roofline_pct: prefill_pct,
        load_ms: load.median,
        ttft_ms: ttft.median,
        ttft_prompt_tokens: ttft_tokens,
        decode_roofline_pct: decode_pct.get("1").copied().unwrap_or(f64::NAN),
        decode_ms_per_token: decode_ms,
        decode_tok_s,
        decode_roofline_pct_by_batch: decode_pct,
        decode_fast_ms_per_token: decode_fast_ms,
        latent_step_ms: latent.median,
        latent_roofline_pct: latent_pct,
        end_to_end_s: e2e,
        end_to_end_roofline_pct: e2e_pct,
        end_to_end_tokens: e2e_tokens,
        rows,
    })
}

/// KV slots [`run`] needs for `opts`.
pub fn needed_slots(engine: &Engine, opts: &BenchOptions) -> Result<usize> {
    let batch = opts.batches.iter().copied().max().unwrap_or(1);
    let mut need = (opts.context + opts.steps).max(opts.prefill_tokens) * batch.max(1);
    if opts.end_to_end {
        need = need.max(workloads::e2e_slots(engine, opts.latent_steps, opts.new_tokens)?);
    }
    Ok(need.max(opts.prefill_tokens + 1))
}

fn row(key: &str, label: &str, unit: &str, higher: bool, stats: Stats, pct: Option<f64>) -> Row {
    Row { key: key.into(), label: label.into(), unit: unit.into(), higher_is_better: higher, stats, roofline_pct: pct }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_load(l: Option<[f64; 3]>) -> String {
    l.map_or("n/a".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
}

impl BenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "latentmas bench: {} on {} ({} threads), median of {} runs [min, max]\n\
             weights streamed per decode step {:.3} GB; load average before {} / after {}\n\n",
            self.model,
            self.device,
            self.threads,
            self.runs,
            self.costs.decode_bytes as f64 / 1e9,
            fmt_load(self.load_avg_before),
            fmt_load(self.load_avg_after),
        );
        let mut t = table::with_header(&[
            ("row", Left),
            ("median", Right),
            ("min", Right),
            ("max", Right),
            ("unit", Left),
            ("% roofline", Right),
        ]);
        for r in &self.rows {
            t.add_row(vec![
                r.label.clone(),
                fmt_num(r.stats.median),
                fmt_num(r.stats.min),
                fmt_num(r.stats.max),
                r.unit.clone(),
                r.roofline_pct.map_or(String::new(), |p| format!("{p:.0} %")),
            ]);
        }
        s += &table::render(&t);
        if let (Some(t1), Some(t16)) = (self.decode_tok_s.get("1"), self.decode_tok_s.get("16")) {
            s += &format!("\ndecode throughput: batch 16 = {:.1}× batch 1 ({:.1} vs {:.1} tok/s)", t16 / t1, t16, t1);
            if let (Some(f1), Some(f16)) =
                (self.decode_fast_ms_per_token.get("1"), self.decode_fast_ms_per_token.get("16"))
            {
                let (r1, r16) = (1e3 / f1, 16e3 / f16);
                s += &format!(
                    "; with bf16 activations: batch 16 = {:.1}× batch 1 ({r16:.1} vs {r1:.1} tok/s), {:.1}× exact batch 1",
                    r16 / r1,
                    r16 / t1
                );
            }
            s += "\n";
        }
        s
    }
}

/// Looks up a dotted key (`decode_ms_per_token.4`) in a JSON report.
pub fn lookup(v: &serde_json::Value, key: &str) -> Option<f64> {
    let mut cur = v;
    let mut parts = key.split('.');
    let first = parts.next()?;
    cur = cur.get(first)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

/// Ours, each other engine's figure and the ratio per row. The ratio is "how many times better ours
/// is": theirs/ours for times, ours/theirs for rates; rows an engine did not measure show "-". An
/// engine's `decode_effective_gbs` (the bandwidth its decode reached) is printed under the table: it is
/// the ceiling the machine really streams at, to read our "% roofline" against.
pub fn compare_table(ours: &BenchReport, others: &[serde_json::Value]) -> String {
    let names: Vec<String> = others
        .iter()
        .enumerate()
        .map(|(i, v)| v.get("engine").and_then(|v| v.as_str()).map_or(format!("other {}", i + 1), str::to_owned))
        .collect();
    let mut header = vec![("row (median)".to_string(), Left), ("latentmas".to_string(), Right)];
    header.extend(names.iter().map(|n| (n.clone(), Right)));
    header.push(("unit".to_string(), Left));
    header.extend(names.iter().map(|n| (format!("vs {n}"), Right)));
    let mut t = table::with_header(&header);
    for r in &ours.rows {
        let machine = matches!(
            r.key.as_str(),
            "bandwidth_gbs" | "read_bandwidth_gbs" | "stream_gbs" | "peak_gflops" | "peak_bf16_gflops"
        );
        let theirs: Vec<Option<f64>> = others.iter().map(|v| lookup(v, &r.key)).collect();
        let mut cells = vec![r.label.clone(), fmt_num(r.stats.median)];
        cells.extend(theirs.iter().map(|t| t.map_or("-".into(), fmt_num)));
        cells.push(r.unit.clone());
        for t in &theirs {
            let ratio = t.map(|t| if r.higher_is_better { r.stats.median / t } else { t / r.stats.median });
            cells.push(match ratio {
                Some(x) if machine => format!("{x:.2} (machine)"),
                Some(x) => format!("{x:.2}× {}", if x >= 1.0 { "better" } else { "worse" }),
                None => "-".into(),
            });
        }
        t.add_row(cells);
    }
    let mut s = table::render(&t);
    s += &format!(
        "\nload average: latentmas {} (before) / {} (after)",
        fmt_load(ours.load_avg_before),
        fmt_load(ours.load_avg_after)
    );
    for (n, v) in names.iter().zip(others) {
        let load = v
            .get("load_avg_before")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" "));
        s += &format!("; {n} {} (before)", load.unwrap_or_else(|| "n/a".into()));
    }
    s += "\n";
    for (n, v) in names.iter().zip(others) {
        if let Some(gbs) = lookup(v, "decode_effective_gbs") {
            s += &format!("{n} streamed its decode weights at {gbs:.1} GB/s effective\n");
        }
        if let Some(cpu) = v.get("cpu").and_then(|c| c.as_str()).filter(|c| !c.is_empty()) {
            s += &format!("{n} ran on {cpu}\n");
        }
    }
    for (n, v) in names.iter().zip(others) {
        s += &paired_question_row(n, v);
    }
    s
}

/// A report that timed both engines itself on its own workload (tools/bench_reference.sh: the same questions
/// through `latentmas eval` and the authors' run.py) carries `latentmas_question_s` and
/// `reference_question_s`, seconds per question. Our rows above ran other workloads, so its ratio is its own
/// line, with the workload it names (`workload_label`); empty for any other report.
pub fn paired_question_row(name: &str, v: &serde_json::Value) -> String {
    let (Some(ours), Some(theirs)) = (lookup(v, "latentmas_question_s"), lookup(v, "reference_question_s")) else {
        return String::new();
    };
    let what = v.get("workload_label").and_then(|w| w.as_str()).unwrap_or("one question");
    let ratio = if ours > 0.0 && theirs > 0.0 {
        let x = theirs / ours;
        format!("{x:.2}× {}", if x >= 1.0 { "better" } else { "worse" })
    } else {
        "-".into()
    };
    format!(
        "{name}, both engines timed by its script ({what}): latentmas {} s, {name} {} s per question: {ratio}\n",
        fmt_num(ours),
        fmt_num(theirs)
    )
}

/// The GPU's ceilings in the cpu report's fields: `triad_gbs` (and `read_gbs`) hold the device copy
/// bandwidth, `f32_gflops` the bf16 GEMM peak; there is no AVX/AMX row.
fn gpu_ceilings(m: &mut latentmas::backend::cuda::CudaModel, runs: usize) -> Result<roofline::Ceilings> {
    let g = latentmas::backend::cuda::ceilings::measure(m.device_mut(), runs)?;
    let copy = Stats::of(&g.copy_gbs);
    Ok(roofline::Ceilings {
        triad_gbs: copy,
        read_gbs: copy,
        f32_gflops: Stats::of(&g.gemm_gflops),
        bf16_gflops: None,
        amx_gflops: None,
    })
}
