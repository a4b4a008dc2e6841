//! `Engine.generate`'s iterator: a worker thread prefills and decodes, sending each new piece of text
//! over a channel; `__next__` waits for the next piece with the GIL released, checking for Ctrl-C.
//! Dropping the iterator early (a `break`, an exception in the loop) stops the worker and waits for it,
//! so the engine is free for the next call.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use latentmas::sample::SamplingParams;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use super::{lock, py_err, stop, Error, State, POLL};

/// What the worker sends: a piece of text, then at the end the outcome.
enum Msg {
    Piece(String),
    Done(Result<(), latentmas::Error>),
}

#[pyclass(module = "latentmas._native")]
pub struct TokenStream {
    /// In a Mutex so that the class is Sync, as pyo3 and waiting without the GIL require.
    rx: Mutex<Receiver<Msg>>,
    worker: Option<JoinHandle<()>>,
    abort: Arc<AtomicBool>,
}

impl TokenStream {
    pub(crate) fn start(
        state: Arc<Mutex<State>>,
        abort: Arc<AtomicBool>,
        prompt: String,
        system: Option<String>,
        max_new_tokens: usize,
        params: SamplingParams,
    ) -> PyResult<Self> {
        // Unbounded: the worker never waits for the reader, so it always finishes and frees the engine.
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("latentmas-generate".into())
            .spawn(move || {
                let r = generate(&state, &prompt, system.as_deref(), max_new_tokens, &params, &tx);
                let _ = tx.send(Msg::Done(r));
            })
            .map_err(|e| Error::new_err(format!("cannot start the engine's worker thread: {e}")))?;
        Ok(TokenStream { rx: Mutex::new(rx), worker: Some(worker), abort })
    }
}

/// Renders the chat turn, prefills it and decodes, sending each newly completed piece of text.
fn generate(
    state: &Mutex<State>,
    prompt: &str,
    system: Option<&str>,
    max_new: usize,
    params: &SamplingParams,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), latentmas::Error> {
    let mut guard = lock(state)?;
    let engine = &mut guard.engine;
    let text = engine.tokenizer.render_chat(system, prompt, None)?;
    let ids = engine.tokenizer.encode(&text)?;
    let need = ids.len().saturating_add(max_new);
    if need > engine.max_context {
        return Err(latentmas::Error::InvalidArgument(format!(
            "the prompt ({} tokens) and max_new_tokens {max_new} need {need} positions but the model's context is {}",
            ids.len(),
            engine.max_context
        )));
    }
    engine.kv.reset();
    let mut row = [engine.kv.reserve(need)?];
    engine.prefill(&mut row, &[&ids], true)?;
    let mut text = latentmas::text_stream::TextStream::new();
    let on_token = |tok: &latentmas::tokenizer::Tokenizer, _row: usize, id: u32| {
        if let Ok(piece) = text.push(tok, id) {
            if !piece.is_empty() {
                let _ = tx.send(Msg::Piece(piece));
            }
        }
    };
    let r = engine.decode(&mut row, params, max_new, on_token);
    engine.kv.reset();
    r.map(|_| ())
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<String> {
        loop {
            let rx = &self.rx;
            let msg = py.detach(|| rx.lock().map_err(|_| RecvTimeoutError::Disconnected)?.recv_timeout(POLL));
            match msg {
                Ok(Msg::Piece(p)) => return Ok(p),
                Ok(Msg::Done(r)) => {
                    self.join(py);
                    r.map_err(py_err)?;
                    return Err(PyStopIteration::new_err(()));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(signal) = py.check_signals() {
                        self.stop(py);
                        return Err(signal);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if self.worker.is_none() {
                        return Err(PyStopIteration::new_err(()));
                    }
                    self.join(py);
                    return Err(Error::new_err("the engine's worker thread ended without a result (it panicked)"));
                }
            }
        }
    }

    /// Stops the generation now (what dropping the iterator also does).
    fn close(&mut self, py: Python<'_>) {
        self.stop(py);
    }
}

impl TokenStream {
    fn join(&mut self, py: Python<'_>) {
        if let Some(w) = self.worker.take() {
            py.detach(|| {
                let _ = w.join();
            });
        }
    }

    fn stop(&mut self, py: Python<'_>) {
        if let Some(w) = self.worker.take() {
            stop(py, &self.abort, w);
        }
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            Python::attach(|py| stop(py, &self.abort, w));
        }
    }
}
