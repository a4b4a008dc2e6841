//! The per-head q/k RMSNorm + RoPE + KV write of one layer, fused as the CUDA kernel fuses it: for every
//! token, q heads are normalised (`q_norm`) and rotated in place, k heads are normalised (`k_norm`),
//! rotated and written into the token's K slot, v heads are copied into its V slot.

use rayon::prelude::*;

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
    assert!(d <= 512, "head_dim {d} > 512");
    let n = qkv.len() / width;
    assert!(slots.len() >= n && cos.len() >= n * half && sin.len() >= n * half, "qk_norm_rope_write_kv: shapes");
    assert!(slots[..n].iter().all(|&s| (s + 1) * kv_w <= k_cache.len().min(v_cache.len())), "slot outside the cache");
    let (kp, vp) = (CachePtr(k_cache.as_mut_ptr()), CachePtr(v_cache.as_mut_ptr()));
    let token = |(t, row): (usize, &mut [f32])| {
        let mut tmp = [0f32; 512];
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
        // SAFETY: the slot lies inside both caches (asserted above); tokens run in parallel only when their
        // slots are distinct (checked below), so no two threads write the same cache row.
        unsafe {
            std::ptr::copy_nonoverlapping(k.as_ptr(), kp.get().add(slot * kv_w), kv_w);
            std::ptr::copy_nonoverlapping(v.as_ptr(), vp.get().add(slot * kv_w), kv_w);
        }
    };
    // In parallel only when the slots are strictly increasing (so distinct: no two tokens write one row).
    if n < PARALLEL_MIN_TOKENS || !slots[..n].windows(2).all(|w| w[0] < w[1]) {
        qkv.chunks_exact_mut(width).enumerate().for_each(token);
    } else {
        super::regions::enter();
        qkv.par_chunks_exact_mut(width).enumerate().for_each(token);
    }
}

/// Tokens from which the work is spread over the pool (prefill; decode stays on the calling thread).
const PARALLEL_MIN_TOKENS: usize = 16;

/// The caches' base pointer, shared by tokens that write distinct slots.
#[derive(Clone, Copy)]
struct CachePtr(*mut f32);
// SAFETY: each token writes only its own slot's rows, distinct across the tokens run in parallel.
unsafe impl Send for CachePtr {}
unsafe impl Sync for CachePtr {}

impl CachePtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
