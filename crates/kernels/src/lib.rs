//! The hand-written CUDA kernels (`cuda/<op>.cu`) as the engine sees them: the embedded fatbin, one
//! `#[repr(C)]` params struct per op, the launch planner of each op, the host emulator that runs the very
//! same kernels on the CPU, and the `ptxas` resource report.
//!
//! Operations ([`KernelOp`] implementors, each launched with ITSELF as the kernels' only argument):
//! - [`RmsNormParams`] (`rmsnorm`), [`AddRmsNormParams`] (`add_rmsnorm`): RMSNorm, with the fused residual add.
//! - [`QkNormRopeParams`] (`qk_norm_rope`): per-head q/k RMSNorm + RoPE + K/V write into the shared buffer.
//! - [`AttnPrefill`] / [`AttnDecode`] (wrapping [`AttnParams`]): causal GQA attention over variable-length
//!   rows; decode is split-KV + log-sum-exp merge (two kernels and a workspace).
//! - [`SwigluParams`] (`swiglu`), [`EmbedParams`] (`embed`).
//! - [`LatentParams`] (`latent_project`): `normalize(h·W_a)·target_norm` → bf16 input embedding, one kernel.
//! - [`SpliceParams`] (`kv_splice`): in-place moves of token ranges, every layer, overlap-safe.
//! - [`ArgmaxParams`] (`argmax`), [`SampleParams`] (`sample`): greedy and temperature → top-k → top-p.
//!
//! Launching on a GPU (the cuda backend, through cudarc): load [`fatbin()`] once as a module
//! (`cuModuleLoadData`); per call, `p.plan()?` gives the [`Launch`]es in order (kernel name, grid, block,
//! dynamic shared bytes) and the workspace size; launch each kernel with the params struct's bytes as the
//! single kernel argument (`&p` as the one `kernelParams` entry). Device pointers are [`DevPtr`] (`u64`).
//! No op needs more than 48 KiB of dynamic shared memory, so no function attribute has to be set.
//!
//! Running on the CPU: `emu::emulate` (feature `emu`: tests and the `emu` device; see `cuda/emu/emu.h` for
//! what the emulator checks). Without that feature the build holds the planners alone.
//!
//! The engine re-exports all of this as `latentmas::kernels`, with these errors turned into its own.

#[cfg(feature = "emu")]
pub mod emu;
pub mod params;
pub mod report;

use std::ffi::CStr;
use std::fmt;

pub use params::*;
pub use report::{kernel_report, KernelInfo};

/// Why the kernels cannot serve a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// The crate was built without nvcc: there is no fatbin (the message says how to get one).
    NotBuilt(String),
    /// An op's planner refused its params (the message names the field).
    InvalidParams(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::NotBuilt(m) | KernelError::InvalidParams(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for KernelError {}

#[repr(C, align(16))]
struct Aligned<B: ?Sized>(B);

/// The fatbin bytes (16-byte aligned, as the driver wants an image); empty when built without nvcc.
static FATBIN: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/latentmas_kernels.fatbin")));

/// Why there is no fatbin (empty when there is one).
pub const KERNELS_STATUS: &str = env!("LATENTMAS_KERNELS_STATUS");

/// The nvcc that built the fatbin (`Build cuda_13.0...`), empty without one.
pub const NVCC_VERSION: &str = env!("LATENTMAS_NVCC_VERSION");

/// The kernels' module image for `cuModuleLoadData`: SASS for sm_90a and sm_80, PTX for compute_90.
/// Fails with a message saying how to get it when the crate was built without nvcc.
pub fn fatbin() -> Result<&'static [u8], KernelError> {
    if FATBIN.0.is_empty() {
        return Err(KernelError::NotBuilt(format!("the CUDA kernels are not in this build: {KERNELS_STATUS}")));
    }
    Ok(&FATBIN.0)
}

/// One kernel launch of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Kernel symbol in the fatbin (`cuModuleGetFunction`).
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory bytes (≤ 48 KiB).
    pub shared_bytes: u32,
}

/// What an op launches: kernels in order, each with the op's params struct as its only argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Empty when there is nothing to do (zero rows/tokens).
    pub launches: Vec<Launch>,
    /// Scratch the op needs at its `workspace` pointer (0 if none).
    pub workspace_bytes: u64,
}

mod sealed {
    pub trait Sealed {}
}

/// An op of `crates/kernels/cuda/<op>.cu`: a `#[repr(C)]` params struct with a C planner and an emulation entry.
///
/// # Safety
/// Implemented only in this module, for structs whose layout equals the C struct the entry points take.
pub unsafe trait KernelOp: Copy + std::fmt::Debug + sealed::Sealed {
    /// Name of the op (`lmas_plan_<OP>`, `lmas_emu_<OP>` in C).
    const OP: &'static str;
    #[doc(hidden)]
    unsafe fn raw_plan(p: *const Self, plan: *mut RawPlan);
    #[doc(hidden)]
    #[cfg(feature = "emu")]
    unsafe fn raw_emulate(p: *const Self, opts: *const RawEmuOptions, err: *mut RawEmuError) -> i32;

    /// The launches for these params (the same planner the emulator uses), or why the params are invalid.
    fn plan(&self) -> Result<Plan, KernelError> {
        let mut raw = RawPlan::default();
        // SAFETY: `self` is a valid params struct of the planner's C type (trait contract); `raw` is a valid,
        // writable LmasPlan. Planners only read the params (no pointer in them is dereferenced).
        unsafe { Self::raw_plan(self, &mut raw) };
        if raw.error[0] != 0 {
            // SAFETY: the planner writes a NUL-terminated string (snprintf) into the fixed buffer.
            let msg = unsafe { CStr::from_ptr(raw.error.as_ptr()) }.to_string_lossy().into_owned();
            return Err(KernelError::InvalidParams(msg));
        }
        let n = (raw.n_launches as usize).min(MAX_LAUNCHES);
        let launches = raw.launches[..n]
            .iter()
            .map(|l| Launch {
                // SAFETY: kernel names are string literals of the C library: NUL-terminated, static, ASCII.
                kernel: unsafe { CStr::from_ptr(l.kernel) }.to_str().unwrap_or("?"),
                grid: l.grid,
                block: l.block,
                shared_bytes: l.shared_bytes,
            })
            .collect();
        Ok(Plan { launches, workspace_bytes: raw.workspace_bytes })
    }
}

/// Prefill attention (any `q_len` per row): [`AttnParams`] launched as `latentmas_attn_prefill`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AttnPrefill(pub AttnParams);

/// Decode attention (every row `q_len == 1`): [`AttnParams`] launched as split-KV partial + merge.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AttnDecode(pub AttnParams);

macro_rules! kernel_ops {
    ($($ty:ty => $op:literal, $plan:ident, $emu:ident;)*) => {
        extern "C" {
            $(
                fn $plan(p: *const $ty, plan: *mut RawPlan);
                #[cfg(feature = "emu")]
                fn $emu(p: *const $ty, opts: *const RawEmuOptions, err: *mut RawEmuError) -> i32;
            )*
        }
        $(
            impl sealed::Sealed for $ty {}
            // SAFETY: $ty mirrors the C params struct of lmas_plan_/lmas_emu_ $op (layout checked by a test).
            unsafe impl KernelOp for $ty {
                const OP: &'static str = $op;
                unsafe fn raw_plan(p: *const Self, plan: *mut RawPlan) {
                    // SAFETY: forwarded from the caller.
                    unsafe { $plan(p, plan) }
                }
                #[cfg(feature = "emu")]
                unsafe fn raw_emulate(p: *const Self, opts: *const RawEmuOptions, err: *mut RawEmuError) -> i32 {
                    // SAFETY: forwarded from the caller.
                    unsafe { $emu(p, opts, err) }
                }
            }
        )*
    };
}

kernel_ops! {
    RmsNormParams => "rmsnorm", lmas_plan_rmsnorm, lmas_emu_rmsnorm;
    AddRmsNormParams => "add_rmsnorm", lmas_plan_add_rmsnorm, lmas_emu_add_rmsnorm;
    QkNormRopeParams => "qk_norm_rope", lmas_plan_qk_norm_rope, lmas_emu_qk_norm_rope;
    AttnPrefill => "attn_prefill", lmas_plan_attn_prefill, lmas_emu_attn_prefill;
    AttnDecode => "attn_decode", lmas_plan_attn_decode, lmas_emu_attn_decode;
    SwigluParams => "swiglu", lmas_plan_swiglu, lmas_emu_swiglu;
    EmbedParams => "embed", lmas_plan_embed, lmas_emu_embed;
    LatentParams => "latent_project", lmas_plan_latent_project, lmas_emu_latent_project;
    SpliceParams => "kv_splice", lmas_plan_kv_splice, lmas_emu_kv_splice;
    ArgmaxParams => "argmax", lmas_plan_argmax, lmas_emu_argmax;
    SampleParams => "sample", lmas_plan_sample, lmas_emu_sample;
}

// The emulator's own self-test kernels (cuda/emu/selftest.cu) exist only in the emulator build.
#[cfg(feature = "emu")]
kernel_ops! {
    EmuTestParams => "selftest", lmas_plan_selftest, lmas_emu_selftest;
}
