//! The plain data of the C ABI: status codes, the params structs, the link flags. Only std types, so the
//! integration tests and `latentmas-ffi-flags` compile this very file (`#[path]`) and check it against the
//! header without linking the library as a Rust crate (the library is staticlib + cdylib only: an rlib named
//! `latentmas` would collide with the engine's).
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_void, CStr};

/// KV slots `kv_budget_bytes = 0` ("auto") allocates. The buffer is allocated once, at `lm_engine_open`, before
/// any question is known, so "auto" cannot size it per run as the CLI does: 4096 tokens hold one LatentMAS
/// question at the default run parameters (4 prompts of a few hundred tokens, 3 × 10 latent steps, 2048 new
/// tokens) with room to spare. TextMAS keeps the agents' text in the prompts and needs ~21k tokens at 2048 new
/// tokens: give it an explicit budget. (Qwen3-0.6B: 224 KiB per token, so 4096 tokens = 896 MiB.)
pub const AUTO_KV_TOKENS: usize = 4096;

/// Native libraries a program linking `liblatentmas.a` needs, in link order: what
/// `cargo rustc --lib --crate-type staticlib -- --print native-static-libs` printed on x86_64-unknown-linux-gnu
/// (only the standard library's; no dependency links a system library). `latentmas-ffi-flags` prints them.
pub const NATIVE_STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// The ABI's version: `lm_abi_version()`. It changes whenever a struct's layout, a prototype or a status
/// code changes, so a program can refuse a library it was not compiled against.
pub const LM_ABI_VERSION: u32 = 3;

/// Status codes (`lm_status` in the header). 0 is success, every failure is negative.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    LmOk = 0,
    /// A required pointer argument or string field is NULL.
    LmErrNullPointer = -1,
    /// A string is not valid UTF-8.
    LmErrInvalidUtf8 = -2,
    /// An unknown word, a number out of range, a combination that means nothing, or a misaligned pointer.
    LmErrInvalidArgument = -3,
    /// Not a live handle of that kind: freed already, never issued, or a handle of the other kind.
    LmErrInvalidHandle = -4,
    /// The model could not be found or loaded (directory, hub, config, weights, tokenizer).
    LmErrModel = -5,
    /// The device is not available (`cuda` in this build).
    LmErrDevice = -6,
    /// The KV buffer cannot be allocated, holds no token, or is too small for the run.
    LmErrKvCapacity = -7,
    /// The run failed for another reason (prompt template, tokenizer, ...).
    LmErrRun = -8,
    /// A bug inside the library was caught at the boundary (a Rust panic).
    LmErrPanic = -9,
    /// The engine was inside a run that panicked; only `lm_engine_free` is left to do with it.
    LmErrPoisoned = -10,
    /// The abort callback asked a decode to stop; the row holds the tokens fed so far, the engine is usable.
    LmErrAborted = -11,
}

impl Status {
    /// Every status, in header order (a function, not an associated const: the header generator would
    /// export a const).
    pub fn all() -> [Status; 12] {
        [
            Status::LmOk,
            Status::LmErrNullPointer,
            Status::LmErrInvalidUtf8,
            Status::LmErrInvalidArgument,
            Status::LmErrInvalidHandle,
            Status::LmErrModel,
            Status::LmErrDevice,
            Status::LmErrKvCapacity,
            Status::LmErrRun,
            Status::LmErrPanic,
            Status::LmErrPoisoned,
            Status::LmErrAborted,
        ]
    }

    /// The header's name of the code.
    pub fn name(self) -> &'static CStr {
        match self {
            Status::LmOk => c"LM_OK",
            Status::LmErrNullPointer => c"LM_ERR_NULL_POINTER",
            Status::LmErrInvalidUtf8 => c"LM_ERR_INVALID_UTF8",
            Status::LmErrInvalidArgument => c"LM_ERR_INVALID_ARGUMENT",
            Status::LmErrInvalidHandle => c"LM_ERR_INVALID_HANDLE",
            Status::LmErrModel => c"LM_ERR_MODEL",
            Status::LmErrDevice => c"LM_ERR_DEVICE",
            Status::LmErrKvCapacity => c"LM_ERR_KV_CAPACITY",
            Status::LmErrRun => c"LM_ERR_RUN",
            Status::LmErrPanic => c"LM_ERR_PANIC",
            Status::LmErrPoisoned => c"LM_ERR_POISONED",
            Status::LmErrAborted => c"LM_ERR_ABORTED",
        }
    }

    pub fn code(self) -> c_int {
        self as c_int
    }
}

/// `lm_engine_params`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LmEngineParams {
    /// Model directory or hub id (UTF-8, NUL-terminated). No default: NULL is an error.
    pub model: *const c_char,
    /// `cpu`, `cuda` or `auto` (default `auto`: cpu in this build).
    pub device: *const c_char,
    /// KV buffer size in bytes; 0 = auto ([`AUTO_KV_TOKENS`] tokens).
    pub kv_budget_bytes: u64,
    /// Worker threads of the engine's own thread pool; 0 = one per core (`RAYON_NUM_THREADS` if set).
    pub n_threads: i32,
    /// Map hidden states through the ridge alignment W_a (computed or loaded at open).
    pub realign: bool,
}

/// `lm_run_params`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LmRunParams {
    /// `single`, `text` or `latent`.
    pub method: *const c_char,
    /// `sequential`, `hierarchical` or `parallel`.
    pub topology: *const c_char,
    /// `math`, `mc`, `medqa` or `code`.
    pub task_family: *const c_char,
    /// Latent steps per non-final agent, ≥ 0; used by `latent` only, ignored by the other methods.
    pub latent_steps: c_int,
    /// ≥ 1.
    pub max_new_tokens: c_int,
    /// Argmax decoding (the sampling fields are then ignored, but top_p must still be in (0, 1]).
    pub greedy: bool,
    /// > 0 and finite unless greedy.
    pub temperature: f32,
    /// ≥ 0; 0 = no top-k cut.
    pub top_k: c_int,
    /// In (0, 1].
    pub top_p: f32,
    pub seed: u64,
    /// Called at the start of each phase of each agent; may be NULL.
    pub progress: LmProgressCallback,
    /// Passed to `progress` unchanged.
    pub progress_user_data: *mut c_void,
    /// Sees each token of the final agent's answer with its text piece, as `lm_row_decode`'s callback does;
    /// may be NULL. lm_run returns whole runs only: returning false aborts the run (LM_ERR_ABORTED).
    pub on_token: LmTokenCallback,
    /// Polled at the start of each phase and after each decoded token (of every agent that decodes);
    /// returning true stops the run with LM_ERR_ABORTED. May be NULL.
    pub should_abort: LmAbortCallback,
    /// Passed to `on_token` and `should_abort` unchanged.
    pub user_data: *mut c_void,
}

/// `lm_sampling_params`: how `lm_row_decode` picks tokens.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LmSamplingParams {
    /// Argmax decoding (the other fields are then ignored, but top_p must still be in (0, 1]).
    pub greedy: bool,
    /// > 0 and finite unless greedy.
    pub temperature: f32,
    /// ≥ 0; 0 = no top-k cut.
    pub top_k: i32,
    /// In (0, 1].
    pub top_p: f32,
    pub seed: u64,
}

/// `lm_phase`: what `lm_progress_callback` reports.
// The variants are spelled so that the header generator's SCREAMING_SNAKE_CASE gives the C names.
#[allow(clippy::enum_variant_names)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    LmPhasePrefill = 0,
    LmPhaseLatent = 1,
    LmPhaseDecode = 2,
}

/// Sees each token `lm_row_decode` picks: its id and its text (UTF-8, "" for a special token or while a
/// character is incomplete). Returning false stops the decode after this token (status LM_OK).
pub type LmTokenCallback =
    Option<unsafe extern "C" fn(token: i32, piece: *const c_char, user_data: *mut c_void) -> bool>;

/// Polled before each token of `lm_row_decode`; returning true stops it with LM_ERR_ABORTED.
pub type LmAbortCallback = Option<unsafe extern "C" fn(user_data: *mut c_void) -> bool>;

/// Reports a phase of `lm_run`: `agent` (0-based, counted by prefills) starts `phase`; `work` is its size
/// (prompt tokens, latent steps, or the new-token limit).
pub type LmProgressCallback = Option<unsafe extern "C" fn(agent: i32, phase: Phase, work: i32, user_data: *mut c_void)>;
