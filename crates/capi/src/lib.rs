//! The C ABI: the engine behind opaque handles, for C and C++ programs (`ffi/latentmas.h` is its contract;
//! `crates/capi/tests/ffi.rs` fails when the two drift apart).
//!
//! Operations (llama.cpp style: `*_default_params()` by value, explicit `*_free`):
//! [`lm_engine_default_params`], [`lm_run_default_params`], [`lm_engine_open`], [`lm_run`],
//! [`lm_result_text`], [`lm_result_answer`], [`lm_result_json`], [`lm_result_free`], [`lm_engine_free`],
//! [`lm_last_error`], and the extras [`lm_last_error_code`], [`lm_status_name`], [`lm_version`],
//! [`lm_engine_kv_capacity`].
//!
//! Rules every entry point keeps:
//! - No panic crosses the boundary: each body runs under `catch_unwind`; a caught panic is `LM_ERR_PANIC`.
//! - Each call that can fail first clears this thread's last error; a failure sets its code and message
//!   ([`lm_last_error_code`], [`lm_last_error`]), so after such a call `lm_last_error_code() == 0` iff it
//!   succeeded. The infallible ones (default params, `lm_last_error*`, `lm_status_name`, `lm_version`) leave it
//!   alone, so `printf("%s: %s", lm_status_name(rc), lm_last_error())` is safe in either evaluation order.
//! - Handles are opaque tokens, never addresses: a handle is looked up in a process-wide registry and never
//!   dereferenced. Each value is issued once per process, so a double free, a use after free, a handle of the
//!   wrong kind or a pointer that never came from the library is `LM_ERR_INVALID_HANDLE`, never a crash.
//! - Caller pointers (params, strings, out-parameters) are checked for NULL and alignment; beyond that they must
//!   be valid for their C type, which no library can check.
//! - One engine may be used from several threads: a mutex in the engine serialises `lm_run` calls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use engine::engine::{DeviceKind, Engine};
use engine::error::Error;
use engine::kv::KvBudget;
use engine::latent::Alignment;
use engine::mas::prompts::PromptSet;
use engine::model::hub::resolve_model;

mod abi;
#[cfg(test)]
mod bad_input_tests;
mod rows;
mod run;
mod slots;

pub use abi::*;
pub use rows::*;
pub use run::*;

/// `lm_engine`: the engine, its alignment and the prompt set, behind a mutex (runs serialise), and the thread
/// pool its work runs on.
pub struct LmEngine {
    state: Mutex<EngineState>,
    /// The engine's own workers: every call runs inside `pool.install`, the caller waiting outside the pool
    /// (a pool that counted the caller in would wait for it in each region that runs on every worker).
    pool: Workers,
    kv_slots: u64,
    kv_bytes: u64,
}

struct EngineState {
    engine: Engine,
    align: Alignment,
    prompts: PromptSet,
    /// The rows of the row API and the free ranges of the KV buffer.
    rows: rows::RowTable,
}

impl LmEngine {
    /// Locks the engine and runs `f` on its thread pool.
    fn with<T: Send>(&self, f: impl FnOnce(&mut EngineState) -> Res<T> + Send) -> Res<T> {
        let mut guard = self.state.lock().map_err(|_| {
            Fail::new(Status::LmErrPoisoned, "a previous call on this engine panicked; free it and open a new one")
        })?;
        let st = &mut *guard;
        self.pool.install(move || f(st))
    }
}

/// An engine's thread pool. Dropping it waits (up to a few seconds) until its threads have exited: rayon only
/// signals them, and a thread still alive when the program exits holds its thread-locals, which leak
/// checkers then report against the program.
struct Workers {
    pool: Option<rayon::ThreadPool>,
    live: Arc<(Mutex<usize>, std::sync::Condvar)>,
}

impl Workers {
    fn new(threads: usize) -> Res<Self> {
        let live = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let (up, down) = (live.clone(), live.clone());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("latentmas-{i}"))
            .start_handler(move |_| *up.0.lock().unwrap_or_else(|e| e.into_inner()) += 1)
            .exit_handler(move |_| {
                *down.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                down.1.notify_all();
            })
            .build()
            .map_err(|e| Fail::new(Status::LmErrRun, format!("params.n_threads: cannot start the workers: {e}")))?;
        Ok(Workers { pool: Some(pool), live })
    }

    fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.pool.as_ref().expect("the pool lives as long as its engine").install(f)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.pool.take());
        let (count, cv) = &*self.live;
        let guard = count.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv.wait_timeout_while(guard, std::time::Duration::from_secs(5), |n| *n > 0);
    }
}

/// `lm_result`: immutable once made; its strings live as long as the handle.
pub struct LmResult {
    text: CString,
    answer: Option<CString>,
    json: CString,
}

// The engine handle is shared between threads; the compiler checks that this is sound.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<LmEngine>();
    send_sync::<LmResult>();
};

// ---------------------------------------------------------------------------------------------------------
// Errors and the boundary guard
// ---------------------------------------------------------------------------------------------------------

/// A failure on its way to the caller.
struct Fail {
    status: Status,
    message: String,
}

impl Fail {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Fail { status, message: message.into() }
    }
}

type Res<T> = std::result::Result<T, Fail>;

/// The status of a library error raised while opening an engine (`open`) or running (`!open`).
fn from_error(e: Error, open: bool) -> Fail {
    let status = match &e {
        Error::InvalidArgument(_) => Status::LmErrInvalidArgument,
        Error::KvCapacity(_) => Status::LmErrKvCapacity,
        Error::Device(_) => Status::LmErrDevice,
        _ if open => Status::LmErrModel,
        _ => Status::LmErrRun,
    };
    Fail::new(status, e.to_string())
}

thread_local! {
    /// This thread's last failure: code and message (`None` after a successful call).
    static LAST_ERROR: RefCell<Option<(c_int, CString)>> = const { RefCell::new(None) };
}

fn set_last_error(value: Option<(c_int, CString)>) {
    // `try_with`: during thread teardown the slot may be gone; never panic for that.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut s) = slot.try_borrow_mut() {
            *s = value;
        }
    });
}

/// Makes a C string of `s`, replacing interior NULs (which C strings cannot hold) with U+FFFD.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Runs one entry point's body: clears the last error, catches panics, records a failure and returns
/// `on_error` for it.
fn entry<T>(function: &str, on_error: T, body: impl FnOnce() -> Res<T>) -> T {
    set_last_error(None);
    let fail = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => return v,
        Ok(Err(f)) => f,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            Fail::new(Status::LmErrPanic, format!("internal error (a bug; please report it): {what}"))
        }
    };
    set_last_error(Some((fail.status.code(), c_string(&format!("{function}: {}", fail.message)))));
    on_error
}

/// Entry point that cannot fail (default params, last error, names): still under `catch_unwind`, but it leaves
/// the thread's last error alone; `fallback` is what it returns if a bug panics anyway.
fn infallible<T>(fallback: impl FnOnce() -> T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| fallback())
}

/// Status-returning entry point: 0, or the code [`entry`] recorded.
fn entry_status(function: &str, body: impl FnOnce() -> Res<()>) -> c_int {
    entry(function, (), body);
    last_code()
}

fn last_code() -> c_int {
    LAST_ERROR.try_with(|s| s.try_borrow().ok().and_then(|e| e.as_ref().map(|e| e.0))).ok().flatten().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------------
// Caller pointers
// ---------------------------------------------------------------------------------------------------------

fn check_ptr<T>(p: *const T, what: &str) -> Res<()> {
    if p.is_null() {
        return Err(Fail::new(Status::LmErrNullPointer, format!("{what} is NULL")));
    }
    if !p.is_aligned() {
        return Err(Fail::new(Status::LmErrInvalidArgument, format!("{what} ({p:p}) is not aligned for its type")));
    }
    Ok(())
}

/// Copies the struct `p` points to.
///
/// # Safety
/// `p` must be NULL or point to a readable `T`.
unsafe fn read_struct<T: Copy>(p: *const T, what: &str) -> Res<T> {
    check_ptr(p, what)?;
    // SAFETY: non-NULL and aligned (checked above); the caller promises it points to a readable T.
    Ok(unsafe { p.read() })
}

/// Clears an out-parameter first (so it is NULL on every failure after this point) and returns it.
///
/// # Safety
/// `p` must be NULL or point to a writable `*mut T`.
unsafe fn out_slot<T>(p: *mut *mut T, what: &str) -> Res<*mut *mut T> {
    check_ptr(p, what)?;
    // SAFETY: non-NULL and aligned (checked above); the caller promises it is writable.
    unsafe { p.write(std::ptr::null_mut()) };
    Ok(p)
}

/// Borrows a NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that outlives the returned borrow.
unsafe fn read_str<'a>(p: *const c_char, what: &str) -> Res<&'a str> {
    if p.is_null() {
        return Err(Fail::new(Status::LmErrNullPointer, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL; the caller promises a NUL-terminated string alive for 'a.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| {
        Fail::new(
            Status::LmErrInvalidUtf8,
            format!("{what} is not valid UTF-8 (first bad byte at {})", e.valid_up_to()),
        )
    })
}

/// Parses a CLI word field.
///
/// # Safety
/// As [`read_str`].
unsafe fn read_word<T: std::str::FromStr<Err = Error>>(p: *const c_char, what: &str) -> Res<T> {
    // SAFETY: forwarded contract of read_str.
    let s = unsafe { read_str(p, what)? };
    s.parse::<T>().map_err(|e| Fail::new(Status::LmErrInvalidArgument, format!("{what}: {e}")))
}

// ---------------------------------------------------------------------------------------------------------
// The handle registry
// ---------------------------------------------------------------------------------------------------------

/// The two kinds of handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Engine,
    Result,
    Row,
}

impl Kind {
    fn c_name(self) -> &'static str {
        match self {
            Kind::Engine => "lm_engine",
            Kind::Result => "lm_result",
            Kind::Row => "lm_row",
        }
    }

    fn made_by(self) -> &'static str {
        match self {
            Kind::Engine => "lm_engine_open",
            Kind::Result => "lm_run",
            Kind::Row => "lm_row_create",
        }
    }
}

/// A type a handle can stand for.
trait Handled: Send + Sync + 'static {
    const KIND: Kind;
}

impl Handled for LmEngine {
    const KIND: Kind = Kind::Engine;
}

impl Handled for LmResult {
    const KIND: Kind = Kind::Result;
}

/// One live handle: its kind and the `Arc` the registry owns, as `Arc::into_raw(..) as usize ^ HIDE`.
///
/// The pointer is stored masked so that leak checkers (valgrind, LeakSanitizer), which treat any word that
/// looks like a heap address as a reference, do not see it: a handle the caller never frees is reported as
/// lost at its allocation site (in `lm_engine_open` / `lm_run`) instead of hiding as "still reachable".
struct Entry {
    kind: Kind,
    bits: usize,
}

/// The mask of [`Entry::bits`]: 0x5A5A… at any pointer width.
const HIDE: usize = usize::MAX / 0xFF * 0x5A;

/// Live handles by value. Values come from [`NEXT_HANDLE`] and are never reused.
static HANDLES: LazyLock<Mutex<HashMap<usize, Entry>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// The next handle value: starts high and steps by 16, so handles look like aligned pointers and never
/// collide with small integers a confused caller might pass.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(HANDLE_BASE);
const HANDLE_BASE: usize = 0x1A7E_0000;
const HANDLE_STEP: usize = 16;

fn registry() -> MutexGuard<'static, HashMap<usize, Entry>> {
    // Nothing panics while holding the registry lock; recover anyway rather than fail every later call.
    HANDLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands `value` to the registry and returns its new handle.
fn register<T: Handled>(value: T) -> Res<*mut T> {
    let id = NEXT_HANDLE.fetch_add(HANDLE_STEP, Ordering::Relaxed);
    if id < HANDLE_BASE {
        // 2^60 handles on 64-bit targets; on 32-bit ones ~2^28 handles before values would repeat.
        return Err(Fail::new(Status::LmErrRun, "handle values are exhausted in this process"));
    }
    let bits = Arc::into_raw(Arc::new(value)) as usize ^ HIDE;
    registry().insert(id, Entry { kind: T::KIND, bits });
    Ok(id as *mut T)
}

/// Checks that `p` is a live handle of kind `T` in `map`.
fn find<T: Handled>(map: &HashMap<usize, Entry>, p: *const T, what: &str) -> Res<usize> {
    if p.is_null() {
        return Err(Fail::new(Status::LmErrNullPointer, format!("{what} is NULL")));
    }
    match map.get(&(p as usize)) {
        Some(e) if e.kind == T::KIND => Ok(e.bits),
        Some(e) => Err(Fail::new(
            Status::LmErrInvalidHandle,
            format!("{what} ({p:p}) is an {}, not an {}", e.kind.c_name(), T::KIND.c_name()),
        )),
        None => Err(Fail::new(
            Status::LmErrInvalidHandle,
            format!(
                "{what} ({p:p}) is not a live {} (freed already, or never returned by {})",
                T::KIND.c_name(),
                T::KIND.made_by()
            ),
        )),
    }
}

/// The object behind a live handle (a new reference: it stays alive while the caller uses it, even if another
/// thread frees the handle meanwhile).
fn lookup<T: Handled>(p: *const T, what: &str) -> Res<Arc<T>> {
    let map = registry();
    let bits = find(&map, p, what)?;
    let raw = (bits ^ HIDE) as *const T;
    // SAFETY: `bits` is an entry of kind T, so `raw` came from `Arc::<T>::into_raw` in `register`, and the
    // registry still owns that reference (entries are removed only under this lock, which we hold), so the
    // allocation is alive; adding a count and taking it back as an Arc is balanced.
    unsafe {
        Arc::increment_strong_count(raw);
        Ok(Arc::from_raw(raw))
    }
}

/// Frees a handle: NULL is a no-op; anything but a live handle of kind T is an error and frees nothing.
fn release<T: Handled>(p: *mut T, what: &str) -> Res<()> {
    if p.is_null() {
        return Ok(());
    }
    let bits = {
        let mut map = registry();
        let bits = find(&map, p, what)?;
        map.remove(&(p as usize));
        if map.is_empty() {
            // A program that freed everything holds no allocation of this module at exit.
            map.shrink_to_fit();
        }
        bits
    };
    // SAFETY: the entry (of kind T, so from `Arc::<T>::into_raw`) was just removed under the lock, so this is the
    // one place that takes the registry's reference back. Dropped outside the lock: dropping an engine unmaps
    // its weights, and a run in progress elsewhere keeps its own reference.
    drop(unsafe { Arc::from_raw((bits ^ HIDE) as *const T) });
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------------------

/// `lm_engine_default_params`: model NULL (must be set), device `auto`, kv_budget_bytes 0 (auto), n_threads 0
/// (one per core), realign false.
#[no_mangle]
pub extern "C" fn lm_engine_default_params() -> LmEngineParams {
    let make = || LmEngineParams {
        model: std::ptr::null(),
        device: c"auto".as_ptr(),
        kv_budget_bytes: 0,
        n_threads: 0,
        realign: false,
    };
    infallible(make, make)
}

/// `lm_abi_version`: [`LM_ABI_VERSION`]; compare it with the header's `LM_ABI_VERSION`.
#[no_mangle]
pub extern "C" fn lm_abi_version() -> u32 {
    LM_ABI_VERSION
}

/// `lm_engine_open`: loads the model, allocates the KV buffer once, computes (or loads) the alignment.
///
/// # Safety
/// `params` must be NULL or point to an `lm_engine_params` whose strings are NULL or NUL-terminated; `out` must
/// be NULL or point to a writable `lm_engine *`.
#[no_mangle]
pub unsafe extern "C" fn lm_engine_open(params: *const LmEngineParams, out: *mut *mut LmEngine) -> c_int {
    entry_status("lm_engine_open", || {
        // SAFETY: forwarded contract of this function (out is NULL or writable).
        let out = unsafe { out_slot(out, "out")? };
        // SAFETY: forwarded contract (params is NULL or readable).
        let p = unsafe { read_struct(params, "params")? };
        // SAFETY: forwarded contract (string fields are NULL or NUL-terminated).
        let (model, device) = unsafe { (read_str(p.model, "params.model")?, read_str(p.device, "params.device")?) };
        let kind = match device {
            "cpu" => DeviceKind::Cpu,
            "emu" => DeviceKind::Emu,
            "auto" => match engine::backend::cuda::probe() {
                Ok(_) => DeviceKind::Cuda,
                Err(e) => {
                    tracing::info!("device auto: using the cpu backend ({e})");
                    DeviceKind::Cpu
                }
            },
            "cuda" => {
                engine::backend::cuda::probe()
                    .map_err(|e| Fail::new(Status::LmErrDevice, format!("params.device \"cuda\": {e}")))?;
                DeviceKind::Cuda
            }
            other => {
                return Err(Fail::new(
                    Status::LmErrInvalidArgument,
                    format!("params.device {other:?}: expected one of: cpu, cuda, auto, emu"),
                ))
            }
        };
        if p.n_threads < 0 {
            return Err(Fail::new(
                Status::LmErrInvalidArgument,
                format!("params.n_threads = {} must be >= 0 (0 = one per core)", p.n_threads),
            ));
        }
        let pool = Workers::new(p.n_threads as usize)?;
        let realign = p.realign;
        let budget = match p.kv_budget_bytes {
            0 => KvBudget::Tokens(AUTO_KV_TOKENS),
            b => KvBudget::Bytes(b),
        };
        let dir = resolve_model(model).map_err(|e| from_error(e, true))?;
        let (engine, align) = pool.install(|| -> Res<_> {
            let engine = open_engine(&dir, budget, kind).map_err(|e| from_error(e, true))?;
            let align = Alignment::load_or_compute(&engine.model, &dir, engine.vocab_limit(), realign)
                .map_err(|e| from_error(e, true))?
                .0;
            Ok((engine, align))
        })?;
        let handle = register(LmEngine {
            kv_slots: engine.kv.slots() as u64,
            kv_bytes: engine.kv.bytes(),
            pool,
            state: Mutex::new(EngineState {
                rows: rows::RowTable::new(engine.kv.slots()),
                engine,
                align,
                prompts: PromptSet::builtin(),
            }),
        })?;
        // SAFETY: `out` was checked and cleared by out_slot above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Opens the engine, naming the C field in a too-small-budget error.
fn open_engine(dir: &Path, budget: KvBudget, kind: DeviceKind) -> engine::Result<Engine> {
    Engine::open_on(dir, budget, kind).map_err(|e| match e {
        // the library's message names the CLI flag; the C caller set a field
        Error::KvCapacity(m) => Error::KvCapacity(format!("params.kv_budget_bytes: {}", m.replace("--kv-budget ", ""))),
        e => e,
    })
}

/// Looks up a result and returns a pointer into one of its strings (NULL on failure, with the last error set).
fn result_str(function: &str, r: *const LmResult, pick: impl FnOnce(&LmResult) -> *const c_char) -> *const c_char {
    entry(function, std::ptr::null(), || {
        let res = lookup(r, "r")?;
        // The registry keeps its own reference until lm_result_free, so the string outlives this call.
        Ok(pick(&res))
    })
}

/// `lm_result_text`: the final agent's text; owned by `r`.
#[no_mangle]
pub extern "C" fn lm_result_text(r: *const LmResult) -> *const c_char {
    result_str("lm_result_text", r, |r| r.text.as_ptr())
}

/// `lm_result_answer`: the extracted answer, NULL when none was extracted (then `lm_last_error_code() == 0`).
#[no_mangle]
pub extern "C" fn lm_result_answer(r: *const LmResult) -> *const c_char {
    result_str("lm_result_answer", r, |r| r.answer.as_ref().map_or(std::ptr::null(), |a| a.as_ptr()))
}

/// `lm_result_json`: the report, exactly as `latentmas run --json` prints it.
#[no_mangle]
pub extern "C" fn lm_result_json(r: *const LmResult) -> *const c_char {
    result_str("lm_result_json", r, |r| r.json.as_ptr())
}

/// `lm_result_free`: NULL is a no-op; anything but a live result sets `LM_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn lm_result_free(r: *mut LmResult) {
    entry("lm_result_free", (), || release(r, "r"))
}

/// `lm_engine_free`: NULL is a no-op; anything but a live engine sets `LM_ERR_INVALID_HANDLE`. A run in progress
/// on another thread finishes first; the memory goes when it returns.
#[no_mangle]
pub extern "C" fn lm_engine_free(engine: *mut LmEngine) {
    entry("lm_engine_free", (), || release(engine, "engine"))
}

/// `lm_engine_kv_capacity`: the KV buffer's size in tokens and bytes.
///
/// # Safety
/// `tokens` and `bytes` must each be NULL or point to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn lm_engine_kv_capacity(engine: *const LmEngine, tokens: *mut u64, bytes: *mut u64) -> c_int {
    entry_status("lm_engine_kv_capacity", || {
        check_ptr(tokens, "tokens")?;
        check_ptr(bytes, "bytes")?;
        let e = lookup(engine, "engine")?;
        // SAFETY: both checked non-NULL and aligned above; the caller promises they are writable.
        unsafe {
            tokens.write(e.kv_slots);
            bytes.write(e.kv_bytes);
        }
        Ok(())
    })
}

/// `lm_last_error`: this thread's last failure message; `""` (never NULL) after a successful call.
#[no_mangle]
pub extern "C" fn lm_last_error() -> *const c_char {
    infallible(
        || c"".as_ptr(),
        || {
            LAST_ERROR
                .try_with(|s| s.try_borrow().ok().and_then(|e| e.as_ref().map(|(_, m)| m.as_ptr())))
                .ok()
                .flatten()
                .unwrap_or(c"".as_ptr())
        },
    )
}

/// `lm_last_error_code`: this thread's last failure code; 0 after a successful call.
#[no_mangle]
pub extern "C" fn lm_last_error_code() -> c_int {
    infallible(|| Status::LmErrPanic.code(), last_code)
}

/// `lm_status_name`: the header's name of a code (`"LM_ERR_KV_CAPACITY"`); `"LM_ERR_UNKNOWN"` for other values.
#[no_mangle]
pub extern "C" fn lm_status_name(code: c_int) -> *const c_char {
    infallible(
        || c"LM_ERR_UNKNOWN".as_ptr(),
        || Status::all().iter().find(|s| s.code() == code).map_or(c"LM_ERR_UNKNOWN", |s| s.name()).as_ptr(),
    )
}

/// `lm_version`: the library's version (`"0.1.0"`).
#[no_mangle]
pub extern "C" fn lm_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version has no NUL"),
    };
    infallible(|| VERSION.as_ptr(), || VERSION.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: lm_last_error never returns NULL and its string is valid until the next call on this thread.
        unsafe { CStr::from_ptr(lm_last_error()) }.to_str().unwrap().to_string()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let code = entry_status("lm_test", || panic!("boom {}", 42));
        assert_eq!(code, Status::LmErrPanic.code());
        assert_eq!(lm_last_error_code(), Status::LmErrPanic.code());
        let m = last_error();
        assert!(m.starts_with("lm_test: internal error") && m.contains("boom 42"), "{m}");
        // The next successful call clears it.
        assert_eq!(entry_status("lm_test", || Ok(())), 0);
        assert_eq!(lm_last_error_code(), 0);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn status_names_are_distinct_and_unknown_codes_are_named() {
        for s in Status::all() {
            // SAFETY: lm_status_name returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(lm_status_name(s.code())) };
            assert_eq!(name, s.name());
        }
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(lm_status_name(7)) }, c"LM_ERR_UNKNOWN");
    }

    #[test]
    fn realign_reaches_the_engine_alignment() {
        // A copy of the model: realign writes the alignment cache next to it.
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/tiny-tied");
        let dir = std::env::temp_dir().join(format!("lm-ffi-realign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            if f.file_name().unwrap() != engine::latent::CACHE_FILE {
                std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
            }
        }
        let model = CString::new(dir.to_str().unwrap()).unwrap();
        for realign in [0, 1] {
            let mut params = lm_engine_default_params();
            params.model = model.as_ptr();
            params.realign = realign == 1;
            let mut engine: *mut LmEngine = std::ptr::null_mut();
            // SAFETY: valid params and out pointer.
            assert_eq!(unsafe { lm_engine_open(&params, &mut engine) }, 0, "{}", last_error());
            let h = lookup(engine, "engine").ok().unwrap();
            assert_eq!(h.state.lock().unwrap().align.realign, realign == 1);
            drop(h);
            lm_engine_free(engine);
        }
        assert!(dir.join(engine::latent::CACHE_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_run_that_panicked_poisons_its_engine_and_free_still_works() {
        let model = CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/tiny-tied")).unwrap();
        let mut params = lm_engine_default_params();
        params.model = model.as_ptr();
        let mut engine: *mut LmEngine = std::ptr::null_mut();
        // SAFETY: valid params and out pointer.
        assert_eq!(unsafe { lm_engine_open(&params, &mut engine) }, 0, "{}", last_error());
        // Poison the engine's mutex the way a panicking run would.
        let h = lookup(engine, "engine").ok().unwrap();
        let _ = std::thread::spawn(move || {
            let _g = h.state.lock().unwrap();
            panic!("simulated panic inside a run");
        })
        .join();
        let mut rp = lm_run_default_params();
        rp.greedy = true;
        rp.max_new_tokens = 2;
        let mut out: *mut LmResult = std::ptr::null_mut();
        // SAFETY: valid pointers.
        let code = unsafe { lm_run(engine, c"1+1?".as_ptr(), &rp, &mut out) };
        assert_eq!(code, Status::LmErrPoisoned.code(), "{}", last_error());
        assert!(out.is_null());
        lm_engine_free(engine);
        assert_eq!(lm_last_error_code(), 0, "{}", last_error());
        lm_engine_free(engine);
        assert_eq!(lm_last_error_code(), Status::LmErrInvalidHandle.code());
    }
}
