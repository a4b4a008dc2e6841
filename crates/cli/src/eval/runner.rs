//! The eval loop, independent of the engine: items → solver (in batches) → scores → results file.
//!
//! Public operations:
//! - [`Solver`]: what an engine implements to be evaluated (one method, e.g. LatentMAS sequential).
//! - [`SolveOutput`]: the text and accounting for one question.
//! - [`EvalOptions`] (+ [`EvalOptions::new`]): task, output file, `--limit`, `--shard`, `--batch`, the
//!   provenance to stamp on records, sandbox, progress bar; [`EvalOptions::select`] (the items this run
//!   covers).
//! - [`resumable`]: the records of a results file this run may reuse, or the error naming why not.
//! - [`run_eval`]: open the results file and run everything not yet in it → [`EvalRun`];
//!   [`run_eval_in`] does the same in a [`ResultsStore`] the caller opened (the CLI opens it, and checks
//!   it, before loading the model).
//!
//! Resume: every item whose id already has a record for the same task AND method is skipped and its old
//! record counts in the summary, but only when that record's provenance (model, device, data file,
//! settings) equals this run's; a record of the same task and method made differently is an error naming
//! the difference, never silently reused. Records are appended (one line) as soon as their batch is
//! scored, so a crash or an error loses at most the batch in flight. Records of other tasks or methods in
//! the same file are left alone. A file that is not ours is refused by [`ResultsStore::open`].
//!
//! Selection: `--limit N` keeps the first N items of the dataset (in file order), then `--shard I/N` keeps
//! every N-th of those from I; rerunning with the same flags converges on the same items.

use std::collections::HashMap;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::code_exec::{self, ExecConfig, SandboxInfo};
use super::dataset::Item;
use super::provenance::Provenance;
use super::record::{Record, ResultsStore};
use super::score::{score, Scored};
use super::shard::Shard;
use super::summary::Summary;
use super::task::Task;
use latentmas::error::{Error, Result};

/// One question's answer and accounting, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SolveOutput {
    /// The final agent's decoded text (what is scored).
    pub text: String,
    /// Per-agent accounting (prompt tokens, latent steps, generated tokens, timings); stored as given.
    pub agents: serde_json::Value,
    /// Generated tokens over all agents.
    pub output_tokens: u64,
    /// Latent steps over all agents.
    pub latent_steps: u64,
    /// Wall seconds attributed to this question (for a batch, the engine's share for this row).
    pub seconds: f64,
}

/// An evaluated method. The runner calls `solve_batch` with at most `EvalOptions::batch_size` questions
/// and expects exactly one output per question, in order.
pub trait Solver {
    fn solve_batch(&mut self, questions: &[String]) -> Result<Vec<SolveOutput>>;
    /// Names the method in results and tables (e.g. `latent_mas/sequential`). Resuming matches on it, so it
    /// should include every setting that changes answers (method, topology, latent steps, …).
    fn method_label(&self) -> String;
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub task: Task,
    /// The results JSONL (created if absent, appended to otherwise).
    pub out: PathBuf,
    /// Keep only the first N items.
    pub limit: Option<usize>,
    /// Then keep only this shard of them.
    pub shard: Option<Shard>,
    /// What produces this run's records; stamped on each, and required of resumed ones.
    pub provenance: Provenance,
    /// Questions per `solve_batch` call; at least 1.
    pub batch_size: usize,
    /// Sandbox for the code tasks.
    pub exec: ExecConfig,
    /// Draw a progress bar on stderr (indicatif hides it anyway when stderr is not a terminal).
    pub progress: bool,
}

impl EvalOptions {
    /// Batch 1, no limit, default sandbox, progress bar on.
    pub fn new(task: Task, out: impl Into<PathBuf>) -> Self {
        EvalOptions {
            task,
            out: out.into(),
            limit: None,
            shard: None,
            provenance: Provenance::default(),
            batch_size: 1,
            exec: ExecConfig::default(),
            progress: true,
        }
    }

    /// The items this run covers: the first `limit`, then this shard of them.
    pub fn select<'a>(&self, items: &'a [Item]) -> Vec<&'a Item> {
        let first = &items[..self.limit.unwrap_or(items.len()).min(items.len())];
        match self.shard {
            Some(shard) => shard.select(first),
            None => first.iter().collect(),
        }
    }
}

/// The records of `store` that a run of `task` / `method` with `provenance` reuses, by item id. Errors
/// when a record of that task and method was produced differently (naming the line and what differs).
pub fn resumable(
    store: &ResultsStore,
    task: Task,
    method: &str,
    provenance: &Provenance,
) -> Result<HashMap<String, Record>> {
    let mut done = HashMap::new();
    for (r, line) in store.existing.records.iter().zip(&store.existing.lines) {
        if r.task != task || r.method != method {
            continue;
        }
        let why = match &r.provenance {
            None => {
                "it records no provenance (written by an older latentmas), so what produced it is unknown".to_string()
            }
            Some(p) if p != provenance => {
                format!("it was produced differently: {}", p.differences(provenance).join("; "))
            }
            Some(_) => {
                done.entry(r.id.clone()).or_insert_with(|| r.clone());
                continue;
            }
        };
        return Err(Error::InvalidArgument(format!(
            "{}:{line} holds a {task} / {method} record (item {:?}) that this run cannot resume: {why} \
             (file vs this run); give another --out, or remove those records",
            store.path().display(),
            r.id
        )));
    }
    Ok(done)
}

/// What [`run_eval`] did.
#[derive(Debug, Clone)]
pub struct EvalRun {
    /// Over all selected items: resumed and newly run.
    pub summary: Summary,
    /// Items found already done in the results file.
    pub resumed: usize,
    /// Items solved and scored in this run.
    pub ran: usize,
    /// The sandbox check of code tasks (`None` for other tasks or when nothing ran): the isolation in force.
    pub sandbox: Option<SandboxInfo>,
}

/// Runs `solver` on the items [`EvalOptions::select`] picks, skipping items already in the results file,
/// appending a record per item as each batch finishes. Returns the summary over all selected items.
pub fn run_eval<S: Solver + ?Sized>(solver: &mut S, items: &[Item], opts: &EvalOptions) -> Result<EvalRun> {
    let mut store = ResultsStore::open(&opts.out)?;
    run_eval_in(solver, items, opts, &mut store)
}

/// [`run_eval`] into a results file already opened (and locked) by the caller; `opts.out` is not used.
pub fn run_eval_in<S: Solver + ?Sized>(
    solver: &mut S,
    items: &[Item],
    opts: &EvalOptions,
    store: &mut ResultsStore,
) -> Result<EvalRun> {
    if opts.batch_size == 0 {
        return Err(Error::InvalidArgument("batch size must be at least 1".to_string()));
    }
    let task = opts.task;
    let method = solver.method_label();
    let selected = opts.select(items);
    // Resuming is keyed by id: two items with one id would shadow each other.
    let mut ids = std::collections::HashSet::new();
    if let Some(dup) = selected.iter().find(|it| !ids.insert(it.id.as_str())) {
        return Err(Error::InvalidArgument(format!("item id {:?} appears twice; ids must be unique", dup.id)));
    }

    let done = resumable(store, task, &method, &opts.provenance)?;
    let todo: Vec<&Item> = selected.iter().copied().filter(|it| !done.contains_key(&it.id)).collect();
    let resumed = selected.len() - todo.len();
    if resumed > 0 {
        tracing::info!(
            "{}: {resumed} of {} items already done for {task} / {method}",
            store.path().display(),
            selected.len()
        );
    }

    let (exec, sandbox) = if task.is_code() && !todo.is_empty() {
        let (exec, info) = code_exec::prepare(&opts.exec)?;
        if !info.isolation.read_only_root {
            tracing::warn!("code sandbox: {info}");
        }
        (exec, Some(info))
    } else {
        (opts.exec.clone(), None)
    };

    let bar = progress_bar(opts, &method, selected.len(), resumed);
    let mut tally = Tally::default();
    for id in selected.iter().map(|it| &it.id) {
        if let Some(r) = done.get(id) {
            tally.add(r.correct);
        }
    }
    bar.set_message(tally.message());

    let mut new_records: HashMap<String, Record> = HashMap::new();
    for batch in todo.chunks(opts.batch_size) {
        let questions: Vec<String> = batch.iter().map(|it| it.question.clone()).collect();
        let outputs = solver.solve_batch(&questions)?;
        if outputs.len() != batch.len() {
            return Err(Error::Other(format!(
                "solver {method} returned {} outputs for {} questions",
                outputs.len(),
                batch.len()
            )));
        }
        // Code tasks spend seconds per item in python; score the batch's items side by side.
        let scored: Vec<Result<Scored>> =
            batch.par_iter().zip(&outputs).map(|(it, o)| score(task, &it.gold, &o.text, &exec)).collect();
        for ((item, output), scored) in batch.iter().zip(outputs).zip(scored) {
            let scored = scored?;
            let record = Record {
                id: item.id.clone(),
                task,
                method: method.clone(),
                prediction: scored.prediction,
                gold: item.gold.as_record().to_string(),
                correct: scored.correct,
                output_tokens: output.output_tokens,
                latent_steps: output.latent_steps,
                seconds: output.seconds,
                agents: output.agents,
                detail: scored.detail,
                output: output.text,
                provenance: Some(opts.provenance.clone()),
            };
            store.append(&record)?;
            tally.add(record.correct);
            new_records.insert(record.id.clone(), record);
            bar.inc(1);
            bar.set_message(tally.message());
        }
    }
    bar.finish();
    store.finish();

    let ran = new_records.len();
    let all = selected.iter().filter_map(|it| done.get(&it.id).or_else(|| new_records.get(&it.id)));
    let summary = Summary::from_records(task, &method, all);
    Ok(EvalRun { summary, resumed, ran, sandbox })
}

/// Running accuracy for the progress bar.
#[derive(Default)]
struct Tally {
    n: usize,
    correct: usize,
}

impl Tally {
    fn add(&mut self, correct: bool) {
        self.n += 1;
        self.correct += usize::from(correct);
    }

    fn message(&self) -> String {
        match self.n {
            0 => "acc -".to_string(),
            n => format!("acc {:.1}% ({}/{n})", 100.0 * self.correct as f64 / n as f64, self.correct),
        }
    }
}

fn progress_bar(opts: &EvalOptions, method: &str, len: usize, pos: usize) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{} {method}", opts.task));
    bar.set_position(pos as u64);
    // The ETA must come from this run's pace, not count resumed items as instant.
    bar.reset_eta();
    bar
}
