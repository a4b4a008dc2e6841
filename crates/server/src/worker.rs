//! The engine's own thread: it opens the engine (the engine is synchronous and owns one KV buffer), then
//! runs queued jobs, sending each request its tokens and its answer: plain-chat requests in batches
//! ([`crate::batch`]), multi-agent runs one at a time.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::engine::{set_threads, DeviceKind, Engine};
use engine::kv::KvBudget;
use engine::latent::Alignment;
use engine::mas::method::Method;
use engine::mas::prompts::PromptSet;
use engine::mas::run::{run_batch_streaming, RunConfig, RunToken};

use crate::api::Usage;
use crate::batch;
use crate::error::ApiError;
use crate::queue::{Event, Job, Queue};
use crate::request::{Limits, Work};

/// How to open the engine.
pub struct EngineOptions {
    pub model_dir: PathBuf,
    /// None: as many tokens as the model's context.
    pub kv_budget: Option<KvBudget>,
    pub device: DeviceKind,
    pub threads: Option<usize>,
    pub realign: bool,
    pub prompts: PromptSet,
}

/// What the worker reports once its engine is open.
pub struct Ready {
    pub limits: Limits,
    pub kv_bytes: u64,
    /// The engine's abort flag (shutdown stops the running job with it).
    pub abort: Arc<AtomicBool>,
}

struct WorkerState {
    engine: Engine,
    align: Alignment,
    prompts: PromptSet,
}

/// Starts the worker thread and waits until its engine is open (or failed to open).
pub fn spawn(opts: EngineOptions, queue: Arc<Queue>) -> Result<(Ready, std::thread::JoinHandle<()>), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("latentmas-engine".into())
        .spawn(move || {
            // The engine's thread pool counts this thread in: its parallel loops start on its own queue.
            set_threads(opts.threads);
            let st = match open(opts) {
                Ok(st) => st,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let ready = Ready {
                limits: Limits { kv_slots: st.engine.kv.slots(), max_context: st.engine.max_context },
                kv_bytes: st.engine.kv.bytes(),
                abort: st.engine.abort_flag(),
            };
            if tx.send(Ok(ready)).is_err() {
                return;
            }
            serve(st, &queue);
        })
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    match rx.recv() {
        Ok(Ok(ready)) => Ok((ready, handle)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the engine thread stopped while opening the model".into()),
    }
}

fn open(opts: EngineOptions) -> Result<WorkerState, String> {
    let config = engine::model::config::Qwen3Config::from_file(&opts.model_dir.join("config.json"))
        .map_err(|e| e.to_string())?;
    let budget = opts.kv_budget.unwrap_or(KvBudget::Tokens(config.max_position_embeddings));
    let engine = Engine::open_on(&opts.model_dir, budget, opts.device).map_err(|e| e.to_string())?;
    let align = Alignment::load_or_compute(&engine.model, &opts.model_dir, engine.vocab_limit(), opts.realign)
        .map_err(|e| e.to_string())?
        .0;
    Ok(WorkerState { engine, align, prompts: opts.prompts })
}

/// Runs jobs until the queue closes: a plain-chat job with the chat jobs waiting behind it that fit the
/// KV buffer beside it (one batch), a multi-agent job alone. A panic in the engine closes the queue: the
/// engine's state is unknown afterwards, so every later request is answered 503 with the reason.
fn serve(mut st: WorkerState, queue: &Queue) {
    let flag = st.engine.abort_flag();
    let slots = st.engine.kv.slots();
    while let Some(job) = queue.pop() {
        if let Work::Chat { prompt_ids, max_new, .. } = &job.work {
            let room = slots.saturating_sub(prompt_ids.len() + max_new);
            let mut jobs = vec![job];
            jobs.extend(queue.take_chats(batch::MAX_BATCH - 1, room));
            jobs.retain(|j| {
                let live = j.control.start_detached();
                if !live {
                    queue.stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
                live
            });
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| batch::run(&mut st.engine, &jobs, &queue.stats, &flag)));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!("a chat batch failed: {e}");
                    let e = ApiError::from_engine(e);
                    for j in &jobs {
                        queue.stats.failed.fetch_add(1, Ordering::Relaxed);
                        let _ = j.events.send(Event::Failed(e.clone()));
                    }
                }
                Err(panic) => return poisoned(queue, &jobs, panic),
            }
            queue.done();
            continue;
        }
        if !job.control.start(&flag) {
            queue.stats.skipped.fetch_add(1, Ordering::Relaxed);
            queue.done();
            continue;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut st, &job)));
        st.engine.on_phase = None;
        job.control.finish();
        match outcome {
            Ok(Ok(())) => {
                queue.stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(engine::Error::Interrupted(_))) => {
                queue.stats.aborted.fetch_add(1, Ordering::Relaxed);
                if !job.control.is_cancelled() {
                    // not its client: the server is stopping (a departed client gets nothing)
                    let e = ApiError::unavailable("the server is shutting down; the request was stopped");
                    let _ = job.events.send(Event::Failed(e));
                }
            }
            Ok(Err(e)) => {
                queue.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("a request failed: {e}");
                let _ = job.events.send(Event::Failed(ApiError::from_engine(e)));
            }
            Err(panic) => return poisoned(queue, std::slice::from_ref(&job), panic),
        }
        queue.done();
    }
}

/// After a panic: the running jobs get 500, the waiting ones 503, and the queue closes with the reason.
fn poisoned(queue: &Queue, running: &[Job], panic: Box<dyn std::any::Any + Send>) {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown".into());
    let why = format!("the engine failed on an earlier request (panic: {what}); restart the server");
    tracing::error!("{why}");
    for job in running {
        queue.stats.failed.fetch_add(1, Ordering::Relaxed);
        let _ = job.events.send(Event::Failed(ApiError::internal(why.clone())));
    }
    for waiting in queue.close(&why) {
        let _ = waiting.events.send(Event::Failed(ApiError::unavailable(why.clone())));
    }
    queue.done();
}

fn run(st: &mut WorkerState, job: &Job) -> engine::Result<()> {
    match &job.work {
        Work::Mas { cfg, question } => mas(st, job, cfg, question),
        Work::Chat { .. } => Err(engine::Error::Other("a chat request outside a chat batch".into())),
    }
}

/// A TextMAS or LatentMAS run; the final agent's tokens are streamed.
fn mas(st: &mut WorkerState, job: &Job, cfg: &RunConfig, question: &str) -> engine::Result<()> {
    let abort = st.engine.abort_flag();
    let mut on_token = |_: &engine::tokenizer::Tokenizer, t: RunToken| {
        if job.stream && t.is_final && job.events.send(Event::Token(t.id)).is_err() {
            abort.store(true, Ordering::SeqCst);
        }
    };
    let align = (cfg.method == Method::Latent).then_some(&st.align);
    let questions = [question.to_string()];
    let mut out = run_batch_streaming(&mut st.engine, &st.prompts, align, cfg, &questions, &mut on_token)?;
    let report = out.reports.pop().ok_or_else(|| engine::Error::Other("the run returned no report".into()))?;
    let last_ids = out.traces.pop().and_then(|t| t.agents.last().map(|a| a.generated_ids.clone())).unwrap_or_default();
    let stops = st.engine.tokenizer.stop_ids();
    let finish = if last_ids.last().is_some_and(|id| stops.contains(id)) { "stop" } else { "length" };
    let usage = Usage { prompt_tokens: report.totals.prompt_tokens, completion_tokens: report.totals.generated_tokens };
    let json = serde_json::to_value(&report).map_err(|e| engine::Error::Other(e.to_string()))?;
    let _ = job.events.send(Event::Done { text: report.text, finish, usage, report: Some(json) });
    Ok(())
}
