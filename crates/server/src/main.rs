//! `latentmas-server --model DIR`: serves the model over an OpenAI-compatible HTTP API. The first line on
//! stdout is the bound address (`http://HOST:PORT`), printed once the model is loaded and the port is open.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser;
use engine::engine::DeviceKind;
use engine::kv::KvBudget;
use engine::mas::prompts::PromptSet;
use engine::tokenizer::Tokenizer;
use latentmas_server::queue::{Event, Queue};
use latentmas_server::worker::{self, EngineOptions};
use latentmas_server::{error::ApiError, routes, Shared};

#[derive(Parser)]
#[command(
    name = "latentmas-server",
    version,
    about = "An OpenAI-compatible HTTP server for latentmas (docs/SERVER.md)"
)]
struct Args {
    /// Model directory (config.json, *.safetensors, tokenizer files); a hub id with the `hub` feature.
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 = any free port (the first line on stdout says which).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Engine threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The one KV buffer every request runs in: tokens (`8192tok`) or bytes (`2GiB`) [default: the model's
    /// context length in tokens].
    #[arg(long)]
    kv_budget: Option<String>,
    /// Requests that may wait while one runs; more are answered 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// The model's name in requests and in GET /v1/models [default: the model directory's name].
    #[arg(long)]
    served_model_name: Option<String>,
    /// cpu | cuda | auto
    #[arg(long, default_value = "cpu")]
    device: String,
    /// LatentMAS: map hidden states through W_a before feeding them back (default off, as the reference).
    #[arg(long)]
    realign: bool,
    /// A prompt-set JSON file for the multi-agent methods (default: the built-in set).
    #[arg(long)]
    prompts: Option<PathBuf>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("latentmas-server: {e}");
        std::process::exit(1);
    }
}

fn device(word: &str) -> Result<DeviceKind, String> {
    match word {
        "cpu" => Ok(DeviceKind::Cpu),
        "cuda" => {
            engine::backend::cuda::probe().map_err(|e| format!("--device cuda: {e}"))?;
            Ok(DeviceKind::Cuda)
        }
        "auto" => Ok(match engine::backend::cuda::probe() {
            Ok(_) => DeviceKind::Cuda,
            Err(e) => {
                tracing::info!("--device auto: using the cpu backend ({e})");
                DeviceKind::Cpu
            }
        }),
        other => Err(format!("--device {other:?}: expected one of: cpu, cuda, auto")),
    }
}

fn run(a: Args) -> Result<(), String> {
    let device = device(&a.device)?;
    let kv_budget = match &a.kv_budget {
        None => None,
        Some(s) => Some(s.parse::<KvBudget>().map_err(|e| e.to_string())?),
    };
    let prompts = match &a.prompts {
        None => PromptSet::builtin(),
        Some(p) => PromptSet::from_file(p).map_err(|e| e.to_string())?,
    };
    let dir = engine::model::hub::resolve_model(&a.model).map_err(|e| e.to_string())?;
    let served_name = a.served_model_name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| a.model.clone())
    });
    if served_name.is_empty() {
        return Err("--served-model-name must not be empty".into());
    }
    let queue = Arc::new(Queue::new(a.max_queue));
    let tokenizer = Tokenizer::load(&dir).map_err(|e| e.to_string())?;
    let opts = EngineOptions {
        model_dir: dir.clone(),
        kv_budget,
        device,
        threads: a.threads,
        realign: a.realign,
        prompts: prompts.clone(),
    };
    let (ready, engine_thread) = worker::spawn(opts, queue.clone())?;
    let shared = Arc::new(Shared {
        served_name,
        tokenizer,
        prompts,
        limits: ready.limits,
        kv_bytes: ready.kv_bytes,
        queue: queue.clone(),
        started: routes::now(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // the HTTP side parses, queues and streams; the engine's thread does the work
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let abort = ready.abort;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .map_err(|e| format!("cannot listen on {}:{}: {e}", a.host, a.port))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "http://{addr}");
            let _ = out.flush();
        }
        tracing::info!(
            "serving {} on http://{addr} ({} KV tokens, {} bytes; queue {})",
            shared.served_name,
            shared.limits.kv_slots,
            shared.kv_bytes,
            a.max_queue
        );
        let q = queue.clone();
        axum::serve(listener, routes::router(shared))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: refusing new requests, stopping the running one");
                for job in q.close("the server is shutting down") {
                    let _ = job.events.send(Event::Failed(ApiError::unavailable("the server is shutting down")));
                }
                abort.store(true, Ordering::SeqCst);
            })
            .await
            .map_err(|e| format!("the server failed: {e}"))
    })?;
    let _ = engine_thread.join();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
