//! The row API: tokenizing, and one row (a range of the engine's KV buffer) driven phase by phase: prefill,
//! latent steps, decode with a per-token callback. `lm_run` is the same phases arranged by the LatentMAS
//! run; a program can arrange them itself.
//!
//! The engine's workspace holds the last forward call's hidden state and logits, whichever row made them, so
//! each row keeps its own copies: a decode starts from its row's logits, and latent steps (on the cpu device)
//! from its row's hidden state, even after another row ran in between.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::engine::DeviceKind;
use engine::error::Error;
use engine::kv::KvRow;
use engine::sample::SamplingParams;
use engine::text_stream::TextStream;

use crate::slots::Slots;
use crate::{
    c_string, check_ptr, entry, entry_status, from_error, lookup, read_str, read_struct, register, release,
    EngineState, Fail, Handled, Kind, LmAbortCallback, LmEngine, LmSamplingParams, LmTokenCallback, Res, Status,
};

/// `lm_row`: one row of an engine's KV buffer. Holds its engine alive; freeing it returns its range.
pub struct LmRow {
    engine: Arc<LmEngine>,
    id: u64,
}

impl Handled for LmRow {
    const KIND: Kind = Kind::Row;
}

impl Drop for LmRow {
    fn drop(&mut self) {
        // A poisoned engine still takes its range back: only the bookkeeping is touched.
        let mut st = self.engine.state.lock().unwrap_or_else(|e| e.into_inner());
        st.rows.remove(self.id);
    }
}

/// One row's cache range and what its last call left: the last hidden state (after a prefill or latent
/// steps) and the next-token logits (after a prefill only).
struct RowState {
    kv: KvRow,
    hidden: Option<Vec<f32>>,
    logits: Option<Vec<f32>>,
}

/// The rows of one engine.
pub(crate) struct RowTable {
    slots: Slots,
    rows: HashMap<u64, RowState>,
    /// The row whose state the workspace (and the device) holds now.
    last: Option<u64>,
}

static NEXT_ROW: AtomicU64 = AtomicU64::new(1);

impl RowTable {
    pub(crate) fn new(slots: usize) -> Self {
        RowTable { slots: Slots::new(slots), rows: HashMap::new(), last: None }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Tokens the live rows hold (their capacities).
    pub(crate) fn held(&self) -> usize {
        self.slots.total() - self.slots.free_total()
    }

    /// Lends the largest free range of the buffer to an `lm_run` (`(start, len)`), until [`RowTable::give_back`].
    pub(crate) fn lend_largest(&mut self) -> (usize, usize) {
        self.slots.take_largest()
    }

    pub(crate) fn give_back(&mut self, start: usize, len: usize) {
        if len > 0 {
            self.slots.give(start, len);
        }
    }

    /// The workspace now holds another call's outputs: every row decodes and steps from its own copies.
    pub(crate) fn forget_workspace(&mut self) {
        self.last = None;
    }

    fn remove(&mut self, id: u64) {
        if let Some(r) = self.rows.remove(&id) {
            self.slots.give(r.kv.slot_base, r.kv.capacity);
        }
        if self.last == Some(id) {
            self.last = None;
        }
    }
}

/// Writes `ids` to a caller buffer of `n_max` tokens and their count to `n_tokens`; a short buffer is an error
/// that names the size needed (`n_tokens` still set, so a caller may ask with n_max = 0 first).
///
/// # Safety
/// `tokens` must be NULL or point to `n_max` writable `int32_t`; `n_tokens` NULL or writable.
unsafe fn write_tokens(ids: &[u32], tokens: *mut i32, n_max: usize, n_tokens: *mut usize) -> Res<()> {
    check_ptr(n_tokens, "n_tokens")?;
    // SAFETY: checked non-NULL and aligned; the caller promises it is writable.
    unsafe { n_tokens.write(ids.len()) };
    if ids.len() > n_max {
        return Err(Fail::new(
            Status::LmErrInvalidArgument,
            format!("the buffer holds n_max = {n_max} tokens but the text has {}; pass a larger buffer", ids.len()),
        ));
    }
    if ids.is_empty() {
        return Ok(());
    }
    check_ptr(tokens, "tokens")?;
    for (i, &id) in ids.iter().enumerate() {
        // SAFETY: i < ids.len() <= n_max, the caller's buffer size; non-NULL and aligned (checked above).
        unsafe { tokens.add(i).write(id as i32) };
    }
    Ok(())
}

/// `lm_tokenize`: the token ids of `text` (no special tokens added, no chat template) into `tokens`, which
/// holds `n_max`. `*n_tokens` is always set to the count, so a call with `tokens` NULL and `n_max` 0 asks for
/// the size (it returns LM_ERR_INVALID_ARGUMENT, as any too-small buffer does).
///
/// # Safety
/// `text` NULL or NUL-terminated; `tokens` NULL or `n_max` writable `int32_t`; `n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lm_tokenize(
    engine: *const LmEngine,
    text: *const c_char,
    tokens: *mut i32,
    n_max: usize,
    n_tokens: *mut usize,
) -> c_int {
    entry_status("lm_tokenize", || {
        let e = lookup(engine, "engine")?;
        // SAFETY: forwarded contract (text is NULL or NUL-terminated).
        let text = unsafe { read_str(text, "text")? };
        let ids = e.with(|st| st.engine.tokenizer.encode(text).map_err(|e| from_error(e, false)))?;
        // SAFETY: forwarded contract of the buffers.
        unsafe { write_tokens(&ids, tokens, n_max, n_tokens) }
    })
}

/// `lm_chat_tokenize`: renders `[system, user]` with the model's own chat template (generation prompt
/// included) and tokenizes it. `system` may be NULL (no system turn).
///
/// # Safety
/// As [`lm_tokenize`]; `system` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn lm_chat_tokenize(
    engine: *const LmEngine,
    system: *const c_char,
    user: *const c_char,
    tokens: *mut i32,
    n_max: usize,
    n_tokens: *mut usize,
) -> c_int {
    entry_status("lm_chat_tokenize", || {
        let e = lookup(engine, "engine")?;
        // SAFETY: forwarded contract (NULL or NUL-terminated).
        let system = if system.is_null() { None } else { Some(unsafe { read_str(system, "system")? }) };
        // SAFETY: as above.
        let user = unsafe { read_str(user, "user")? };
        let ids = e.with(|st| st.engine.chat_ids(system, user, "").map_err(|e| from_error(e, false)))?;
        // SAFETY: forwarded contract of the buffers.
        unsafe { write_tokens(&ids, tokens, n_max, n_tokens) }
    })
}

/// `lm_detokenize`: the text of `n_tokens` ids (special tokens skipped), NUL-terminated, into `text` of
/// `text_size` bytes. `*n_bytes` is always set to the text's length without the NUL, so a call with `text`
/// NULL and `text_size` 0 asks for the size (it returns LM_ERR_INVALID_ARGUMENT, as any too-small buffer does).
///
/// # Safety
/// `tokens` NULL or `n_tokens` readable `int32_t`; `text` NULL or `text_size` writable bytes; `n_bytes` NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn lm_detokenize(
    engine: *const LmEngine,
    tokens: *const i32,
    n_tokens: usize,
    text: *mut c_char,
    text_size: usize,
    n_bytes: *mut usize,
) -> c_int {
    entry_status("lm_detokenize", || {
        check_ptr(n_bytes, "n_bytes")?;
        let e = lookup(engine, "engine")?;
        let given: &[i32] = if n_tokens == 0 {
            &[]
        } else {
            check_ptr(tokens, "tokens")?;
            // SAFETY: non-NULL and aligned (checked); the caller promises n_tokens readable values.
            unsafe { std::slice::from_raw_parts(tokens, n_tokens) }
        };
        let out = e.with(|st| {
            let vocab = st.engine.vocab_limit();
            let ids = token_ids(given, vocab)?;
            st.engine.tokenizer.decode(&ids, true).map_err(|e| from_error(e, false))
        })?;
        let out = c_string(&out);
        let bytes = out.as_bytes_with_nul();
        // SAFETY: checked non-NULL and aligned; the caller promises it is writable.
        unsafe { n_bytes.write(bytes.len() - 1) };
        if bytes.len() > text_size {
            return Err(Fail::new(
                Status::LmErrInvalidArgument,
                format!("text_size = {text_size} bytes is too small: the text needs {} with its NUL", bytes.len()),
            ));
        }
        check_ptr(text, "text")?;
        // SAFETY: text holds text_size >= bytes.len() writable bytes (the caller's promise, checked size).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), text, bytes.len()) };
        Ok(())
    })
}

/// Checks caller token ids against the vocabulary.
fn token_ids(given: &[i32], vocab: usize) -> Res<Vec<u32>> {
    given
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            u32::try_from(t).ok().filter(|&t| (t as usize) < vocab).ok_or_else(|| {
                Fail::new(
                    Status::LmErrInvalidArgument,
                    format!("tokens[{i}] = {t} is not a token id (the vocabulary has {vocab})"),
                )
            })
        })
        .collect()
}

/// `lm_engine_dims`: the hidden size (floats per latent vector) and the vocabulary size.
///
/// # Safety
/// `hidden_size` and `vocab_size` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lm_engine_dims(engine: *const LmEngine, hidden_size: *mut u32, vocab_size: *mut u32) -> c_int {
    entry_status("lm_engine_dims", || {
        check_ptr(hidden_size, "hidden_size")?;
        check_ptr(vocab_size, "vocab_size")?;
        let e = lookup(engine, "engine")?;
        let (d, v) = e.with(|st| Ok((st.engine.hidden_size(), st.engine.vocab_limit())))?;
        // SAFETY: both checked non-NULL and aligned; the caller promises they are writable.
        unsafe {
            hidden_size.write(d as u32);
            vocab_size.write(v as u32);
        }
        Ok(())
    })
}

/// `lm_row_create`: a new empty row of `n_ctx` tokens (a free range of the engine's KV buffer, first fit),
/// its positions starting at 0. LM_ERR_KV_CAPACITY when no free range is that long.
///
/// # Safety
/// `out` NULL or a writable `lm_row *`.
#[no_mangle]
pub unsafe extern "C" fn lm_row_create(engine: *mut LmEngine, n_ctx: u32, out: *mut *mut LmRow) -> c_int {
    entry_status("lm_row_create", || {
        // SAFETY: forwarded contract (out is NULL or writable).
        let out = unsafe { crate::out_slot(out, "out")? };
        let e = lookup(engine, "engine")?;
        if n_ctx == 0 {
            return Err(Fail::new(Status::LmErrInvalidArgument, "n_ctx = 0: a row holds at least one token"));
        }
        let n = n_ctx as usize;
        let id = NEXT_ROW.fetch_add(1, Ordering::Relaxed);
        e.with(|st| {
            if n > st.engine.max_context {
                return Err(Fail::new(
                    Status::LmErrInvalidArgument,
                    format!("n_ctx = {n} exceeds the model's context length ({})", st.engine.max_context),
                ));
            }
            let t = &mut st.rows;
            let base = t.slots.take(n).ok_or_else(|| {
                Fail::new(
                    Status::LmErrKvCapacity,
                    format!(
                        "the KV buffer is full: no free range of n_ctx = {n} tokens ({} of {} tokens free, the \
                         largest free range {}); free rows, ask for fewer tokens, or open the engine with a larger \
                         kv_budget_bytes",
                        t.slots.free_total(),
                        t.slots.total(),
                        t.slots.largest_free()
                    ),
                )
            })?;
            let kv = KvRow { slot_base: base, capacity: n, pos_base: 0, len: 0 };
            t.rows.insert(id, RowState { kv, hidden: None, logits: None });
            Ok(())
        })?;
        let handle = register(LmRow { engine: e, id })?;
        // SAFETY: `out` was checked and cleared by out_slot above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// `lm_row_free`: NULL is a no-op; its range of the KV buffer is free for the next row.
#[no_mangle]
pub extern "C" fn lm_row_free(row: *mut LmRow) {
    entry("lm_row_free", (), || release(row, "row"))
}

/// `lm_row_size`: the tokens a row holds and its capacity.
///
/// # Safety
/// `n_tokens` and `n_ctx` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lm_row_size(row: *const LmRow, n_tokens: *mut u32, n_ctx: *mut u32) -> c_int {
    entry_status("lm_row_size", || {
        check_ptr(n_tokens, "n_tokens")?;
        check_ptr(n_ctx, "n_ctx")?;
        let r = lookup(row, "row")?;
        let kv = r.engine.with(|st| Ok(state(st, r.id)?.kv))?;
        // SAFETY: checked non-NULL and aligned; the caller promises they are writable.
        unsafe {
            n_tokens.write(kv.len as u32);
            n_ctx.write(kv.capacity as u32);
        }
        Ok(())
    })
}

fn state(st: &mut EngineState, id: u64) -> Res<&mut RowState> {
    st.rows.rows.get_mut(&id).ok_or_else(|| Fail::new(Status::LmErrInvalidHandle, "row: its entry is gone"))
}

/// A message in the C API's words for a row that cannot take `n` more tokens.
fn row_full(kv: &KvRow, n: usize, what: &str) -> Fail {
    Fail::new(
        Status::LmErrKvCapacity,
        format!(
            "{what} needs {n} more tokens but the row holds {} of its n_ctx = {} ({} free); create the row with a \
             larger n_ctx",
            kv.len,
            kv.capacity,
            kv.capacity - kv.len
        ),
    )
}

/// `lm_row_prefill`: appends `n_tokens` tokens to the row (LM_ERR_KV_CAPACITY when they do not fit in its
/// n_ctx); afterwards the row can decode or take latent steps.
///
/// # Safety
/// `tokens` NULL or `n_tokens` readable `int32_t`.
#[no_mangle]
pub unsafe extern "C" fn lm_row_prefill(row: *mut LmRow, tokens: *const i32, n_tokens: usize) -> c_int {
    entry_status("lm_row_prefill", || {
        let r = lookup(row, "row")?;
        check_ptr(tokens, "tokens")?;
        if n_tokens == 0 {
            return Err(Fail::new(Status::LmErrInvalidArgument, "n_tokens = 0: nothing to prefill"));
        }
        // SAFETY: non-NULL and aligned (checked); the caller promises n_tokens readable values.
        let given = unsafe { std::slice::from_raw_parts(tokens, n_tokens) };
        r.engine.with(|st| {
            let mut kv = state(st, r.id)?.kv;
            if kv.check_append(given.len()).is_err() {
                return Err(row_full(&kv, given.len(), &format!("the prompt of n_tokens = {}", given.len())));
            }
            let ids = token_ids(given, st.engine.vocab_limit())?;
            if kv.pos_base + kv.len + ids.len() > st.engine.max_context {
                return Err(Fail::new(
                    Status::LmErrKvCapacity,
                    format!(
                        "the prompt would end at position {} but the model's context is {} tokens",
                        kv.pos_base + kv.len + ids.len(),
                        st.engine.max_context
                    ),
                ));
            }
            st.rows.last = None;
            st.engine.prefill(std::slice::from_mut(&mut kv), &[&ids], true).map_err(|e| from_error(e, false))?;
            let (d, v) = (st.engine.hidden_size(), st.engine.model.config.vocab_size);
            let hidden = st.engine.ws.hidden[..d].to_vec();
            let logits = st.engine.ws.logits[..v].to_vec();
            let s = state(st, r.id)?;
            s.kv = kv;
            s.hidden = Some(hidden);
            s.logits = Some(logits);
            st.rows.last = Some(r.id);
            Ok(())
        })
    })
}

/// `lm_row_latent`: `n_steps` latent steps on the row, from the hidden state its last prefill or latent step
/// left. When `out` is not NULL the fed vectors are copied there, step-major: `out_len` must be at least
/// `n_steps * hidden_size` floats (`lm_engine_dims`).
///
/// # Safety
/// `out` NULL or `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn lm_row_latent(row: *mut LmRow, n_steps: i32, out: *mut f32, out_len: usize) -> c_int {
    entry_status("lm_row_latent", || {
        let r = lookup(row, "row")?;
        let m = usize::try_from(n_steps)
            .map_err(|_| Fail::new(Status::LmErrInvalidArgument, format!("n_steps = {n_steps} must be >= 0")))?;
        if !out.is_null() {
            check_ptr(out, "out")?;
        }
        let out_addr = out as usize;
        r.engine.with(|st| {
            let d = st.engine.hidden_size();
            if out_addr != 0 && out_len < m * d {
                return Err(Fail::new(
                    Status::LmErrInvalidArgument,
                    format!(
                        "out_len = {out_len} floats is too small for n_steps = {m} vectors of hidden_size = {d}: \
                         need {}",
                        m * d
                    ),
                ));
            }
            let cpu = st.engine.device.kind() == DeviceKind::Cpu;
            let here = st.rows.last == Some(r.id);
            let s = state(st, r.id)?;
            let mut kv = s.kv;
            let Some(hidden) = s.hidden.clone() else {
                return Err(Fail::new(
                    Status::LmErrInvalidArgument,
                    "the row has no hidden state to start from: lm_row_prefill it first (a decode consumes it)",
                ));
            };
            if kv.check_append(m).is_err() {
                return Err(row_full(&kv, m, &format!("n_steps = {m}")));
            }
            if !here {
                if !cpu {
                    return Err(Fail::new(
                        Status::LmErrInvalidArgument,
                        "another row ran since this row's last prefill or latent step; on this device latent steps \
                         must follow the row's own prefill (prefill this row again)",
                    ));
                }
                st.engine.ws.hidden.clear();
                st.engine.ws.hidden.extend_from_slice(&hidden);
            }
            st.rows.last = None;
            let align = &st.align;
            let mut step = 0usize;
            st.engine
                .latent_steps(std::slice::from_mut(&mut kv), m, align, |_, e| {
                    if out_addr != 0 {
                        // SAFETY: out holds >= m * d floats (checked above); step < m.
                        let dst = unsafe { std::slice::from_raw_parts_mut((out_addr as *mut f32).add(step * d), d) };
                        dst.copy_from_slice(e);
                    }
                    step += 1;
                })
                .map_err(|e| from_error(e, false))?;
            let hidden = st.engine.ws.hidden[..d].to_vec();
            let s = state(st, r.id)?;
            s.kv = kv;
            s.hidden = Some(hidden);
            s.logits = None;
            st.rows.last = Some(r.id);
            Ok(())
        })
    })
}

/// `lm_sampling_default_params`: the CLI's sampling (0.6 / 20 / 0.95, seed 0, not greedy).
#[no_mangle]
pub extern "C" fn lm_sampling_default_params() -> LmSamplingParams {
    let make = || {
        let s = SamplingParams::default();
        LmSamplingParams {
            greedy: s.greedy,
            temperature: s.temperature,
            top_k: s.top_k as i32,
            top_p: s.top_p,
            seed: s.seed,
        }
    };
    crate::infallible(make, make)
}

/// Checks `lm_sampling_params` (field names prefixed with `what`).
pub(crate) fn sampling(p: &LmSamplingParams, what: &str) -> Res<SamplingParams> {
    let bad = |m: String| Err(Fail::new(Status::LmErrInvalidArgument, m));
    if p.top_k < 0 {
        return bad(format!("{what}.top_k = {} must be >= 0 (0 = no top-k cut)", p.top_k));
    }
    let usable_temperature = p.temperature > 0.0 && p.temperature.is_finite();
    if !p.greedy && !usable_temperature {
        return bad(format!("{what}.temperature = {} must be > 0 and finite (or set {what}.greedy)", p.temperature));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return bad(format!("{what}.top_p = {} must be in (0, 1]", p.top_p));
    }
    Ok(SamplingParams {
        greedy: p.greedy,
        temperature: p.temperature,
        top_k: p.top_k as usize,
        top_p: p.top_p,
        seed: p.seed,
    })
}

/// The caller's callbacks and data, carried to the engine's worker thread: the caller waits in
/// `lm_row_decode` while they run there.
struct Callbacks {
    on_token: LmTokenCallback,
    should_abort: LmAbortCallback,
    user: *mut c_void,
}

// SAFETY: see the type's doc: used only while the calling thread waits in lm_row_decode.
unsafe impl Send for Callbacks {}

/// `lm_row_decode`: decodes up to `max_new` tokens from the logits of the row's last prefill, feeding each
/// token back into the row (all but the last: to continue, prefill it with the next prompt).
/// `on_token` (may be NULL) sees each token with its text piece; returning false stops after it.
/// `should_abort` (may be NULL) is polled before the first token and after each one; returning true stops
/// with LM_ERR_ABORTED. Both get `user_data` and run on one of the engine's threads while this call waits.
/// Returns LM_OK when the model's stop token, `max_new`, the row's end or `on_token` ended the decode.
/// `*n_generated` (may be NULL) is the number of tokens reported, on success and on abort. Afterwards the row
/// has no logits or hidden state: prefill it before the next decode or latent steps.
///
/// # Safety
/// `params` NULL or readable; the callbacks NULL or callable with `user_data`; `n_generated` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lm_row_decode(
    row: *mut LmRow,
    params: *const LmSamplingParams,
    max_new: i32,
    on_token: LmTokenCallback,
    should_abort: LmAbortCallback,
    user_data: *mut c_void,
    n_generated: *mut i32,
) -> c_int {
    entry_status("lm_row_decode", || {
        if !n_generated.is_null() {
            check_ptr(n_generated, "n_generated")?;
            // SAFETY: non-NULL and aligned; the caller promises it is writable.
            unsafe { n_generated.write(0) };
        }
        let r = lookup(row, "row")?;
        // SAFETY: forwarded contract (params is NULL or readable).
        let p = unsafe { read_struct(params, "params")? };
        let sp = sampling(&p, "params")?;
        let max_new = usize::try_from(max_new)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| Fail::new(Status::LmErrInvalidArgument, format!("max_new = {max_new} must be >= 1")))?;
        let cb = Callbacks { on_token, should_abort, user: user_data };
        let id = r.id;
        let (count, outcome) = r.engine.with(move |st| decode_row(st, id, &sp, max_new, cb))?;
        if !n_generated.is_null() {
            // SAFETY: checked above.
            unsafe { n_generated.write(count) };
        }
        outcome
    })
}

/// The decode on a locked engine: (tokens reported, the call's outcome).
fn decode_row(
    st: &mut EngineState,
    id: u64,
    sp: &SamplingParams,
    max_new: usize,
    cb: Callbacks,
) -> Res<(i32, Res<()>)> {
    let s = state(st, id)?;
    let mut kv = s.kv;
    let Some(logits) = s.logits.take() else {
        return Err(Fail::new(
            Status::LmErrInvalidArgument,
            "the row has no next-token logits: a decode starts right after lm_row_prefill (latent steps and \
             decodes consume them)",
        ));
    };
    // The last token is picked but not fed back; a decode needs room for the others.
    if kv.len >= kv.capacity {
        return Err(row_full(&kv, 1, "the decode"));
    }
    let cb = &cb;
    // SAFETY: the caller's callback with its own data.
    if cb.should_abort.is_some_and(|f| unsafe { f(cb.user) }) {
        return Ok((0, Err(Fail::new(Status::LmErrAborted, "should_abort returned true before the first token"))));
    }
    // The workspace may hold no logits at all: a latent step of another row asks for none.
    st.engine.ws.logits.clear();
    st.engine.ws.logits.extend_from_slice(&logits);
    st.rows.last = None;
    let flag = st.engine.abort_flag();
    flag.store(false, Ordering::Relaxed);
    let mut text = TextStream::new();
    let (mut stopped, mut aborted) = (false, false);
    // A decode stops at the row's end as at max_new.
    let max_new = max_new.min(kv.capacity - kv.len + 1);
    let result = st.engine.decode(std::slice::from_mut(&mut kv), sp, max_new, |tok, _, id| {
        let piece = text.push(tok, id).unwrap_or_default();
        let piece = c_string(&piece);
        if let Some(f) = cb.on_token {
            // SAFETY: the caller's callback; the piece lives until it returns.
            if !unsafe { f(id as i32, piece.as_ptr(), cb.user) } {
                stopped = true;
                flag.store(true, Ordering::Relaxed);
            }
        }
        // SAFETY: as above.
        if !stopped && cb.should_abort.is_some_and(|f| unsafe { f(cb.user) }) {
            aborted = true;
            flag.store(true, Ordering::Relaxed);
        }
    });
    flag.store(false, Ordering::Relaxed);
    let s = state(st, id)?;
    s.kv = kv;
    s.hidden = None;
    let n = text.ids().len() as i32;
    let outcome = match result {
        Ok(_) if aborted => {
            Err(Fail::new(Status::LmErrAborted, format!("should_abort returned true after {n} tokens")))
        }
        Ok(_) => Ok(()),
        Err(Error::Interrupted(_)) if aborted => {
            Err(Fail::new(Status::LmErrAborted, format!("should_abort returned true after {n} tokens")))
        }
        Err(Error::Interrupted(_)) if stopped => Ok(()),
        Err(e) => Err(from_error(e, false)),
    };
    Ok((n, outcome))
}
