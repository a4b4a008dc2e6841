//! `latentmas bench`: the machine's ceilings and the engine's workloads side by side, as a table and JSON;
//! `--compare FILE` (repeatable) adds other engines' numbers (same JSON keys: tools/bench_transformers.py,
//! tools/bench_llamacpp.sh).

use std::path::PathBuf;

use anyhow::Context;
use latentmas::engine::{set_threads, DeviceKind, Engine};
use latentmas::kv::KvBudget;
use latentmas::model::hub::resolve_model;
use latentmas::model::synth::SynthDtype;
use latentmas_cli::bench::{self, BenchOptions};

use super::common::{write_atomic, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory or hub id.
    #[arg(long, required_unless_present = "shape", conflicts_with = "shape")]
    model: Option<String>,
    /// Benchmark a random-weight model of this shape (synthesized once into --cache-dir):
    /// tiny | qwen3-0.6b | qwen3-1.7b | qwen3-4b | qwen3-8b | qwen3-14b
    #[arg(long)]
    shape: Option<String>,
    /// Weight dtype of a synthesized model: bf16 | f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Where synthesized models are kept (default: $XDG_CACHE_HOME/latentmas or ~/.cache/latentmas).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs per row (medians, with min and max).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Steps per timed decode / latent-step run.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Skip the end-to-end rows (single / TextMAS / LatentMAS on one question).
    #[arg(long)]
    no_e2e: bool,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A JSON report of another engine (same keys): print ours, theirs and the ratio per row. Repeat it
    /// for several engines (e.g. transformers and llama.cpp side by side).
    #[arg(long)]
    compare: Vec<PathBuf>,
}

/// The model directory: `--model`, or a synthesized `--shape` (made once, reused after).
fn model_dir(a: &Args) -> anyhow::Result<PathBuf> {
    if let Some(m) = &a.model {
        return Ok(resolve_model(m)?);
    }
    let name = a.shape.as_deref().expect("clap requires --model or --shape");
    let dtype = match a.dtype.as_str() {
        "bf16" => SynthDtype::Bf16,
        "f32" => SynthDtype::F32,
        other => anyhow::bail!("--dtype {other:?}: expected bf16 or f32"),
    };
    let dir = bench::synth_model(name, dtype, a.cache_dir.as_deref(), |dir| {
        eprintln!("synthesizing a random-weight {name} ({}) into {} (once) ...", a.dtype, dir.display());
    })
    .with_context(|| format!("synthesizing {name}"))?;
    Ok(dir)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let kind = match a.device {
        // no device: say so (and record it in the JSON) instead of failing, so scripts can run the GPU rows
        // everywhere
        DeviceArg::Cuda => match latentmas::backend::cuda::probe() {
            Ok(_) => DeviceKind::Cuda,
            Err(e) => {
                let msg = format!("--device cuda: {e}; no GPU row was run");
                println!("SKIP: {msg}");
                if let Some(path) = &a.json {
                    let doc = serde_json::json!({"engine": "latentmas", "device": "cuda", "skipped": msg});
                    write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes(), "--json")?;
                }
                return Ok(());
            }
        },
        DeviceArg::Emu => anyhow::bail!(
            "--device emu: the bench measures real devices; emu runs emulated kernels, for tests, not speed"
        ),
        other => other.kind()?,
    };
    set_threads(super::common::thread_count(a.threads)?);
    if let Some(path) = &a.json {
        // A bad --json path fails now, not after minutes of measuring.
        latentmas_cli::output::check_output_file(path, "--json")?;
    }
    let opts = BenchOptions { runs: a.runs, steps: a.steps.max(1), end_to_end: !a.no_e2e, ..Default::default() };
    // Read the comparison first: a bad file should fail before minutes of measuring.
    let others = a
        .compare
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
            anyhow::ensure!(v.is_object(), "{}: not a bench report (expected a JSON object)", p.display());
            Ok(v)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = model_dir(&a)?;
    // A one-slot engine first, to size the KV buffer from the workloads' needs.
    let probe = Engine::open(&dir, KvBudget::Tokens(1))?;
    let slots = bench::needed_slots(&probe, &opts)?;
    drop(probe);
    let mut engine = Engine::open_on(&dir, KvBudget::Tokens(slots), kind)?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = bench::run(&mut engine, &opts, |what| bar.set_message(format!("measuring {what} ...")))?;
    bar.finish_and_clear();
    println!("{}", report.table());
    if !others.is_empty() {
        println!("{}", bench::compare_table(&report, &others));
    }
    if let Some(path) = &a.json {
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes(), "--json")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
