//! Causal GQA attention over the shared KV buffer, f32, the reference for the CUDA prefill and decode
//! kernels. Each query token names the cache slots it may see: `len` slots starting at `slot_base` (its
//! row's first slot); the token's own K/V were written there before this call, so causality is exactly
//! "see slots [slot_base, slot_base + len)". No padding entries exist, so no mask is ever needed.

use std::cell::RefCell;

use rayon::prelude::*;

/// What one query token attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnSpan {
    /// First slot of the token's row in the KV buffer.
    pub slot_base: usize,
    /// Number of visible slots (the token's position in its row + 1).
    pub len: usize,
}

/// Shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

thread_local! {
    // Reused score buffer: attention runs per (token, head) on the rayon pool, and must not allocate per token.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[t, h] = softmax(q[t, h] · K[span(t)]ᵀ / sqrt(d)) · V[span(t)]`, with kv head `h / (H / KVH)`.
///
/// `q`: `[n, H, d]`; `k_cache`, `v_cache`: one layer, `[slots, KVH, d]`; `out`: `[n, H, d]`.
pub fn attention(q: &[f32], k_cache: &[f32], v_cache: &[f32], spans: &[AttnSpan], shape: AttnShape, out: &mut [f32]) {
    let AttnShape { n_heads, n_kv_heads, head_dim: d } = shape;
    let group = n_heads / n_kv_heads;
    let kv_stride = n_kv_heads * d;
    assert_eq!(q.len(), spans.len() * n_heads * d, "attention: q is not [n, H, d]");
    assert_eq!(out.len(), q.len(), "attention: out is not [n, H, d]");
    let scale = 1.0 / (d as f32).sqrt();
    out.par_chunks_exact_mut(d).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / n_heads, i % n_heads);
        let span = spans[t];
        let qv = &q[i * d..(i + 1) * d];
        let kvh = h / group;
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            scores.resize(span.len, 0.0);
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let base = (span.slot_base + j) * kv_stride + kvh * d;
                let k = &k_cache[base..base + d];
                *s = qv.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                max = max.max(*s);
            }
            let mut denom = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                denom += *s;
            }
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let base = (span.slot_base + j) * kv_stride + kvh * d;
                let w = p / denom;
                for (a, &b) in o.iter_mut().zip(&v_cache[base..base + d]) {
                    *a += w * b;
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_slot_returns_its_value_and_gqa_maps_heads() {
        // 2 q heads share 1 kv head; one visible slot ⇒ output = V of that slot for both heads.
        let shape = AttnShape { n_heads: 2, n_kv_heads: 1, head_dim: 2 };
        let k = [1.0f32, 0.0, 0.0, 1.0];
        let v = [5.0f32, 6.0, 7.0, 8.0];
        let q = [3.0f32, 1.0, -1.0, 2.0];
        let mut out = [0f32; 4];
        attention(&q, &k, &v, &[AttnSpan { slot_base: 1, len: 1 }], shape, &mut out);
        assert_eq!(out, [7.0, 8.0, 7.0, 8.0]);
        // Two visible slots: weights softmax([q·k0, q·k1]/sqrt(2)).
        attention(&q, &k, &v, &[AttnSpan { slot_base: 0, len: 2 }], shape, &mut out);
        let s = 1.0 / 2f32.sqrt();
        let (a, b) = ((3.0 * s).exp(), (1.0 * s).exp());
        assert!((out[0] - (5.0 * a + 7.0 * b) / (a + b)).abs() < 1e-5);
    }
}
