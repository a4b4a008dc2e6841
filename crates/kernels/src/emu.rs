//! The host emulator: runs an op's real kernels (`crates/kernels/cuda/<op>.cu`, compiled by g++ against
//! `crates/kernels/cuda/emu/emu.h`) on the CPU, with the launches of the op's own planner.
//!
//! Modes ([`Mode`]): a block's threads are ucontext fibers on the calling thread (default; deterministic,
//! resumed in [`Schedule::Forward`] or [`Schedule::Reverse`] thread order) or one OS thread per CUDA thread
//! ([`Mode::Threads`]; the only mode of a `LATENTMAS_EMU_TSAN=1` build, where ThreadSanitizer watches every
//! access). `LATENTMAS_EMU_MODE=threads|fibers` overrides [`Mode::Auto`] at run time.
//!
//! Violations come back as [`EmuError`]s (never an abort): barrier divergence, bad warp masks, deadlocks,
//! dynamic shared memory overflow, `__trap`, and (TSan build) data races. Reads of uninitialised shared
//! memory read NaN poison, which the caller sees in its output. Launches are serialised process-wide.

use std::ffi::CStr;
use std::fmt;

use super::{KernelOp, RawEmuError, RawEmuOptions};

/// How a block's threads are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `LATENTMAS_EMU_MODE` if set, else the build's default (fibers; threads under TSan).
    #[default]
    Auto,
    Fibers,
    Threads,
}

/// Order in which runnable fibers resume; output that differs between the two reveals a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    #[default]
    Forward,
    Reverse,
}

/// Options of one emulated op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub mode: Mode,
    pub schedule: Schedule,
}

/// What went wrong in an emulated launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmuErrorKind {
    /// The op's planner refused the params.
    InvalidPlan,
    /// Grid/block/shared sizes a GPU would refuse.
    BadLaunch,
    /// `__syncthreads` reached from different sites, or after a thread of the block exited.
    BarrierDivergence,
    /// A warp intrinsic's mask names a missing or exited lane, masks/intrinsics disagree, ...
    BadWarpSync,
    /// Every live thread waits and none can be released.
    Deadlock,
    /// A write past the end of the dynamic shared memory.
    SharedOverflow,
    /// ThreadSanitizer reported a race (TSan build).
    DataRace,
    /// `__trap()`.
    Trap,
    /// A kernel touched an address no host mapping backs (a GPU's illegal address fault).
    IllegalAddress,
    /// The emulator itself failed.
    Internal,
}

/// An emulated launch's failure, with the emulator's description (kernel, block, thread, source line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmuError {
    pub kind: EmuErrorKind,
    pub message: String,
    /// The mode the launch ran in.
    pub mode: Mode,
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?} mode): {}", self.kind, self.mode, self.message)
    }
}

impl std::error::Error for EmuError {}

/// Variants of the planted-bug kernels ([`super::EmuTestParams`]), one per emulator check.
pub mod test_variant {
    pub const RACE: u32 = 0;
    pub const RACE_FIXED: u32 = 1;
    pub const MASK_MISSING: u32 = 2;
    pub const MASK_EXITED: u32 = 3;
    pub const UNINIT_SHARED: u32 = 4;
    pub const DEADLOCK: u32 = 5;
    pub const DIVERGENT: u32 = 6;
    pub const DYN_OVERFLOW: u32 = 7;
    pub const TRAP: u32 = 8;
    pub const EARLY_EXIT: u32 = 9;
}

extern "C" {
    fn lmas_emu_build_flags() -> u32;
    fn lmas_emu_bf16_selfcheck() -> i64;
    fn lmas_layout_table(count: *mut u32) -> *const RawLayoutEntry;
}

#[repr(C)]
struct RawLayoutEntry {
    scope: *const std::ffi::c_char,
    name: *const std::ffi::c_char,
    value: u64,
    size: u64,
}

/// Runs `p`'s planned launches on the CPU.
///
/// # Safety
/// Every device pointer in `p` must be a host address valid for every access the op's kernels make at
/// these params (the same extents a GPU launch needs), and nothing else may access that memory meanwhile.
pub unsafe fn emulate<P: KernelOp>(p: &P, opts: Options) -> Result<(), EmuError> {
    let raw_opts = RawEmuOptions {
        mode: match opts.mode {
            Mode::Auto => 0,
            Mode::Fibers => 1,
            Mode::Threads => 2,
        },
        schedule: match opts.schedule {
            Schedule::Forward => 0,
            Schedule::Reverse => 1,
        },
    };
    let mut err = RawEmuError { code: 0, mode_used: 0, message: [0; super::EMU_MESSAGE_LEN] };
    // SAFETY: `p` is a valid params struct (KernelOp contract) whose pointers the caller vouches for;
    // `raw_opts` and `err` are valid for the call.
    let code = unsafe { P::raw_emulate(p, &raw_opts, &mut err) };
    if code == 0 {
        return Ok(());
    }
    let kind = match code {
        1 => EmuErrorKind::InvalidPlan,
        2 => EmuErrorKind::BadLaunch,
        3 => EmuErrorKind::BarrierDivergence,
        4 => EmuErrorKind::BadWarpSync,
        5 => EmuErrorKind::Deadlock,
        6 => EmuErrorKind::SharedOverflow,
        7 => EmuErrorKind::DataRace,
        8 => EmuErrorKind::Trap,
        12 => EmuErrorKind::IllegalAddress,
        _ => EmuErrorKind::Internal,
    };
    // SAFETY: the emulator NUL-terminates its message (snprintf into the fixed buffer).
    let message = unsafe { CStr::from_ptr(err.message.as_ptr()) }.to_string_lossy().into_owned();
    let mode = match err.mode_used {
        1 => Mode::Fibers,
        2 => Mode::Threads,
        _ => Mode::Auto,
    };
    Err(EmuError { kind, message, mode })
}

/// Facts about the linked emulation library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo {
    /// Built with `-fsanitize=thread` (`LATENTMAS_EMU_TSAN=1`): threads mode only, races are errors.
    pub tsan: bool,
    /// bf16 conversions from CUDA's `cuda_bf16.h` (else the bit-exact fallback).
    pub cuda_bf16: bool,
}

pub fn build_info() -> BuildInfo {
    // SAFETY: a pure C function without arguments.
    let f = unsafe { lmas_emu_build_flags() };
    BuildInfo { tsan: f & 1 != 0, cuda_bf16: f & 2 != 0 }
}

/// Mismatches between the fallback bf16 conversions and `cuda_bf16.h`'s over ~4.2M inputs (`Some(0)` is
/// bit-exact), or `None` in a build without the CUDA headers.
pub fn bf16_selfcheck() -> Option<u64> {
    // SAFETY: a pure C function without arguments.
    let n = unsafe { lmas_emu_bf16_selfcheck() };
    (n >= 0).then_some(n as u64)
}

/// One entry of the C layout table: `(scope, name, value, size)` = (struct, field, offset, size), (struct,
/// "", size, align) or ("const", constant, value, 0).
pub fn layout_table() -> Vec<(String, String, u64, u64)> {
    let mut n = 0u32;
    // SAFETY: returns a pointer to a static array of `n` entries.
    let ptr = unsafe { lmas_layout_table(&mut n) };
    (0..n as usize)
        .map(|i| {
            // SAFETY: i < n; the entries and their strings are static.
            let e = unsafe { &*ptr.add(i) };
            // SAFETY: the table's strings are static NUL-terminated literals.
            let s = |p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            (s(e.scope), s(e.name), e.value, e.size)
        })
        .collect()
}
