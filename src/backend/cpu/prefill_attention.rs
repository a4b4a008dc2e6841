//! Blocked causal GQA attention for rows that feed many tokens at once (prefill), f32 with fused
//! multiply-adds: the attention of [`super::matmul::Precision::Bf16Activations`] calls. Rows feeding few
//! tokens (decode, latent steps) and every exact-precision call take the reference
//! [`super::attention::attention`], whose per-score order is canonical.
//!
//! Operations: [`attention_rows`].
//!
//! How, per row and kv head (`head_dim` = 128; AVX-512, or AVX2 + FMA in [`avx2`] with half the q vectors per
//! task and every 16-lane register split in two):
//! 1. the row's K rows are transposed once into 16-key blocks `kt[block][c][16 keys]`, its V rows copied
//!    side by side per kv head;
//! 2. a task takes [`Q_VECS`] q vectors (a block of the row's tokens × the q heads of the kv head) and
//!    computes their scores 16 keys at a time (one K-block load feeds 16 FMAs with broadcast q elements);
//! 3. softmax per q vector over its own visible keys (exponentials with a [`super::vexp::exp512`]),
//!    masked keys get weight exactly 0;
//! 4. `out = P · V` with 8 q vectors × 32 columns of V in registers, keys in order.
//!
//! Both ISAs compute every score with the same fused multiply-adds in the same order (the same bits); the
//! softmax sums differ in lane count, so the two agree to f32 rounding, not bit for bit.
//!
//! Each output element sums its own products in a fixed order (keys ascending, masked ones adding exact
//! zeros), so a token's result does not depend on the block it falls in or on the other rows of the call:
//! batch = single holds. Compared with the reference it differs by f32 rounding (FMA, summation order,
//! `exp` within 2 ulp): far below the bf16 rounding of the projections on this path.

use std::cell::RefCell;

use rayon::prelude::*;

use super::attention::{attention, AttnShape, AttnSpan};
use crate::kernels::Row;

/// Rows feeding at least this many tokens take the blocked kernel (below it the per-token reference is
/// as fast and keeps decode on the canonical path).
pub const MIN_Q: usize = 16;
/// q vectors per task (tokens × q heads of one kv head): 16 score accumulators in registers.
pub const Q_VECS: usize = 16;
/// q vectors per task on AVX2 (16 ymm registers: two passes of 4 vectors × 16 keys).
pub const Q_VECS_AVX2: usize = 8;
/// Keys per block (one AVX-512 register of scores).
const KEYS: usize = 16;
/// The head dim the kernel is written for.
const D: usize = 128;

thread_local! {
    // Scores / probabilities of one task, `[Q_VECS][keys rounded up to 16]`.
    static PROBS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
mod avx2;

/// The instruction set a blocked call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// q vectors per task.
    fn q_vecs(self) -> usize {
        match self {
            Isa::Avx512 => Q_VECS,
            Isa::Avx2 => Q_VECS_AVX2,
        }
    }

    /// Whether this CPU runs it.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return match self {
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
        };
        #[allow(unreachable_code)]
        false
    }
}

/// The ISA [`attention_rows`] runs the blocked kernel on for this shape on this CPU (None: the reference).
pub fn blocked_isa(shape: AttnShape) -> Option<Isa> {
    [Isa::Avx512, Isa::Avx2].into_iter().find(|&isa| isa.runs_here() && fits(shape, isa))
}

/// Whether [`attention_rows`] runs the blocked kernel for this shape on this CPU.
pub fn supported(shape: AttnShape) -> bool {
    blocked_isa(shape).is_some()
}

/// Whether the kernel of `isa` is written for this shape: head dim 128 and whole GQA groups per task.
fn fits(shape: AttnShape, isa: Isa) -> bool {
    let group = shape.n_heads / shape.n_kv_heads.max(1);
    shape.head_dim == D
        && shape.n_kv_heads > 0
        && shape.n_heads.is_multiple_of(shape.n_kv_heads)
        && group <= isa.q_vecs()
        && isa.q_vecs().is_multiple_of(group)
}

/// Attention of every token of the call (`q`, `out`: `[n, H, d]`; `spans` per token as for
/// [`attention`]): rows with at least [`MIN_Q`] tokens on the blocked kernel, runs of other rows on the
/// reference. `kt` is reused scratch for the transposed keys.
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    rows: &[Row],
    spans: &[AttnSpan],
    shape: AttnShape,
    out: &mut [f32],
    kt: &mut Vec<f32>,
) {
    match blocked_isa(shape) {
        Some(isa) => attention_rows_on(isa, q, k_cache, v_cache, rows, spans, shape, out, kt),
        None => attention(q, k_cache, v_cache, spans, shape, out),
    }
}

/// [`attention_rows`] on the blocked kernel of `isa`, which the caller checked runs here for this shape.
#[allow(clippy::too_many_arguments)]
fn attention_rows_on(
    isa: Isa,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    rows: &[Row],
    spans: &[AttnSpan],
    shape: AttnShape,
    out: &mut [f32],
    kt: &mut Vec<f32>,
) {
    assert!(isa.runs_here() && fits(shape, isa), "blocked attention: {isa:?} does not run {shape:?} here");
    let width = shape.n_heads * shape.head_dim;
    let mut i = 0;
    while i < rows.len() {
        let (t0, len) = (rows[i].q_start as usize, rows[i].q_len as usize);
        if len >= MIN_Q {
            let r = &rows[i];
            let keys = r.past_len as usize + len;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the ISA runs here (asserted); the row's tokens and slots lie inside q, out and the
            // caches (the call was planned against them).
            unsafe {
                row_blocked(
                    isa,
                    &q[t0 * width..(t0 + len) * width],
                    k_cache,
                    v_cache,
                    r.slot_base as usize,
                    r.past_len as usize,
                    keys,
                    shape,
                    &mut out[t0 * width..(t0 + len) * width],
                    kt,
                );
            }
            i += 1;
        } else {
            // A run of short rows: their tokens are contiguous, one reference call for all of them.
            let mut j = i;
            while j < rows.len() && (rows[j].q_len as usize) < MIN_Q {
                j += 1;
            }
            let t1 = rows[j - 1].q_start as usize + rows[j - 1].q_len as usize;
            attention(
                &q[t0 * width..t1 * width],
                k_cache,
                v_cache,
                &spans[t0..t1],
                shape,
                &mut out[t0 * width..t1 * width],
            );
            i = j;
        }
    }
}

/// A raw pointer shared by tasks that write disjoint parts of the buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes a disjoint set of elements; see the callers.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One row: `q`, `out` are its `[len, H, d]` tokens; its keys are slots `slot_base..slot_base + keys`
/// and token i sees the first `past + i + 1` of them.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn row_blocked(
    isa: Isa,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    slot_base: usize,
    past: usize,
    keys: usize,
    shape: AttnShape,
    out: &mut [f32],
    kt: &mut Vec<f32>,
) {
    let AttnShape { n_heads, n_kv_heads, head_dim: d } = shape;
    let group = n_heads / n_kv_heads;
    let len = q.len() / (n_heads * d);
    let blocks = keys.div_ceil(KEYS);
    let per_head = blocks * D * KEYS;
    // kt holds the transposed keys of every kv head, then each kv head's V rows side by side
    // (`[kvh][key][D]`: the P·V loop then streams contiguous memory; in the cache a head's consecutive V
    // rows lie n_kv_heads·512 bytes apart, all in one L1 set and out of the prefetchers' reach).
    let total = 2 * n_kv_heads * per_head;
    // Every element is written below (padding keys as zeros): grow only, never clear.
    if kt.len() < total {
        kt.resize(total, 0.0);
    }
    // 1. kt[(kvh·blocks + b)·D·16 + c·16 + r] = K[slot_base + 16b + r, kvh, c] (zeros past the last key);
    //    vrows[(kvh·blocks·16 + 16b + r)·D + c] = V[slot_base + 16b + r, kvh, c] (rows past the last key
    //    are never read: P·V stops at the last visible key)
    let ktp = Shared(kt.as_mut_ptr());
    super::regions::enter();
    (0..n_kv_heads * blocks).into_par_iter().with_min_len(8).for_each(|i| {
        let (h, b) = (i / blocks, i % blocks);
        let valid = (keys - b * KEYS).min(KEYS);
        // SAFETY: task i writes block i of kt and of vrows alone; the keys read lie inside the row's slots.
        unsafe {
            let dst = ktp.get().add(i * D * KEYS);
            match isa {
                Isa::Avx512 => transpose_keys(k_cache, slot_base + b * KEYS, valid, h, n_kv_heads, dst),
                Isa::Avx2 => avx2::transpose_keys(k_cache, slot_base + b * KEYS, valid, h, n_kv_heads, dst),
            }
            let dst = ktp.get().add(n_kv_heads * per_head + i * D * KEYS);
            for r in 0..valid {
                let src = v_cache.as_ptr().add(((slot_base + b * KEYS + r) * n_kv_heads + h) * D);
                std::ptr::copy_nonoverlapping(src, dst.add(r * D), D);
            }
        }
    });
    // 2.–4. tasks of Q_VECS q vectors: `tq` tokens × `group` heads of one kv head
    let tq = isa.q_vecs() / group;
    let qblocks = len.div_ceil(tq);
    let (kt, vrows) = kt[..total].split_at(n_kv_heads * per_head);
    let outp = Shared(out.as_mut_ptr());
    let scale = 1.0 / (d as f32).sqrt();
    // Later token blocks see more keys: hand them out first so the tail of the pool's work is short.
    super::regions::enter();
    (0..n_kv_heads * qblocks).into_par_iter().for_each(|i| {
        let (h, qb) = (i % n_kv_heads, qblocks - 1 - i / n_kv_heads);
        let task = Task {
            q,
            kt: &kt[h * per_head..(h + 1) * per_head],
            vrows: &vrows[h * per_head..(h + 1) * per_head],
            past,
            kvh: h,
            group,
            tok0: qb * tq,
            toks: (len - qb * tq).min(tq),
            n_heads,
            scale,
        };
        PROBS.with(|cell| {
            let mut probs = cell.borrow_mut();
            // SAFETY: the task writes the out rows of its own tokens × heads only; the ISA runs here.
            unsafe {
                match isa {
                    Isa::Avx512 => task.run(&mut probs, outp.get()),
                    Isa::Avx2 => avx2::run(&task, &mut probs, outp.get()),
                }
            }
        });
    });
}

/// Transposes keys `first..first + valid` of kv head `h` into one `[D][16]` block (zero padded).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_keys(k_cache: &[f32], first: usize, valid: usize, h: usize, n_kv_heads: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    for cb in 0..D / 16 {
        let mut r = [_mm512_setzero_ps(); 16];
        for (j, v) in r.iter_mut().enumerate().take(valid) {
            *v = _mm512_loadu_ps(k_cache.as_ptr().add(((first + j) * n_kv_heads + h) * D + cb * 16));
        }
        let t = super::amx::transpose16(r);
        for (c, v) in t.iter().enumerate() {
            _mm512_storeu_ps(dst.add((cb * 16 + c) * KEYS), *v);
        }
    }
}

/// A task's q vectors, aligned.
#[repr(C, align(64))]
struct QBuf([f32; Q_VECS * D]);

/// [`Task::prologue`]: the task's q vectors (`nv` of them), the keys its last one sees, and the score rows'
/// blocks and stride.
struct Prologue {
    nv: usize,
    qbuf: QBuf,
    keys: usize,
    blocks: usize,
    stride: usize,
}

/// One task of [`row_blocked`].
struct Task<'a> {
    q: &'a [f32],
    /// This kv head's transposed key blocks.
    kt: &'a [f32],
    /// This kv head's V rows, `[key][D]`.
    vrows: &'a [f32],
    past: usize,
    kvh: usize,
    group: usize,
    tok0: usize,
    toks: usize,
    n_heads: usize,
    scale: f32,
}

impl Task<'_> {
    /// Offset in q / out of q vector `v` (token `tok0 + v / group`, head `kvh·group + v % group`).
    #[inline(always)]
    fn at(&self, v: usize) -> usize {
        ((self.tok0 + v / self.group) * self.n_heads + self.kvh * self.group + v % self.group) * D
    }

    /// Keys visible to q vector `v`.
    #[inline(always)]
    fn visible(&self, v: usize) -> usize {
        self.past + self.tok0 + v / self.group + 1
    }

    /// What every ISA's task starts with: its q vectors side by side (zeros past `nv`: their results are
    /// dropped), the keys its last vector sees, and `probs` grown to `q_vecs` rows of whole 16-key blocks
    /// (every score of those blocks is written before it is read: grow only).
    fn prologue(&self, probs: &mut Vec<f32>, q_vecs: usize) -> Prologue {
        let nv = self.toks * self.group;
        debug_assert!(nv > 0 && nv <= q_vecs);
        let mut qbuf = QBuf([0f32; Q_VECS * D]);
        for v in 0..nv {
            qbuf.0[v * D..(v + 1) * D].copy_from_slice(&self.q[self.at(v)..self.at(v) + D]);
        }
        let keys = self.visible(nv - 1);
        let blocks = keys.div_ceil(KEYS);
        let stride = blocks * KEYS;
        if probs.len() < q_vecs * stride {
            probs.resize(q_vecs * stride, 0.0);
        }
        Prologue { nv, qbuf, keys, blocks, stride }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn run(&self, probs: &mut Vec<f32>, out: *mut f32) {
        use std::arch::x86_64::*;
        let Prologue { nv, qbuf, keys, blocks, stride } = self.prologue(probs, Q_VECS);
        let p = probs.as_mut_ptr();
        let q = qbuf.0.as_ptr();
        // 2. scores, 16 keys × 16 q vectors per step
        for b in 0..blocks {
            let kb = self.kt.as_ptr().add(b * D * KEYS);
            let mut acc = [_mm512_setzero_ps(); Q_VECS];
            for c in 0..D {
                let kv = _mm512_loadu_ps(kb.add(c * KEYS));
                for v in 0..Q_VECS {
                    acc[v] = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(v * D + c)), kv, acc[v]);
                }
            }
            for (v, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(p.add(v * stride + b * KEYS), _mm512_mul_ps(*a, _mm512_set1_ps(self.scale)));
            }
        }
        // 3. softmax over each vector's visible keys; the rest weigh exactly 0
        for v in 0..nv {
            let s = std::slice::from_raw_parts_mut(p.add(v * stride), stride);
            let vis = self.visible(v);
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for b in 0..blocks {
                let m = mask(vis, b);
                mx = _mm512_mask_max_ps(mx, m, mx, _mm512_loadu_ps(s.as_ptr().add(b * KEYS)));
            }
            let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
            let mut sum = _mm512_setzero_ps();
            for b in 0..blocks {
                let m = mask(vis, b);
                let e = _mm512_maskz_mov_ps(
                    m,
                    super::vexp::exp512(_mm512_sub_ps(_mm512_loadu_ps(s.as_ptr().add(b * KEYS)), mx)),
                );
                sum = _mm512_add_ps(sum, e);
                _mm512_storeu_ps(s.as_mut_ptr().add(b * KEYS), e);
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            for b in 0..blocks {
                let e = _mm512_loadu_ps(s.as_ptr().add(b * KEYS));
                _mm512_storeu_ps(s.as_mut_ptr().add(b * KEYS), _mm512_mul_ps(e, inv));
            }
        }
        // 4. out = P · V: 8 q vectors × 32 columns per pass, keys in order
        let v0 = self.vrows.as_ptr();
        let mut g0 = 0;
        while g0 < nv {
            let gn = (nv - g0).min(8);
            for c0 in (0..D).step_by(32) {
                let mut a = [_mm512_setzero_ps(); 8];
                let mut bacc = [_mm512_setzero_ps(); 8];
                let rows: [*const f32; 8] = std::array::from_fn(|v| p.add((g0 + v).min(nv - 1) * stride) as *const f32);
                let mut vp = v0.add(c0);
                for j in 0..keys {
                    let x0 = _mm512_loadu_ps(vp);
                    let x1 = _mm512_loadu_ps(vp.add(16));
                    for v in 0..8 {
                        let w = _mm512_set1_ps(*rows[v].add(j));
                        a[v] = _mm512_fmadd_ps(w, x0, a[v]);
                        bacc[v] = _mm512_fmadd_ps(w, x1, bacc[v]);
                    }
                    vp = vp.add(D);
                }
                for v in 0..gn {
                    let o = out.add(self.at(g0 + v) + c0);
                    _mm512_storeu_ps(o, a[v]);
                    _mm512_storeu_ps(o.add(16), bacc[v]);
                }
            }
            g0 += 8;
        }
    }
}

/// Lanes of key block `b` that are among the first `vis` keys.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn mask(vis: usize, b: usize) -> u16 {
    let n = vis.saturating_sub(b * KEYS).min(KEYS);
    ((1u32 << n) - 1) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(i: usize, s: u32) -> f32 {
        (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 9) % 1001) as f32 / 500.0 - 1.0
    }

    /// Rows of the given (past, q_len) laid out one after another in the cache.
    fn layout(rows: &[(usize, usize)]) -> (Vec<Row>, Vec<AttnSpan>) {
        let (mut out, mut spans, mut t, mut slot) = (Vec::new(), Vec::new(), 0, 0);
        for &(past, len) in rows {
            out.push(Row {
                q_start: t as u32,
                q_len: len as u32,
                slot_base: slot as u32,
                past_len: past as u32,
                pos_base: 0,
                _pad: 0,
            });
            for i in 0..len {
                spans.push(AttnSpan { slot_base: slot, len: past + i + 1 });
            }
            t += len;
            slot += past + len + 3;
        }
        (out, spans)
    }

    /// Every ISA this CPU runs, against the reference (tolerance 2e-6 relative: f32 rounding of FMAs, the
    /// summation order and a 2-ulp `exp`), and each row alone equal bit for bit to the same row in the call.
    #[test]
    fn matches_the_reference_and_keeps_batch_equal_to_single() {
        let shape = AttnShape { n_heads: 4, n_kv_heads: 2, head_dim: 128 };
        let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2].into_iter().filter(|i| i.runs_here()).collect();
        if isas.is_empty() {
            eprintln!("SKIP: the blocked attention needs AVX-512 or AVX2 + FMA, which this CPU lacks");
            return;
        }
        let (h, kvh, d) = (4, 2, 128);
        // long rows (blocked), a short row (reference), odd lengths, a row on top of past context
        let shapes = [(0, 37), (5, 1), (20, 16), (0, 70)];
        let (rows, spans) = layout(&shapes);
        let n = spans.len();
        let slots = rows.last().map(|r| (r.slot_base + r.past_len + r.q_len) as usize).unwrap() + 4;
        let k: Vec<f32> = (0..slots * kvh * d).map(|i| val(i, 1) * 3.0).collect();
        let v: Vec<f32> = (0..slots * kvh * d).map(|i| val(i, 2)).collect();
        let q: Vec<f32> = (0..n * h * d).map(|i| val(i, 3)).collect();
        let mut want = vec![0f32; q.len()];
        attention(&q, &k, &v, &spans, shape, &mut want);
        for isa in isas {
            let mut got = vec![0f32; q.len()];
            let mut kt = Vec::new();
            attention_rows_on(isa, &q, &k, &v, &rows, &spans, shape, &mut got, &mut kt);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 2e-6 * (1.0 + b.abs()), "{isa:?} element {i}: {a} vs {b}");
            }
            // each row alone gives the same bits as in the call
            let width = h * d;
            for (ri, r) in rows.iter().enumerate() {
                let (t0, len) = (r.q_start as usize, r.q_len as usize);
                let mut alone = vec![0f32; len * width];
                let one = [Row { q_start: 0, ..*r }];
                attention_rows_on(
                    isa,
                    &q[t0 * width..(t0 + len) * width],
                    &k,
                    &v,
                    &one,
                    &spans[t0..t0 + len],
                    shape,
                    &mut alone,
                    &mut kt,
                );
                assert_eq!(&alone[..], &got[t0 * width..(t0 + len) * width], "{isa:?} row {ri}: alone ≠ in the call");
            }
        }
    }

    /// Qwen3's shapes (GQA groups of 2 and 4, 14B's 5 falls back) and a 4-head row at an odd past length.
    #[test]
    fn each_isa_takes_the_gqa_groups_it_fits() {
        for (heads, kv, avx512, avx2) in
            [(16, 8, true, true), (32, 8, true, true), (40, 8, false, false), (16, 2, true, true), (16, 1, true, false)]
        {
            let shape = AttnShape { n_heads: heads, n_kv_heads: kv, head_dim: 128 };
            assert_eq!(fits(shape, Isa::Avx512), avx512, "{shape:?} on AVX-512");
            assert_eq!(fits(shape, Isa::Avx2), avx2, "{shape:?} on AVX2");
        }
        assert!(!fits(AttnShape { n_heads: 16, n_kv_heads: 8, head_dim: 64 }, Isa::Avx2));
    }
}
