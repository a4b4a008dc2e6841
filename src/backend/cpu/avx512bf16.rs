//! `y = x · Wᵀ` with `VDPBF16PS` (AVX512-BF16) for bf16 weights, the activations rounded to bf16: the
//! [`super::bf16_gemm::Bf16Kernel::Avx512Bf16`] family, for CPUs that have AVX512-BF16 but no AMX
//! (AMD Zen 4, Intel Cooper Lake). One instruction does 32 bf16 products per output: twice the f32 FMA
//! kernel's multiply-adds per instruction, and no widening of the weights.
//!
//! # What one instruction computes
//! `VDPBF16PS acc, a, b` on each f32 lane `i` (Intel SDM): `acc += a[2i+1]·b[2i+1]`, then
//! `acc += a[2i]·b[2i]`, each step one fused multiply-add (a bf16 × bf16 product is exact in f32) rounded
//! to nearest even, with denormal inputs (the bf16 operands and the accumulator) read as zero and a
//! denormal result flushed to zero, whatever MXCSR says. [`dpbf16_lane`] is that step in portable code;
//! the tests check the instruction against it bit for bit on every CPU that has it.
//!
//! # The order of one output
//! Row-major bf16 weights already hold the pairs the instruction wants (k elements `2i`, `2i+1` side by
//! side), so weights are read in place. Output `y[t, j]`: 16 f32 lanes; for each 32-wide block of `k` in
//! increasing order, lane `i` takes the pair (`32b + 2i`, `32b + 2i + 1`) as above (a last partial block
//! adds zero pairs); then the 16 lanes are summed by the pairwise tree of [`super::matmul::reduce16`]
//! (plain IEEE adds). That order depends on `k` alone: a row's result never depends on the other rows of
//! the call, so batch = single bit for bit. [`matmul_model`] is the whole matmul in that order.
//!
//! # Activations
//! Rounded once per call into a bf16 copy (`[n, k rounded up to 32]`, zero padded) by `VCVTNE2PS2BF16`:
//! round to nearest even like `bf16::from_f32`, except that a denormal f32 becomes a signed zero (the
//! instruction's rule; its product would be read as zero anyway unless it rounded up to the smallest
//! normal).
//!
//! # Blocking
//! Prefill is compute bound. A register tile of [`ROWS`] weight rows × [`TOKENS`] tokens keeps 24
//! accumulators in registers; each weight block loaded is used by 6 tokens, each activation block by 4
//! rows. For each 4-row block (its weights stay in L1 while the tokens go by), the tiles walk a chunk
//! of tokens whose packed activations fit in L2 ([`CHUNK_BYTES`]), so the weights stream from memory
//! once per chunk. The 16 lanes of 16 accumulators are reduced together (four levels of shuffles and
//! adds that apply [`super::matmul::reduce16`]'s tree to each), the outputs of a token landing side by
//! side. A single token (decode) takes [`GEMV_ROWS`] rows at a time: 8 independent chains, 8 weight
//! streams.
//!
//! # Parallelism
//! As the other families: the m outputs split into [`TASKS_PER_THREAD`] contiguous ranges per pool
//! thread, each task writing its own columns of `y`; the activations are packed before the tasks start.

use std::cell::RefCell;

use half::bf16;
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

use super::matmul::reduce16;
use crate::model::matrix::{WeightData, WeightMatrix};

/// k elements per instruction (16 lanes × one pair).
const BLOCK: usize = 32;
/// Weight rows × tokens of the GEMM register tile (24 accumulators, 6 activation registers, 1 weight).
pub const ROWS: usize = 4;
pub const TOKENS: usize = 6;
/// Weight rows per step with a single token.
pub const GEMV_ROWS: usize = 8;
/// Bytes of packed activations a task walks per pass over its weights (stays in L2 beside the weights).
pub const CHUNK_BYTES: usize = 512 << 10;
/// Contiguous row ranges per pool thread.
pub const TASKS_PER_THREAD: usize = 4;
/// Packing goes parallel from this many tokens × blocks (below it a fork-join costs more).
#[cfg(target_arch = "x86_64")]
const PACK_PAR_BLOCKS: usize = 4096;

/// Whether this CPU runs the kernel: AVX512-F, -BW (masked 16-bit loads) and -BF16.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A denormal read as (or flushed to) a zero of the same sign.
#[inline]
fn flush(v: f32) -> f32 {
    if v.is_subnormal() {
        0f32.copysign(v)
    } else {
        v
    }
}

/// One lane of `VDPBF16PS`: `acc + a[1]·b[1]`, then `+ a[0]·b[0]`, each a fused multiply-add rounded
/// to nearest even with denormal inputs read as zero and a denormal result flushed to zero.
pub fn dpbf16_lane(acc: f32, a: [bf16; 2], b: [bf16; 2]) -> f32 {
    let step = |acc: f32, a: bf16, b: bf16| flush(flush(a.to_f32()).mul_add(flush(b.to_f32()), flush(acc)));
    step(step(acc, a[1], b[1]), a[0], b[0])
}

/// An activation as the packing rounds it: nearest even, a denormal to a signed zero.
pub fn round_activation(v: f32) -> bf16 {
    bf16::from_f32(flush(v))
}

/// One output in the kernel's order (module docs): `w` a weight row, `x` the rounded activations.
pub fn dot_model(w: &[bf16], x: &[bf16]) -> f32 {
    let k = w.len();
    let at = |v: &[bf16], c: usize| if c < k { v[c] } else { bf16::ZERO };
    let mut lanes = [0f32; 16];
    for b in (0..k).step_by(BLOCK) {
        for (i, acc) in lanes.iter_mut().enumerate() {
            let c = b + 2 * i;
            *acc = dpbf16_lane(*acc, [at(w, c), at(w, c + 1)], [at(x, c), at(x, c + 1)]);
        }
    }
    reduce16(&lanes)
}

/// The portable model of [`matmul_bf16`]: the same bits on any CPU (the tests' reference).
pub fn matmul_model(x: &[f32], n: usize, w: &[bf16], m: usize, out: &mut [f32]) {
    let k = x.len().checked_div(n).unwrap_or(0);
    for t in 0..n {
        let xr: Vec<bf16> = x[t * k..(t + 1) * k].iter().map(|&v| round_activation(v)).collect();
        for j in 0..m {
            out[t * m + j] = dot_model(&w[j * k..(j + 1) * k], &xr);
        }
    }
}

thread_local! {
    // The packed activations, reused across calls (taken out while in use).
    static PACKED: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// A raw output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of columns of `out`; see `matmul_bf16`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[t, j] = Σ_c bf16(x[t, c]) · w[j, c]` in the order of the module docs; returns false, touching
/// nothing, for f32 weights or a CPU without AVX512-BF16.
///
/// # Panics
/// On shape mismatch.
pub fn matmul_bf16(x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) -> bool {
    let WeightData::Bf16(wd) = &w.data else { return false };
    if !available() {
        return false;
    }
    let (m, k) = (w.rows, w.cols);
    assert_eq!(x.len(), n * k, "matmul_bf16: x is not [n, k]");
    assert_eq!(out.len(), n * m, "matmul_bf16: out is not [n, m]");
    if n == 0 || m == 0 {
        return true;
    }
    if k == 0 {
        out.fill(0.0);
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let kp = k.div_ceil(BLOCK) * BLOCK;
        // Row stride: one extra cache line breaks 4 KiB aliasing between the rows a tile reads.
        let ldx = kp + BLOCK;
        let mut packed = PACKED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        if packed.len() < n * ldx {
            packed.resize(n * ldx, 0);
        }
        let xp = &mut packed[..n * ldx];
        let pack_row = |(src, dst): (&[f32], &mut [u16])| {
            // SAFETY: available() checked the features; src is one row of k, dst one of ldx ≥ kp.
            unsafe { pack_row(src, dst) }
        };
        if n * (kp / BLOCK) >= PACK_PAR_BLOCKS {
            x.par_chunks_exact(k).zip(xp.par_chunks_exact_mut(ldx)).for_each(pack_row);
        } else {
            x.chunks_exact(k).zip(xp.chunks_exact_mut(ldx)).for_each(pack_row);
        }
        let xp: &[u16] = xp;
        let ptr = OutPtr(out.as_mut_ptr());
        let tasks = (rayon::current_num_threads() * TASKS_PER_THREAD).max(1);
        // Rows per task: whole GEMV steps (and so whole register tiles).
        let per = m.div_ceil(tasks).div_ceil(GEMV_ROWS).max(1) * GEMV_ROWS;
        let tasks = m.div_ceil(per);
        let body = |t: usize| {
            let rows = t * per..((t + 1) * per).min(m);
            // SAFETY: the features were detected; the task owns columns `rows` of out; xp is [n, ldx]
            // with zeros past k, wd is [m, k], out is [n, m].
            unsafe { task(xp, ldx, n, k, m, wd, rows, ptr) }
        };
        if tasks == 1 {
            body(0);
        } else {
            (0..tasks).into_par_iter().for_each(body);
        }
        PACKED.with(|c| *c.borrow_mut() = packed);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("available() is false off x86_64")
    }
}

/// One activation row rounded to bf16 (`VCVTNE2PS2BF16`, 32 floats per instruction), zeros up to `dst`'s
/// end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_row(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let k = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut c = 0;
    while c + BLOCK <= k {
        let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s.add(c + 16)), _mm512_loadu_ps(s.add(c)));
        _mm512_storeu_si512(d.add(c) as *mut _, std::mem::transmute::<__m512bh, __m512i>(v));
        c += BLOCK;
    }
    if c < k {
        let len = k - c;
        let lo = _mm512_maskz_loadu_ps(((1u32 << len.min(16)) - 1) as __mmask16, s.add(c));
        let hi_len = len.saturating_sub(16);
        let hi = _mm512_maskz_loadu_ps(((1u32 << hi_len) - 1) as __mmask16, s.add((c + 16).min(k)));
        let v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(d.add(c) as *mut _, std::mem::transmute::<__m512bh, __m512i>(v));
        c += BLOCK;
    }
    dst[c..].fill(0);
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::BLOCK;

    /// 32 bf16 of a weight row at element `c`; a last partial block (`len` < 32) reads zeros past `len`.
    #[inline(always)]
    pub(super) unsafe fn load_w(p: *const u16, c: usize, len: usize) -> __m512bh {
        let v = if len >= BLOCK {
            _mm512_loadu_si512(p.add(c) as *const _)
        } else {
            _mm512_maskz_loadu_epi16(((1u64 << len) - 1) as __mmask32, p.add(c) as *const i16)
        };
        std::mem::transmute::<__m512i, __m512bh>(v)
    }

    /// 32 packed activations at element `c` (zero padded: always a full load).
    #[inline(always)]
    pub(super) unsafe fn load_x(p: *const u16, c: usize) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.add(c) as *const _))
    }

    /// `R × T` accumulators over all of `k`: `acc[r][t]` the lanes of output (row r, token t). `R·T + T +
    /// 1` registers; the loops unroll completely (R and T are constants).
    #[inline(always)]
    pub(super) unsafe fn accumulate<const R: usize, const T: usize>(
        w: *const u16,
        ldw: usize,
        x: *const u16,
        ldx: usize,
        k: usize,
    ) -> [[__m512; T]; R] {
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let mut c = 0;
        // Whole blocks with plain loads, then at most one masked tail block.
        while c + BLOCK <= k {
            step::<R, T>(&mut acc, w, ldw, x, ldx, c, BLOCK);
            c += BLOCK;
        }
        if c < k {
            step::<R, T>(&mut acc, w, ldw, x, ldx, c, k - c);
        }
        acc
    }

    /// One block (`len` ≤ 32 weight elements at `c`) of [`accumulate`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn step<const R: usize, const T: usize>(
        acc: &mut [[__m512; T]; R],
        w: *const u16,
        ldw: usize,
        x: *const u16,
        ldx: usize,
        c: usize,
        len: usize,
    ) {
        let mut xv = [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); T];
        for (t, v) in xv.iter_mut().enumerate() {
            *v = load_x(x.add(t * ldx), c);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let wv = load_w(w.add(r * ldw), c, len);
            for (a, &xt) in row.iter_mut().zip(&xv) {
                *a = _mm512_dpbf16_ps(*a, wv, xt);
            }
        }
    }

    /// `out[i] = reduce16(v[i])` for 16 vectors at once: the tree of [`super::reduce16`] (lane i + lane
    /// i+8, then +4, +2, +1) applied to every vector by shuffles that keep each vector's partial sums
    /// apart. Lane `4q + e` of the result is the sum of `v[4e + q]`.
    #[inline(always)]
    pub(super) unsafe fn reduce16x16(v: &[__m512; 16]) -> __m512 {
        // 1. lanes i + i+8: s[p] = [v[2p] (8 sums), v[2p+1] (8 sums)]
        let mut s = [_mm512_setzero_ps(); 8];
        for (p, sp) in s.iter_mut().enumerate() {
            let (a, b) = (v[2 * p], v[2 * p + 1]);
            *sp = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
        }
        // 2. + i+4: u[q] holds 4 sums of each of v[4q..4q+4], one 128-bit lane each
        let mut u = [_mm512_setzero_ps(); 4];
        for (q, uq) in u.iter_mut().enumerate() {
            let (a, b) = (s[2 * q], s[2 * q + 1]);
            *uq = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b));
        }
        // 3. + i+2: pairs of 64 bits within each 128-bit lane
        let pd = _mm512_castps_pd;
        let ps = _mm512_castpd_ps;
        let w0 = _mm512_add_ps(ps(_mm512_unpacklo_pd(pd(u[0]), pd(u[1]))), ps(_mm512_unpackhi_pd(pd(u[0]), pd(u[1]))));
        let w1 = _mm512_add_ps(ps(_mm512_unpacklo_pd(pd(u[2]), pd(u[3]))), ps(_mm512_unpackhi_pd(pd(u[2]), pd(u[3]))));
        // 4. + i+1: even and odd elements of each 128-bit lane
        _mm512_add_ps(_mm512_shuffle_ps::<0x88>(w0, w1), _mm512_shuffle_ps::<0xDD>(w0, w1))
    }
}

/// Output rows `rows` of every token.
///
/// # Safety
/// The CPU has AVX512-F/BW/BF16; `xp` is `[n, ldx]` rounded activations zero padded past k to a whole
/// block, `w` is `[m, k]`, `out` is `[n, m]` and columns `rows` are this task's alone.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn task(
    xp: &[u16],
    ldx: usize,
    n: usize,
    k: usize,
    m: usize,
    w: &[bf16],
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    let (x, w, o) = (xp.as_ptr(), w.as_ptr() as *const u16, out.0);
    if n == 1 {
        let mut j = rows.start;
        while j + GEMV_ROWS <= rows.end {
            edge::<GEMV_ROWS, 1>(w.add(j * k), k, x, ldx, k, o.add(j), m);
            j += GEMV_ROWS;
        }
        while j < rows.end {
            edge::<1, 1>(w.add(j * k), k, x, ldx, k, o.add(j), m);
            j += 1;
        }
        return;
    }
    let chunk = (CHUNK_BYTES / (ldx * 2)).max(TOKENS) / TOKENS * TOKENS;
    let mut t0 = 0;
    while t0 < n {
        let nt = (n - t0).min(chunk);
        let mut j = rows.start;
        while j < rows.end {
            let wj = w.add(j * k);
            let four = j + ROWS <= rows.end;
            let mut t = t0;
            while t < t0 + nt {
                let tt = (t0 + nt - t).min(TOKENS);
                let (xt, ot) = (x.add(t * ldx), o.add(t * m + j));
                match (four, tt) {
                    (true, 6) => tile4x6(wj, k, xt, ldx, k, ot, m),
                    (true, _) => edge_tokens::<ROWS>(wj, k, xt, ldx, k, tt, ot, m),
                    (false, _) => edge_tokens::<1>(wj, k, xt, ldx, k, tt, ot, m),
                }
                t += tt;
            }
            j += if four { ROWS } else { 1 };
        }
        t0 += nt;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn task(_: &[u16], _: usize, _: usize, _: usize, _: usize, _: &[bf16], _: std::ops::Range<usize>, _: OutPtr) {
    unreachable!("available() is false off x86_64")
}

/// The full 4 × 6 tile, its 24 outputs reduced 16 + 8 at a time in registers.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile4x6(w: *const u16, ldw: usize, x: *const u16, ldx: usize, k: usize, out: *mut f32, ldo: usize) {
    use std::arch::x86_64::*;
    let acc = simd::accumulate::<ROWS, TOKENS>(w, ldw, x, ldx, k);
    // Vector 4r + q of a group is (row r, token q of the group): lane 4q + r of the sum, so a token's
    // 4 outputs land in one 128-bit lane, stored side by side.
    for (g, toks) in [(0usize, 4usize), (4, 2)] {
        let mut v = [_mm512_setzero_ps(); 16];
        for (r, row) in acc.iter().enumerate() {
            for q in 0..toks {
                v[4 * r + q] = row[g + q];
            }
        }
        let s = simd::reduce16x16(&v);
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), s);
        for q in 0..toks {
            std::ptr::copy_nonoverlapping(lanes.as_ptr().add(4 * q), out.add((g + q) * ldo), ROWS);
        }
    }
}

/// `tt` (≤ 6) tokens against `R` rows (edges of the tile grid).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn edge_tokens<const R: usize>(
    w: *const u16,
    ldw: usize,
    x: *const u16,
    ldx: usize,
    k: usize,
    tt: usize,
    out: *mut f32,
    ldo: usize,
) {
    match tt {
        6 => edge::<R, 6>(w, ldw, x, ldx, k, out, ldo),
        5 => edge::<R, 5>(w, ldw, x, ldx, k, out, ldo),
        4 => edge::<R, 4>(w, ldw, x, ldx, k, out, ldo),
        3 => edge::<R, 3>(w, ldw, x, ldx, k, out, ldo),
        2 => edge::<R, 2>(w, ldw, x, ldx, k, out, ldo),
        _ => edge::<R, 1>(w, ldw, x, ldx, k, out, ldo),
    }
}

/// Any `R × T` tile, each output reduced on its own by [`reduce16`] (the same tree, so the same bits as
/// [`tile4x6`]'s grouped reduction).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn edge<const R: usize, const T: usize>(
    w: *const u16,
    ldw: usize,
    x: *const u16,
    ldx: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::*;
    let acc = simd::accumulate::<R, T>(w, ldw, x, ldx, k);
    let mut lanes = [0f32; 16];
    for (r, row) in acc.iter().enumerate() {
        for (t, a) in row.iter().enumerate() {
            _mm512_storeu_ps(lanes.as_mut_ptr(), *a);
            *out.add(t * ldo + r) = reduce16(&lanes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(i: usize, s: usize) -> f32 {
        (((i.wrapping_mul(2654435761).wrapping_add(s)) >> 7) % 2001) as f32 / 1000.0 - 1.0
    }

    fn skip() -> bool {
        if !available() {
            println!("SKIP (avx512bf16: this CPU has no avx512_bf16)");
        }
        !available()
    }

    /// One `VDPBF16PS` on 16 lanes of (acc, a pair, b pair).
    #[cfg(target_arch = "x86_64")]
    fn instruction(acc: [f32; 16], a: [bf16; 32], b: [bf16; 32]) -> [f32; 16] {
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn run(acc: [f32; 16], a: [bf16; 32], b: [bf16; 32]) -> [f32; 16] {
            use std::arch::x86_64::{
                __m512bh, __m512i, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_storeu_ps,
            };
            let ld =
                |v: &[bf16; 32]| std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(v.as_ptr() as *const _));
            let r = _mm512_dpbf16_ps(_mm512_loadu_ps(acc.as_ptr()), ld(&a), ld(&b));
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), r);
            out
        }
        // SAFETY: the callers checked available().
        unsafe { run(acc, a, b) }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_model_of_one_instruction_matches_the_cpu_bit_for_bit() {
        if skip() {
            return;
        }
        let h = |v: f32| bf16::from_f32(v);
        let e = |p: i32| 2f32.powi(p);
        // (acc, [a0, a1], [b0, b1]) chosen so that other orders or flush rules give other bits:
        let cases: Vec<(f32, [bf16; 2], [bf16; 2])> = vec![
            // odd pair first: 1 + 2⁻²⁴ ties to 1, then + 1.5·2⁻²⁴ rounds up to 1 + 2⁻²³; even first (or
            // both products summed before one rounding) gives another result.
            (1.0, [h(1.5), h(1.0)], [h(e(-24)), h(e(-24))]),
            (1.0, [h(1.0), h(1.5)], [h(e(-24)), h(e(-24))]),
            // a denormal bf16 operand is read as zero (else 2⁻¹³³ · 2¹⁰⁰ = 2⁻³³ would count)
            (0.0, [bf16::from_bits(0x0001), h(0.0)], [h(e(100)), h(0.0)]),
            // a denormal product / result is flushed to zero (2⁻⁷⁰ · 2⁻⁷⁰ = 2⁻¹⁴⁰)
            (0.0, [h(0.0), h(e(-70))], [h(0.0), h(e(-70))]),
            (0.0, [h(-e(-70)), h(0.0)], [h(e(-70)), h(0.0)]),
            // a denormal accumulator is read as zero
            (f32::from_bits(0x0000_0100), [h(e(-126)), h(0.0)], [h(1.0), h(0.0)]),
            // cancellation and a fused product: exact products, one rounding per step
            (3.0, [h(-1.0), h(1.0 + e(-8))], [h(3.0), h(1.0 + e(-8))]),
        ];
        let mut acc = [0f32; 16];
        let (mut a, mut b) = ([bf16::ZERO; 32], [bf16::ZERO; 32]);
        for (lane, (c, pa, pb)) in cases.iter().enumerate() {
            acc[lane] = *c;
            a[2 * lane..2 * lane + 2].copy_from_slice(pa);
            b[2 * lane..2 * lane + 2].copy_from_slice(pb);
        }
        // the other lanes: pseudo-random normal values
        for lane in cases.len()..16 {
            acc[lane] = val(lane, 9) * 3.0;
            for s in 0..2 {
                a[2 * lane + s] = h(val(2 * lane + s, 10) * e(lane as i32 - 8));
                b[2 * lane + s] = h(val(2 * lane + s, 11));
            }
        }
        let got = instruction(acc, a, b);
        for lane in 0..16 {
            let want = dpbf16_lane(acc[lane], [a[2 * lane], a[2 * lane + 1]], [b[2 * lane], b[2 * lane + 1]]);
            assert_eq!(got[lane].to_bits(), want.to_bits(), "lane {lane}: cpu {} vs model {want}", got[lane]);
        }
        // The cases above do tell the rules apart.
        assert_eq!(got[0], 1.0 + e(-23));
        assert_eq!(got[2], 0.0);
        assert_eq!(got[3], 0.0);
        assert_eq!(got[4].to_bits(), (-0f32).to_bits());
    }

    #[test]
    fn the_kernel_matches_its_model_bit_for_bit_stays_near_exact_and_keeps_batch_equal_to_single() {
        if skip() {
            return;
        }
        for k in [1usize, 31, 33, 1024 + 5] {
            for m in [1usize, 7, 64] {
                for n in [1usize, 17, 300] {
                    let x: Vec<f32> = (0..n * k).map(|i| val(i, 1)).collect();
                    let wv: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32(val(i, 2))).collect();
                    let w = WeightMatrix::bf16(m, k, wv.clone());
                    let mut y = vec![f32::NAN; n * m];
                    assert!(matmul_bf16(&x, n, &w, &mut y));
                    let mut model = vec![0f32; n * m];
                    matmul_model(&x, n, &wv, m, &mut model);
                    for t in 0..n {
                        for j in 0..m {
                            let (got, i) = (y[t * m + j], t * m + j);
                            assert_eq!(got.to_bits(), model[i].to_bits(), "n={n} m={m} k={k} t={t} j={j}: model");
                            // Against the exact products of the rounded activations (f64 sum): only the f32
                            // order differs. Against the unrounded f32 activations: plus 2⁻⁹ per product.
                            let (xr, wr) = (&x[t * k..(t + 1) * k], &wv[j * k..(j + 1) * k]);
                            let abs: f64 = xr.iter().zip(wr).map(|(a, b)| (*a as f64 * b.to_f32() as f64).abs()).sum();
                            let rounded: f64 = xr
                                .iter()
                                .zip(wr)
                                .map(|(a, b)| bf16::from_f32(*a).to_f32() as f64 * b.to_f32() as f64)
                                .sum();
                            let exact: f64 = xr.iter().zip(wr).map(|(a, b)| *a as f64 * b.to_f32() as f64).sum();
                            let g = got as f64;
                            assert!(
                                (g - rounded).abs() <= 1e-6 * (1.0 + abs),
                                "n={n} m={m} k={k} t={t} j={j}: {g} vs {rounded}"
                            );
                            assert!(
                                (g - exact).abs() <= 2f64.powi(-8) * abs + 1e-6,
                                "n={n} m={m} k={k}: {g} vs exact {exact}"
                            );
                        }
                        let mut y1 = vec![f32::NAN; m];
                        assert!(matmul_bf16(&x[t * k..(t + 1) * k], 1, &w, &mut y1));
                        assert_eq!(&y1[..], &y[t * m..(t + 1) * m], "n={n} m={m} k={k} t={t}: alone ≠ batch");
                    }
                }
            }
        }
    }

    #[test]
    fn f32_weights_and_empty_shapes_are_handled() {
        let mut y = vec![1f32; 4];
        assert!(!matmul_bf16(&[1.0; 8], 1, &WeightMatrix::f32(4, 8, vec![1.0; 32]), &mut y));
        if skip() {
            return;
        }
        assert!(matmul_bf16(&[], 1, &WeightMatrix::bf16(4, 0, Vec::new()), &mut y));
        assert_eq!(y, [0.0; 4]);
        assert!(matmul_bf16(&[], 0, &WeightMatrix::bf16(4, 8, vec![bf16::ONE; 32]), &mut []));
    }
}
