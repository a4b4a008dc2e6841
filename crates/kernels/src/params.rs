//! `#[repr(C)]` mirrors of `crates/kernels/cuda/params.h` (and of the emulator's `crates/kernels/cuda/emu/emu_api.h`).
//!
//! Every field has the C type's size and offset; `tests/kernels_emu.rs` (`params_layout_matches_c`)
//! compares them, and the constants below, with what the C compiler sees (`lmas_layout_table`). Device
//! pointers are [`DevPtr`] (`u64`): a `CUdeviceptr` on the GPU, a host address (`ptr as u64`) in emulation.
//! A null pointer is 0. Padding fields (`_pad`) must be 0.

/// A device address (`CUdeviceptr`), or a host address when emulating.
pub type DevPtr = u64;

/// `LMAS_RMSNORM_THREADS`: one block per row; 256 threads stream a row of a few thousand elements.
pub const RMSNORM_THREADS: u32 = 256;
/// `LMAS_QK_THREADS`: one block per token; 4 warps share its heads.
pub const QK_THREADS: u32 = 128;
/// `LMAS_ATTN_THREADS`: 4 warps per attention block.
pub const ATTN_THREADS: u32 = 128;
/// `LMAS_ATTN_BK`: KV slots per shared-memory tile (one per lane when scoring).
pub const ATTN_BK: u32 = 32;
/// `LMAS_ATTN_QB`: query vectors (tokens x q heads of one KV head) per attention block; bounds the GQA group.
pub const ATTN_QB: u32 = 16;
/// `LMAS_ATTN_QW`: query vectors per warp.
pub const ATTN_QW: u32 = 4;
/// `LMAS_MAX_HEAD_DIM`: largest head_dim of the q/k and attention kernels (8 values per lane).
pub const MAX_HEAD_DIM: u32 = 256;
/// `LMAS_DECODE_CHUNK`: KV slots per decode block (split-KV).
pub const DECODE_CHUNK: u32 = 256;
/// `LMAS_STREAM_THREADS`: SwiGLU, embedding gather, splice.
pub const STREAM_THREADS: u32 = 256;
/// `LMAS_LATENT_THREADS`: 8 warps per latent-projection block.
pub const LATENT_THREADS: u32 = 256;
/// `LMAS_LATENT_MAX_ROWS`: rows per latent-projection launch (per-warp accumulators live in registers).
pub const LATENT_MAX_ROWS: u32 = 8;
/// `LMAS_SAMPLE_THREADS`: one block per row for argmax / sampling.
pub const SAMPLE_THREADS: u32 = 512;
/// `LMAS_MAX_LAUNCHES`: kernels one op may launch.
pub const MAX_LAUNCHES: usize = 2;
/// `LMAS_PLAN_ERROR_LEN`.
pub const PLAN_ERROR_LEN: usize = 192;
/// `LMAS_EMU_MESSAGE_LEN`.
pub const EMU_MESSAGE_LEN: usize = 2048;

/// One row (question or parallel expert) of a forward call. Its j-th new token (j < `q_len`) is token
/// `q_start + j` of the call, goes to slot `slot_base + past_len + j`, has RoPE position
/// `pos_base + past_len + j`, and sees slots `[slot_base, slot_base + past_len + j + 1)`.
/// Invariant: rows are sorted by `q_start` and contiguous (`q_start` of row r+1 = `q_start + q_len` of row r).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Row {
    pub q_start: u32,
    pub q_len: u32,
    pub slot_base: u32,
    pub past_len: u32,
    pub pos_base: u32,
    pub _pad: u32,
}

/// `out[r] = rmsnorm(x[r]) · weight`. Kernel `latentmas_rmsnorm`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RmsNormParams {
    pub x: DevPtr,
    pub weight: DevPtr,
    pub out: DevPtr,
    pub rows: u32,
    pub dim: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// `residual[r] = bf16(residual[r] + delta[r]); out[r] = rmsnorm(residual[r]) · weight`. Kernel
/// `latentmas_add_rmsnorm`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AddRmsNormParams {
    pub residual: DevPtr,
    pub delta: DevPtr,
    pub weight: DevPtr,
    pub out: DevPtr,
    pub rows: u32,
    pub dim: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// Per-head q/k RMSNorm + RoPE + KV write of one layer. Kernel `latentmas_qk_norm_rope_kv`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct QkNormRopeParams {
    /// `[n_tokens, (H + 2·KVH)·head_dim]` bf16; the q part is rotated in place, the k part left as is.
    pub qkv: DevPtr,
    pub q_norm: DevPtr,
    pub k_norm: DevPtr,
    /// `[head_dim / 2]` f32, `rope::inv_freq`.
    pub inv_freq: DevPtr,
    /// This layer's K plane `[n_slots, KVH, head_dim]`.
    pub k_cache: DevPtr,
    pub v_cache: DevPtr,
    /// `[n_rows]` [`Row`].
    pub rows: DevPtr,
    pub n_rows: u32,
    pub n_tokens: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    /// Even, at most [`MAX_HEAD_DIM`].
    pub head_dim: u32,
    pub n_slots: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// Causal GQA attention over the shared buffer. Prefill: kernel `latentmas_attn_prefill`; decode (every row
/// `q_len == 1`): `latentmas_attn_decode_partial` + `latentmas_attn_decode_merge` with a workspace.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AttnParams {
    /// Token t, head h at `q + (t·q_stride + h·head_dim)·2` bytes.
    pub q: DevPtr,
    pub k_cache: DevPtr,
    pub v_cache: DevPtr,
    /// `[n_tokens, H, head_dim]` bf16.
    pub out: DevPtr,
    pub rows: DevPtr,
    /// Decode only: f32 scratch of the plan's `workspace_bytes`.
    pub workspace: DevPtr,
    pub n_rows: u32,
    pub n_tokens: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Elements between consecutive tokens of `q` (at least `H·head_dim`; `(H + 2·KVH)·head_dim` when q is
    /// read straight from the qkv rows).
    pub q_stride: u32,
    /// At least every row's `q_len` (sizes the prefill grid).
    pub max_q_len: u32,
    /// At least every row's `past_len + q_len` (sizes the decode grid and workspace).
    pub max_kv_len: u32,
    /// Softmax scale, `1/sqrt(head_dim)`.
    pub scale: f32,
    pub _pad: u32,
}

/// `out[t, i] = silu(gate_up[t, i]) · gate_up[t, inter + i]`. Kernel `latentmas_swiglu`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SwigluParams {
    pub gate_up: DevPtr,
    pub out: DevPtr,
    pub n: u32,
    pub inter: u32,
}

/// `out[out_rows[i] or i] = table[ids[i]]` (zero row for an id ≥ vocab). Kernel `latentmas_embed`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbedParams {
    /// `[n]` u32.
    pub ids: DevPtr,
    /// `[n]` u32 or 0.
    pub out_rows: DevPtr,
    pub table: DevPtr,
    pub out: DevPtr,
    pub n: u32,
    pub dim: u32,
    pub vocab: u32,
    pub _pad: u32,
}

/// The latent step's input embedding: `out[out_rows[r]] = bf16(a / max(‖a‖, 1e-6) · target_norm)` with
/// `a = h[in_rows[r]] · W_a`. `w_a_t` is W_a TRANSPOSED (`[out, in]`). The workspace (plan's
/// `workspace_bytes`) must be zeroed once when allocated; launches leave its counter at zero.
/// Kernel `latentmas_latent_project`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LatentParams {
    pub h: DevPtr,
    pub in_rows: DevPtr,
    pub w_a_t: DevPtr,
    pub out: DevPtr,
    pub out_rows: DevPtr,
    pub workspace: DevPtr,
    /// At most [`LATENT_MAX_ROWS`].
    pub n_rows: u32,
    pub dim: u32,
    pub target_norm: f32,
    pub _pad: u32,
}

/// One move of slots `[src, src + len)` to `[dst, dst + len)` (memmove semantics), every layer, K and V.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpliceOp {
    pub src: u32,
    pub dst: u32,
    pub len: u32,
}

/// In-place KV splice of `ops` in order over the whole buffer `[n_layers][2][n_slots][kv_width]`.
/// Kernel `latentmas_kv_splice`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SpliceParams {
    pub kv: DevPtr,
    /// `[n_ops]` [`SpliceOp`].
    pub ops: DevPtr,
    pub n_ops: u32,
    pub n_layers: u32,
    pub n_slots: u32,
    pub kv_width: u32,
}

/// `out[r] = argmax logits[r, 0..vocab_limit)` (lowest id on ties). Kernel `latentmas_argmax`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ArgmaxParams {
    /// `[n_rows, stride]` f32.
    pub logits: DevPtr,
    /// `[n_rows]` u32.
    pub out: DevPtr,
    pub n_rows: u32,
    pub stride: u32,
    pub vocab_limit: u32,
    pub _pad: u32,
}

/// temperature → top-k → top-p sampling at `uniform[r]` in [0, 1) (inverse CDF in id order). Kernel
/// `latentmas_sample`; see `crates/kernels/cuda/sampling.cu` for the exact semantics.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SampleParams {
    pub logits: DevPtr,
    /// `[n_rows]` f32.
    pub uniform: DevPtr,
    pub out: DevPtr,
    pub n_rows: u32,
    pub stride: u32,
    pub vocab_limit: u32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// ≤ 0: greedy.
    pub temperature: f32,
    /// ≥ 1 disables top-p; must be > 0.
    pub top_p: f32,
}

/// A planted-bug kernel of the emulator's self-test (`crates/kernels/cuda/emu/selftest.cu`, emulation only).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EmuTestParams {
    /// `[64]` f32.
    pub out: DevPtr,
    /// One of `emu::test_variant::*`.
    pub variant: u32,
    pub _pad: u32,
}

/// `LmasLaunch`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawLaunch {
    pub kernel: *const std::ffi::c_char,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub _pad: u32,
}

/// `LmasPlan`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawPlan {
    pub n_launches: u32,
    pub _pad: u32,
    pub launches: [RawLaunch; MAX_LAUNCHES],
    pub workspace_bytes: u64,
    pub error: [std::ffi::c_char; PLAN_ERROR_LEN],
}

impl Default for RawPlan {
    fn default() -> Self {
        let launch = RawLaunch { kernel: std::ptr::null(), grid: [0; 3], block: [0; 3], shared_bytes: 0, _pad: 0 };
        RawPlan {
            n_launches: 0,
            _pad: 0,
            launches: [launch; MAX_LAUNCHES],
            workspace_bytes: 0,
            error: [0; PLAN_ERROR_LEN],
        }
    }
}

/// `LmasEmuOptions`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEmuOptions {
    pub mode: u32,
    pub schedule: u32,
}

/// `LmasEmuError`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawEmuError {
    pub code: i32,
    pub mode_used: u32,
    pub message: [std::ffi::c_char; EMU_MESSAGE_LEN],
}

// SAFETY: `#[repr(C)]` structs of u32 fields only: no padding, every bit pattern valid. Lets the cuda backend
// upload row tables and splice lists as plain bytes.
unsafe impl bytemuck::Zeroable for Row {}
unsafe impl bytemuck::Pod for Row {}
unsafe impl bytemuck::Zeroable for SpliceOp {}
unsafe impl bytemuck::Pod for SpliceOp {}
