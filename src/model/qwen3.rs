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
    activation::swiglu,
    attention::{attention, AttnShape, AttnSpan},
    matmul::{matmul_with, Precision},
    norm::{add_rms_norm, rms_norm},
    qk::{qk_norm_rope_write_kv, QkvShape},
    rope,
};
use crate::error::{Error, Result};
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
    x: Vec<f32>,
    xn: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    attn: Vec<f32>,
    delta: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    slots: Vec<usize>,
    spans: Vec<AttnSpan>,
    selected: Vec<usize>,
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

fn fit(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    &mut v[..len]
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

    /// Runs one forward call. Outputs land in `ws.hidden` (always) and `ws.logits` (if `logits`).
    /// Capacity and input shapes are checked for every row before anything is computed. Exact f32
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
    /// exact f32.
    /// [`Precision::Bf16Activations`] is the fast prefill: ~10× the FLOP/s on AMX, activations rounded to
    /// bf16 before each projection. A row's result never depends on the other rows of the call.
    pub fn forward_with(
        &self,
        kv: &mut KvBuffer,
        ws: &mut Workspace,
        steps: &mut [RowStep<'_>],
        logits: bool,
        precision: Precision,
    ) -> Result<()> {
        let cfg = &self.config;
        let d = cfg.hidden_size;
        let half = cfg.head_dim / 2;
        // 0. validate and lay out the tokens of all rows
        let mut n = 0;
        for s in steps.iter() {
            let len = match s.input {
                Input::Tokens(ids) => {
                    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                        return Err(Error::InvalidArgument(format!("token id {bad} ≥ vocab_size {}", cfg.vocab_size)));
                    }
                    ids.len()
                }
                Input::Embeddings(e) => {
                    if e.len() % d != 0 {
                        return Err(Error::InvalidArgument(format!(
                            "input embeddings of length {} are not a multiple of hidden_size {d}",
                            e.len()
                        )));
                    }
                    e.len() / d
                }
            };
            if len == 0 {
                return Err(Error::InvalidArgument("a row step with no tokens".into()));
            }
            s.row.check_append(len)?;
            if s.row.slot_base + s.row.capacity > kv.slots() {
                return Err(Error::KvCapacity("row lies outside the KV buffer".into()));
            }
            n += len;
        }
        let x = fit(&mut ws.x, n * d);
        ws.slots.clear();
        ws.spans.clear();
        ws.selected.clear();
        fit(&mut ws.cos, n * half);
        fit(&mut ws.sin, n * half);
        let mut t = 0;
        for s in steps.iter() {
            let len = match s.input {
                Input::Tokens(ids) => {
                    for (i, &id) in ids.iter().enumerate() {
                        self.weights.embed.row_f32(id as usize, &mut x[(t + i) * d..(t + i + 1) * d]);
                    }
                    ids.len()
                }
                Input::Embeddings(e) => {
                    x[t * d..t * d + e.len()].copy_from_slice(e);
                    e.len() / d
                }
            };
            for i in 0..len {
                let idx = s.row.len + i;
                ws.slots.push(s.row.slot_base + idx);
                ws.spans.push(AttnSpan { slot_base: s.row.slot_base, len: idx + 1 });
                let pos = s.row.pos_base + idx;
                let (c, sn) =
                    (&mut ws.cos[(t + i) * half..(t + i + 1) * half], &mut ws.sin[(t + i) * half..(t + i + 1) * half]);
                rope::angles(pos, &self.inv_freq, c, sn);
                if s.select == Select::All || i + 1 == len {
                    ws.selected.push(t + i);
                }
            }
            t += len;
        }

        let eps = cfg.rms_norm_eps as f32;
        let qkv_shape =
            QkvShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim };
        let attn_shape =
            AttnShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim };
        let (qw, qkvw, inter) = (cfg.q_width(), cfg.qkv_width(), cfg.intermediate_size);
        let mut pending_delta = false;
        for (li, layer) in self.weights.layers.iter().enumerate() {
            // 1. input norm, fused with the previous layer's MLP residual add
            let xn = fit(&mut ws.xn, n * d);
            if pending_delta {
                add_rms_norm(&mut ws.x, &ws.delta, &layer.input_norm, eps, xn);
            } else {
                rms_norm(&ws.x, &layer.input_norm, eps, xn);
            }
            if let Some(cap) = ws.capture_layers.as_mut() {
                cap.push(ws.x.clone());
            }
            // 2. q|k|v projection
            let qkv = fit(&mut ws.qkv, n * qkvw);
            matmul_with(&ws.xn, n, &layer.qkv, qkv, precision);
            // 3. q/k norm + RoPE + KV write
            let (k_cache, v_cache) = kv.layer_mut(li);
            qk_norm_rope_write_kv(
                qkv,
                qkv_shape,
                &layer.q_norm,
                &layer.k_norm,
                eps,
                &ws.cos,
                &ws.sin,
                &ws.slots,
                k_cache,
                v_cache,
            );
            let q = fit(&mut ws.q, n * qw);
            for (dst, src) in q.chunks_exact_mut(qw).zip(ws.qkv.chunks_exact(qkvw)) {
                dst.copy_from_slice(&src[..qw]);
            }
            // 4. attention over each token's row
            let (k_cache, v_cache) = kv.layer(li);
            let attn = fit(&mut ws.attn, n * qw);
            attention(&ws.q, k_cache, v_cache, &ws.spans, attn_shape, attn);
            // 5. output projection, residual add, post-attention norm
            let delta = fit(&mut ws.delta, n * d);
            matmul_with(&ws.attn, n, &layer.o_proj, delta, precision);
            let xn = fit(&mut ws.xn, n * d);
            add_rms_norm(&mut ws.x, &ws.delta, &layer.post_norm, eps, xn);
            // 6. SwiGLU MLP; its residual add is fused into the next norm
            let gate_up = fit(&mut ws.gate_up, n * 2 * inter);
            matmul_with(&ws.xn, n, &layer.gate_up, gate_up, precision);
            let act = fit(&mut ws.act, n * inter);
            swiglu(&ws.gate_up, inter, act);
            let delta = fit(&mut ws.delta, n * d);
            matmul_with(&ws.act, n, &layer.down, delta, precision);
            pending_delta = true;
        }
        // final norm (fused with the last residual add) for all positions, then keep the selected ones
        let xn = fit(&mut ws.xn, n * d);
        add_rms_norm(&mut ws.x, &ws.delta, &self.weights.final_norm, eps, xn);
        if let Some(cap) = ws.capture_layers.as_mut() {
            cap.push(ws.x.clone());
        }
        let sel = ws.selected.len();
        let hidden = fit(&mut ws.hidden, sel * d);
        for (dst, &i) in hidden.chunks_exact_mut(d).zip(&ws.selected) {
            dst.copy_from_slice(&ws.xn[i * d..(i + 1) * d]);
        }
        if logits {
            let head = self.weights.lm_head();
            let out = fit(&mut ws.logits, sel * head.rows);
            matmul_with(&ws.hidden, sel, head, out, precision);
        } else {
            ws.logits.clear();
        }
        for s in steps.iter_mut() {
            s.row.len += match s.input {
                Input::Tokens(ids) => ids.len(),
                Input::Embeddings(e) => e.len() / d,
            };
        }
        Ok(())
    }
}
