//! The cpu backend as a [`ForwardOps`]: f32 activations in host `Vec`s, the f32 KV buffer of [`KvBuffer`],
//! and exactly the functions of this module's siblings (the reference numerics the golden tests pin).

use super::{
    activation::{swiglu, swiglu_fast},
    attention::{attention, AttnShape},
    decode_attention::{qkv_rope_attention, DecodeAttnLayer},
    matmul::{matmul_with, Precision},
    norm::{add_rms_norm, rms_norm},
    prefill_attention::attention_rows,
    qk::{qk_norm_rope_write_kv, QkvShape},
    rope,
};
use crate::backend::{CallLayout, ForwardOps, Linear, Norm};
use crate::error::Result;
use crate::kv::KvBuffer;
use crate::model::config::Qwen3Config;
use crate::model::matrix::{WeightData, WeightMatrix};
use crate::model::qwen3::{Input, RowStep};
use crate::model::weights::Weights;

/// Reused host scratch of the cpu ops (a decode step allocates nothing once grown).
#[derive(Default)]
pub struct CpuScratch {
    q: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// The last `logits` (swapped out by `read_logits`).
    logits: Vec<f32>,
    /// Transposed keys of the blocked prefill attention.
    kt: Vec<f32>,
}

/// The cpu ops over borrowed weights and KV buffer.
pub struct CpuOps<'a> {
    pub cfg: &'a Qwen3Config,
    pub weights: &'a Weights,
    pub inv_freq: &'a [f32],
    pub kv: &'a mut KvBuffer,
    pub scratch: &'a mut CpuScratch,
    /// Arithmetic of the layers' projections when the weights are bf16.
    pub precision: Precision,
    /// Arithmetic of the lm_head when it is bf16.
    pub head_precision: Precision,
}

pub(crate) fn fit(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    &mut v[..len]
}

impl CpuOps<'_> {
    fn norm(&self, w: Norm) -> &[f32] {
        match w {
            Norm::Input(l) => &self.weights.layers[l].input_norm,
            Norm::Post(l) => &self.weights.layers[l].post_norm,
            Norm::Final => &self.weights.final_norm,
        }
    }
    fn matrix(&self, w: Linear) -> &WeightMatrix {
        match w {
            Linear::Qkv(l) => &self.weights.layers[l].qkv,
            Linear::O(l) => &self.weights.layers[l].o_proj,
            Linear::GateUp(l) => &self.weights.layers[l].gate_up,
            Linear::Down(l) => &self.weights.layers[l].down,
        }
    }
    /// Whether the call takes the fast kernels (blocked FMA attention, vectorised SwiGLU, each where the CPU
    /// has it): only where the projections run with bf16 activations (bf16 weights); exact calls and f32
    /// models never do.
    fn fast(&self) -> bool {
        self.precision == Precision::Bf16Activations
            && self.weights.layers.first().is_some_and(|l| matches!(l.qkv.data, WeightData::Bf16(_)))
    }
    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }
}

impl ForwardOps for CpuOps<'_> {
    type Act = Vec<f32>;

    fn begin(&mut self, _steps: &[RowStep<'_>], layout: &CallLayout) -> Result<()> {
        let half = self.cfg.head_dim / 2;
        let n = layout.n_tokens;
        let cos = fit(&mut self.scratch.cos, n * half);
        let sin = fit(&mut self.scratch.sin, n * half);
        for (t, &pos) in layout.positions.iter().enumerate() {
            rope::angles(pos, self.inv_freq, &mut cos[t * half..(t + 1) * half], &mut sin[t * half..(t + 1) * half]);
        }
        Ok(())
    }

    fn embed(&mut self, steps: &[RowStep<'_>], layout: &CallLayout, x: &mut Vec<f32>) -> Result<()> {
        let d = self.cfg.hidden_size;
        let x = fit(x, layout.n_tokens * d);
        for (input, row) in steps.iter().map(|s| &s.input).zip(&layout.rows) {
            let t = row.q_start as usize;
            match *input {
                Input::Tokens(ids) => {
                    for (i, &id) in ids.iter().enumerate() {
                        self.weights.embed.row_f32(id as usize, &mut x[(t + i) * d..(t + i + 1) * d]);
                    }
                }
                Input::Embeddings(e) => x[t * d..t * d + e.len()].copy_from_slice(e),
            }
        }
        Ok(())
    }

    fn rms_norm(&mut self, x: &Vec<f32>, w: Norm, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let out = fit(out, rows * self.cfg.hidden_size);
        rms_norm(x, self.norm(w), self.eps(), out);
        Ok(())
    }

    fn add_rms_norm(
        &mut self,
        residual: &mut Vec<f32>,
        delta: &Vec<f32>,
        w: Norm,
        rows: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let out = fit(out, rows * self.cfg.hidden_size);
        add_rms_norm(residual, delta, self.norm(w), self.eps(), out);
        Ok(())
    }

    fn linear(&mut self, x: &Vec<f32>, rows: usize, w: Linear, out: &mut Vec<f32>) -> Result<()> {
        let m = self.matrix(w);
        let out = fit(out, rows * m.rows);
        matmul_with(x, rows, m, out, self.precision);
        Ok(())
    }

    fn qk_norm_rope_kv(&mut self, layer: usize, qkv: &mut Vec<f32>, layout: &CallLayout) -> Result<()> {
        let cfg = self.cfg;
        let shape =
            QkvShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim };
        let lw = &self.weights.layers[layer];
        let (k_cache, v_cache) = self.kv.layer_mut(layer);
        qk_norm_rope_write_kv(
            qkv,
            shape,
            &lw.q_norm,
            &lw.k_norm,
            cfg.rms_norm_eps as f32,
            &self.scratch.cos,
            &self.scratch.sin,
            &layout.slots,
            k_cache,
            v_cache,
        );
        Ok(())
    }

    fn attention(&mut self, layer: usize, qkv: &Vec<f32>, layout: &CallLayout, out: &mut Vec<f32>) -> Result<()> {
        let cfg = self.cfg;
        let (qw, qkvw, n) = (cfg.q_width(), cfg.qkv_width(), layout.n_tokens);
        let q = fit(&mut self.scratch.q, n * qw);
        for (dst, src) in q.chunks_exact_mut(qw).zip(qkv.chunks_exact(qkvw)) {
            dst.copy_from_slice(&src[..qw]);
        }
        let shape =
            AttnShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim };
        let (k_cache, v_cache) = self.kv.layer(layer);
        let out = fit(out, n * qw);
        if self.fast() {
            // The fast prefill: rows with many tokens on the blocked FMA kernel, the others exact.
            let kt = &mut self.scratch.kt;
            attention_rows(&self.scratch.q, k_cache, v_cache, &layout.rows, &layout.spans, shape, out, kt);
        } else {
            attention(&self.scratch.q, k_cache, v_cache, &layout.spans, shape, out);
        }
        Ok(())
    }

    fn attention_block(
        &mut self,
        layer: usize,
        xn: &Vec<f32>,
        layout: &CallLayout,
        qkv: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let lw = &self.weights.layers[layer];
        // One token on the exact matmul (decode): the whole block in one parallel region, the same bits.
        let exact = self.precision == Precision::Exact || matches!(lw.qkv.data, WeightData::F32(_));
        if layout.n_tokens != 1 || !exact || cfg.hidden_size == 0 {
            self.linear(xn, layout.n_tokens, Linear::Qkv(layer), qkv)?;
            self.qk_norm_rope_kv(layer, qkv, layout)?;
            return self.attention(layer, qkv, layout, out);
        }
        let shape =
            QkvShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim };
        let block = DecodeAttnLayer { qkv: &lw.qkv, q_norm: &lw.q_norm, k_norm: &lw.k_norm, eps: self.eps(), shape };
        let qkv = fit(qkv, lw.qkv.rows);
        let out = fit(out, cfg.q_width());
        let (k_cache, v_cache) = self.kv.layer_mut(layer);
        let (cos, sin) = (&self.scratch.cos, &self.scratch.sin);
        qkv_rope_attention(xn, &block, cos, sin, layout.spans[0], k_cache, v_cache, qkv, out);
        Ok(())
    }

    fn swiglu(&mut self, gate_up: &Vec<f32>, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let inter = self.cfg.intermediate_size;
        let out = fit(out, rows * inter);
        if self.fast() {
            swiglu_fast(gate_up, inter, out);
        } else {
            swiglu(gate_up, inter, out);
        }
        Ok(())
    }

    fn gather_selected(&mut self, x: &Vec<f32>, layout: &CallLayout, out: &mut Vec<f32>) -> Result<()> {
        let d = self.cfg.hidden_size;
        let out = fit(out, layout.selected.len() * d);
        for (dst, &i) in out.chunks_exact_mut(d).zip(&layout.selected) {
            dst.copy_from_slice(&x[i * d..(i + 1) * d]);
        }
        Ok(())
    }

    fn logits(&mut self, hidden: &Vec<f32>, rows: usize) -> Result<()> {
        let head = self.weights.lm_head();
        let out = fit(&mut self.scratch.logits, rows * head.rows);
        matmul_with(hidden, rows, head, out, self.head_precision);
        Ok(())
    }

    fn read_logits(&mut self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        // hand the buffer over (no copy); the caller's old allocation becomes the next call's scratch
        debug_assert_eq!(self.scratch.logits.len(), rows * self.weights.lm_head().rows);
        std::mem::swap(&mut self.scratch.logits, out);
        Ok(())
    }

    fn read(&mut self, a: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        out.extend_from_slice(&a[..len]);
        Ok(())
    }
}
