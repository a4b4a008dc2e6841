//! Backends, and the op interface the Qwen3 forward is written against ONCE.
//!
//! - `cpu`: the f32 reference and the default where no GPU exists ([`cpu::ops::CpuOps`]).
//! - `emu`: the cuda backend's exact op sequence and memory layout (bf16 activations, weights and KV), every
//!   op launched through its kernel params struct and run by the host emulator, a CPU GEMM in place of
//!   cuBLAS (`emu::EmuModel` = `gpu::GpuModel<emu::HostDevice>`).
//! - `cuda`: a real GPU through cudarc (driver, our kernels from the embedded fatbin) and cuBLAS
//!   (`cuda::CudaModel`).
//! - `gpu`: the device-side forward shared by `cuda` and `emu` ([`gpu::GpuModel`] over the [`gpu::Device`]
//!   trait), so the emu device runs the cuda backend's exact op sequence, buffers and graphs.
//!
//! [`ForwardOps`] lists what one forward call needs: begin (take the inputs), embed, rms_norm, add_rms_norm,
//! linear (by [`Linear`] weight id), qk_norm_rope_kv, attention, swiglu, gather_selected, logits, and reading
//! activations and logits back to the host. The per-call row layout ([`CallLayout`]) is computed once on the host by
//! [`crate::model::qwen3::forward_ops`] and handed to every op that needs it.

pub mod cpu;
pub mod cuda;
#[cfg(feature = "emu")]
pub mod emu;
pub mod gpu;

use crate::backend::cpu::attention::AttnSpan;
use crate::error::Result;
use crate::kernels::Row;
use crate::model::qwen3::RowStep;

/// A weight matrix of the model, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linear {
    /// Layer l's stacked `[q; k; v]` projection.
    Qkv(usize),
    /// Layer l's attention output projection.
    O(usize),
    /// Layer l's stacked `[gate; up]` projection.
    GateUp(usize),
    /// Layer l's MLP down projection.
    Down(usize),
}

/// A norm weight of the model, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Layer l's input (pre-attention) norm.
    Input(usize),
    /// Layer l's post-attention norm.
    Post(usize),
    /// The final norm.
    Final,
}

/// The layout of one forward call's tokens, computed once on the host.
///
/// Invariants: `rows` are sorted by `q_start` and contiguous; `slots`, `positions` and `spans` have one
/// entry per token (`n_tokens`); `selected` lists token indices in increasing order.
#[derive(Debug, Clone, Default)]
pub struct CallLayout {
    /// One kernel row table entry per row of the call (the `LmasRow` the cuda kernels take).
    pub rows: Vec<Row>,
    pub n_tokens: usize,
    /// KV slot of each token.
    pub slots: Vec<usize>,
    /// RoPE position of each token.
    pub positions: Vec<usize>,
    /// Visible slots of each token (cpu attention).
    pub spans: Vec<AttnSpan>,
    /// Tokens whose final hidden state (and logits) the call returns.
    pub selected: Vec<usize>,
    /// Largest q_len of any row.
    pub max_q_len: usize,
    /// Largest past_len + q_len of any row.
    pub max_kv_len: usize,
}

impl CallLayout {
    /// True when every row feeds one token: the cuda backend then runs the split-KV decode kernels.
    pub fn is_decode(&self) -> bool {
        self.rows.iter().all(|r| r.q_len == 1)
    }
}

/// The ops of the Qwen3 forward. Activations live in `Self::Act` buffers (host `Vec<f32>` on cpu, bf16
/// device buffers on cuda / emu). Every op sizes its output to exactly `rows × width` elements.
pub trait ForwardOps {
    /// An activation buffer `[rows, width]`.
    type Act: Default;

    /// Called once per forward call before any op: takes in every per-call input (device backends upload
    /// the row table, token ids, input vectors and selected positions here, outside any graph capture).
    fn begin(&mut self, steps: &[RowStep<'_>], layout: &CallLayout) -> Result<()>;
    /// `x[t] = embedding of token t`: ids are gathered from the embedding table, vectors copied in; `steps`
    /// are the call's rows in row order (the cpu reads their inputs; device backends use what `begin`
    /// uploaded).
    fn embed(&mut self, steps: &[RowStep<'_>], layout: &CallLayout, x: &mut Self::Act) -> Result<()>;
    /// `out = rmsnorm(x) · w`, `rows × D`.
    fn rms_norm(&mut self, x: &Self::Act, w: Norm, rows: usize, out: &mut Self::Act) -> Result<()>;
    /// `residual += delta; out = rmsnorm(residual) · w`, `rows × D`.
    fn add_rms_norm(
        &mut self,
        residual: &mut Self::Act,
        delta: &Self::Act,
        w: Norm,
        rows: usize,
        out: &mut Self::Act,
    ) -> Result<()>;
    /// `out = x · Wᵀ`, `rows × W.rows`.
    fn linear(&mut self, x: &Self::Act, rows: usize, w: Linear, out: &mut Self::Act) -> Result<()>;
    /// Per-head q/k RMSNorm + RoPE in place on the fused `qkv`, K/V written to layer `layer`'s slots.
    fn qk_norm_rope_kv(&mut self, layer: usize, qkv: &mut Self::Act, layout: &CallLayout) -> Result<()>;
    /// Causal GQA attention of the q part of `qkv` over each token's visible slots of layer `layer`.
    fn attention(&mut self, layer: usize, qkv: &Self::Act, layout: &CallLayout, out: &mut Self::Act) -> Result<()>;
    /// The attention block of layer `layer`: `qkv = xn · W_qkvᵀ`, [`ForwardOps::qk_norm_rope_kv`], then
    /// [`ForwardOps::attention`] into `out`. A backend may fuse the three when it gives the same result.
    fn attention_block(
        &mut self,
        layer: usize,
        xn: &Self::Act,
        layout: &CallLayout,
        qkv: &mut Self::Act,
        out: &mut Self::Act,
    ) -> Result<()> {
        self.linear(xn, layout.n_tokens, Linear::Qkv(layer), qkv)?;
        self.qk_norm_rope_kv(layer, qkv, layout)?;
        self.attention(layer, qkv, layout, out)
    }
    /// `out[t, i] = silu(gate_up[t, i]) · gate_up[t, I + i]`.
    fn swiglu(&mut self, gate_up: &Self::Act, rows: usize, out: &mut Self::Act) -> Result<()>;
    /// `out[i] = x[layout.selected[i]]` (rows of width D).
    fn gather_selected(&mut self, x: &Self::Act, layout: &CallLayout, out: &mut Self::Act) -> Result<()>;
    /// `logits = hidden · lm_headᵀ` in f32, `rows × vocab`, kept by the backend until `read_logits`.
    fn logits(&mut self, hidden: &Self::Act, rows: usize) -> Result<()>;
    /// Copies the last `logits` to the host.
    fn read_logits(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()>;
    /// Copies the first `len` elements of `a` to the host as f32.
    fn read(&mut self, a: &Self::Act, len: usize, out: &mut Vec<f32>) -> Result<()>;
}

/// The activation buffers of one forward call.
#[derive(Default)]
pub struct Acts<A> {
    pub x: A,
    pub xn: A,
    pub qkv: A,
    pub attn: A,
    pub delta: A,
    pub gate_up: A,
    pub act: A,
    pub hidden: A,
}
