//! `y = x · Wᵀ` for a row-major activation `x [n, k]` (f32) and a weight `W [m, k]` (f32 or bf16), f32
//! accumulation. The CPU's hot loop: decode is a GEMV that streams every weight byte once, so the kernel
//! reads each weight row once per TOKEN_TILE tokens and widens bf16 in registers (never a converted copy).
//!
//! Parallelism: the m output features are split into blocks over the rayon pool; each block writes a
//! disjoint column range of `y`. SIMD: the same generic body is compiled for AVX-512 and AVX2+FMA and chosen
//! at run time, so one binary runs everywhere.

use half::bf16;
use rayon::prelude::*;

use crate::model::matrix::{WeightData, WeightMatrix};

/// Tokens processed against one weight row load. 4 keeps 4×16 accumulators in registers.
const TOKEN_TILE: usize = 4;
/// SIMD width the accumulators are laid out for (one AVX-512 register of f32).
const LANES: usize = 16;
/// Output features per parallel task: large enough to amortise scheduling, small enough to balance 2–64 threads.
const ROWS_PER_TASK: usize = 64;

/// Weight element widened to f32 inside the dot product.
trait Elem: Copy + Send + Sync {
    fn widen(self) -> f32;
}
impl Elem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}
impl Elem for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32: a shift is exact (and vectorises, unlike a NaN-aware convert).
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// A raw output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of (token, feature) cells; see `matmul`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[t, j] = Σ_c x[t, c] · w[j, c]` for t < n, j < w.rows.
pub fn matmul(x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) {
    let (m, k) = (w.rows, w.cols);
    assert_eq!(x.len(), n * k, "matmul: x is not [n, k]");
    assert_eq!(out.len(), n * m, "matmul: out is not [n, m]");
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks = m.div_ceil(ROWS_PER_TASK);
    match &w.data {
        WeightData::F32(wd) => (0..tasks).into_par_iter().for_each(|t| {
            let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(m);
            // SAFETY: the task owns output columns `rows` of every token; tasks never overlap.
            unsafe { block_dispatch(x, n, k, m, wd, rows, ptr) }
        }),
        WeightData::Bf16(wd) => (0..tasks).into_par_iter().for_each(|t| {
            let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(m);
            // SAFETY: as above.
            unsafe { block_dispatch(x, n, k, m, wd, rows, ptr) }
        }),
    }
}

/// Picks the widest SIMD variant this CPU supports.
///
/// # Safety
/// `out` must point to an `[n, m]` buffer whose columns `rows` no other thread touches meanwhile.
unsafe fn block_dispatch<E: Elem>(
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    w: &[E],
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return block_avx512(x, n, k, m, w, rows, out);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return block_avx2(x, n, k, m, w, rows, out);
        }
    }
    block_generic(x, n, k, m, w, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn block_avx512<E: Elem>(
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    w: &[E],
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    let mut t0 = 0;
    while t0 < n {
        let tn = (n - t0).min(TOKEN_TILE);
        for j in rows.clone() {
            let wrow = w.as_ptr().add(j * k);
            let xs = |t: usize| x.as_ptr().add((t0 + t.min(tn - 1)) * k);
            let sums: [f32; TOKEN_TILE] = match tn {
                4 => avx512::dot_tile::<E, 4>(wrow, [xs(0), xs(1), xs(2), xs(3)], k).pad(),
                3 => avx512::dot_tile::<E, 3>(wrow, [xs(0), xs(1), xs(2)], k).pad(),
                2 => avx512::dot_tile::<E, 2>(wrow, [xs(0), xs(1)], k).pad(),
                _ => avx512::dot_tile::<E, 1>(wrow, [xs(0)], k).pad(),
            };
            for (t, s) in sums.iter().enumerate().take(tn) {
                // SAFETY: (t0 + t, j) is inside [n, m] and column j belongs to this task.
                *out.0.add((t0 + t) * m + j) = *s;
            }
        }
        t0 += tn;
    }
}

/// Widens a short array of sums to TOKEN_TILE entries.
trait Pad {
    fn pad(self) -> [f32; TOKEN_TILE];
}
impl<const T: usize> Pad for [f32; T] {
    fn pad(self) -> [f32; TOKEN_TILE] {
        let mut out = [0f32; TOKEN_TILE];
        out[..T].copy_from_slice(&self);
        out
    }
}

/// Explicit AVX-512 dot products: LLVM does not vectorise the bf16 widening on its own (it emits a scalar
/// load + shift per element), so the weight load is written with intrinsics.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Elem;

    /// Loads 16 weights (or the first `valid` of them, the rest 0) widened to f32.
    pub trait Load16: Elem {
        unsafe fn load16(p: *const Self, valid: usize) -> __m512;
    }

    impl<E: Elem> Load16 for E {
        #[inline(always)]
        unsafe fn load16(p: *const Self, valid: usize) -> __m512 {
            let mask: __mmask16 = if valid >= 16 { 0xFFFF } else { ((1u32 << valid) - 1) as __mmask16 };
            if std::mem::size_of::<E>() == 2 {
                // bf16 → f32: zero-extend to 32 bits and shift into the high half.
                let raw = _mm256_maskz_loadu_epi16(mask, p as *const i16);
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
            } else {
                _mm512_maskz_loadu_ps(mask, p as *const f32)
            }
        }
    }

    /// Σ_c w[c]·x_t[c] for T activation rows, two accumulators per row to hide FMA latency.
    #[inline(always)]
    pub unsafe fn dot_tile<E: Elem, const T: usize>(w: *const E, xs: [*const f32; T], k: usize) -> [f32; T] {
        let mut acc0 = [_mm512_setzero_ps(); T];
        let mut acc1 = [_mm512_setzero_ps(); T];
        let mut c = 0;
        while c + 32 <= k {
            let w0 = E::load16(w.add(c), 16);
            let w1 = E::load16(w.add(c + 16), 16);
            for t in 0..T {
                acc0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs[t].add(c)), acc0[t]);
                acc1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xs[t].add(c + 16)), acc1[t]);
            }
            c += 32;
        }
        while c < k {
            let valid = (k - c).min(16);
            let mask: __mmask16 = if valid >= 16 { 0xFFFF } else { ((1u32 << valid) - 1) as __mmask16 };
            let w0 = E::load16(w.add(c), valid);
            for t in 0..T {
                acc0[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(mask, xs[t].add(c)), acc0[t]);
            }
            c += 16;
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<E: Elem>(
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    w: &[E],
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    block_generic(x, n, k, m, w, rows, out)
}

/// The portable body; inlined into each `target_feature` wrapper so LLVM vectorises it for that ISA.
#[inline(always)]
unsafe fn block_generic<E: Elem>(
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    w: &[E],
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    let mut t0 = 0;
    while t0 < n {
        let tn = (n - t0).min(TOKEN_TILE);
        for j in rows.clone() {
            let wrow = &w[j * k..(j + 1) * k];
            let mut sums = [0f32; TOKEN_TILE];
            match tn {
                4 => dot_tile::<E, 4>(wrow, x, t0, k, &mut sums),
                3 => dot_tile::<E, 3>(wrow, x, t0, k, &mut sums),
                2 => dot_tile::<E, 2>(wrow, x, t0, k, &mut sums),
                _ => dot_tile::<E, 1>(wrow, x, t0, k, &mut sums),
            }
            for (t, s) in sums.iter().enumerate().take(tn) {
                // SAFETY: (t0 + t, j) is inside [n, m] and column j belongs to this task.
                *out.0.add((t0 + t) * m + j) = *s;
            }
        }
        t0 += tn;
    }
}

/// Dot products of one weight row with T consecutive activation rows, 16 f32 lanes per accumulator.
#[inline(always)]
fn dot_tile<E: Elem, const T: usize>(wrow: &[E], x: &[f32], t0: usize, k: usize, sums: &mut [f32; TOKEN_TILE]) {
    let mut acc = [[0f32; LANES]; T];
    let full = k / LANES * LANES;
    let xs: [&[f32]; T] = std::array::from_fn(|t| &x[(t0 + t) * k..(t0 + t + 1) * k]);
    let mut c = 0;
    while c < full {
        let mut wv = [0f32; LANES];
        for l in 0..LANES {
            wv[l] = wrow[c + l].widen();
        }
        for t in 0..T {
            let xc = &xs[t][c..c + LANES];
            for l in 0..LANES {
                acc[t][l] = wv[l].mul_add(xc[l], acc[t][l]);
            }
        }
        c += LANES;
    }
    for t in 0..T {
        let mut s: f32 = acc[t].iter().sum();
        for cc in full..k {
            s += wrow[cc].widen() * xs[t][cc];
        }
        sums[t] = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], n: usize, w: &[f32], m: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * m];
        for t in 0..n {
            for j in 0..m {
                y[t * m + j] = (0..k).map(|c| x[t * k + c] as f64 * w[j * k + c] as f64).sum::<f64>() as f32;
            }
        }
        y
    }

    fn pseudo(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn f32_and_bf16_match_naive_at_odd_shapes() {
        for &(n, m, k) in &[(1, 1, 1), (1, 70, 33), (3, 129, 64), (5, 64, 100), (9, 200, 17)] {
            let x = pseudo(n * k, 1);
            let wf = pseudo(m * k, 2);
            let mut y = vec![0f32; n * m];
            matmul(&x, n, &WeightMatrix::f32(m, k, wf.clone()), &mut y);
            let want = naive(&x, n, &wf, m, k);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "f32 n={n} m={m} k={k}: {a} vs {b}");
            }
            let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
            let wb_f: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
            matmul(&x, n, &WeightMatrix::bf16(m, k, wb), &mut y);
            let want = naive(&x, n, &wb_f, m, k);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "bf16 n={n} m={m} k={k}: {a} vs {b}");
            }
        }
    }
}
