//! A layer's attention block for ONE token (decode) in one parallel region: q|k|v projection, q/k RMSNorm,
//! RoPE, the KV write and attention, which otherwise take three (the projection's, then attention's, with
//! the norm/RoPE/KV write between them). Every fork-join wakes the pool and waits for its slowest thread,
//! and a decode step opens one per op: fewer regions is less waiting per step.
//!
//! Tasks own disjoint blocks of kv heads. A block needs only its own q, k and v rows of the projection
//! (GQA: the q heads of a kv head attend to that kv head alone), and the K/V rows it then reads are its own
//! kv heads' (this token's written by the task itself, earlier ones by earlier steps), so no task waits for
//! another. Each step is the very function of the unfused path on the same data (the matmul's canonical
//! order per output, [`rms_norm_row`], [`rotate`], [`attend_block`]), so the result is bit for bit the
//! three-region one.

use rayon::prelude::*;

use super::{
    attention::{attend_block, kv_heads_per_task, reserve_scores_on_every_thread, AttnShape, AttnSpan, Plane},
    matmul::with_row_runner,
    norm::rms_norm_row,
    qk::QkvShape,
    rope::rotate,
};
use crate::model::matrix::WeightMatrix;

/// The per-layer inputs of [`qkv_rope_attention`].
pub struct DecodeAttnLayer<'a> {
    /// The fused q|k|v projection, `[(H + 2·KVH)·d, D]`.
    pub qkv: &'a WeightMatrix,
    pub q_norm: &'a [f32],
    pub k_norm: &'a [f32],
    pub eps: f32,
    pub shape: QkvShape,
}

/// For one token `xn [D]` at KV slot `slot` (the last slot of `span`), with RoPE `cos`/`sin` (`[d/2]`):
/// `qkv [(H + 2·KVH)·d]` gets the projection (q and k normalised and rotated), `k_cache`/`v_cache`
/// (`[slots, KVH, d]`) the token's K/V, and `out [H·d]` the attention output, exactly as
/// `matmul` → [`super::qk::qk_norm_rope_write_kv`] → [`super::attention::attention`] give them.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope_attention(
    xn: &[f32],
    layer: &DecodeAttnLayer<'_>,
    cos: &[f32],
    sin: &[f32],
    span: AttnSpan,
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    qkv: &mut [f32],
    out: &mut [f32],
) {
    let QkvShape { n_heads, n_kv_heads, head_dim: d } = layer.shape;
    let group = n_heads / n_kv_heads;
    let (q_w, kv_w, half) = (n_heads * d, n_kv_heads * d, d / 2);
    assert!(n_kv_heads > 0 && n_heads.is_multiple_of(n_kv_heads), "decode attention: H is not a multiple of KVH");
    assert!(d <= 512 && cos.len() >= half && sin.len() >= half, "decode attention: head_dim or RoPE shapes");
    assert_eq!(qkv.len(), layer.shape.width(), "decode attention: qkv is not [(H + 2·KVH)·d]");
    assert_eq!(layer.qkv.rows, qkv.len(), "decode attention: the projection is not q|k|v");
    assert_eq!(out.len(), q_w, "decode attention: out is not [H·d]");
    assert!(span.len > 0, "decode attention: the token sees no slot");
    let slot = span.slot_base + span.len - 1;
    let cache_len = k_cache.len().min(v_cache.len());
    assert!((slot + 1) * kv_w <= cache_len, "decode attention: slot outside the cache");
    let shape = AttnShape { n_heads, n_kv_heads, head_dim: d };
    reserve_scores_on_every_thread(n_heads * (k_cache.len() / kv_w).max(span.len));
    let per = kv_heads_per_task(n_kv_heads, 1);
    let (qkv_p, k_p, v_p) = (Shared(qkv.as_mut_ptr()), Shared(k_cache.as_mut_ptr()), Shared(v_cache.as_mut_ptr()));
    with_row_runner(xn, 1, layer.qkv, |runner| {
        let task = |(b, o): (usize, &mut [f32])| {
            let heads = b * per..(b + 1) * per;
            let q_rows = heads.start * group * d..heads.end * group * d;
            let k_rows = q_w + heads.start * d..q_w + heads.end * d;
            let v_rows = q_w + kv_w + heads.start * d..q_w + kv_w + heads.end * d;
            // SAFETY: task b alone touches the q|k|v rows of its kv heads (of `qkv`) and those kv heads' rows
            // of the slots of `span` (of the caches); the rows lie inside the buffers (asserted above). The
            // planes hand out only the task's own kv heads' rows.
            let (q, k, v, k_plane, v_plane) = unsafe {
                for rows in [q_rows.clone(), k_rows.clone(), v_rows.clone()] {
                    runner.rows(rows, qkv_p.get());
                }
                let row =
                    |r: &std::ops::Range<usize>| std::slice::from_raw_parts_mut(qkv_p.get().add(r.start), r.len());
                (
                    row(&q_rows),
                    row(&k_rows),
                    row(&v_rows),
                    Plane::from_raw(k_p.get(), cache_len),
                    Plane::from_raw(v_p.get(), cache_len),
                )
            };
            let mut tmp = [0f32; 512];
            let (c, s) = (&cos[..half], &sin[..half]);
            for head in q.chunks_exact_mut(d) {
                tmp[..d].copy_from_slice(head);
                rms_norm_row(&tmp[..d], layer.q_norm, layer.eps, head);
                rotate(head, c, s);
            }
            for head in k.chunks_exact_mut(d) {
                tmp[..d].copy_from_slice(head);
                rms_norm_row(&tmp[..d], layer.k_norm, layer.eps, head);
                rotate(head, c, s);
            }
            let at = slot * kv_w + heads.start * d;
            // SAFETY: the task's kv heads of this token's slot, inside both caches (asserted above), written
            // by this task alone and read (below) by it alone.
            unsafe {
                std::ptr::copy_nonoverlapping(k.as_ptr(), k_p.get().add(at), k.len());
                std::ptr::copy_nonoverlapping(v.as_ptr(), v_p.get().add(at), v.len());
            }
            attend_block(q, k_plane, v_plane, span, heads, shape, o);
        };
        if n_kv_heads / per == 1 {
            out.chunks_exact_mut(per * group * d).enumerate().for_each(task);
        } else {
            super::regions::enter();
            out.par_chunks_exact_mut(per * group * d).enumerate().for_each(task);
        }
    });
}

/// A buffer's base pointer, shared by tasks that touch disjoint rows of it.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each task reads and writes only the rows of its own kv heads (see `qkv_rope_attention`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::backend::cpu::{attention::attention, matmul::matmul, qk::qk_norm_rope_write_kv, rope};

    fn val(i: usize, s: u32) -> f32 {
        (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 9) % 1001) as f32 / 500.0 - 1.0
    }

    /// The fused block against matmul → qk_norm_rope_write_kv → attention, bit for bit, for f32 and bf16
    /// weights, several GQA shapes and pool sizes (different kv-head blockings), at a row's later slots.
    #[test]
    fn fused_decode_block_has_the_three_op_bits() {
        for (h, kvh, d, dm) in [(4, 2, 16, 64), (16, 8, 128, 96), (6, 3, 20, 40), (8, 1, 32, 33)] {
            let width = (h + 2 * kvh) * d;
            let shape = QkvShape { n_heads: h, n_kv_heads: kvh, head_dim: d };
            let w32: Vec<f32> = (0..width * dm).map(|i| val(i, 1) / 4.0).collect();
            let mats = [
                WeightMatrix::f32(width, dm, w32.clone()),
                WeightMatrix::bf16(width, dm, w32.iter().map(|&v| bf16::from_f32(v)).collect()),
            ];
            let q_norm: Vec<f32> = (0..d).map(|i| 1.0 + val(i, 2) / 8.0).collect();
            let k_norm: Vec<f32> = (0..d).map(|i| 1.0 + val(i, 3) / 8.0).collect();
            let slots = 40;
            let cache0: Vec<f32> = (0..slots * kvh * d).map(|i| val(i, 4)).collect();
            let inv = rope::inv_freq(d, 1e6);
            for w in &mats {
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    pool.install(|| {
                        for (slot_base, len) in [(0, 1), (5, 17), (2, 38)] {
                            let xn: Vec<f32> = (0..dm).map(|i| val(i, 5 + len as u32)).collect();
                            let (mut cos, mut sin) = (vec![0f32; d / 2], vec![0f32; d / 2]);
                            rope::angles(len - 1, &inv, &mut cos, &mut sin);
                            let span = AttnSpan { slot_base, len };
                            // the three ops
                            let (mut k1, mut v1) = (cache0.clone(), cache0.clone());
                            let mut qkv1 = vec![0f32; width];
                            matmul(&xn, 1, w, &mut qkv1);
                            let slot = [slot_base + len - 1];
                            qk_norm_rope_write_kv(
                                &mut qkv1, shape, &q_norm, &k_norm, 1e-6, &cos, &sin, &slot, &mut k1, &mut v1,
                            );
                            let mut out1 = vec![0f32; h * d];
                            let ashape = AttnShape { n_heads: h, n_kv_heads: kvh, head_dim: d };
                            attention(&qkv1[..h * d], &k1, &v1, &[span], ashape, &mut out1);
                            // fused
                            let (mut k2, mut v2) = (cache0.clone(), cache0.clone());
                            let (mut qkv2, mut out2) = (vec![0f32; width], vec![0f32; h * d]);
                            let layer = DecodeAttnLayer { qkv: w, q_norm: &q_norm, k_norm: &k_norm, eps: 1e-6, shape };
                            qkv_rope_attention(&xn, &layer, &cos, &sin, span, &mut k2, &mut v2, &mut qkv2, &mut out2);
                            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            let what = format!("h={h} kvh={kvh} d={d} threads={threads} span={span:?}");
                            assert_eq!(bits(&qkv1), bits(&qkv2), "{what}: qkv");
                            assert_eq!(bits(&k1), bits(&k2), "{what}: K");
                            assert_eq!(bits(&v1), bits(&v2), "{what}: V");
                            assert_eq!(bits(&out1), bits(&out2), "{what}: attention");
                        }
                    });
                }
            }
        }
    }
}
