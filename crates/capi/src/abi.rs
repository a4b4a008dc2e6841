//! The plain data of the C ABI: status codes, the params structs, the link flags. Only std types, so the
//! integration tests and `latentmas-ffi-flags` compile this very file (`#[path]`) and check it against the
//! header without linking the library as a Rust crate (the library is staticlib + cdylib only: an rlib named
//! `latentmas` would collide with the engine's).
#![allow(dead_code)]

use std::ffi::{c_char, c_int, CStr};

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

/// Status codes (`lm_status` in the header). 0 is success, every failure is negative.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// A required pointer argument or string field is NULL.
    NullPointer = -1,
    /// A string is not valid UTF-8.
    InvalidUtf8 = -2,
    /// An unknown word, a number out of range, a combination that means nothing, or a misaligned pointer.
    InvalidArgument = -3,
    /// Not a live handle of that kind: freed already, never issued, or a handle of the other kind.
    InvalidHandle = -4,
    /// The model could not be found or loaded (directory, hub, config, weights, tokenizer).
    Model = -5,
    /// The device is not available (`cuda` in this build).
    Device = -6,
    /// The KV buffer cannot be allocated, holds no token, or is too small for the run.
    KvCapacity = -7,
    /// The run failed for another reason (prompt template, tokenizer, ...).
    Run = -8,
    /// A bug inside the library was caught at the boundary (a Rust panic).
    Panic = -9,
    /// The engine was inside a run that panicked; only `lm_engine_free` is left to do with it.
    Poisoned = -10,
}

impl Status {
    /// Every status, in header order.
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::NullPointer,
        Status::InvalidUtf8,
        Status::InvalidArgument,
        Status::InvalidHandle,
        Status::Model,
        Status::Device,
        Status::KvCapacity,
        Status::Run,
        Status::Panic,
        Status::Poisoned,
    ];

    /// The header's name of the code.
    pub fn name(self) -> &'static CStr {
        match self {
            Status::Ok => c"LM_OK",
            Status::NullPointer => c"LM_ERR_NULL_POINTER",
            Status::InvalidUtf8 => c"LM_ERR_INVALID_UTF8",
            Status::InvalidArgument => c"LM_ERR_INVALID_ARGUMENT",
            Status::InvalidHandle => c"LM_ERR_INVALID_HANDLE",
            Status::Model => c"LM_ERR_MODEL",
            Status::Device => c"LM_ERR_DEVICE",
            Status::KvCapacity => c"LM_ERR_KV_CAPACITY",
            Status::Run => c"LM_ERR_RUN",
            Status::Panic => c"LM_ERR_PANIC",
            Status::Poisoned => c"LM_ERR_POISONED",
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
    /// Nonzero: map hidden states through the ridge alignment W_a (computed or loaded at open).
    pub realign: c_int,
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
    /// Nonzero: argmax decoding (the sampling fields are then ignored, but top_p must still be in (0, 1]).
    pub greedy: c_int,
    /// > 0 and finite unless greedy.
    pub temperature: f32,
    /// ≥ 0; 0 = no top-k cut.
    pub top_k: c_int,
    /// In (0, 1].
    pub top_p: f32,
    pub seed: u64,
}
