//! `latentmas run`: one method over one question or a JSONL file of questions, batched.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use latentmas::engine::{set_threads, Engine};
use latentmas::kv::KvBudget;
use latentmas::latent::Alignment;
use latentmas::mas::method::{Family, Method, Topology};
use latentmas::mas::report::QuestionReport;
use latentmas::mas::run::{batch_slots, check_context, run_batch, RunConfig};
use latentmas::model::hub::resolve_model;
use latentmas::startup::{load_model_and_tokenizer, Startup};
use latentmas_cli::table::{self, Align::Left, Align::Right};

use super::common::{write_atomic, DeviceArg, SamplingArgs};
use super::preset::{resolve, Given, ReproArgs};

/// Latent steps per agent when `--latent-steps` is not given for a LatentMAS run.
pub const DEFAULT_LATENT_STEPS: usize = 10;

/// The flags that define how questions are answered; shared by `run` and `eval`.
#[derive(clap::Args)]
pub struct MethodArgs {
    /// Model directory or hub id.
    #[arg(long)]
    pub model: String,
    /// single | text | latent
    #[arg(long, default_value = "latent")]
    pub method: Method,
    /// sequential | hierarchical | parallel
    #[arg(long, default_value = "sequential")]
    pub topology: Topology,
    /// Latent steps per non-final agent (LatentMAS; default 10).
    #[arg(long)]
    pub latent_steps: Option<usize>,
    /// Map hidden states through W_a (ridge alignment) before feeding them back.
    #[arg(long, overrides_with = "no_realign")]
    pub realign: bool,
    /// Feed hidden states rescaled only (W_a = I); the default, as in the reference.
    #[arg(long)]
    pub no_realign: bool,
    /// Append `<think>` to every agent's prompt (LatentMAS).
    #[arg(long)]
    pub think: bool,
    /// `reference`: with m = 0 the final agent decodes on an empty cache, as the reference does.
    #[arg(long, value_parser = ["reference"])]
    pub compat: Option<String>,
    /// A prompt-set JSON file in the shape of the reference's prompts, or `reference` for the set made by
    /// `latentmas prompts import` (default: the built-in set).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Tokens the final agent (and each TextMAS agent) may generate [default: 4096, 20000 for AIME, as the
    /// reference runs them].
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub repro: ReproArgs,
    /// KV buffer size: `auto` (what the batch needs), tokens (`8192tok`) or bytes (`2GiB`).
    #[arg(long, default_value = "auto")]
    pub kv_budget: String,
    /// Questions per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context length in positions (default: the config's max_position_embeddings); for a model whose config
    /// understates it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_context: Option<u64>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub method: MethodArgs,
    /// math | mc | medqa | code (the prompts' answer format)
    #[arg(long, default_value = "math")]
    pub task_family: Family,
    /// One question.
    #[arg(long, conflicts_with = "questions", required_unless_present = "questions")]
    pub question: Option<String>,
    /// A JSONL file, one {"question": ...} per line.
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// Print one JSON report per question (JSON lines).
    #[arg(long)]
    pub json: bool,
    /// Write the first question's trace (prompt ids, KV lengths, fed vectors, generated ids) as JSON.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

impl MethodArgs {
    pub fn run_config(&self, family: Family) -> anyhow::Result<RunConfig> {
        self.run_config_for(family, None)
    }

    /// The run's settings: explicit flags, then `--preset`, then our defaults (per `task` where one is known).
    pub fn run_config_for(&self, family: Family, task: Option<latentmas_cli::eval::Task>) -> anyhow::Result<RunConfig> {
        let r = resolve(
            &self.repro,
            Given {
                method: self.method,
                task,
                latent_steps: self.latent_steps,
                compat_reference: self.compat.is_some(),
                max_new_tokens: self.max_new_tokens,
                sampling: &self.sampling,
            },
        )?;
        let cfg = RunConfig {
            method: self.method,
            topology: self.topology,
            family,
            latent_steps: r.latent_steps,
            think: self.think,
            compat_reference: r.compat_reference,
            sampling: r.sampling,
            max_new_tokens: r.max_new_tokens,
            text_mas_context_length: r.text_mas_context_length,
        };
        cfg.validate()?;
        if self.batch == 0 {
            anyhow::bail!("--batch must be at least 1");
        }
        Ok(cfg)
    }

    /// A label naming every setting that changes answers (eval resumes by task + label + id).
    pub fn label(&self, cfg: &RunConfig) -> String {
        let mut s = format!("{}-{}", cfg.method, cfg.topology);
        if cfg.method == Method::Single {
            s = "single".into();
        }
        if cfg.method == Method::Latent {
            s.push_str(&format!("-m{}", cfg.latent_steps));
            if self.realign && !self.no_realign {
                s.push_str("-realign");
            }
            if cfg.think {
                s.push_str("-think");
            }
            if cfg.compat_reference {
                s.push_str("-compat");
            }
        }
        if let Some(p) = &self.prompts {
            s.push_str(&format!("-prompts:{}", p.display()));
        }
        if cfg.sampling.greedy {
            s.push_str("-greedy");
        } else {
            s.push_str(&format!(
                "-t{}-k{}-p{}-s{}",
                cfg.sampling.temperature, cfg.sampling.top_k, cfg.sampling.top_p, cfg.sampling.seed
            ));
        }
        s.push_str(&format!("-max{}", cfg.max_new_tokens));
        if cfg.method == Method::Text && cfg.text_mas_context_length != latentmas::mas::run::REFERENCE_CONTEXT_LENGTH {
            s.push_str(&format!("-ctx{}", cfg.text_mas_context_length));
        }
        s
    }

    /// Loads prompts, the model and its tokenizer (side by side), sizes the KV buffer for `questions`
    /// (failing before any compute when the budget is too small), opens the engine and, for LatentMAS, the
    /// alignment. [`Session::startup`] says where the time went.
    pub fn open(&self, cfg: &RunConfig, questions: &[String]) -> anyhow::Result<Session> {
        let start = Instant::now();
        let mut startup = Startup::default();
        let t = Instant::now();
        set_threads(super::common::thread_count(self.threads)?);
        startup.threads_s = t.elapsed().as_secs_f64();
        let device = self.device.kind()?;
        let t = Instant::now();
        let prompts = latentmas::mas::reference_prompts::resolve(self.prompts.as_deref())?;
        if questions.is_empty() {
            anyhow::bail!("no questions to run");
        }
        let dir = resolve_model(&self.model)?;
        startup.prompts_s = t.elapsed().as_secs_f64();
        let (model, tokenizer) = load_model_and_tokenizer(&dir, &mut startup)?;
        let max_context = match self.max_context {
            Some(n) => usize::try_from(n).context("--max-context")?,
            None => model.config.max_position_embeddings,
        };
        check_context(&tokenizer, &prompts, cfg, questions, max_context)?;
        let t = Instant::now();
        let largest_batch = questions
            .chunks(self.batch)
            .map(|c| batch_slots(&tokenizer, &prompts, cfg, c))
            .collect::<latentmas::Result<Vec<_>>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let budget = match self.kv_budget.as_str() {
            "auto" => KvBudget::Tokens(largest_batch),
            s => s.parse::<KvBudget>()?,
        };
        let slots = match budget {
            KvBudget::Tokens(t) => t,
            KvBudget::Bytes(b) => (b / latentmas::kv::KvBuffer::bytes_per_token(&model.config)) as usize,
        };
        if slots < largest_batch {
            anyhow::bail!(
                "--kv-budget {} holds {slots} tokens but a batch of this run needs {largest_batch}; raise --kv-budget (or lower --batch / --max-new-tokens)",
                self.kv_budget
            );
        }
        startup.kv_sizing_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut engine = Engine::from_parts(&dir, model, tokenizer, budget, device)?;
        engine.set_max_context(max_context)?;
        startup.engine_s = t.elapsed().as_secs_f64();
        startup.kv_bytes = engine.kv.bytes();
        let t = Instant::now();
        let align = if cfg.method == Method::Latent {
            let realign = self.realign && !self.no_realign;
            let (al, cache) = Alignment::load_or_compute(&engine.model, &dir, engine.vocab_limit(), realign)?;
            if let Some(path) = cache {
                tracing::info!("alignment cache: {}", path.display());
            }
            Some(al)
        } else {
            None
        };
        startup.alignment_s = t.elapsed().as_secs_f64();
        startup.total_s = start.elapsed().as_secs_f64();
        startup.sample_rss();
        Ok(Session { engine, prompts, align, cfg: cfg.clone(), startup })
    }
}

/// An engine ready to answer questions with one configuration.
pub struct Session {
    pub engine: Engine,
    pub prompts: latentmas::mas::prompts::PromptSet,
    pub align: Option<Alignment>,
    pub cfg: RunConfig,
    /// Where the time before the first prefill went.
    pub startup: Startup,
}

impl Session {
    pub fn run(&mut self, questions: &[String]) -> latentmas::Result<latentmas::mas::run::RunOutput> {
        run_batch(&mut self.engine, &self.prompts, self.align.as_ref(), &self.cfg, questions)
    }
}

/// Reads `{"question": ...}` lines; a bad line is an error naming its number.
pub fn read_questions(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --questions {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        let q = v
            .get("question")
            .and_then(|q| q.as_str())
            .with_context(|| format!("{}:{}: expected an object with a \"question\" string", path.display(), i + 1))?;
        out.push(q.to_string());
    }
    if out.is_empty() {
        anyhow::bail!("{}: no questions", path.display());
    }
    Ok(out)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = a.method.run_config(a.task_family)?;
    if let Some(path) = &a.trace {
        latentmas_cli::output::check_output_file(path, "--trace")?; // before any work, not after the first batch
    }
    let questions = match (&a.question, &a.questions) {
        (Some(q), _) => vec![q.clone()],
        (None, Some(path)) => read_questions(path)?,
        (None, None) => anyhow::bail!("give --question TEXT or --questions FILE"),
    };
    let mut session = a.method.open(&cfg, &questions)?;
    if !a.json {
        println!("{}", session.startup.line());
    }
    let mut startup = Some(session.startup.clone());
    let mut first_trace = true;
    for chunk in questions.chunks(a.method.batch) {
        let out = session.run(chunk)?;
        if first_trace {
            if let Some(path) = &a.trace {
                write_atomic(path, serde_json::to_string_pretty(&out.traces[0])?.as_bytes(), "--trace")?;
            }
            first_trace = false;
        }
        for report in &out.reports {
            if a.json {
                // the first line also says where the time before the first prefill went; one write(2) per line
                let line = match startup.take() {
                    Some(startup) => serde_json::to_string(&WithStartup { report, startup })?,
                    None => serde_json::to_string(report)?,
                };
                latentmas_cli::output::print_line(&line)?;
            } else {
                print_report(report);
            }
        }
    }
    std::io::Write::flush(&mut std::io::stdout())?;
    // The process ends right after this: on the cpu the kernel reclaims the weight mapping, the KV buffer
    // and the tokenizer's heap in one go, while their destructors (300k tokenizer strings freed one by one,
    // the 1.2 GB mapping unmapped) would add 30-45 ms to every run's wall time. Nothing on the cpu writes
    // anything when dropped; the output is all written above. A GPU session is dropped as usual: its
    // stream, cuBLAS handle and module are torn down in order, as a profiler expects.
    if session.engine.device.kind() == latentmas::engine::DeviceKind::Cpu {
        std::mem::forget(session);
    }
    Ok(())
}

/// A report line with the process's startup breakdown appended (`run --json`, first line).
#[derive(serde::Serialize)]
struct WithStartup<'a> {
    #[serde(flatten)]
    report: &'a QuestionReport,
    startup: Startup,
}

fn print_report(r: &QuestionReport) {
    println!("=== {} / {} ===", r.method, r.topology);
    println!("{}", r.text);
    println!("answer: {}", r.answer.as_deref().unwrap_or("(none)"));
    let mut t = table::with_header(&[
        ("agent", Left),
        ("prompt", Right),
        ("latent", Right),
        ("gen", Right),
        ("kv after", Right),
        ("prefill s", Right),
        ("latent s", Right),
        ("decode s", Right),
    ]);
    let mut row = |name: &str, prompt: usize, latent: usize, gen: usize, kv: usize, secs: [f64; 3]| {
        let mut cells = vec![name.to_string(), prompt.to_string(), latent.to_string(), gen.to_string(), kv.to_string()];
        cells.extend(secs.iter().map(|s| format!("{s:.3}")));
        t.add_row(cells);
    };
    for ag in &r.agents {
        let secs = [ag.prefill_s, ag.latent_s, ag.decode_s];
        row(&ag.role, ag.prompt_tokens, ag.latent_steps, ag.generated_tokens, ag.kv_len_after, secs);
    }
    let tot = &r.totals;
    let secs = [tot.prefill_s, tot.latent_s, tot.decode_s];
    row("total", tot.prompt_tokens, tot.latent_steps, tot.generated_tokens, r.kv_tokens, secs);
    print!("{}", table::render(&t));
    println!("KV cache: {} tokens, {:.1} MB", r.kv_tokens, r.kv_bytes as f64 / 1e6);
}
