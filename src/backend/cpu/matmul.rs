//! `y = x · Wᵀ` for a row-major activation `x [n, k]` (f32) and a weight `W [m, k]` (f32 or bf16), f32
//! accumulation. The CPU's hot loop: decode is a GEMV that must stream every weight byte exactly once at
//! memory speed; prefill and batched decode are GEMMs that must keep the FMA units busy.
//!
//! # Exactness: one canonical order
//! Every output `y[t, j]` is computed in ONE order, whatever `n`, the tile it falls in or the thread that
//! computes it, so a row's result never depends on what else is in the batch (batch = single, bit for
//! bit) and the portable path gives the same bits as the AVX-512 one. Per output: 16 f32 lanes, one
//! fused multiply-add chain per lane over the 32-wide blocks of `k` in increasing order, then the fixed
//! pairwise tree of [`reduce16`]. Within a 32-block `b`, lane `l` adds, in this order:
//! - f32 weights: `c = 32b + l`, then `c = 32b + 16 + l`;
//! - bf16 weights: `c = 32b + 2l`, then `c = 32b + 2l + 1` (even/odd: the cheapest exact widening of 32
//!   packed bf16 is one shift for the even elements and one mask for the odd ones).
//!
//! Missing elements of a last partial block add exact zeros.
//!
//! # Kernels
//! Chosen at run time ([`ExactKernel::detect`]): AVX-512 (below), AVX2 + FMA ([`avx2`]: the same order
//! with each 16-lane accumulator split over two 8-lane registers, the same bits), else the portable
//! [`dot_canonical`] loop. All three give the same bits.
//!
//! AVX-512:
//! - GEMV (`n == 1`): [`GEMV_ROWS`] weight rows at a time (8 independent FMA chains and 8 concurrent
//!   weight streams), bf16 widened in registers, the next row group prefetched.
//! - GEMM (`n > 1`): a [`ROWS`] × [`TOKENS`] register tile (24 accumulators). Weights are widened once per
//!   super-block of rows (a share of the L2: [`super::cache_size::super_block_bytes`]) into a per-thread
//!   f32 buffer; then, for each 6-token tile (its activations stay in L1), the 4-row blocks of the
//!   super-block stream from L2. Tokens go in chunks of
//!   [`TOKEN_CHUNK`] so a chunk's activations stay in L2 while the weights stream by once per chunk.
//! - bf16 weights read the activations from a per-call even/odd-permuted copy (`[n, k rounded up to 32]`,
//!   zero padded), built once per call in a reused per-thread buffer.
//!
//! # Parallelism
//! The m output features are split into [`TASKS_PER_THREAD`] contiguous ranges per pool thread: a few
//! large tasks (long sequential weight streams, few scheduler wake-ups) with some slack for work stealing
//! when another process takes a core. Each task writes a disjoint column range of `y`.

use std::cell::RefCell;

use half::bf16;
use rayon::prelude::*;

use crate::model::matrix::{WeightData, WeightMatrix};

/// f32 lanes of one accumulator (one AVX-512 register).
const LANES: usize = 16;
/// k elements per block of the canonical order (two accumulator updates).
const BLOCK: usize = 32;
/// Weight rows per GEMV step: 8 independent FMA chains and 8 concurrent weight streams.
pub const GEMV_ROWS: usize = 8;
/// Weight rows of the GEMM register tile.
pub const ROWS: usize = 4;
/// Tokens of the GEMM register tile: ROWS·TOKENS = 24 accumulators + 6 activation registers + 1 weight
/// register fit the 32 vector registers.
pub const TOKENS: usize = 6;
/// Up to this many tokens (batched decode) weights are widened in registers and each 4-row block is
/// reused from L1 by all token tiles; above it (prefill) they are widened once per L2 super-block.
pub const SMALL_N: usize = 24;
/// Tokens whose activations stay in L2 while a task streams its weights (96 × 3072 × 4 B = 1.2 MB).
pub const TOKEN_CHUNK: usize = 96;
/// Contiguous row ranges per pool thread.
pub const TASKS_PER_THREAD: usize = 4;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Weight element widened to f32 inside the dot product.
pub trait Elem: Copy + Default + Send + Sync + 'static {
    const IS_BF16: bool;
    fn widen(self) -> f32;
}
impl Elem for f32 {
    const IS_BF16: bool = false;
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}
impl Elem for bf16 {
    const IS_BF16: bool = true;
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32: a shift is exact (and vectorises, unlike a NaN-aware convert).
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// A raw output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of (token, feature) cells; see `run`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// The canonical final reduction of 16 lanes: halves added pairwise (8, 4, 2, 1).
#[inline(always)]
pub fn reduce16(v: &[f32; LANES]) -> f32 {
    let mut a = [0f32; 8];
    for i in 0..8 {
        a[i] = v[i] + v[i + 8];
    }
    let b = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    let c = [b[0] + b[2], b[1] + b[3]];
    c[0] + c[1]
}

/// Index into a 32-block of the element that lane `l` adds in step `s` (0 or 1).
#[inline(always)]
fn block_index(bf16: bool, l: usize, s: usize) -> usize {
    if bf16 {
        2 * l + s
    } else {
        16 * s + l
    }
}

/// The canonical order for one output, written plainly (the portable path, and the tests' reference).
pub fn dot_canonical<E: Elem>(w: &[E], x: &[f32]) -> f32 {
    let k = w.len();
    let mut acc = [0f32; LANES];
    for b in (0..k).step_by(BLOCK) {
        for s in 0..2 {
            for (l, a) in acc.iter_mut().enumerate() {
                let c = b + block_index(E::IS_BF16, l, s);
                if c < k {
                    *a = w[c].widen().mul_add(x[c], *a);
                }
            }
        }
    }
    reduce16(&acc)
}

thread_local! {
    // Per-thread reusable buffers; taken out while in use, so a nested call on the same thread (work
    // stealing) simply finds an empty one.
    static PERMUTED_X: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static WIDE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ROUNDED_X: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn take(key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>) -> Vec<f32> {
    key.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

fn give_back(key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>, v: Vec<f32>) {
    key.with(|c| {
        let mut slot = c.borrow_mut();
        if v.capacity() > slot.capacity() {
            *slot = v;
        }
    });
}

/// The arithmetic of a matmul with bf16 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 activations, exact f32 products, the canonical order of the module docs. Always used for f32
    /// weights.
    #[default]
    Exact,
    /// Activations rounded to bf16 (nearest even), f32 accumulation, on the best kernel family of the CPU
    /// ([`super::bf16_gemm`]: AMX tiles, AVX512-BF16, AVX-512, AVX2 + FMA, portable); f32 weights stay exact. Each
    /// product carries the rounding of its activation (≈ 2⁻⁹ relative). On AMX about 10× the exact
    /// path's FLOP/s; on AVX2 a larger register tile than the exact kernel's.
    Bf16Activations,
}

/// [`matmul`] with the given precision for bf16 weights.
pub fn matmul_with(x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32], precision: Precision) {
    if precision == Precision::Bf16Activations && super::bf16_gemm::matmul_bf16(x, n, w, out) {
        return;
    }
    matmul(x, n, w, out)
}

/// The kernel family of the exact path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExactKernel {
    /// AVX-512F + BW.
    Avx512,
    /// AVX2 + FMA.
    Avx2,
    /// [`dot_canonical`] per output: any CPU.
    Portable,
}

impl ExactKernel {
    /// The fastest kernel this CPU runs (checked once).
    pub fn detect() -> Self {
        static KERNEL: std::sync::OnceLock<ExactKernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            if has_avx512() {
                ExactKernel::Avx512
            } else if has_avx2_fma() {
                ExactKernel::Avx2
            } else {
                ExactKernel::Portable
            }
        })
    }

    /// Whether this CPU can run the kernel.
    pub fn runs_here(self) -> bool {
        match self {
            ExactKernel::Avx512 => has_avx512(),
            ExactKernel::Avx2 => has_avx2_fma(),
            ExactKernel::Portable => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExactKernel::Avx512 => "AVX-512",
            ExactKernel::Avx2 => "AVX2+FMA",
            ExactKernel::Portable => "portable",
        }
    }
}

/// `out[t, j] = Σ_c x[t, c] · w[j, c]` for t < n, j < w.rows.
pub fn matmul(x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) {
    matmul_on(ExactKernel::detect(), x, n, w, out)
}

/// [`matmul`] on a given kernel family (tests force each one the CPU runs; they all give the same bits).
///
/// # Panics
/// If this CPU cannot run `kernel` ([`ExactKernel::runs_here`]), or on shape mismatch.
pub fn matmul_on(kernel: ExactKernel, x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) {
    assert!(kernel.runs_here(), "matmul: this CPU cannot run the {} kernel", kernel.name());
    let (m, k) = (w.rows, w.cols);
    assert_eq!(x.len(), n * k, "matmul: x is not [n, k]");
    assert_eq!(out.len(), n * m, "matmul: out is not [n, m]");
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    match &w.data {
        WeightData::F32(wd) => run(x, n, k, m, wd, out, kernel, Order::Canonical),
        WeightData::Bf16(wd) => run(x, n, k, m, wd, out, kernel, Order::Canonical),
    }
}

/// Whether the AVX-512 kernels run on this CPU.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX2 + FMA kernels run on this CPU.
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The summation order of [`run`]: the canonical one, or (AVX2 only, bf16 activations) one 8-lane chain
/// per output ([`avx2`] module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    Canonical,
    Lanes8,
}

/// Rounds an activation to bf16 (nearest even, as `bf16::from_f32`) and back: exact in f32.
#[inline(always)]
fn round_bf16(v: f32) -> f32 {
    bf16::from_f32(v).to_f32()
}

/// The bf16-activation matmul on the FMA kernels (`kernel` AVX-512, AVX2 or portable): `x` rounded to
/// bf16 on the way into the kernel's activation copy, then the kernel's own order ([`Order::Lanes8`] on
/// AVX2, canonical elsewhere). Every product is exact; only the rounding of `x` and the summation order
/// differ from [`matmul`]. Returns false (touching nothing) for f32 weights.
pub(super) fn matmul_rounded(kernel: ExactKernel, x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) -> bool {
    let WeightData::Bf16(wd) = &w.data else { return false };
    assert!(kernel.runs_here(), "matmul: this CPU cannot run the {} kernel", kernel.name());
    let (m, k) = (w.rows, w.cols);
    assert_eq!(x.len(), n * k, "matmul: x is not [n, k]");
    assert_eq!(out.len(), n * m, "matmul: out is not [n, m]");
    if n == 0 || m == 0 {
        return true;
    }
    if k == 0 {
        out.fill(0.0);
        return true;
    }
    let order = if kernel == ExactKernel::Avx2 { Order::Lanes8 } else { Order::Canonical };
    if kernel == ExactKernel::Portable {
        // The portable kernel reads x as it is: round a copy.
        let mut xr = take(&ROUNDED_X);
        xr.clear();
        xr.extend(x.iter().map(|&v| round_bf16(v)));
        run(&xr, n, k, m, wd, out, kernel, order);
        give_back(&ROUNDED_X, xr);
    } else {
        run_with(x, n, k, m, wd, out, kernel, order, true);
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn run<E: Elem>(x: &[f32], n: usize, k: usize, m: usize, w: &[E], out: &mut [f32], kernel: ExactKernel, order: Order) {
    run_with(x, n, k, m, w, out, kernel, order, false)
}

/// [`run`]; `round` rounds x to bf16 while building the permuted copy (SIMD kernels, bf16 weights).
#[allow(clippy::too_many_arguments)]
fn run_with<E: Elem>(
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    w: &[E],
    out: &mut [f32],
    kernel: ExactKernel,
    order: Order,
    round: bool,
) {
    let simd = kernel != ExactKernel::Portable;
    // bf16 weights on the SIMD paths read an even/odd-permuted, zero-padded copy of x.
    let permute = simd && E::IS_BF16;
    debug_assert!(!round || permute, "rounding happens in the permuted copy");
    let kp = k.div_ceil(BLOCK) * BLOCK;
    // Row stride of the permuted copy: one extra cache line breaks 4 KiB aliasing between its rows.
    let ldp = kp + LANES;
    let mut xp = if permute { take(&PERMUTED_X) } else { Vec::new() };
    if permute {
        xp.clear();
        xp.resize(n * ldp, 0.0);
        for (src, dst) in x.chunks_exact(k).zip(xp.chunks_exact_mut(ldp)) {
            if round {
                permute_even_odd(src, dst, round_bf16);
            } else {
                permute_even_odd(src, dst, |v| v);
            }
        }
    }
    let (xs, ldx): (&[f32], usize) = if permute { (&xp, ldp) } else { (x, k) };
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks = (rayon::current_num_threads() * TASKS_PER_THREAD).max(1);
    // Rows per task: a multiple of GEMV_ROWS (and so of ROWS), at least one step.
    let per = m.div_ceil(tasks).div_ceil(GEMV_ROWS).max(1) * GEMV_ROWS;
    let tasks = m.div_ceil(per);
    let body = |t: usize| {
        let rows = t * per..((t + 1) * per).min(m);
        // SAFETY: the task owns output columns `rows` of every token; tasks never overlap; shapes were
        // checked by `matmul` (xs is [n, ldx], w is [m, k], out is [n, m]).
        unsafe { block_dispatch(xs, ldx, n, k, m, w, rows, ptr, kernel, order) }
    };
    if tasks == 1 {
        body(0);
    } else {
        super::regions::enter();
        (0..tasks).into_par_iter().for_each(body);
    }
    if permute {
        give_back(&PERMUTED_X, xp);
    }
}

/// The exact matmul of [`matmul`] with its activations prepared, run one range of output features at a
/// time by whoever owns that range: a fused op computes its own features inside its own parallel region
/// instead of opening the matmul's. Every output has the canonical order whatever range computes it.
pub(crate) struct RowRunner<'a> {
    xs: &'a [f32],
    ldx: usize,
    n: usize,
    w: &'a WeightMatrix,
    kernel: ExactKernel,
}

impl RowRunner<'_> {
    /// Writes `out[t, j]` for every token t and feature j in `rows`.
    ///
    /// # Safety
    /// `out` must point to an `[n, m]` buffer whose columns `rows` no other thread touches meanwhile.
    pub(crate) unsafe fn rows(&self, rows: std::ops::Range<usize>, out: *mut f32) {
        let (m, k) = (self.w.rows, self.w.cols);
        assert!(rows.start <= rows.end && rows.end <= m, "RowRunner: rows outside the matrix");
        let (xs, ldx, n, kernel, out) = (self.xs, self.ldx, self.n, self.kernel, OutPtr(out));
        match &self.w.data {
            WeightData::F32(wd) => block_dispatch(xs, ldx, n, k, m, wd, rows, out, kernel, Order::Canonical),
            WeightData::Bf16(wd) => block_dispatch(xs, ldx, n, k, m, wd, rows, out, kernel, Order::Canonical),
        }
    }
}

/// Runs `f` with a [`RowRunner`] for the exact `x · Wᵀ` (`x [n, k]`, `k > 0`) on the detected kernel.
pub(crate) fn with_row_runner<R>(x: &[f32], n: usize, w: &WeightMatrix, f: impl FnOnce(&RowRunner<'_>) -> R) -> R {
    let kernel = ExactKernel::detect();
    let k = w.cols;
    assert!(k > 0 && x.len() == n * k, "with_row_runner: x is not [n, k]");
    // As in `run_with`: bf16 weights on the SIMD kernels read an even/odd-permuted copy of x.
    let permute = kernel != ExactKernel::Portable && matches!(w.data, WeightData::Bf16(_));
    let ldp = k.div_ceil(BLOCK) * BLOCK + LANES;
    let mut xp = if permute { take(&PERMUTED_X) } else { Vec::new() };
    if permute {
        xp.clear();
        xp.resize(n * ldp, 0.0);
        for (src, dst) in x.chunks_exact(k).zip(xp.chunks_exact_mut(ldp)) {
            permute_even_odd(src, dst, |v| v);
        }
    }
    let (xs, ldx): (&[f32], usize) = if permute { (&xp, ldp) } else { (x, k) };
    let r = f(&RowRunner { xs, ldx, n, w, kernel });
    if permute {
        give_back(&PERMUTED_X, xp);
    }
    r
}

/// `dst[32b + l] = f(src[32b + 2l])`, `dst[32b + 16 + l] = f(src[32b + 2l + 1])`, zeros past the end of
/// `src`.
#[inline(always)]
fn permute_even_odd(src: &[f32], dst: &mut [f32], f: impl Fn(f32) -> f32) {
    for (b, d) in dst.chunks_exact_mut(BLOCK).enumerate() {
        let base = b * BLOCK;
        if base + BLOCK <= src.len() {
            let s = &src[base..base + BLOCK];
            for l in 0..LANES {
                d[l] = f(s[2 * l]);
                d[LANES + l] = f(s[2 * l + 1]);
            }
        } else {
            for l in 0..LANES {
                d[l] = src.get(base + 2 * l).map_or(0.0, |&v| f(v));
                d[LANES + l] = src.get(base + 2 * l + 1).map_or(0.0, |&v| f(v));
            }
        }
    }
}

/// Runs the rows `rows` of the output for all tokens on the best kernel.
///
/// # Safety
/// `out` must point to an `[n, m]` buffer whose columns `rows` no other thread touches meanwhile; `x` is
/// `[n, ldx]` (even/odd-permuted with `ldx` ≥ k rounded up to 32 on the SIMD kernels for bf16), `w` is
/// `[m, k]`; the CPU runs `kernel`; [`Order::Lanes8`] only with [`ExactKernel::Avx2`].
#[allow(clippy::too_many_arguments)]
unsafe fn block_dispatch<E: Elem>(
    x: &[f32],
    ldx: usize,
    n: usize,
    k: usize,
    m: usize,
    w: &[E],
    rows: std::ops::Range<usize>,
    out: OutPtr,
    kernel: ExactKernel,
    order: Order,
) {
    #[cfg(target_arch = "x86_64")]
    match (kernel, order) {
        (ExactKernel::Avx512, _) => return avx512::block(x, ldx, n, k, m, w, rows, out),
        (ExactKernel::Avx2, Order::Canonical) => return avx2::block::<E, true>(x, ldx, n, k, m, w, rows, out),
        (ExactKernel::Avx2, Order::Lanes8) => return avx2::block::<E, false>(x, ldx, n, k, m, w, rows, out),
        (ExactKernel::Portable, _) => {}
    }
    debug_assert_eq!(kernel, ExactKernel::Portable);
    let _ = order;
    for t in 0..n {
        let xt = &x[t * ldx..t * ldx + k];
        for j in rows.clone() {
            // SAFETY: (t, j) is inside [n, m] and column j belongs to this task.
            *out.0.add(t * m + j) = dot_canonical(&w[j * k..(j + 1) * k], xt);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{give_back, take, Elem, OutPtr, BLOCK, GEMV_ROWS, LANES, ROWS, SMALL_N, TOKENS, TOKEN_CHUNK, WIDE};
    use crate::backend::cpu::cache_size::super_block_bytes;

    /// How a kernel reads one operand row: half `S` (0 or 1) of the 32-block at element offset `c`, as
    /// the lane vector the canonical order adds in step `S`.
    trait Src: Copy {
        type E: Elem;
        /// Full block.
        unsafe fn half<const S: usize>(p: *const Self::E, c: usize) -> __m512;
        /// A last block holding only `len` (< 32) elements; the missing ones read as zero.
        unsafe fn half_tail<const S: usize>(p: *const Self::E, c: usize, len: usize) -> __m512;
    }

    /// bf16 weights straight from memory, widened in registers: even elements by a shift, odd ones by a
    /// mask (both exact). Step 1 reloads the 64 bytes step 0 read (an L1 hit) rather than hold them.
    #[derive(Clone, Copy)]
    struct Bf16Raw;
    impl Src for Bf16Raw {
        type E = half::bf16;
        #[inline(always)]
        unsafe fn half<const S: usize>(p: *const half::bf16, c: usize) -> __m512 {
            split::<S>(_mm512_loadu_si512(p.add(c) as *const _))
        }
        #[inline(always)]
        unsafe fn half_tail<const S: usize>(p: *const half::bf16, c: usize, len: usize) -> __m512 {
            let mask: __mmask32 = ((1u64 << len) - 1) as __mmask32;
            split::<S>(_mm512_maskz_loadu_epi16(mask, p.add(c) as *const i16))
        }
    }

    #[inline(always)]
    unsafe fn split<const S: usize>(raw: __m512i) -> __m512 {
        if S == 0 {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw))
        } else {
            _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(0xFFFF_0000u32 as i32)))
        }
    }

    /// f32 rows with lanes over consecutive k (f32 weights, and the activations they multiply).
    #[derive(Clone, Copy)]
    struct F32Raw;
    impl Src for F32Raw {
        type E = f32;
        #[inline(always)]
        unsafe fn half<const S: usize>(p: *const f32, c: usize) -> __m512 {
            _mm512_loadu_ps(p.add(c + S * LANES))
        }
        #[inline(always)]
        unsafe fn half_tail<const S: usize>(p: *const f32, c: usize, len: usize) -> __m512 {
            let valid = len.saturating_sub(S * LANES).min(LANES);
            _mm512_maskz_loadu_ps(((1u32 << valid) - 1) as __mmask16, p.add(c + S * LANES))
        }
    }

    /// f32 rows already in canonical lane order and zero padded to whole blocks (the even/odd-permuted
    /// activations, the GEMM's widened weights): plain loads, a tail reads the padding.
    #[derive(Clone, Copy)]
    struct Laid;
    impl Src for Laid {
        type E = f32;
        #[inline(always)]
        unsafe fn half<const S: usize>(p: *const f32, c: usize) -> __m512 {
            _mm512_loadu_ps(p.add(c + S * LANES))
        }
        #[inline(always)]
        unsafe fn half_tail<const S: usize>(p: *const f32, c: usize, _len: usize) -> __m512 {
            _mm512_loadu_ps(p.add(c + S * LANES))
        }
    }

    /// The canonical 16-lane reduction ([`super::reduce16`]) in registers.
    #[inline(always)]
    unsafe fn reduce(v: __m512) -> f32 {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let a = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
        let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
        _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<0b01>(c, c)))
    }

    /// A register-tile kernel with one named variable per accumulator: LLVM keeps arrays of vectors
    /// indexed in unrolled loops poorly (it rotates and spills them; measured 2× slower), named locals it
    /// allocates perfectly. Generates `fn $name(w, ldw, x, ldx, k, out, ldo, prefetch)` computing
    /// `out[t·ldo + r] = Σ_c w[r·ldw + c]·x[t·ldx + c]` in the canonical order; `prefetch` > 0 prefetches
    /// each weight row that many bytes ahead into L2 (T1: measured +4 % GEMV bandwidth over T0, +15 %
    /// over none; NTA halves it).
    macro_rules! tile_kernel {
        ($name:ident; xs: [$($x:ident @ $xt:literal),+]; rows: [$($r:literal => [$($a:ident $ax:ident @ $at:literal),+]),+]) => {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $name<W: Src, X: Src<E = f32>>(
                w: *const W::E,
                ldw: usize,
                x: *const f32,
                ldx: usize,
                k: usize,
                out: *mut f32,
                ldo: usize,
                prefetch: usize,
            ) {
                $($(let mut $a = _mm512_setzero_ps();)+)+
                let full = k / BLOCK * BLOCK;
                let mut c = 0;
                while c < full {
                    if prefetch > 0 {
                        $(_mm_prefetch::<_MM_HINT_T1>((w.add($r * ldw + c) as *const i8).add(prefetch));)+
                    }
                    $(let $x = X::half::<0>(x.add($xt * ldx), c);)+
                    $({
                        let wv = W::half::<0>(w.add($r * ldw), c);
                        $($a = _mm512_fmadd_ps(wv, $ax, $a);)+
                    })+
                    $(let $x = X::half::<1>(x.add($xt * ldx), c);)+
                    $({
                        let wv = W::half::<1>(w.add($r * ldw), c);
                        $($a = _mm512_fmadd_ps(wv, $ax, $a);)+
                    })+
                    c += BLOCK;
                }
                if c < k {
                    let len = k - c;
                    $(let $x = X::half_tail::<0>(x.add($xt * ldx), c, len);)+
                    $({
                        let wv = W::half_tail::<0>(w.add($r * ldw), c, len);
                        $($a = _mm512_fmadd_ps(wv, $ax, $a);)+
                    })+
                    $(let $x = X::half_tail::<1>(x.add($xt * ldx), c, len);)+
                    $({
                        let wv = W::half_tail::<1>(w.add($r * ldw), c, len);
                        $($a = _mm512_fmadd_ps(wv, $ax, $a);)+
                    })+
                }
                $($(*out.add($at * ldo + $r) = reduce($a);)+)+
            }
        };
    }

    // The GEMM tile: 4 rows × 6 tokens.
    tile_kernel!(t4x6; xs: [x0 @ 0, x1 @ 1, x2 @ 2, x3 @ 3, x4 @ 4, x5 @ 5]; rows: [
        0 => [a00 x0 @ 0, a01 x1 @ 1, a02 x2 @ 2, a03 x3 @ 3, a04 x4 @ 4, a05 x5 @ 5],
        1 => [a10 x0 @ 0, a11 x1 @ 1, a12 x2 @ 2, a13 x3 @ 3, a14 x4 @ 4, a15 x5 @ 5],
        2 => [a20 x0 @ 0, a21 x1 @ 1, a22 x2 @ 2, a23 x3 @ 3, a24 x4 @ 4, a25 x5 @ 5],
        3 => [a30 x0 @ 0, a31 x1 @ 1, a32 x2 @ 2, a33 x3 @ 3, a34 x4 @ 4, a35 x5 @ 5]
    ]);
    // Batch-4 decode: 4 rows × 4 tokens.
    tile_kernel!(t4x4; xs: [x0 @ 0, x1 @ 1, x2 @ 2, x3 @ 3]; rows: [
        0 => [a00 x0 @ 0, a01 x1 @ 1, a02 x2 @ 2, a03 x3 @ 3],
        1 => [a10 x0 @ 0, a11 x1 @ 1, a12 x2 @ 2, a13 x3 @ 3],
        2 => [a20 x0 @ 0, a21 x1 @ 1, a22 x2 @ 2, a23 x3 @ 3],
        3 => [a30 x0 @ 0, a31 x1 @ 1, a32 x2 @ 2, a33 x3 @ 3]
    ]);
    // GEMV: 8 rows × 1 token.
    tile_kernel!(t8x1; xs: [x0 @ 0]; rows: [
        0 => [a0 x0 @ 0], 1 => [a1 x0 @ 0], 2 => [a2 x0 @ 0], 3 => [a3 x0 @ 0],
        4 => [a4 x0 @ 0], 5 => [a5 x0 @ 0], 6 => [a6 x0 @ 0], 7 => [a7 x0 @ 0]
    ]);

    /// Any other R × T tile (edges): the same order with accumulator arrays (slower code, rarely run).
    #[inline(always)]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn tile<W: Src, X: Src<E = f32>, const R: usize, const T: usize>(
        w: *const W::E,
        ldw: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
        out: *mut f32,
        ldo: usize,
        prefetch: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let full = k / BLOCK * BLOCK;
        let mut c = 0;
        while c < full {
            if prefetch > 0 {
                for r in 0..R {
                    _mm_prefetch::<_MM_HINT_T1>((w.add(r * ldw + c) as *const i8).add(prefetch));
                }
            }
            let mut xv = [_mm512_setzero_ps(); T];
            for t in 0..T {
                xv[t] = X::half::<0>(x.add(t * ldx), c);
            }
            for r in 0..R {
                let wv = W::half::<0>(w.add(r * ldw), c);
                for t in 0..T {
                    acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
                }
            }
            for t in 0..T {
                xv[t] = X::half::<1>(x.add(t * ldx), c);
            }
            for r in 0..R {
                let wv = W::half::<1>(w.add(r * ldw), c);
                for t in 0..T {
                    acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
                }
            }
            c += BLOCK;
        }
        if c < k {
            let len = k - c;
            let mut xv = [_mm512_setzero_ps(); T];
            for t in 0..T {
                xv[t] = X::half_tail::<0>(x.add(t * ldx), c, len);
            }
            for r in 0..R {
                let wv = W::half_tail::<0>(w.add(r * ldw), c, len);
                for t in 0..T {
                    acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
                }
            }
            for t in 0..T {
                xv[t] = X::half_tail::<1>(x.add(t * ldx), c, len);
            }
            for r in 0..R {
                let wv = W::half_tail::<1>(w.add(r * ldw), c, len);
                for t in 0..T {
                    acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                *out.add(t * ldo + r) = reduce(acc[r][t]);
            }
        }
    }

    /// `tt` (1..=TOKENS) tokens against ROWS rows, on the named kernels where they exist.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows4<W: Src, X: Src<E = f32>>(
        w: *const W::E,
        ldw: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
        tt: usize,
        out: *mut f32,
        m: usize,
        pf: usize,
    ) {
        match tt {
            6 => t4x6::<W, X>(w, ldw, x, ldx, k, out, m, pf),
            5 => tile::<W, X, ROWS, 5>(w, ldw, x, ldx, k, out, m, pf),
            4 => t4x4::<W, X>(w, ldw, x, ldx, k, out, m, pf),
            3 => tile::<W, X, ROWS, 3>(w, ldw, x, ldx, k, out, m, pf),
            2 => tile::<W, X, ROWS, 2>(w, ldw, x, ldx, k, out, m, pf),
            _ => tile::<W, X, ROWS, 1>(w, ldw, x, ldx, k, out, m, pf),
        }
    }

    /// `tt` (1..=TOKENS) tokens against one row.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows1<W: Src, X: Src<E = f32>>(
        w: *const W::E,
        ldw: usize,
        x: *const f32,
        ldx: usize,
        k: usize,
        tt: usize,
        out: *mut f32,
        m: usize,
    ) {
        match tt {
            6 => tile::<W, X, 1, 6>(w, ldw, x, ldx, k, out, m, 0),
            5 => tile::<W, X, 1, 5>(w, ldw, x, ldx, k, out, m, 0),
            4 => tile::<W, X, 1, 4>(w, ldw, x, ldx, k, out, m, 0),
            3 => tile::<W, X, 1, 3>(w, ldw, x, ldx, k, out, m, 0),
            2 => tile::<W, X, 1, 2>(w, ldw, x, ldx, k, out, m, 0),
            _ => tile::<W, X, 1, 1>(w, ldw, x, ldx, k, out, m, 0),
        }
    }

    /// Output rows `rows` for all n tokens.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block<E: Elem>(
        x: &[f32],
        ldx: usize,
        n: usize,
        k: usize,
        m: usize,
        w: &[E],
        rows: std::ops::Range<usize>,
        out: OutPtr,
    ) {
        if E::IS_BF16 {
            let w = w.as_ptr() as *const half::bf16;
            typed::<Bf16Raw, Laid>(x.as_ptr(), ldx, n, k, m, w, rows, out)
        } else {
            let w = w.as_ptr() as *const f32;
            typed::<F32Raw, F32Raw>(x.as_ptr(), ldx, n, k, m, w, rows, out)
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn typed<W: Src, X: Src<E = f32>>(
        xp: *const f32,
        ldx: usize,
        n: usize,
        k: usize,
        m: usize,
        wp: *const W::E,
        rows: std::ops::Range<usize>,
        out: OutPtr,
    ) {
        let op = out.0;
        let esz = std::mem::size_of::<W::E>();
        if n == 1 {
            // GEMV: GEMV_ROWS rows per step (prefetching the next group), then single rows.
            let pf = GEMV_ROWS * k * esz;
            let mut j = rows.start;
            while j + GEMV_ROWS <= rows.end {
                let ahead = if j + 2 * GEMV_ROWS <= rows.end { pf } else { 0 };
                t8x1::<W, X>(wp.add(j * k), k, xp, ldx, k, op.add(j), m, ahead);
                j += GEMV_ROWS;
            }
            while j < rows.end {
                tile::<W, X, 1, 1>(wp.add(j * k), k, xp, ldx, k, op.add(j), m, 0);
                j += 1;
            }
            return;
        }
        if n <= SMALL_N {
            // Few tokens (batched decode): each 4-row block is read from memory once (the next one
            // prefetched) and stays in L1 for all token tiles, widened in registers per tile.
            let pf = ROWS * k * esz;
            let mut j = rows.start;
            while j < rows.end {
                let r4 = j + ROWS <= rows.end;
                let ahead = if j + 2 * ROWS <= rows.end { pf } else { 0 };
                let mut t = 0;
                while t < n {
                    let tt = (n - t).min(TOKENS);
                    let (xr, ot) = (xp.add(t * ldx), op.add(t * m + j));
                    if r4 {
                        rows4::<W, X>(wp.add(j * k), k, xr, ldx, k, tt, ot, m, if t == 0 { ahead } else { 0 });
                    } else {
                        rows1::<W, X>(wp.add(j * k), k, xr, ldx, k, tt, ot, m);
                    }
                    t += tt;
                }
                j += if r4 { ROWS } else { 1 };
            }
            return;
        }
        // GEMM (prefill): widen a super-block of rows once into a per-thread f32 buffer (canonical lane
        // order, padded stride: no 4 KiB aliasing), then for each 6-token tile (its activations in L1)
        // stream the super-block's 4-row blocks from L2.
        let kp = k.div_ceil(BLOCK) * BLOCK + LANES;
        let sb_rows = (super_block_bytes() / (kp * 4)).max(ROWS) / ROWS * ROWS;
        let mut wide = take(&WIDE);
        if wide.len() < sb_rows * kp {
            wide.resize(sb_rows * kp, 0.0);
        }
        let wb = wide.as_mut_ptr();
        let mut t0 = 0;
        while t0 < n {
            let nt = (n - t0).min(TOKEN_CHUNK);
            let (xc, oc) = (xp.add(t0 * ldx), op.add(t0 * m));
            let mut j0 = rows.start;
            while j0 < rows.end {
                let rb = (rows.end - j0).min(sb_rows);
                let full = rb / ROWS * ROWS;
                for r in 0..full {
                    widen_row::<W>(wp.add((j0 + r) * k), k, wb.add(r * kp));
                }
                let mut t = 0;
                while t < nt {
                    let tt = (nt - t).min(TOKENS);
                    let (xr, ot) = (xc.add(t * ldx), oc.add(t * m + j0));
                    let mut r = 0;
                    while r < full {
                        rows4::<Laid, X>(wb.add(r * kp), kp, xr, ldx, k, tt, ot.add(r), m, 0);
                        r += ROWS;
                    }
                    for r in full..rb {
                        rows1::<W, X>(wp.add((j0 + r) * k), k, xr, ldx, k, tt, ot.add(r), m);
                    }
                    t += tt;
                }
                j0 += rb;
            }
            t0 += nt;
        }
        give_back(&WIDE, wide);
    }

    /// One weight row widened into canonical lane order, zero padded to whole blocks.
    #[inline(always)]
    unsafe fn widen_row<W: Src>(src: *const W::E, k: usize, dst: *mut f32) {
        let full = k / BLOCK * BLOCK;
        let mut c = 0;
        while c < full {
            _mm512_storeu_ps(dst.add(c), W::half::<0>(src, c));
            _mm512_storeu_ps(dst.add(c + LANES), W::half::<1>(src, c));
            c += BLOCK;
        }
        if c < k {
            _mm512_storeu_ps(dst.add(c), W::half_tail::<0>(src, c, k - c));
            _mm512_storeu_ps(dst.add(c + LANES), W::half_tail::<1>(src, c, k - c));
        }
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

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 70, 33),
        (3, 129, 64),
        (5, 64, 100),
        (9, 200, 17),
        (7, 13, 48),
        (100, 37, 40),
        (1, 9, 1040),
        (200, 11, 35),
        (13, 24, 1024),
        (16, 300, 64),
        (30, 14, 70),
        (4, 31, 3072),
        // a GEMV whose tasks are long enough to prefetch their next row groups
        (1, 250, 1024),
    ];

    #[test]
    fn f32_and_bf16_match_naive_at_odd_shapes() {
        for &(n, m, k) in SHAPES {
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

    #[test]
    fn every_output_follows_the_canonical_order_bit_for_bit() {
        // Whatever n (GEMV, one tile, several tiles and chunks) and dtype, y[t, j] has the bits of the
        // canonical order: so a row gets the same result alone and in any batch.
        // Every kernel family this CPU runs, forced in turn.
        for kernel in [ExactKernel::Avx512, ExactKernel::Avx2, ExactKernel::Portable] {
            if !kernel.runs_here() {
                println!("SKIP ({}: this CPU cannot run it)", kernel.name());
                continue;
            }
            canonical_bits_on(kernel);
        }
    }

    fn canonical_bits_on(kernel: ExactKernel) {
        for &(n, m, k) in SHAPES {
            let x = pseudo(n * k, 3);
            let wf = pseudo(m * k, 4);
            let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
            let check = |w: &WeightMatrix, dot: &dyn Fn(usize, &[f32]) -> f32| {
                let mut y = vec![0f32; n * m];
                matmul_on(kernel, &x, n, w, &mut y);
                for t in 0..n {
                    let xt = &x[t * k..(t + 1) * k];
                    for j in 0..m {
                        let want = dot(j, xt);
                        assert_eq!(y[t * m + j].to_bits(), want.to_bits(), "{kernel:?} n={n} m={m} k={k} t={t} j={j}");
                    }
                    let mut y1 = vec![0f32; m];
                    matmul_on(kernel, xt, 1, w, &mut y1);
                    assert_eq!(&y1[..], &y[t * m..(t + 1) * m], "n={n} m={m} k={k} t={t} alone");
                }
            };
            check(&WeightMatrix::f32(m, k, wf.clone()), &|j, xt| dot_canonical(&wf[j * k..(j + 1) * k], xt));
            check(&WeightMatrix::bf16(m, k, wb.clone()), &|j, xt| dot_canonical(&wb[j * k..(j + 1) * k], xt));
        }
    }
}
