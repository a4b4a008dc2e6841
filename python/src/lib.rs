//! `latentmas._native`: the engine for Python. `latentmas/__init__.py` re-exports it and turns the fed
//! latent vectors into numpy arrays.
//!
//! Every call that runs the model does so on a worker thread, with the GIL released: the calling thread
//! waits in slices of [`POLL`], checking for signals between them, so Ctrl-C raises `KeyboardInterrupt`
//! promptly. The interrupt sets the engine's abort flag, which stops decode and the latent steps within
//! one step ([`Engine::abort_flag`]); the worker is joined before the exception propagates, so the engine
//! is idle and usable again afterwards.

mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use latentmas::engine::{set_threads_owned, DeviceKind, Engine};
use latentmas::kv::KvBudget;
use latentmas::latent::Alignment;
use latentmas::mas::method::{Family, Method, Topology};
use latentmas::mas::prompts::PromptSet;
use latentmas::mas::run::{batch_slots, run_batch, RunConfig, REFERENCE_CONTEXT_LENGTH};
use latentmas::model::hub::resolve_model;
use latentmas::sample::SamplingParams;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use stream::TokenStream;

pyo3::create_exception!(
    _native,
    Error,
    PyRuntimeError,
    "An error of the latentmas engine (its message names the problem)."
);

/// How often a waiting call checks for Ctrl-C.
const POLL: Duration = Duration::from_millis(50);

/// The engine's own error as a Python exception: bad arguments are `ValueError`, the rest [`Error`].
fn py_err(e: latentmas::Error) -> PyErr {
    match e {
        latentmas::Error::InvalidArgument(_) => PyValueError::new_err(e.to_string()),
        latentmas::Error::Interrupted(_) => PyKeyboardInterrupt::new_err(e.to_string()),
        e => Error::new_err(e.to_string()),
    }
}

/// What one engine owns; runs take it whole (they serialise).
struct State {
    engine: Engine,
    /// Computed (or read from the model's cache) on the first LatentMAS run.
    align: Option<Alignment>,
    prompts: PromptSet,
    realign: bool,
}

/// `latentmas.Engine(model, device="cpu", kv_budget=None, threads=None, realign=False)`.
#[pyclass(name = "Engine", module = "latentmas._native", frozen, subclass)]
struct Engine_ {
    state: Arc<Mutex<State>>,
    abort: Arc<AtomicBool>,
}

fn lock(state: &Mutex<State>) -> Result<MutexGuard<'_, State>, latentmas::Error> {
    state
        .lock()
        .map_err(|_| latentmas::Error::Other("a previous call on this engine panicked; open a new Engine".into()))
}

fn device_kind(device: &str) -> PyResult<DeviceKind> {
    match device {
        "cpu" => Ok(DeviceKind::Cpu),
        "cuda" => Ok(DeviceKind::Cuda),
        "emu" => Ok(DeviceKind::Emu),
        other => Err(PyValueError::new_err(format!("device = {other:?}: expected \"cpu\", \"cuda\" or \"emu\""))),
    }
}

fn word<T: std::str::FromStr>(value: &str, name: &str) -> PyResult<T>
where
    T::Err: std::fmt::Display,
{
    value.parse::<T>().map_err(|e| PyValueError::new_err(format!("{name} = {value:?}: {e}")))
}

/// Sampling settings from keyword arguments, checked as the CLI checks its flags.
fn sampling(greedy: bool, temperature: f32, top_k: usize, top_p: f32, seed: u64) -> PyResult<SamplingParams> {
    let temperature_ok = temperature > 0.0 && temperature.is_finite();
    if !greedy && !temperature_ok {
        return Err(PyValueError::new_err(format!(
            "temperature = {temperature} must be > 0 and finite (or pass greedy=True)"
        )));
    }
    // Written so that NaN fails the check.
    let top_p_ok = top_p > 0.0 && top_p <= 1.0;
    if !top_p_ok {
        return Err(PyValueError::new_err(format!("top_p = {top_p} must be in (0, 1]")));
    }
    Ok(SamplingParams { greedy, temperature, top_k, top_p, seed })
}

/// Runs `work` on a worker thread with the GIL released and waits for it, checking for signals every
/// [`POLL`]; a signal's exception (KeyboardInterrupt) stops the worker through the abort flag first.
fn run_on_worker<T: Send + 'static>(
    py: Python<'_>,
    abort: &Arc<AtomicBool>,
    work: impl FnOnce() -> Result<T, latentmas::Error> + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = mpsc::channel();
    // A Mutex makes the receiver Sync, which waiting without the GIL needs (`Python::detach`).
    let rx = Mutex::new(rx);
    let worker: JoinHandle<()> = std::thread::Builder::new()
        .name("latentmas-run".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| Error::new_err(format!("cannot start the engine's worker thread: {e}")))?;
    loop {
        match py.detach(|| rx.lock().map_err(|_| RecvTimeoutError::Disconnected)?.recv_timeout(POLL)) {
            Ok(result) => {
                let _ = worker.join();
                return result.map_err(py_err);
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(signal) = py.check_signals() {
                    stop(py, abort, worker);
                    return Err(signal);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = worker.join();
                return Err(Error::new_err("the engine's worker thread ended without a result (it panicked)"));
            }
        }
    }
}

/// Stops a worker through the abort flag, waits for it without the GIL, and clears the flag.
fn stop(py: Python<'_>, abort: &AtomicBool, worker: JoinHandle<()>) {
    abort.store(true, Ordering::SeqCst);
    py.detach(|| {
        let _ = worker.join();
    });
    abort.store(false, Ordering::SeqCst);
}

#[pymethods]
impl Engine_ {
    /// Opens a model directory (or hub id): weights, tokenizer and one KV buffer of `kv_budget` tokens
    /// (default 8192) that every call reuses. `threads` sizes the process's one thread pool (first
    /// engine wins). `realign` maps hidden states through the ridge alignment W_a in LatentMAS runs.
    #[new]
    #[pyo3(signature = (model, device = "cpu", kv_budget = None, threads = None, realign = false))]
    fn new(
        py: Python<'_>,
        model: &str,
        device: &str,
        kv_budget: Option<usize>,
        threads: Option<usize>,
        realign: bool,
    ) -> PyResult<Self> {
        let device = device_kind(device)?;
        if threads == Some(0) {
            return Err(PyValueError::new_err("threads = 0: must be at least 1 (or None for one per core)"));
        }
        let tokens = kv_budget.unwrap_or(8192);
        if tokens == 0 {
            return Err(PyValueError::new_err("kv_budget = 0: the KV buffer must hold at least one token"));
        }
        let model = model.to_string();
        let engine = py
            .detach(move || {
                set_threads_owned(threads);
                let dir = resolve_model(&model)?;
                Engine::open_on(&dir, KvBudget::Tokens(tokens), device)
            })
            .map_err(py_err)?;
        let abort = engine.abort_flag();
        let state = State { engine, align: None, prompts: PromptSet::builtin(), realign };
        Ok(Engine_ { state: Arc::new(Mutex::new(state)), abort })
    }

    /// Tokens the KV buffer holds.
    #[getter]
    fn kv_tokens(&self) -> PyResult<usize> {
        Ok(lock(&self.state).map_err(py_err)?.engine.kv.slots())
    }

    /// One chat turn, streamed: an iterator of text pieces (each complete UTF-8; joined they are the reply).
    #[pyo3(signature = (prompt, system = None, max_new_tokens = 256, greedy = true, temperature = 0.6,
                        top_k = 20, top_p = 0.95, seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        prompt: String,
        system: Option<String>,
        max_new_tokens: usize,
        greedy: bool,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
    ) -> PyResult<TokenStream> {
        if max_new_tokens == 0 {
            return Err(PyValueError::new_err("max_new_tokens = 0: must be at least 1"));
        }
        let params = sampling(greedy, temperature, top_k, top_p, seed)?;
        TokenStream::start(self.state.clone(), self.abort.clone(), prompt, system, max_new_tokens, params)
    }

    /// Answers one question with `method` ("single", "text" or "latent") and returns the report as a
    /// dict (what `latentmas run --json` prints). With `return_latents`, the report's "latents" holds,
    /// per thinking agent, its role and the raw f32 bytes of the vectors it fed back (m × hidden); the
    /// Python wrapper turns them into numpy arrays.
    #[pyo3(signature = (question, method = "latent", topology = "sequential", task_family = "math",
                        latent_steps = 10, max_new_tokens = 4096, greedy = false, temperature = 0.6,
                        top_k = 20, top_p = 0.95, seed = 0, think = false, return_latents = false))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        question: String,
        method: &str,
        topology: &str,
        task_family: &str,
        latent_steps: usize,
        max_new_tokens: usize,
        greedy: bool,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
        think: bool,
        return_latents: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let method: Method = word(method, "method")?;
        let cfg = RunConfig {
            method,
            topology: word::<Topology>(topology, "topology")?,
            family: word::<Family>(task_family, "task_family")?,
            latent_steps: if method == Method::Latent { latent_steps } else { 0 },
            think,
            compat_reference: false,
            sampling: sampling(greedy, temperature, top_k, top_p, seed)?,
            max_new_tokens,
            text_mas_context_length: REFERENCE_CONTEXT_LENGTH,
        };
        cfg.validate().map_err(py_err)?;
        let state = self.state.clone();
        let (json, latents) = run_on_worker(py, &self.abort, move || run_one(&state, &cfg, question, return_latents))?;
        let report = py.import("json")?.call_method1("loads", (json,))?;
        if return_latents {
            let agents: Vec<(String, Bound<'py, PyBytes>, usize)> =
                latents.into_iter().map(|(role, bytes, m)| (role, PyBytes::new(py, &bytes), m)).collect();
            report.set_item("latents", agents)?;
        }
        Ok(report)
    }
}

/// The latent vectors one thinking agent fed: its role, their f32 bytes, how many.
type AgentLatents = (String, Vec<u8>, usize);

/// One question on the engine: the report's JSON and, on request, every agent's fed vectors.
fn run_one(
    state: &Mutex<State>,
    cfg: &RunConfig,
    question: String,
    return_latents: bool,
) -> Result<(String, Vec<AgentLatents>), latentmas::Error> {
    let mut guard = lock(state)?;
    let st = &mut *guard;
    let questions = [question];
    let need = batch_slots(&st.engine.tokenizer, &st.prompts, cfg, &questions)?;
    if need > st.engine.kv.slots() {
        return Err(latentmas::Error::KvCapacity(format!(
            "this run needs {need} KV tokens but the engine's buffer holds {}; open the Engine with kv_budget >= {need}",
            st.engine.kv.slots()
        )));
    }
    if cfg.method == Method::Latent && st.align.is_none() {
        let dir = st.engine.model_dir.clone();
        let (align, _) = Alignment::load_or_compute(&st.engine.model, &dir, st.engine.vocab_limit(), st.realign)?;
        st.align = Some(align);
    }
    let align = if cfg.method == Method::Latent { st.align.as_ref() } else { None };
    let mut output = run_batch(&mut st.engine, &st.prompts, align, cfg, &questions)?;
    let report = output.reports.pop().ok_or_else(|| latentmas::Error::Other("the run returned no report".into()))?;
    let json = serde_json::to_string(&report).map_err(|e| latentmas::Error::Other(e.to_string()))?;
    let mut latents = Vec::new();
    if return_latents {
        for agent in output.traces.pop().map(|t| t.agents).unwrap_or_default() {
            if agent.latent_inputs.is_empty() {
                continue;
            }
            let m = agent.latent_inputs.len();
            let bytes = agent.latent_inputs.iter().flat_map(|v| v.full.iter().flat_map(|x| x.to_ne_bytes())).collect();
            latents.push((agent.role, bytes, m));
        }
    }
    Ok((json, latents))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine_>()?;
    m.add_class::<TokenStream>()?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
