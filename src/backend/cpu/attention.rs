//! Causal GQA attention over the shared KV buffer, f32, the reference for the CUDA prefill and decode
//! kernels. Each query token names the cache slots it may see: `len` slots starting at `slot_base` (its
//! row's first slot); the token's own K/V were written there before this call, so causality is exactly
//! "see slots [slot_base, slot_base + len)". No padding entries exist, so no mask is ever needed.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::matmul::reduce16;

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
    // Reused score buffer: attention runs per (token, kv-head block) on the rayon pool, and must not
    // allocate per token (it is sized once for the longest span the KV buffer can hold).
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of score buffer that every thread of the pool already holds.
static SCORES_ON_EVERY_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Gives every pool thread a score buffer of `floats` before the parallel loop runs. Work stealing
/// decides which threads run attention tasks, so a thread can take its first one only many steps into
/// a decode; sizing each thread's buffer here keeps that first task from allocating mid-decode.
pub(crate) fn reserve_scores_on_every_thread(floats: usize) {
    if SCORES_ON_EVERY_THREAD.load(Ordering::Relaxed) >= floats {
        return;
    }
    super::regions::enter();
    rayon::broadcast(|_| {
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            if scores.capacity() < floats {
                scores.clear();
                scores.reserve_exact(floats);
            }
        })
    });
    SCORES_ON_EVERY_THREAD.fetch_max(floats, Ordering::Relaxed);
}

/// Lanes of the q·k dot product: 16 independent partial sums, then the fixed pairwise tree of
/// [`reduce16`]. Plain multiplies and adds (Rust never fuses them), so every ISA gives the same bits.
const LANES: usize = 16;
/// Tasks per pool thread the kv heads of a token are split into (when there are few tokens).
const TASKS_PER_THREAD: usize = 2;
/// Slots ahead whose K / V rows are prefetched.
const PREFETCH_SLOTS: usize = 8;

/// `out[t, h] = softmax(q[t, h] · K[span(t)]ᵀ / sqrt(d)) · V[span(t)]`, with kv head `h / (H / KVH)`.
///
/// `q`: `[n, H, d]`; `k_cache`, `v_cache`: one layer, `[slots, KVH, d]`; `out`: `[n, H, d]`.
///
/// Work is split per (token, block of kv heads): a task walks its token's slots reading the block's K
/// (then V) rows, which are contiguous within a slot (reading one kv head alone is a 512-byte row every
/// 4 KiB: measured 2× slower), and the q heads of a GQA group share their kv head's reads. Blocks are
/// as large as possible while leaving [`TASKS_PER_THREAD`] tasks per thread. Every head is computed the
/// same way whatever its block, so a token's output never depends on the other tokens of the call.
pub fn attention(q: &[f32], k_cache: &[f32], v_cache: &[f32], spans: &[AttnSpan], shape: AttnShape, out: &mut [f32]) {
    let AttnShape { n_heads, n_kv_heads, head_dim: d } = shape;
    let group = n_heads / n_kv_heads;
    assert_eq!(q.len(), spans.len() * n_heads * d, "attention: q is not [n, H, d]");
    assert_eq!(out.len(), q.len(), "attention: out is not [n, H, d]");
    // Room for the longest span the buffer can hold (what `attend` would reserve on first use).
    let longest = spans.iter().map(|s| s.len).max().unwrap_or(0);
    reserve_scores_on_every_thread(n_heads * (k_cache.len() / (n_kv_heads * d)).max(longest));
    let per = kv_heads_per_task(n_kv_heads, spans.len());
    let blocks = n_kv_heads / per;
    super::regions::enter();
    out.par_chunks_exact_mut(per * group * d).enumerate().for_each(|(i, o)| {
        let (t, b) = (i / blocks, i % blocks);
        let q = &q[i * per * group * d..(i + 1) * per * group * d];
        let (k_cache, v_cache) = (Plane::new(k_cache), Plane::new(v_cache));
        attend_block(q, k_cache, v_cache, spans[t], b * per..(b + 1) * per, shape, o);
    });
}

/// kv heads per task for `tokens` tokens: the largest divisor of KVH giving [`TASKS_PER_THREAD`] tasks per
/// pool thread (large blocks read contiguous K/V rows within a slot).
pub(crate) fn kv_heads_per_task(n_kv_heads: usize, tokens: usize) -> usize {
    let want_blocks = (rayon::current_num_threads() * TASKS_PER_THREAD).div_ceil(tokens.max(1));
    (1..=n_kv_heads).rev().find(|p| n_kv_heads.is_multiple_of(*p) && n_kv_heads / p >= want_blocks).unwrap_or(1)
}

/// One layer's K or V plane (`[slots, KVH, d]`), read one block of kv heads' rows at a time. A task only
/// ever borrows the rows of its own kv heads, so tasks that write other kv heads' rows of the same slot
/// meanwhile (the fused decode of [`super::decode_attention`]) never overlap a borrow.
#[derive(Clone, Copy)]
pub(crate) struct Plane<'a> {
    ptr: *const f32,
    len: usize,
    _plane: std::marker::PhantomData<&'a [f32]>,
}

impl<'a> Plane<'a> {
    pub(crate) fn new(plane: &'a [f32]) -> Self {
        Plane { ptr: plane.as_ptr(), len: plane.len(), _plane: std::marker::PhantomData }
    }

    /// # Safety
    /// `ptr..ptr + len` must stay allocated for `'a`, and no thread may write the rows a task using this
    /// plane reads (its own kv heads of the visible slots) while it reads them.
    pub(crate) unsafe fn from_raw(ptr: *const f32, len: usize) -> Self {
        Plane { ptr, len, _plane: std::marker::PhantomData }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn as_ptr(&self) -> *const f32 {
        self.ptr
    }

    #[inline(always)]
    fn get(&self, r: std::ops::Range<usize>) -> &'a [f32] {
        assert!(r.start <= r.end && r.end <= self.len, "attention: read outside the KV plane");
        // SAFETY: inside the plane (just checked); the rows are not written meanwhile (see `from_raw`).
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.end - r.start) }
    }
}

/// Attention of one token's q heads of kv heads `kv_heads` (`q`: `[kv_heads·group, d]`, `out` alike),
/// whichever thread and block runs it: every head is computed the same way, so the bits never depend
/// on the blocking.
pub(crate) fn attend_block(
    q: &[f32],
    k_cache: Plane<'_>,
    v_cache: Plane<'_>,
    span: AttnSpan,
    kv_heads: std::ops::Range<usize>,
    shape: AttnShape,
    out: &mut [f32],
) {
    let AttnShape { n_heads, n_kv_heads, head_dim: d } = shape;
    let group = n_heads / n_kv_heads;
    let job = Job {
        q,
        k_cache,
        v_cache,
        span,
        kvh0: kv_heads.start,
        kv_heads: kv_heads.len(),
        n_kv_heads,
        d,
        group,
        scale: 1.0 / (d as f32).sqrt(),
    };
    SCORES.with(|cell| {
        let mut scores = cell.borrow_mut();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            return unsafe { attend_avx512(&job, &mut scores, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { attend_avx2(&job, &mut scores, out) };
        }
        attend(&job, &mut scores, out, dot, pv_portable, |_| {})
    });
}

/// One task: kv heads `kvh0..kvh0 + kv_heads` of one token, and their `group` q heads each.
struct Job<'a> {
    /// The task's q heads, `[kv_heads·group, d]`.
    q: &'a [f32],
    k_cache: Plane<'a>,
    v_cache: Plane<'a>,
    span: AttnSpan,
    kvh0: usize,
    kv_heads: usize,
    n_kv_heads: usize,
    d: usize,
    group: usize,
    scale: f32,
}

impl Job<'_> {
    /// Offset of the block's first kv head in slot `j` of the span.
    #[inline(always)]
    fn at(&self, j: usize) -> usize {
        (self.span.slot_base + j) * self.n_kv_heads * self.d + self.kvh0 * self.d
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn attend_avx512(job: &Job<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
    // SAFETY (closures): this function only runs where AVX-512F was detected; prefetches never fault.
    attend(
        job,
        scores,
        out,
        |a: &[f32], b: &[f32]| unsafe { dot_avx512(a, b) },
        |j, s, dn, o| unsafe { pv_avx512(j, s, dn, o) },
        prefetch_block,
    )
}

/// [`attend`] for CPUs with AVX2 but no AVX-512 (AMD Zen 2/3, Intel client cores): [`dot_avx2`],
/// the softmax compiled for 8-lane registers (the same operations in the same order: Rust never fuses a
/// multiply and an add on its own, so the bits are the portable ones) and [`pv_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attend_avx2(job: &Job<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
    // SAFETY (closures): this function only runs where AVX2 and FMA were detected.
    attend(
        job,
        scores,
        out,
        |a: &[f32], b: &[f32]| unsafe { dot_avx2(a, b) },
        |j, s, dn, o| unsafe { pv_avx2(j, s, dn, o) },
        prefetch_block,
    )
}

/// Prefetches every cache line of `block` into L2 (T1: the L2 keeps far more misses in flight than L1).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_block(block: &[f32]) {
    use std::arch::x86_64::*;
    for c in (0..block.len()).step_by(16) {
        // SAFETY: prefetching is a hint and never faults; the address is inside `block`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(block.as_ptr().add(c) as *const i8) };
    }
}

/// The body, inlined into each `target_feature` wrapper so LLVM vectorises it for that ISA.
#[inline(always)]
fn attend(
    job: &Job<'_>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> f32,
    pv: impl Fn(&Job<'_>, &[f32], &[f32], &mut [f32]),
    prefetch: impl Fn(&[f32]),
) {
    let Job { q, k_cache, span, kv_heads, n_kv_heads, d, group, scale, .. } = *job;
    let (len, heads, width) = (span.len, kv_heads * group, kv_heads * d);
    if scores.capacity() < heads * len {
        // Once per thread and KV buffer: room for the longest span the buffer can hold, so a growing
        // context never reallocates.
        let slots = k_cache.len() / (n_kv_heads * d);
        scores.clear();
        scores.reserve_exact(n_kv_heads * group * slots.max(len));
    }
    scores.clear();
    scores.resize(heads * len, 0.0);
    // 1. scores[h, j] = q_h · k_j · scale, slot by slot (the block's K rows are contiguous)
    for j in 0..len {
        if j + PREFETCH_SLOTS < len {
            let at = job.at(j + PREFETCH_SLOTS);
            prefetch(k_cache.get(at..at + width));
        }
        let at = job.at(j);
        for kk in 0..kv_heads {
            let k = k_cache.get(at + kk * d..at + (kk + 1) * d);
            for g in 0..group {
                let h = kk * group + g;
                scores[h * len + j] = dot(&q[h * d..(h + 1) * d], k) * scale;
            }
        }
    }
    // 2. softmax per q head: p = exp(s - max); weights p / Σp
    let mut denoms = [0f32; 64];
    assert!(heads <= denoms.len(), "attention: more than 64 q heads per task");
    for h in 0..heads {
        let s = &mut scores[h * len..(h + 1) * len];
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut denom = 0.0f32;
        for v in s.iter_mut() {
            *v = (*v - max).exp();
            denom += *v;
        }
        denoms[h] = denom;
    }
    // 3. out_h = Σ_j (p_hj / denom_h) · v_j
    pv(job, scores, &denoms[..heads], out);
}

/// Step 3 of [`attend`], portable: `out[h] = Σ_j (p[h, j] / denom[h]) · v_j`, in slot order.
#[inline(always)]
fn pv_portable(job: &Job<'_>, scores: &[f32], denoms: &[f32], out: &mut [f32]) {
    let Job { v_cache, span, kv_heads, d, group, .. } = *job;
    let len = span.len;
    out.fill(0.0);
    for j in 0..len {
        let at = job.at(j);
        for kk in 0..kv_heads {
            let v = v_cache.get(at + kk * d..at + (kk + 1) * d);
            for g in 0..group {
                let h = kk * group + g;
                let w = scores[h * len + j] / denoms[h];
                for (a, &b) in out[h * d..(h + 1) * d].iter_mut().zip(v) {
                    *a += w * b;
                }
            }
        }
    }
}

/// [`pv_portable`] with AVX-512 and the same multiplies and adds in the same order (the same bits), the
/// output rows of two q heads held in registers over the whole slot loop (no store→load chain through
/// memory every slot); for `d = 128`, else the portable loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pv_avx512(job: &Job<'_>, scores: &[f32], denoms: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let Job { v_cache, span, kv_heads, d, group, n_kv_heads, .. } = *job;
    if d != 128 {
        return pv_portable(job, scores, denoms, out);
    }
    let len = span.len;
    let stride = n_kv_heads * d;
    for kk in 0..kv_heads {
        let mut g = 0;
        while g < group {
            let pair = (group - g).min(2);
            let (h0, h1) = (kk * group + g, kk * group + g + pair - 1);
            let mut a = [_mm512_setzero_ps(); 8];
            let mut b = [_mm512_setzero_ps(); 8];
            let mut v = v_cache.as_ptr().add(job.at(0) + kk * d);
            for j in 0..len {
                if j + PREFETCH_SLOTS < len && g == 0 {
                    for c in (0..d).step_by(16) {
                        _mm_prefetch::<_MM_HINT_T0>(v.add(PREFETCH_SLOTS * stride + c) as *const i8);
                    }
                }
                let w0 = _mm512_set1_ps(scores[h0 * len + j] / denoms[h0]);
                let w1 = _mm512_set1_ps(scores[h1 * len + j] / denoms[h1]);
                for i in 0..8 {
                    let vv = _mm512_loadu_ps(v.add(16 * i));
                    a[i] = _mm512_add_ps(a[i], _mm512_mul_ps(w0, vv));
                    b[i] = _mm512_add_ps(b[i], _mm512_mul_ps(w1, vv));
                }
                v = v.add(stride);
            }
            for i in 0..8 {
                _mm512_storeu_ps(out.as_mut_ptr().add(h0 * d + 16 * i), a[i]);
                if pair == 2 {
                    _mm512_storeu_ps(out.as_mut_ptr().add(h1 * d + 16 * i), b[i]);
                }
            }
            g += pair;
        }
    }
}

/// [`pv_portable`] with AVX2, the same multiplies and adds in the same order (the same bits): 64 output
/// lanes of one q head held in 8 registers over the whole slot loop, for `d` a multiple of 64; else the
/// portable loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pv_avx2(job: &Job<'_>, scores: &[f32], denoms: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    const SPAN: usize = 64;
    let Job { v_cache, span, kv_heads, d, group, n_kv_heads, .. } = *job;
    if d % SPAN != 0 {
        return pv_portable(job, scores, denoms, out);
    }
    let len = span.len;
    let stride = n_kv_heads * d;
    for kk in 0..kv_heads {
        for g in 0..group {
            let h = kk * group + g;
            for c0 in (0..d).step_by(SPAN) {
                let mut acc = [_mm256_setzero_ps(); SPAN / 8];
                let mut v = v_cache.as_ptr().add(job.at(0) + kk * d + c0);
                for j in 0..len {
                    let w = _mm256_set1_ps(scores[h * len + j] / denoms[h]);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(w, _mm256_loadu_ps(v.add(8 * i))));
                    }
                    v = v.add(stride);
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(h * d + c0 + 8 * i), *a);
                }
            }
        }
    }
}

/// [`dot`] with AVX2: its 16 lanes as two 8-lane registers (lanes 0–7, 8–15), a multiply then an add
/// per element as there, the remainder added lane by lane, then [`reduce16`]'s tree: the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut c = 0;
    while c + LANES <= n {
        let (pa, pb) = (a.as_ptr().add(c), b.as_ptr().add(c));
        lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb)));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8))));
        c += LANES;
    }
    if c < n {
        let mut acc = [0f32; LANES];
        _mm256_storeu_ps(acc.as_mut_ptr(), lo);
        _mm256_storeu_ps(acc.as_mut_ptr().add(8), hi);
        for (l, (x, y)) in a[c..n].iter().zip(&b[c..n]).enumerate() {
            acc[l] += x * y;
        }
        return reduce16(&acc);
    }
    let s = _mm256_add_ps(lo, hi);
    let b = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<0b01>(c, c)))
}

/// [`dot`] with AVX-512: the same lanes, the same order, the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut acc = _mm512_setzero_ps();
    let mut c = 0;
    while c + LANES <= n {
        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(a.as_ptr().add(c)), _mm512_loadu_ps(b.as_ptr().add(c))));
        c += LANES;
    }
    if c < n {
        let m: __mmask16 = ((1u32 << (n - c)) - 1) as __mmask16;
        let p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a.as_ptr().add(c)), _mm512_maskz_loadu_ps(m, b.as_ptr().add(c)));
        acc = _mm512_add_ps(acc, p);
    }
    // reduce16's tree in registers: halves 8, 4, 2, 1.
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
    let a = _mm256_add_ps(_mm512_castps512_ps256(acc), hi);
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<0b01>(c, c)))
}

/// `a · b` in 16 lanes (lane l sums the elements ≡ l mod 16 in order), then [`reduce16`].
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[l] += x * y;
    }
    reduce16(&acc)
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

    #[test]
    fn matches_naive_softmax_attention_with_gqa_and_odd_head_dim() {
        let shape = AttnShape { n_heads: 6, n_kv_heads: 2, head_dim: 20 };
        let (h, kvh, d) = (6, 2, 20);
        let slots = 50;
        let val =
            |i: usize, s: u32| (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 9) % 1001) as f32 / 500.0 - 1.0;
        let k: Vec<f32> = (0..slots * kvh * d).map(|i| val(i, 1)).collect();
        let v: Vec<f32> = (0..slots * kvh * d).map(|i| val(i, 2)).collect();
        let spans = [
            AttnSpan { slot_base: 3, len: 1 },
            AttnSpan { slot_base: 3, len: 17 },
            AttnSpan { slot_base: 10, len: 40 },
        ];
        let q: Vec<f32> = (0..spans.len() * h * d).map(|i| val(i, 3)).collect();
        let mut out = vec![0f32; q.len()];
        attention(&q, &k, &v, &spans, shape, &mut out);
        for (t, sp) in spans.iter().enumerate() {
            for hh in 0..h {
                let g = hh / (h / kvh);
                let qv = &q[(t * h + hh) * d..(t * h + hh + 1) * d];
                let s: Vec<f64> = (0..sp.len)
                    .map(|j| {
                        let kb = ((sp.slot_base + j) * kvh + g) * d;
                        qv.iter().zip(&k[kb..kb + d]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 =
                        (0..sp.len).map(|j| e[j] / z * v[((sp.slot_base + j) * kvh + g) * d + c] as f64).sum();
                    let got = out[(t * h + hh) * d + c] as f64;
                    assert!((got - want).abs() < 1e-5, "t={t} h={hh} c={c}: {got} vs {want}");
                }
            }
        }
        // A token's output does not depend on the other tokens of the call.
        let mut alone = vec![0f32; h * d];
        attention(&q[2 * h * d..], &k, &v, &spans[2..], shape, &mut alone);
        assert_eq!(&alone[..], &out[2 * h * d..]);
    }

    #[test]
    fn simd_dot_has_the_portable_bits() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            for n in [1, 5, 16, 17, 31, 128, 130] {
                let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
                let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 3.0).collect();
                // SAFETY: the feature was just detected.
                assert_eq!(dot(&a, &b).to_bits(), unsafe { dot_avx512(&a, &b) }.to_bits(), "n={n}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            for n in [1, 5, 16, 17, 31, 128, 130] {
                let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
                let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 3.0).collect();
                // SAFETY: the features were just detected.
                assert_eq!(dot(&a, &b).to_bits(), unsafe { dot_avx2(&a, &b) }.to_bits(), "n={n}");
            }
        }
    }

    #[test]
    fn simd_pv_has_the_portable_bits() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            pv_matches_portable(|job, s, dn, o| unsafe { pv_avx2(job, s, dn, o) });
        } else {
            println!("SKIP (pv_avx2: no AVX2+FMA on this CPU)");
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            pv_matches_portable(|job, s, dn, o| unsafe { pv_avx512(job, s, dn, o) });
        } else {
            println!("SKIP (pv_avx512: no AVX-512F on this CPU)");
        }
    }

    /// The whole attention of a token on each SIMD path equals the portable one bit for bit (the dot,
    /// the softmax and the PV step compiled for that ISA), for d = 128 and an odd d.
    #[test]
    fn simd_attention_has_the_portable_bits() {
        #[cfg(target_arch = "x86_64")]
        for (d, len) in [(128, 300), (20, 33)] {
            let shape = AttnShape { n_heads: 8, n_kv_heads: 2, head_dim: d };
            let slots = len + 4;
            let val = |i: usize, s: u32| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 9) % 1001) as f32 / 250.0 - 2.0
            };
            let k: Vec<f32> = (0..slots * 2 * d).map(|i| val(i, 1)).collect();
            let v: Vec<f32> = (0..slots * 2 * d).map(|i| val(i, 2)).collect();
            let q: Vec<f32> = (0..8 * d).map(|i| val(i, 3)).collect();
            let job = Job {
                q: &q,
                k_cache: Plane::new(&k),
                v_cache: Plane::new(&v),
                span: AttnSpan { slot_base: 3, len },
                kvh0: 0,
                kv_heads: 2,
                n_kv_heads: 2,
                d,
                group: shape.n_heads / shape.n_kv_heads,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let mut want = vec![0f32; 8 * d];
            attend(&job, &mut Vec::new(), &mut want, dot, pv_portable, |_| {});
            let mut ran = 0;
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                let mut got = vec![0f32; 8 * d];
                // SAFETY: the features were just detected.
                unsafe { attend_avx2(&job, &mut Vec::new(), &mut got) };
                assert_eq!(bits(&got), bits(&want), "avx2, d={d}");
                ran += 1;
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut got = vec![0f32; 8 * d];
                // SAFETY: the feature was just detected.
                unsafe { attend_avx512(&job, &mut Vec::new(), &mut got) };
                assert_eq!(bits(&got), bits(&want), "avx512, d={d}");
                ran += 1;
            }
            if ran == 0 {
                println!("SKIP (no SIMD attention path on this CPU)");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// `simd`'s PV step equals [`pv_portable`] bit for bit (d = 128, two q heads per kv head).
    #[cfg(target_arch = "x86_64")]
    fn pv_matches_portable(simd: impl Fn(&Job<'_>, &[f32], &[f32], &mut [f32])) {
        let (kvh, d, group, len) = (2, 128, 2, 37);
        let v: Vec<f32> = (0..(len + 3) * kvh * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let scores: Vec<f32> = (0..group * len).map(|i| ((i * 13 % 17) as f32 + 1.0) / 9.0).collect();
        let denoms = [3.5f32, 7.25];
        let job = Job {
            q: &[],
            k_cache: Plane::new(&[]),
            v_cache: Plane::new(&v),
            span: AttnSpan { slot_base: 2, len },
            kvh0: 1,
            kv_heads: 1,
            n_kv_heads: kvh,
            d,
            group,
            scale: 1.0,
        };
        let (mut a, mut b) = (vec![0f32; group * d], vec![0f32; group * d]);
        pv_portable(&job, &scores, &denoms, &mut a);
        simd(&job, &scores, &denoms, &mut b);
        assert_eq!(bits(&a), bits(&b));
    }
}
