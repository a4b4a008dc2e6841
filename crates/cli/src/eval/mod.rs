//! Evaluation: the paper's nine benchmarks loaded, asked, and scored as the reference scores them
//! (Gen-Verse/LatentMAS @ 1430ad6), with per-item results that survive interruptions.
//!
//! Modules, one job each:
//! - [`task`]: the [`Task`] enum (CLI words, prompt family).
//! - [`dataset`]: files (JSONL or a JSON array, by content) → [`Item`]s, bad records → [`LoadWarning`]s.
//! - [`question`]: one record → `{question}` string + gold, per task.
//! - [`extract`]: answer extraction and normalisation (`\boxed{…}`, numbers, python blocks).
//! - [`score`]: [`Gold`], [`predict`] (what `latentmas extract` prints), [`score`](score::score).
//! - [`code_exec`]: sandboxed `python3` for mbpp+ / humaneval+ (`code_sandbox`: the namespaces and process
//!   tree; `sandbox_interrupt`: sandboxes die on SIGINT/SIGTERM).
//! - [`record`]: the results JSONL ([`Record`]) with crash-safe, locked appends ([`ResultsStore`]).
//! - [`provenance`]: what produced a record ([`Provenance`]: model fingerprint, device, data hash, settings).
//! - [`shard`]: `--shard I/N` ([`Shard`]), one of N disjoint slices of a benchmark.
//! - [`runner`]: the [`Solver`] trait the engine implements and [`run_eval`] (batches, resume, progress).
//! - [`summary`]: [`Summary`] (accuracy, 95% Wilson interval, tokens, latent steps, time) and its table.
//! - [`report`] + [`chart`]: `latentmas report` (table over results files or merged shard files, SVG chart),
//!   with [`label_layout`] (point labels that never overlap) and [`bar_chart`] (accuracy per task × method).
//!
//! Typical use (the CLI):
//! ```ignore
//! let ds = eval::load(task, &data_path)?;          // ds.warnings: skipped lines, print them
//! let run = eval::run_eval(&mut solver, &ds.items, &EvalOptions { limit, batch_size, ..EvalOptions::new(task, out) })?;
//! println!("{}", run.summary);
//! ```

pub mod bar_chart;
pub mod chart;
pub mod code_exec;
mod code_sandbox;
pub mod dataset;
pub use latentmas::answer as extract;
pub mod label_layout;
pub mod provenance;
pub mod question;
pub mod record;
pub mod report;
pub mod runner;
mod sandbox_interrupt;
pub mod score;
pub mod shard;
pub mod summary;
pub mod task;

pub use code_exec::{ExecConfig, ExecOutcome, ExecStatus, Isolation, SandboxInfo};
pub use dataset::{load, Dataset, Item, LoadWarning};
pub use provenance::Provenance;
pub use record::{Record, ResultsStore};
pub use report::{build_report, Report};
pub use runner::{resumable, run_eval, run_eval_in, EvalOptions, EvalRun, SolveOutput, Solver};
pub use score::{predict, Gold, Scored};
pub use shard::Shard;
pub use summary::{Summary, SummaryTable};
pub use task::Task;
