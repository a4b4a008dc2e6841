//! The blocked prefill attention of [`super`] on AVX2 + FMA (16 ymm registers, no mask registers): the
//! same 16-key blocks of transposed keys, each read as two 8-lane halves, [`Q_VECS_AVX2`] q vectors per
//! task in passes of 4.
//! - scores: 4 q vectors × 16 keys (8 accumulators) per pass, one fused multiply-add per element and
//!   column in column order, as on AVX-512 (the same bits);
//! - softmax: masks built by comparing lane indices, exponentials with [`exp256`];
//! - `out = P · V`: 4 q vectors × 16 columns (8 accumulators) per pass, keys in order.

use std::arch::x86_64::*;

use super::{Prologue, Task, D, KEYS, Q_VECS_AVX2};
use crate::backend::cpu::vexp::exp256;

/// q vectors per register pass.
const PASS: usize = 4;

/// Transposes keys `first..first + valid` of kv head `h` into one `[D][16]` block (zero padded): 8×8
/// in-register transposes of each half block.
///
/// # Safety
/// AVX2 must be available; the `valid` (≤ 16) keys lie inside `k_cache`, `dst` holds `D·16` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transpose_keys(
    k_cache: &[f32],
    first: usize,
    valid: usize,
    h: usize,
    n_kv_heads: usize,
    dst: *mut f32,
) {
    for half in 0..2 {
        for cb in 0..D / 8 {
            let mut r = [_mm256_setzero_ps(); 8];
            for (j, v) in r.iter_mut().enumerate() {
                let key = half * 8 + j;
                if key < valid {
                    *v = _mm256_loadu_ps(k_cache.as_ptr().add(((first + key) * n_kv_heads + h) * D + cb * 8));
                }
            }
            let t = transpose8(r);
            for (c, v) in t.iter().enumerate() {
                _mm256_storeu_ps(dst.add((cb * 8 + c) * KEYS + half * 8), *v);
            }
        }
    }
}

/// Transposes the 8×8 matrix whose rows are `r`.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // pairs of rows interleaved, then pairs of pairs, then the 128-bit halves exchanged
    let a: [__m256; 8] = std::array::from_fn(|i| {
        let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(x, y)
        } else {
            _mm256_unpackhi_ps(x, y)
        }
    });
    // a[0] = r0r1 lo (c0,c1 | c4,c5), a[1] = r0r1 hi (c2,c3 | c6,c7), a[2], a[3] for r2r3, …
    let b: [__m256; 8] = std::array::from_fn(|i| {
        let (blk, j) = (i / 4, i % 4);
        let (x, y) = (a[blk * 4 + j / 2], a[blk * 4 + 2 + j / 2]);
        if j % 2 == 0 {
            _mm256_shuffle_ps::<0b01_00_01_00>(x, y)
        } else {
            _mm256_shuffle_ps::<0b11_10_11_10>(x, y)
        }
    });
    // b[0..4]: columns 0,1,2,3 (| 4,5,6,7 in the high halves) of rows 0–3; b[4..8] the same of rows 4–7
    std::array::from_fn(|c| {
        let (x, y) = (b[c % 4], b[4 + c % 4]);
        if c < 4 {
            _mm256_permute2f128_ps::<0x20>(x, y)
        } else {
            _mm256_permute2f128_ps::<0x31>(x, y)
        }
    })
}

/// Lanes `0..n` (n clamped to 0..=8) set: the visible keys of one 8-key half.
#[inline(always)]
unsafe fn lanes_below(n: isize) -> __m256 {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n.clamp(0, 8) as i32), idx))
}

#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
}

/// Runs one task: its scores, softmax and `P · V`, written to its own rows of `out`.
///
/// # Safety
/// AVX2 + FMA must be available; the task's keys lie inside its `kt` / `vrows`, `out` holds its rows.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn run(task: &Task<'_>, probs: &mut Vec<f32>, out: *mut f32) {
    let Prologue { nv, qbuf, keys, blocks, stride } = task.prologue(probs, Q_VECS_AVX2);
    let p = probs.as_mut_ptr();
    let q = qbuf.0.as_ptr();
    let scale = _mm256_set1_ps(task.scale);
    // scores: per 16-key block, passes of 4 q vectors (vectors past `nv` are zeros; skipped)
    for b in 0..blocks {
        let kb = task.kt.as_ptr().add(b * D * KEYS);
        let mut v0 = 0;
        while v0 < nv {
            let mut lo = [_mm256_setzero_ps(); PASS];
            let mut hi = [_mm256_setzero_ps(); PASS];
            for c in 0..D {
                let k0 = _mm256_loadu_ps(kb.add(c * KEYS));
                let k1 = _mm256_loadu_ps(kb.add(c * KEYS + 8));
                for v in 0..PASS {
                    let qv = _mm256_broadcast_ss(&*q.add((v0 + v) * D + c));
                    lo[v] = _mm256_fmadd_ps(qv, k0, lo[v]);
                    hi[v] = _mm256_fmadd_ps(qv, k1, hi[v]);
                }
            }
            for v in 0..PASS.min(Q_VECS_AVX2 - v0) {
                let row = p.add((v0 + v) * stride + b * KEYS);
                _mm256_storeu_ps(row, _mm256_mul_ps(lo[v], scale));
                _mm256_storeu_ps(row.add(8), _mm256_mul_ps(hi[v], scale));
            }
            v0 += PASS;
        }
    }
    // softmax over each vector's visible keys; the rest weigh exactly 0
    for v in 0..nv {
        let s = p.add(v * stride);
        let vis = task.visible(v) as isize;
        let mask = |b: usize, half: usize| lanes_below(vis - (b * KEYS + half * 8) as isize);
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut mx = ninf;
        for b in 0..blocks {
            for half in 0..2 {
                let x = _mm256_loadu_ps(s.add(b * KEYS + half * 8));
                mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, x, mask(b, half)));
            }
        }
        let mx = _mm256_set1_ps(hmax(mx));
        let mut sum = _mm256_setzero_ps();
        for b in 0..blocks {
            for half in 0..2 {
                let at = s.add(b * KEYS + half * 8);
                let e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_loadu_ps(at), mx)), mask(b, half));
                sum = _mm256_add_ps(sum, e);
                _mm256_storeu_ps(at, e);
            }
        }
        let inv = _mm256_set1_ps(1.0 / hsum(sum));
        for i in (0..stride).step_by(8) {
            _mm256_storeu_ps(s.add(i), _mm256_mul_ps(_mm256_loadu_ps(s.add(i)), inv));
        }
    }
    // out = P · V: 4 q vectors × 16 columns per pass, keys in order
    let vrows = task.vrows.as_ptr();
    let mut g0 = 0;
    while g0 < nv {
        let gn = (nv - g0).min(PASS);
        let rows: [*const f32; PASS] = std::array::from_fn(|v| p.add((g0 + v).min(nv - 1) * stride) as *const f32);
        for c0 in (0..D).step_by(16) {
            let mut lo = [_mm256_setzero_ps(); PASS];
            let mut hi = [_mm256_setzero_ps(); PASS];
            let mut vp = vrows.add(c0);
            for j in 0..keys {
                let x0 = _mm256_loadu_ps(vp);
                let x1 = _mm256_loadu_ps(vp.add(8));
                for v in 0..PASS {
                    let w = _mm256_broadcast_ss(&*rows[v].add(j));
                    lo[v] = _mm256_fmadd_ps(w, x0, lo[v]);
                    hi[v] = _mm256_fmadd_ps(w, x1, hi[v]);
                }
                vp = vp.add(D);
            }
            for v in 0..gn {
                let o = out.add(task.at(g0 + v) + c0);
                _mm256_storeu_ps(o, lo[v]);
                _mm256_storeu_ps(o.add(8), hi[v]);
            }
        }
        g0 += PASS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose8_transposes() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("SKIP: needs AVX2 + FMA, which this CPU lacks");
            return;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(m: &[f32; 64]) -> [f32; 64] {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(m.as_ptr().add(8 * i)));
            let t = transpose8(r);
            let mut out = [0f32; 64];
            for (i, v) in t.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), *v);
            }
            out
        }
        let m: [f32; 64] = std::array::from_fn(|i| i as f32);
        // SAFETY: the features were just detected.
        let t = unsafe { run(&m) };
        for i in 0..8 {
            for j in 0..8 {
                assert_eq!(t[8 * i + j], m[8 * j + i], "({i}, {j})");
            }
        }
    }
}
