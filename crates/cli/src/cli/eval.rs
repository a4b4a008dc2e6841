//! `latentmas eval`: a benchmark file through one method, scored as the reference scores it, one JSON line
//! per item as soon as it finishes (a rerun with the same `--out` resumes records made the same way).
//!
//! Order of work: the results file is opened, locked and checked against this run's provenance before
//! the model is loaded, so a bad, foreign, busy or mismatched `--out` fails in well under a second; when
//! every selected item is already done the model is not loaded at all.

use std::path::{Path, PathBuf};

use latentmas::engine::DeviceKind;
use latentmas::mas::method::Family;
use latentmas::mas::reference_prompts;
use latentmas::mas::run::RunConfig;
use latentmas::model::hub::resolve_model;
use latentmas_cli::eval::provenance::{file_sha256, model_identity};
use latentmas_cli::eval::{self, EvalOptions, Provenance, ResultsStore, Shard, SolveOutput, Solver, Task};

use super::run::{MethodArgs, Session};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    method: MethodArgs,
    /// gsm8k | aime2024 | aime2025 | gpqa | arc_easy | arc_challenge | medqa | mbppplus | humanevalplus
    #[arg(long)]
    task: Task,
    /// The dataset file (JSONL or a JSON array, in the dataset's field layout).
    #[arg(long)]
    data: PathBuf,
    /// Only the first N items.
    #[arg(long)]
    limit: Option<usize>,
    /// Only shard I of N (from 0): items I, I+N, I+2N, ... of the selection; one results file per shard,
    /// merged by `latentmas report`.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Results JSONL, a regular file (appended; a rerun skips items recorded with the same model, device,
    /// data and settings, and refuses records made differently).
    #[arg(long)]
    out: PathBuf,
    /// The interpreter that runs model-written code (mbppplus, humanevalplus); it must import numpy as
    /// the sandbox's user (nobody when run as root). `tools/install_sandbox_python.sh` sets one up and
    /// prints its path.
    #[arg(long, env = latentmas_cli::eval::code_exec::PYTHON_ENV, default_value = "python3")]
    python: PathBuf,
}

/// The engine as an eval solver.
struct EngineSolver {
    /// `None` when nothing is left to run (the model is then never loaded).
    session: Option<Session>,
    label: String,
}

impl Solver for EngineSolver {
    fn solve_batch(&mut self, questions: &[String]) -> latentmas::Result<Vec<SolveOutput>> {
        let t = std::time::Instant::now();
        let session = self.session.as_mut().ok_or_else(|| latentmas::Error::Other("no model loaded".into()))?;
        let out = session.run(questions)?;
        let per_item = t.elapsed().as_secs_f64() / questions.len() as f64;
        out.reports
            .into_iter()
            .map(|r| {
                Ok(SolveOutput {
                    output_tokens: r.totals.generated_tokens as u64,
                    latent_steps: r.totals.latent_steps as u64,
                    seconds: per_item,
                    agents: serde_json::to_value(&r.agents).map_err(|e| latentmas::Error::Other(e.to_string()))?,
                    text: r.text,
                })
            })
            .collect()
    }

    fn method_label(&self) -> String {
        self.label.clone()
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let family: Family = a.task.family().parse()?;
    let cfg = a.method.run_config_for(family, Some(a.task))?;
    if a.limit == Some(0) {
        anyhow::bail!("--limit must be at least 1 (it keeps the first N items)");
    }
    let dataset = eval::load(a.task, &a.data)?;
    for w in &dataset.warnings {
        eprintln!("warning: skipped {w}");
    }
    let mut opts = EvalOptions {
        limit: a.limit,
        shard: a.shard,
        batch_size: a.method.batch,
        progress: true,
        ..EvalOptions::new(a.task, &a.out)
    };
    opts.exec.python = a.python.clone();
    // The results file first: a bad, foreign or busy --out fails before any work.
    let mut store = ResultsStore::open(&a.out)?;
    let label = a.method.label(&cfg);
    let model_dir = resolve_model(&a.method.model)?;
    opts.provenance = provenance(&a, &cfg, &label, &model_dir)?;
    let done = eval::resumable(&store, a.task, &label, &opts.provenance)?;
    let todo: Vec<String> = opts
        .select(&dataset.items)
        .into_iter()
        .filter(|it| !done.contains_key(&it.id))
        .map(|it| it.question.clone())
        .collect();
    let session = if todo.is_empty() { None } else { Some(a.method.open(&cfg, &todo)?) };
    let mut solver = EngineSolver { session, label };
    let run = eval::run_eval_in(&mut solver, &dataset.items, &opts, &mut store)?;
    if let Some(info) = &run.sandbox {
        eprintln!("code sandbox: {info}");
    }
    println!("{}", run.summary);
    let shard = a.shard.map(|s| format!(", shard {s}")).unwrap_or_default();
    println!("({} item(s) run now, {} resumed from {}{shard})", run.ran, run.resumed, a.out.display());
    Ok(())
}

/// What produces this run's records: everything that changes an answer or its score, nothing that does
/// not (batch size, threads, KV budget, limit, shard), so resumed and sharded runs may choose those freely.
fn provenance(a: &Args, cfg: &RunConfig, label: &str, model_dir: &Path) -> anyhow::Result<Provenance> {
    let mut p = Provenance::default();
    p.set("latentmas", env!("CARGO_PKG_VERSION"))
        .set("task", a.task.as_str())
        .set("method", label)
        .set("model", model_identity(model_dir)?)
        .set("device", device_word(a.method.device.resolve_silently()))
        .set("data", file_sha256(&a.data)?)
        .set(
            "prompts",
            match reference_prompts::source_file(a.method.prompts.as_deref())? {
                Some(path) => file_sha256(&path)?,
                None => "builtin".to_string(),
            },
        )
        .set("realign", (a.method.realign && !a.method.no_realign).to_string())
        // Every field of the run configuration, so a setting added later is covered without a change here.
        .set("settings", format!("{cfg:?}"));
    Ok(p)
}

fn device_word(d: DeviceKind) -> &'static str {
    match d {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Emu => "emu",
        DeviceKind::Cuda => "cuda",
    }
}
