//! The Qwen3 forward pass on the cpu backend, over the shared KV buffer.
//!
//! One call runs any mix of rows (questions, or parallel experts): each row appends its tokens (ids or
//! input-embedding vectors) at its next slots, attends to its own slots only, and asks for the hidden
//! state (and logits) of its last position or of all positions. Tokens of all rows go through every
//! projection together, so a batch streams the weights once.
//!
//! Per layer, with n tokens in the call:
//! 1. `xn = rmsnorm(x)` (fused with the previous layer's residual add)      (n, D)
//! 2. `qkv = xn · W_qkvᵀ`                                                   (n, (H + 2·KVH)·d)
//! 3. per-head q/k RMSNorm, RoPE at each token's position, K/V written to its slot
//! 4. `a = attention(q, K, V)` over each token's visible slots               (n, H·d)
//! 5. `x += a · W_oᵀ`; `xn = rmsnorm(x)`                                     (n, D)
//! 6. `x += down(silu(gate(xn)) · up(xn))`                                   (n, D)
//!
//! Then `h = rmsnorm(x)` for the selected positions and, if asked, `logits = h · lm_headᵀ`.

use std::path::Path;

use super::config::Qwen3Config;
use super::weights::Weights;
use crate::backend::cpu::{
    attention::AttnSpan,
    matmul::Precision,
    ops::{CpuOps, CpuScratch},
    rope,
};
use crate::backend::{Acts, CallLayout, ForwardOps, Linear, Norm};
use crate::error::{Error, Result};
use crate::kernels::Row;
use crate::kv::{KvBuffer, KvRow};

/// What a row feeds in this call.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Token ids.
    Tokens(&'a [u32]),
    /// Input-embedding vectors, `[n, D]` row-major (latent steps feed one).
    Embeddings(&'a [f32]),
}

/// Which positions of a row produce outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Last,
    All,
}

/// One row's part of a forward call.
pub struct RowStep<'a> {
    pub row: &'a mut KvRow,
    pub input: Input<'a>,
    pub select: Select,
}

/// Reused buffers: a decode step allocates nothing once these have grown to size.
#[derive(Default)]
pub struct Workspace {
    acts: Acts<Vec<f32>>,
    cpu: CpuScratch,
    layout: CallLayout,
    /// Final-norm hidden states of the selected positions, `[selected, D]`.
    pub hidden: Vec<f32>,
    /// Logits of the selected positions, `[selected, vocab]` (empty when not asked for).
    pub logits: Vec<f32>,
    /// When set, the residual stream entering each layer and after the last one (before the final
    /// norm) is recorded here for every position (golden tests compare per-layer hidden states).
    pub capture_layers: Option<Vec<Vec<f32>>>,
}

impl Workspace {
    /// Hidden state `i` of the last call (in row order, then position order).
    pub fn hidden_row(&self, i: usize, d: usize) -> &[f32] {
        &self.hidden[i * d..(i + 1) * d]
    }

    /// Logits `i` of the last call.
    pub fn logits_row(&self, i: usize, vocab: usize) -> &[f32] {
        &self.logits[i * vocab..(i + 1) * vocab]
    }
}

/// A loaded Qwen3 causal LM.
pub struct Qwen3 {
    pub config: Qwen3Config,
    pub weights: Weights,
    inv_freq: Vec<f32>,
}

impl Qwen3 {
    /// Loads `config.json` and the safetensors of `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = Qwen3Config::from_file(&dir.join("config.json"))?;
        let weights = Weights::load(dir, &config)?;
        Ok(Self::new(config, weights))
    }

    pub fn new(config: Qwen3Config, weights: Weights) -> Self {
        let inv_freq = rope::inv_freq(config.head_dim, config.rope_theta);
        Qwen3 { config, weights, inv_freq }
    }

    /// RoPE inverse frequencies, `[head_dim / 2]`.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Runs one forward call on the cpu backend. Outputs land in `ws.hidden` (always) and `ws.logits` (if
    /// `logits`). Capacity and input shapes are checked for every row before anything is computed. Exact f32
    /// arithmetic throughout (see [`Qwen3::forward_with`]).
    pub fn forward(
        &self,
        kv: &mut KvBuffer,
        ws: &mut Workspace,
        steps: &mut [RowStep<'_>],
        logits: bool,
    ) -> Result<()> {
        self.forward_with(kv, ws, steps, logits, Precision::Exact)
    }

    /// [`Qwen3::forward`] with `precision` for every matmul with bf16 weights (the layers' q|k|v, o,
    /// gate|up, down projections and the lm_head); everything else (norms, RoPE, attention) is always
    /// exact f32. [`Precision::Bf16Activations`] runs them on AMX (~10× the FLOP/s), activations rounded
    /// to bf16 first. A row's result never depends on the other rows of the call.
    pub fn forward_with(
        &self,
        kv: &mut KvBuffer,
        ws: &mut Workspace,
        steps: &mut [RowStep<'_>],
        logits: bool,
        precision: Precision,
    ) -> Result<()> {
        self.forward_split(kv, ws, steps, logits, precision, precision)
    }

    /// [`Qwen3::forward_with`] with separate precisions for the layers' projections and the lm_head (the
    /// engine's prefill runs its projections fast and the head exact: one or a few rows, memory bound).
    pub fn forward_split(
        &self,
        kv: &mut KvBuffer,
        ws: &mut Workspace,
        steps: &mut [RowStep<'_>],
        logits: bool,
        precision: Precision,
        head_precision: Precision,
    ) -> Result<()> {
        plan_call(&self.config, kv.slots(), steps, &mut ws.layout)?;
        let mut ops = CpuOps {
            cfg: &self.config,
            weights: &self.weights,
            inv_freq: &self.inv_freq,
            kv,
            scratch: &mut ws.cpu,
            precision,
            head_precision,
        };
        ops.begin(steps, &ws.layout)?;
        forward_ops(&self.config, &mut ops, &mut ws.acts, &ws.layout, steps, logits, ws.capture_layers.as_mut())?;
        read_outputs(&self.config, &mut ops, &ws.acts, &ws.layout, logits, &mut ws.hidden, &mut ws.logits)?;
        commit_call(steps, self.config.hidden_size);
        Ok(())
    }
}

/// Where a forward call's host outputs go.
pub struct ForwardOut<'a> {
    /// Final-norm hidden states of the selected positions, `[selected, D]`.
    pub hidden: &'a mut Vec<f32>,
    /// Logits of the selected positions (cleared when not asked for).
    pub logits: &'a mut Vec<f32>,
    /// Residual stream entering each layer and after the last one, every position.
    pub capture: Option<&'a mut Vec<Vec<f32>>>,
}

fn input_len(input: Input<'_>, d: usize) -> usize {
    match input {
        Input::Tokens(ids) => ids.len(),
        Input::Embeddings(e) => e.len() / d,
    }
}

/// Validates `steps` (ids < vocab, embedding shapes, non-empty, capacity) and lays out their tokens in
/// `layout`. Nothing is modified on failure except `layout`.
pub fn plan_call(cfg: &Qwen3Config, kv_slots: usize, steps: &[RowStep<'_>], layout: &mut CallLayout) -> Result<()> {
    let d = cfg.hidden_size;
    for s in steps.iter() {
        match s.input {
            Input::Tokens(ids) => {
                if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                    return Err(Error::InvalidArgument(format!("token id {bad} ≥ vocab_size {}", cfg.vocab_size)));
                }
            }
            Input::Embeddings(e) => {
                if e.len() % d != 0 {
                    return Err(Error::InvalidArgument(format!(
                        "input embeddings of length {} are not a multiple of hidden_size {d}",
                        e.len()
                    )));
                }
            }
        }
        let len = input_len(s.input, d);
        if len == 0 {
            return Err(Error::InvalidArgument("a row step with no tokens".into()));
        }
        s.row.check_append(len)?;
        if s.row.slot_base + s.row.capacity > kv_slots {
            return Err(Error::KvCapacity("row lies outside the KV buffer".into()));
        }
    }
    layout.rows.clear();
    layout.slots.clear();
    layout.positions.clear();
    layout.spans.clear();
    layout.selected.clear();
    layout.max_q_len = 0;
    layout.max_kv_len = 0;
    let mut t = 0;
    for s in steps.iter() {
        let len = input_len(s.input, d);
        layout.rows.push(Row {
            q_start: t as u32,
            q_len: len as u32,
            slot_base: s.row.slot_base as u32,
            past_len: s.row.len as u32,
            pos_base: s.row.pos_base as u32,
            _pad: 0,
        });
        for i in 0..len {
            let idx = s.row.len + i;
            layout.slots.push(s.row.slot_base + idx);
            layout.spans.push(AttnSpan { slot_base: s.row.slot_base, len: idx + 1 });
            layout.positions.push(s.row.pos_base + idx);
            if s.select == Select::All || i + 1 == len {
                layout.selected.push(t + i);
            }
        }
        layout.max_q_len = layout.max_q_len.max(len);
        layout.max_kv_len = layout.max_kv_len.max(s.row.len + len);
        t += len;
    }
    layout.n_tokens = t;
    Ok(())
}

/// Advances each row's length by the tokens it fed (after a successful forward).
pub fn commit_call(steps: &mut [RowStep<'_>], d: usize) {
    for s in steps.iter_mut() {
        s.row.len += input_len(s.input, d);
    }
}

/// The Qwen3 forward, written once against [`ForwardOps`]: every backend runs exactly this op sequence.
/// `layout` comes from [`plan_call`]; `steps` are the call's rows in row order; `ops.begin(steps, layout)`
/// must have run. Queues everything up to the logits (kept by the backend); [`read_outputs`] fetches them.
/// Nothing here reads back to the host unless `capture` asks for the per-layer residual stream, so a
/// device backend can record this whole function as one graph.
pub fn forward_ops<B: ForwardOps>(
    cfg: &Qwen3Config,
    ops: &mut B,
    a: &mut Acts<B::Act>,
    layout: &CallLayout,
    steps: &[RowStep<'_>],
    logits: bool,
    mut capture: Option<&mut Vec<Vec<f32>>>,
) -> Result<()> {
    let (n, d) = (layout.n_tokens, cfg.hidden_size);
    // 0. input embeddings                                                    (n, D)
    ops.embed(steps, layout, &mut a.x)?;
    for li in 0..cfg.num_hidden_layers {
        // 1. input norm, fused with the previous layer's MLP residual add       (n, D)
        if li == 0 {
            ops.rms_norm(&a.x, Norm::Input(li), n, &mut a.xn)?;
        } else {
            ops.add_rms_norm(&mut a.x, &a.delta, Norm::Input(li), n, &mut a.xn)?;
        }
        if let Some(cap) = capture.as_mut() {
            let mut v = Vec::new();
            ops.read(&a.x, n * d, &mut v)?;
            cap.push(v);
        }
        // 2. q|k|v projection                                                   (n, (H + 2·KVH)·d)
        // 3. q/k norm + RoPE in place, K/V written to each token's slot
        // 4. attention over each token's row                                    (n, H·d)
        ops.attention_block(li, &a.xn, layout, &mut a.qkv, &mut a.attn)?;
        // 5. output projection, residual add, post-attention norm               (n, D)
        ops.linear(&a.attn, n, Linear::O(li), &mut a.delta)?;
        ops.add_rms_norm(&mut a.x, &a.delta, Norm::Post(li), n, &mut a.xn)?;
        // 6. SwiGLU MLP; its residual add is fused into the next norm            (n, 2·I) → (n, I) → (n, D)
        ops.linear(&a.xn, n, Linear::GateUp(li), &mut a.gate_up)?;
        ops.swiglu(&a.gate_up, n, &mut a.act)?;
        ops.linear(&a.act, n, Linear::Down(li), &mut a.delta)?;
    }
    // 7. final norm (fused with the last residual add) for all positions, then keep the selected ones
    if cfg.num_hidden_layers == 0 {
        ops.rms_norm(&a.x, Norm::Final, n, &mut a.xn)?;
    } else {
        ops.add_rms_norm(&mut a.x, &a.delta, Norm::Final, n, &mut a.xn)?;
    }
    if let Some(cap) = capture.as_mut() {
        let mut v = Vec::new();
        ops.read(&a.x, n * d, &mut v)?;
        cap.push(v);
    }
    ops.gather_selected(&a.xn, layout, &mut a.hidden)?;
    // 8. logits of the selected positions                                     (sel, vocab)
    if logits {
        ops.logits(&a.hidden, layout.selected.len())?;
    }
    Ok(())
}

/// Copies a call's outputs to the host: the selected final hidden states `[sel, D]` and (if asked) their
/// logits `[sel, vocab]` (cleared otherwise).
pub fn read_outputs<B: ForwardOps>(
    cfg: &Qwen3Config,
    ops: &mut B,
    a: &Acts<B::Act>,
    layout: &CallLayout,
    logits: bool,
    hidden: &mut Vec<f32>,
    logits_out: &mut Vec<f32>,
) -> Result<()> {
    let sel = layout.selected.len();
    ops.read(&a.hidden, sel * cfg.hidden_size, hidden)?;
    if logits {
        ops.read_logits(sel, logits_out)
    } else {
        logits_out.clear();
        Ok(())
    }
}
