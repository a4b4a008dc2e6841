//! The eval loop, independent of the engine: items → solver (in batches) → scores → results file.
//!
//! Public operations:
//! - [`Solver`]: what an engine implements to be evaluated (one method, e.g. LatentMAS sequential).
//! - [`SolveOutput`]: the text and accounting for one question.
//! - [`EvalOptions`] (+ [`EvalOptions::new`]): task, output file, `--limit`, `--batch`, sandbox, progress bar.
//! - [`run_eval`]: run and score everything not yet in the results file → [`EvalRun`] (summary + counts).
//!
//! Resume: before starting, the results file is read and every item whose id already has a record for the
//! same task AND method is skipped; its old record counts in the summary. Records are appended (one line,
//! flushed) as soon as their batch is scored, so a crash or an error loses at most the batch in flight;
//! a partial last line left by a crash is cut off and that item runs again. Records of other tasks or
//! methods in the same file are left alone. A complete line that is not a record is an error: the file is
//! not ours and we refuse to append to it.
//!
//! Selection: `--limit N` keeps the first N items of the dataset (in file order) before resuming, so
//! rerunning with the same N converges on the same N items.

use std::collections::HashMap;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::code_exec::{self, ExecConfig, SandboxInfo};
use super::dataset::Item;
use super::record::{read_results, Record, ResultsWriter};
use super::score::{score, Scored};
use super::summary::Summary;
use super::task::Task;
use crate::error::{Error, Result};

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
        EvalOptions { task, out: out.into(), limit: None, batch_size: 1, exec: ExecConfig::default(), progress: true }
    }
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

/// Runs `solver` on `items` (after `limit`), skipping items already in the results file, appending a
/// record per item as each batch finishes. Returns the summary over all selected items.
pub fn run_eval<S: Solver + ?Sized>(solver: &mut S, items: &[Item], opts: &EvalOptions) -> Result<EvalRun> {
    if opts.batch_size == 0 {
        return Err(Error::InvalidArgument("batch size must be at least 1".to_string()));
    }
    let task = opts.task;
    let method = solver.method_label();
    let selected = &items[..opts.limit.unwrap_or(items.len()).min(items.len())];
    // Resuming is keyed by id: two items with one id would shadow each other.
    let mut ids = std::collections::HashSet::new();
    if let Some(dup) = selected.iter().find(|it| !ids.insert(it.id.as_str())) {
        return Err(Error::InvalidArgument(format!("item id {:?} appears twice; ids must be unique", dup.id)));
    }

    let file = read_results(&opts.out)?;
    if let Some((line, reason)) = file.bad_lines.first() {
        return Err(Error::Json {
            path: opts.out.clone(),
            message: format!("line {line} is not a results record ({reason}); refusing to append to this file"),
        });
    }
    if file.partial_tail {
        tracing::warn!(
            "{}: ignoring a partial last line (interrupted write); it will be rewritten",
            opts.out.display()
        );
    }
    let mut done: HashMap<String, Record> = HashMap::new();
    for r in file.records {
        if r.task == task && r.method == method {
            done.entry(r.id.clone()).or_insert(r);
        }
    }
    let todo: Vec<&Item> = selected.iter().filter(|it| !done.contains_key(&it.id)).collect();
    let resumed = selected.len() - todo.len();
    if resumed > 0 {
        tracing::info!(
            "{}: {resumed} of {} items already done for {task} / {method}",
            opts.out.display(),
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

    let mut writer = ResultsWriter::open(&opts.out, file.complete_len)?;
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
            };
            writer.append(&record)?;
            tally.add(record.correct);
            new_records.insert(record.id.clone(), record);
            bar.inc(1);
            bar.set_message(tally.message());
        }
    }
    bar.finish();

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
