//! `latentmas eval`: a benchmark file through one method, scored as the reference scores it, one JSON line
//! per item as soon as it finishes (a rerun with the same `--out` resumes).

use std::path::PathBuf;

use latentmas::eval::{self, EvalOptions, SolveOutput, Solver, Task};
use latentmas::mas::method::Family;

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
    /// Results JSONL (appended; finished items are skipped on a rerun).
    #[arg(long)]
    out: PathBuf,
    /// The interpreter that runs model-written code (mbppplus, humanevalplus); it must import numpy.
    /// `tools/install_sandbox_python.sh` sets one up and prints its path.
    #[arg(long, env = latentmas::eval::code_exec::PYTHON_ENV, default_value = "python3")]
    python: PathBuf,
}

/// The engine as an eval solver.
struct EngineSolver {
    session: Session,
    label: String,
}

impl Solver for EngineSolver {
    fn solve_batch(&mut self, questions: &[String]) -> latentmas::Result<Vec<SolveOutput>> {
        let t = std::time::Instant::now();
        let out = self.session.run(questions)?;
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
    let dataset = eval::load(a.task, &a.data)?;
    for w in &dataset.warnings {
        eprintln!("warning: skipped {w}");
    }
    let items: Vec<_> = dataset.items.into_iter().take(a.limit.unwrap_or(usize::MAX)).collect();
    let questions: Vec<String> = items.iter().map(|i| i.question.clone()).collect();
    let label = a.method.label(&cfg);
    let session = a.method.open(&cfg, &questions)?;
    let mut solver = EngineSolver { session, label };
    let mut opts = EvalOptions { limit: a.limit, batch_size: a.method.batch, ..EvalOptions::new(a.task, &a.out) };
    opts.exec.python = a.python;
    let run = eval::run_eval(&mut solver, &items, &opts)?;
    if let Some(info) = &run.sandbox {
        if let Some(note) = &info.note {
            eprintln!("note: {note}");
        }
    }
    println!("{}", run.summary);
    println!("({} item(s) run now, {} resumed from {})", run.ran, run.resumed, a.out.display());
    Ok(())
}
