//! The per-head q/k RMSNorm + RoPE + KV write of one layer, fused as the CUDA kernel fuses it: for every
//! token, q heads are normalised (`q_norm`) and rotated in place, k heads are normalised (`k_norm`),
//! rotated and written into the token's K slot, v heads are copied into its V slot.

use super::{norm::rms_norm_row, rope::rotate};

/// Sizes of the fused q|k|v rows.
#[derive(Debug, Clone, Copy)]
pub struct QkvShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl QkvShape {
    pub fn width(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
}

/// `qkv [n, (H + 2·KVH)·d]` in, q part rotated in place; K/V of token t written to `slots[t]` of
/// `k_cache`/`v_cache` (`[slots, KVH, d]`). `cos`/`sin` are `[n, d/2]` for each token's position.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope_write_kv(
    qkv: &mut [f32],
    shape: QkvShape,
    q_norm: &[f32],
    k_norm: &[f32],
    eps: f32,
    cos: &[f32],
    sin: &[f32],
    slots: &[usize],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
) {
    let QkvShape { n_heads, n_kv_heads, head_dim: d } = shape;
    let width = shape.width();
    let half = d / 2;
    let kv_w = n_kv_heads * d;
    let mut tmp = [0f32; 512];
    assert!(d <= tmp.len(), "head_dim {d} > 512");
    for (t, row) in qkv.chunks_exact_mut(width).enumerate() {
        let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
        let (q, kv) = row.split_at_mut(n_heads * d);
        for head in q.chunks_exact_mut(d) {
            tmp[..d].copy_from_slice(head);
            rms_norm_row(&tmp[..d], q_norm, eps, head);
            rotate(head, c, s);
        }
        let (k, v) = kv.split_at_mut(kv_w);
        for head in k.chunks_exact_mut(d) {
            tmp[..d].copy_from_slice(head);
            rms_norm_row(&tmp[..d], k_norm, eps, head);
            rotate(head, c, s);
        }
        let slot = slots[t];
        k_cache[slot * kv_w..(slot + 1) * kv_w].copy_from_slice(k);
        v_cache[slot * kv_w..(slot + 1) * kv_w].copy_from_slice(v);
    }
}
