//! `lm_run`: one question through a method and topology, as `latentmas run` runs it. It is the row API's
//! phases arranged by the library: the run is lent the largest free range of the KV buffer (rows made by
//! `lm_row_create` keep theirs), and reports its phases, streams its answer and polls for an abort through
//! the caller's callbacks.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::Ordering;

use engine::engine::Phase as EnginePhase;
use engine::mas::method::{Family, Method, Topology};
use engine::mas::report::QuestionReport;
use engine::mas::run::{batch_slots, run_batch_streaming, RunConfig};
use engine::sample::SamplingParams;
use engine::text_stream::TextStream;

use crate::{
    c_string, entry_status, from_error, infallible, lookup, out_slot, read_str, read_struct, read_word, register,
    EngineState, Fail, LmAbortCallback, LmEngine, LmProgressCallback, LmResult, LmRunParams, LmTokenCallback, Phase,
    Res, Status,
};

/// `lm_run_default_params`: the CLI's defaults (latent, sequential, math, 10 latent steps, 2048 new tokens,
/// sampling 0.6 / 20 / 0.95, seed 0).
#[no_mangle]
pub extern "C" fn lm_run_default_params() -> LmRunParams {
    infallible(run_defaults, run_defaults)
}

fn run_defaults() -> LmRunParams {
    let s = SamplingParams::default();
    LmRunParams {
        method: c"latent".as_ptr(),
        topology: c"sequential".as_ptr(),
        task_family: c"math".as_ptr(),
        latent_steps: 10,
        max_new_tokens: 2048,
        greedy: s.greedy,
        temperature: s.temperature,
        top_k: s.top_k as c_int,
        top_p: s.top_p,
        seed: s.seed,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
        on_token: None,
        should_abort: None,
        user_data: std::ptr::null_mut(),
    }
}

/// Validates the run parameters and makes the run's configuration.
///
/// # Safety
/// The string fields of `p` must be NULL or NUL-terminated.
unsafe fn run_config(p: &LmRunParams) -> Res<RunConfig> {
    let bad = |m: String| Err(Fail::new(Status::LmErrInvalidArgument, m));
    // SAFETY: forwarded contract (string fields are NULL or NUL-terminated).
    let (method, topology, family) = unsafe {
        (
            read_word::<Method>(p.method, "params.method")?,
            read_word::<Topology>(p.topology, "params.topology")?,
            read_word::<Family>(p.task_family, "params.task_family")?,
        )
    };
    if p.latent_steps < 0 {
        return bad(format!("params.latent_steps = {} must be >= 0", p.latent_steps));
    }
    if p.max_new_tokens < 1 {
        return bad(format!("params.max_new_tokens = {} must be >= 1", p.max_new_tokens));
    }
    if p.top_k < 0 {
        return bad(format!("params.top_k = {} must be >= 0 (0 = no top-k cut)", p.top_k));
    }
    let greedy = p.greedy;
    let usable_temperature = p.temperature > 0.0 && p.temperature.is_finite();
    if !greedy && !usable_temperature {
        return bad(format!("params.temperature = {} must be > 0 and finite (or set params.greedy)", p.temperature));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return bad(format!("params.top_p = {} must be in (0, 1]", p.top_p));
    }
    if topology == Topology::Parallel && method != Method::Latent {
        return bad(format!("params.topology \"parallel\" is a LatentMAS topology; params.method is \"{method}\""));
    }
    let cfg = RunConfig {
        method,
        topology,
        family,
        latent_steps: if method == Method::Latent { p.latent_steps as usize } else { 0 },
        think: false,
        compat_reference: false,
        sampling: SamplingParams {
            greedy,
            temperature: p.temperature,
            top_k: p.top_k as usize,
            top_p: p.top_p,
            seed: p.seed,
        },
        max_new_tokens: p.max_new_tokens as usize,
        text_mas_context_length: engine::mas::run::REFERENCE_CONTEXT_LENGTH,
    };
    cfg.validate().map_err(|e| from_error(e, false))?;
    Ok(cfg)
}

/// `lm_run`: runs one question in the largest free range of the engine's KV buffer (rows of the row API stay
/// as they are); serialises with every other call on the same engine. `params.on_token` streams the final
/// agent's answer; `params.should_abort` (or `on_token` returning false) stops the run with LM_ERR_ABORTED.
///
/// # Safety
/// `engine` may be any value; `question` must be NULL or NUL-terminated; `params` must be NULL or point to an
/// `lm_run_params` whose strings are NULL or NUL-terminated; `out` must be NULL or point to a writable
/// `lm_result *`.
#[no_mangle]
pub unsafe extern "C" fn lm_run(
    engine: *mut LmEngine,
    question: *const c_char,
    params: *const LmRunParams,
    out: *mut *mut LmResult,
) -> c_int {
    entry_status("lm_run", || {
        // SAFETY: forwarded contract of this function (out is NULL or writable).
        let out = unsafe { out_slot(out, "out")? };
        let handle = lookup(engine, "engine")?;
        // SAFETY: forwarded contract (question is NULL or NUL-terminated).
        let question = unsafe { read_str(question, "question")? }.to_string();
        // SAFETY: forwarded contract (params is NULL or readable).
        let p = unsafe { read_struct(params, "params")? };
        // SAFETY: forwarded contract (its string fields are NULL or NUL-terminated).
        let cfg = unsafe { run_config(&p)? };
        let hooks = Hooks {
            progress: p.progress,
            progress_user: p.progress_user_data,
            on_token: p.on_token,
            should_abort: p.should_abort,
            user: p.user_data,
        };
        let report = handle.with(move |st| run_one(st, &cfg, question, hooks))?;
        let json = serde_json::to_string(&report).map_err(|e| Fail::new(Status::LmErrRun, e.to_string()))?;
        let result = LmResult {
            text: c_string(&report.text),
            answer: report.answer.as_deref().map(c_string),
            json: c_string(&json),
        };
        let handle = register(result)?;
        // SAFETY: `out` was checked and cleared by out_slot above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// The caller's callbacks and their data, carried to the engine's worker thread: the caller waits in `lm_run`
/// while they run there.
#[derive(Clone, Copy)]
struct Hooks {
    progress: LmProgressCallback,
    progress_user: *mut c_void,
    on_token: LmTokenCallback,
    should_abort: LmAbortCallback,
    user: *mut c_void,
}

// SAFETY: see the type's doc: the callbacks and their data are used only while lm_run waits for them.
unsafe impl Send for Hooks {}

impl Hooks {
    fn should_abort(&self) -> bool {
        // SAFETY: the caller's callback with its own data.
        self.should_abort.is_some_and(|f| unsafe { f(self.user) })
    }
}

/// One question on a locked engine, in the largest free range of its KV buffer.
fn run_one(st: &mut EngineState, cfg: &RunConfig, question: String, hooks: Hooks) -> Res<QuestionReport> {
    let questions = [question];
    let need = batch_slots(&st.engine.tokenizer, &st.prompts, cfg, &questions).map_err(|e| from_error(e, false))?;
    let (start, len) = st.rows.lend_largest();
    let result = if need > len {
        Err(no_room(st, need, len))
    } else {
        st.engine.kv.lend(start..start + len).map_err(|e| from_error(e, false)).and_then(|()| {
            let r = run_in_window(st, cfg, &questions, hooks);
            st.engine.kv.unlend();
            r
        })
    };
    st.rows.give_back(start, len);
    result
}

/// The error for a run that needs `need` KV tokens where the largest free range holds `len`.
fn no_room(st: &EngineState, need: usize, len: usize) -> Fail {
    let kv = &st.engine.kv;
    let (slots, per_token, enough) = (kv.slots(), kv.bytes_for(1), kv.bytes_for(need));
    let message = if st.rows.is_empty() {
        format!(
            "this run needs {need} KV tokens but the engine's buffer holds {slots} ({per_token} bytes per token); \
             open the engine with kv_budget_bytes >= {enough}, or lower params.max_new_tokens"
        )
    } else {
        format!(
            "this run needs {need} KV tokens but the largest free range of the engine's buffer holds {len}: {} live \
             row(s) made by lm_row_create hold {} of its {slots}; free rows, open the engine with kv_budget_bytes >= \
             {}, or lower params.max_new_tokens",
            st.rows.len(),
            st.rows.held(),
            kv.bytes_for(need + st.rows.held())
        )
    };
    Fail::new(Status::LmErrKvCapacity, message)
}

/// The run itself, the KV buffer's lent range set; the callbacks are attached for its duration only.
fn run_in_window(st: &mut EngineState, cfg: &RunConfig, questions: &[String], hooks: Hooks) -> Res<QuestionReport> {
    let flag = st.engine.abort_flag();
    flag.store(false, Ordering::Relaxed);
    let aborted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if hooks.progress.is_some() || hooks.should_abort.is_some() {
        // Agents are counted by their prefills: each agent prefills its prompt once.
        let mut agent = -1i32;
        let (flag, aborted) = (flag.clone(), aborted.clone());
        st.engine.on_phase = Some(Box::new(move |phase, work| {
            let h = hooks;
            let phase = match phase {
                EnginePhase::Prefill => {
                    agent += 1;
                    Phase::LmPhasePrefill
                }
                EnginePhase::Latent => Phase::LmPhaseLatent,
                EnginePhase::Decode => Phase::LmPhaseDecode,
            };
            if let Some(f) = h.progress {
                // SAFETY: the caller's callback, called with its own data while lm_run waits.
                unsafe { f(agent.max(0), phase, work.min(i32::MAX as usize) as i32, h.progress_user) };
            }
            if h.should_abort() {
                aborted.store(true, Ordering::Relaxed);
                flag.store(true, Ordering::Relaxed);
            }
        }));
    }
    let mut stream = TextStream::new();
    let mut on_token = |tok: &engine::tokenizer::Tokenizer, t: engine::mas::run::RunToken| {
        if aborted.load(Ordering::Relaxed) {
            return;
        }
        if let (true, Some(f)) = (t.is_final, hooks.on_token) {
            let piece = c_string(&stream.push(tok, t.id).unwrap_or_default());
            // SAFETY: the caller's callback; the piece lives until it returns.
            if !unsafe { f(t.id as i32, piece.as_ptr(), hooks.user) } {
                aborted.store(true, Ordering::Relaxed);
                flag.store(true, Ordering::Relaxed);
                return;
            }
        }
        if hooks.should_abort() {
            aborted.store(true, Ordering::Relaxed);
            flag.store(true, Ordering::Relaxed);
        }
    };
    let align = (cfg.method == Method::Latent).then_some(&st.align);
    let output = run_batch_streaming(&mut st.engine, &st.prompts, align, cfg, questions, &mut on_token);
    st.engine.on_phase = None;
    flag.store(false, Ordering::Relaxed);
    st.rows.forget_workspace();
    let generated = stream.ids().len();
    match output {
        _ if aborted.load(Ordering::Relaxed) => Err(Fail::new(
            Status::LmErrAborted,
            format!("the run was aborted by its callback ({generated} answer tokens streamed)"),
        )),
        Ok(mut output) => output.reports.pop().ok_or_else(|| Fail::new(Status::LmErrRun, "the run returned no report")),
        Err(e) => Err(from_error(e, false)),
    }
}
