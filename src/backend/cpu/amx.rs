//! `y = x · Wᵀ` on Intel AMX tiles for bf16 weights, with the activations ROUNDED TO BF16 (round to
//! nearest even) and f32 accumulation: the fast prefill path of [`super::matmul::Precision::Bf16Activations`].
//! This is what transformers and llama.cpp do with bf16 weights on this CPU; it is not the exact f32 path
//! (relative error of each product ≈ 2⁻⁹ from the rounded activation), so the engine uses it only where it
//! is asked to (prefill of bf16-weight models by default) and every other path stays exact.
//!
//! How: `TDPBF16PS` multiplies a 16×32 bf16 tile by a 32×16 bf16 tile (pairs of k interleaved, "VNNI")
//! into a 16×16 f32 tile, 16 K multiply-adds per instruction. We compute `y'[j, t] = Σ_c W[j, c]·x[t, c]`:
//! - A tiles are 16 weight rows × 32 k. Each task copies 32 weight rows at a time into a "panel" of
//!   contiguous 1 KiB tiles (the next panel's rows are prefetched into L2 meanwhile); loading a tile
//!   straight from the row-major weights (16 lines a row apart) measured 2-3× slower: the rows fall into
//!   two L1 sets and every line is refetched from L2 for every token pair;
//! - B tiles are 16 k-pairs × 16 tokens, built once per call from x (round to bf16, pairs transposed in
//!   registers), token groups spread over the pool;
//! - per 32 rows × 32 tokens, four f32 accumulator tiles stay in tile registers over the whole k loop,
//!   then are stored and written to `out` transposed (16×16 in registers, one row store per token);
//! - both tile buffers start on a 64-byte boundary: an unaligned tile row spans two cache lines
//!   (measured 1.5× slower).
//!
//! Tile registers: tmm0–3 accumulators (rows 0–15 / 16–31 × tokens 0–15 / 16–31), tmm4–5 weights,
//! tmm6–7 activations. Each task configures the tiles (`LDTILECFG`) and releases them (`TILERELEASE`).
//!
//! Requirements, else [`matmul_bf16`] returns false and the caller takes the exact path: a CPU with
//! AMX-BF16 (CPUID.7.0:EDX[22] and [24]), Linux permission for the tile data state (requested once with
//! `arch_prctl(ARCH_REQ_XCOMP_PERM)`), bf16 weights, `k` a multiple of 32.
//!
//! A token's outputs depend only on its own activations (each accumulator element sums its own products),
//! so a row's result does not depend on the other rows of the call: batch = single still holds.

use std::cell::RefCell;
use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

use crate::model::matrix::{WeightData, WeightMatrix};

/// Rows per tile, tokens per tile, k per tile.
const TILE: usize = 16;
const KB: usize = 32;
/// Weight rows per task step (two A tiles) and tokens per step (two B tiles).
const ROWS: usize = 2 * TILE;
const TOKENS: usize = 2 * TILE;
/// Contiguous row ranges per pool thread.
const TASKS_PER_THREAD: usize = 4;
/// k-blocks ahead whose weight tile rows are prefetched into L1 when tiles are read in place.
const PF_BLOCKS: usize = 2;
/// Packing the activations goes parallel from this many 16×32 blocks (below it a fork-join costs more).
const PACK_PAR_BLOCKS: usize = 256;

/// Whether AMX-BF16 is usable by this process (checked and enabled once).
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(enable)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn enable() -> bool {
    // SAFETY: CPUID leaf 7 exists on every x86_64 CPU this crate runs on (it is safe to call in newer Rust).
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    if !(amx_bf16 && amx_tile && std::arch::is_x86_feature_detected!("avx512f")) {
        return false;
    }
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    extern "C" {
        fn syscall(number: i64, ...) -> i64;
    }
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only asks the kernel to let this process use the AMX tile
    // state (it grows the signal frame); it touches no memory of ours.
    unsafe { syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn enable() -> bool {
    false
}

thread_local! {
    // The activations as B tiles, reused across calls (taken out while in use).
    static PACKED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    // A task's 32 weight rows as contiguous A tiles (reused across tasks and calls).
    static PANEL: RefCell<Vec<bf16>> = const { RefCell::new(Vec::new()) };
}

/// A raw output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of columns of `out`; see `matmul_bf16`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[t, j] = Σ_c bf16(x[t, c]) · w[j, c]` (f32 accumulation) on AMX; returns false, touching nothing,
/// when this path does not apply (see the module docs).
pub fn matmul_bf16(x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) -> bool {
    let (m, k) = (w.rows, w.cols);
    let WeightData::Bf16(wd) = &w.data else { return false };
    if n == 0 || m == 0 || !k.is_multiple_of(KB) || !available() {
        return false;
    }
    assert_eq!(x.len(), n * k, "matmul_bf16: x is not [n, k]");
    assert_eq!(out.len(), n * m, "matmul_bf16: out is not [n, m]");
    let kb = k / KB;
    // Token groups of 16, an even number of them (a missing group is zeros).
    let groups = n.div_ceil(TOKENS) * 2;
    let mut packed = PACKED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let len = groups * kb * TILE * TILE;
    let packed_tiles = aligned(&mut packed, len);
    // The padding group (an odd number of token groups) must read as zeros; pack writes the others.
    packed_tiles[n.div_ceil(TILE) * kb * TILE * TILE..].fill(0);
    pack(x, n, k, packed_tiles);
    let packed_tiles: &[u32] = packed_tiles;
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks = (rayon::current_num_threads() * TASKS_PER_THREAD).max(1);
    let per = m.div_ceil(tasks).div_ceil(ROWS).max(1) * ROWS;
    let tasks = m.div_ceil(per);
    let body = |t: usize| {
        let rows = t * per..((t + 1) * per).min(m);
        // SAFETY: AMX was enabled (available()); the task owns columns `rows` of out; shapes were checked.
        unsafe { task(wd, k, packed_tiles, groups, n, m, rows, ptr) }
    };
    if tasks == 1 {
        body(0);
    } else {
        super::regions::enter();
        (0..tasks).into_par_iter().for_each(body);
    }
    PACKED.with(|c| *c.borrow_mut() = packed);
    true
}

/// The first `len` elements of `v` from a 64-byte boundary on (grown as needed; the contents are
/// whatever the last use left): every tile row then is exactly one cache line (an unaligned 64-byte row
/// touches two, halving the load rate).
fn aligned<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    let pad = 64 / std::mem::size_of::<T>();
    if v.len() < len + pad {
        v.resize(len + pad, T::default());
    }
    let off = v.as_ptr().align_offset(64).min(pad);
    &mut v[off..off + len]
}

/// B tiles: `packed[((g·kb + cb)·16 + p)·16 + t]` = the bf16 pair (x[16g + t, 32cb + 2p], x[.., + 1]).
fn pack(x: &[f32], n: usize, k: usize, packed: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the feature was just detected; the shapes are the caller's (checked there).
        return unsafe { pack_avx512(x, n, k, packed) };
    }
    let kb = k / KB;
    for (tok, row) in x.chunks_exact(k).enumerate().take(n) {
        let (g, t) = (tok / TILE, tok % TILE);
        for cb in 0..kb {
            let base = ((g * kb + cb) * TILE) * TILE + t;
            let src = &row[cb * KB..(cb + 1) * KB];
            for p in 0..TILE {
                let lo = bf16::from_f32(src[2 * p]).to_bits() as u32;
                let hi = bf16::from_f32(src[2 * p + 1]).to_bits() as u32;
                packed[base + p * TILE] = lo | (hi << 16);
            }
        }
    }
}

/// [`pack`] with `VCVTNE2PS2BF16` (round to nearest even, as `bf16::from_f32` for every finite input)
/// converting 32 floats per instruction (16 pairs of one token), then the 16×16 block of pairs transposed
/// in registers into the tile. Token groups are spread over the pool (each writes its own tiles).
#[cfg(target_arch = "x86_64")]
unsafe fn pack_avx512(x: &[f32], n: usize, k: usize, packed: &mut [u32]) {
    let kb = k / KB;
    let groups = n.div_ceil(TILE);
    let per_group = kb * TILE * TILE;
    let body = |(g, dst): (usize, &mut [u32])| {
        // SAFETY: the caller detected avx512bf16; group g's tokens lie inside x ([n, k]).
        unsafe { pack_group_avx512(x, n, k, g, dst) }
    };
    let chunks = packed[..groups * per_group].par_chunks_exact_mut(per_group).enumerate();
    if groups * kb >= PACK_PAR_BLOCKS {
        super::regions::enter();
        chunks.for_each(body);
    } else {
        chunks.with_min_len(usize::MAX).for_each(body);
    }
}

/// Token group `g` of [`pack_avx512`] into `dst` (`[kb][16 pairs][16 tokens]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_group_avx512(x: &[f32], n: usize, k: usize, g: usize, dst: &mut [u32]) {
    use std::arch::x86_64::*;
    let kb = k / KB;
    let rows = (n - g * TILE).min(TILE);
    for cb in 0..kb {
        let mut r = [_mm512_setzero_ps(); TILE];
        for (t, v) in r.iter_mut().enumerate().take(rows) {
            let src = x.as_ptr().add((g * TILE + t) * k + cb * KB);
            let pairs = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
            *v = std::mem::transmute::<__m512bh, __m512>(pairs);
        }
        let t = transpose16(r);
        let d = dst.as_mut_ptr().add(cb * TILE * TILE);
        for (p, v) in t.iter().enumerate() {
            _mm512_storeu_ps(d.add(p * TILE) as *mut f32, *v);
        }
    }
}

/// The 64-byte tile configuration: palette 1, tiles 0–7 all 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    // Palette 1 has 8 tiles; the entries of the others must be zero.
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Output rows `rows` for all tokens.
///
/// # Safety
/// AMX must be enabled for the process; `w` is `[m, k]`, `packed` holds `groups` token groups, `out`
/// is `[n, m]` and columns `rows` are this task's alone.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn task(
    w: &[bf16],
    k: usize,
    packed: &[u32],
    groups: usize,
    n: usize,
    m: usize,
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    use std::arch::asm;
    let kb = k / KB;
    let mut acc = Acc([0f32; 4 * TILE * TILE]);
    let mut panel_buf = PANEL.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let panel = aligned(&mut panel_buf, ROWS * k);
    asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
    let mut j = rows.start;
    while j < rows.end {
        let valid = (rows.end - j).min(ROWS);
        // 1. the 32 weight rows as contiguous A tiles: panel[(cb·32 + r)·32 + c] = w[j + r, 32cb + c];
        //    with one token pair (batched decode) the tiles are used once: read them in place instead
        //    (stride one weight row), prefetched PF_BLOCKS k-blocks ahead
        let direct = groups == 2 && valid == ROWS;
        let (a, lda) = if direct {
            (w.as_ptr().add(j * k), k * 2)
        } else {
            pack_panel(w, k, j, valid, panel);
            (panel.as_ptr(), KB * 2)
        };
        // A tile (cb, half) starts at a_at(cb, half) elements
        let a_at =
            |cb: usize, half: usize| if direct { half * TILE * k + cb * KB } else { (cb * ROWS + half * TILE) * KB };
        // The next panel's weight rows are prefetched into L2 during this one's k loops, so its packing
        // reads from L2 instead of waiting on memory: `pf_lines` cache lines per k-block step.
        let next = j + valid;
        let next_rows = (rows.end - next.min(rows.end)).min(ROWS);
        let next_lines = next_rows * k * 2 / 64;
        let steps = (groups / 2) * kb;
        let pf_lines = next_lines.div_ceil(steps.max(1));
        let next_base = w.as_ptr().add(next.min(rows.end) * k) as *const i8;
        let mut pf_at = 0usize;
        let mut g = 0;
        while g < groups {
            let b0 = packed.as_ptr().add(g * kb * TILE * TILE);
            let b1 = packed.as_ptr().add((g + 1) * kb * TILE * TILE);
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
            // 2. tmm4/5: weight rows j..j+16 / j+16..j+32 at k = 32cb; tmm6/7: token groups g / g+1 at
            //    k-block cb; every tile is 1 KiB contiguous (stride 64 bytes).
            for cb in 0..kb {
                if direct && cb + PF_BLOCKS < kb {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    for r in 0..ROWS {
                        _mm_prefetch::<_MM_HINT_T0>(a.add(r * k + (cb + PF_BLOCKS) * KB) as *const i8);
                    }
                }
                for _ in 0..pf_lines {
                    if pf_at < next_lines {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                        _mm_prefetch::<_MM_HINT_T1>(next_base.add(pf_at * 64));
                        pf_at += 1;
                    }
                }
                asm!(
                    "tileloadd tmm4, [{a0} + {lda}*1]",
                    "tileloadd tmm5, [{a1} + {lda}*1]",
                    "tileloadd tmm6, [{b0} + {ld}*1]",
                    "tileloadd tmm7, [{b1} + {ld}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.add(a_at(cb, 0)),
                    a1 = in(reg) a.add(a_at(cb, 1)),
                    lda = in(reg) lda,
                    b0 = in(reg) b0.add(cb * TILE * TILE),
                    b1 = in(reg) b1.add(cb * TILE * TILE),
                    ld = in(reg) TILE * 4,
                    options(nostack, readonly),
                );
            }
            let p = acc.0.as_mut_ptr();
            asm!(
                "tilestored [{p0} + {ld}*1], tmm0",
                "tilestored [{p1} + {ld}*1], tmm1",
                "tilestored [{p2} + {ld}*1], tmm2",
                "tilestored [{p3} + {ld}*1], tmm3",
                p0 = in(reg) p,
                p1 = in(reg) p.add(TILE * TILE),
                p2 = in(reg) p.add(2 * TILE * TILE),
                p3 = in(reg) p.add(3 * TILE * TILE),
                ld = in(reg) TILE * 4,
                options(nostack),
            );
            // 3. acc[(half_j·2 + half_t)·256 + jj·16 + tt] = y'[j + 16·half_j + jj, 16·(g + half_t) + tt]:
            //    each 16×16 block transposed in registers, one 16-wide row store per token
            for ht in 0..2 {
                let tok0 = (g + ht) * TILE;
                if tok0 >= n {
                    break;
                }
                let toks = (n - tok0).min(TILE);
                for hj in 0..2 {
                    let cols = valid.saturating_sub(hj * TILE).min(TILE);
                    if cols == 0 {
                        break;
                    }
                    let block = acc.0.as_ptr().add((hj * 2 + ht) * TILE * TILE);
                    store_transposed(block, out.0.add(tok0 * m + j + hj * TILE), m, toks, cols);
                }
            }
            g += 2;
        }
        j += valid;
    }
    asm!("tilerelease", options(nostack, nomem));
    PANEL.with(|c| *c.borrow_mut() = panel_buf);
}

/// The tile accumulators parked in memory, aligned for the transposing loads.
#[repr(C, align(64))]
struct Acc([f32; 4 * TILE * TILE]);

/// Copies weight rows `j..j + valid` (zeros past `valid`) into `panel` as A tiles:
/// `panel[(cb·32 + r)·32 + c] = w[j + r, 32cb + c]`. Rows are read front to back (one sequential stream
/// each), so the copy runs at memory speed and every tile load after it is one contiguous KiB.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_panel(w: &[bf16], k: usize, j: usize, valid: usize, panel: &mut [bf16]) {
    use std::arch::x86_64::*;
    let kb = k / KB;
    let dst = panel.as_mut_ptr();
    for r in 0..ROWS {
        if r < valid {
            let src = w.as_ptr().add((j + r) * k);
            for cb in 0..kb {
                let v = _mm512_loadu_si512(src.add(cb * KB) as *const _);
                _mm512_storeu_si512(dst.add((cb * ROWS + r) * KB) as *mut _, v);
            }
        } else {
            for cb in 0..kb {
                _mm512_storeu_si512(dst.add((cb * ROWS + r) * KB) as *mut _, _mm512_setzero_si512());
            }
        }
    }
}

/// `dst[t·ld + c] = src[c·16 + t]` for t < toks, c < cols: a 16×16 f32 block transposed in registers
/// (unpack 32-bit, unpack 64-bit, two 128-bit lane shuffles), one (masked) 16-float store per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_transposed(src: *const f32, dst: *mut f32, ld: usize, toks: usize, cols: usize) {
    use std::arch::x86_64::*;
    let mut r = [_mm512_setzero_ps(); TILE];
    for (i, v) in r.iter_mut().enumerate() {
        *v = _mm512_load_ps(src.add(i * TILE));
    }
    let t = transpose16(r);
    let mask: __mmask16 = if cols == TILE { 0xFFFF } else { ((1u32 << cols) - 1) as __mmask16 };
    for (i, v) in t.iter().enumerate().take(toks) {
        _mm512_mask_storeu_ps(dst.add(i * ld), mask, *v);
    }
}

/// Transposes the 16×16 matrix whose rows are `r`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let lo_pd = |a: __m512, b: __m512| _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
    let hi_pd = |a: __m512, b: __m512| _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
    // 1. interleave 32-bit elements of row pairs
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // 2. interleave 64-bit pairs: u[4q + s] holds column (4·lane128 + s) of rows 4q..4q+4
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        u[4 * q] = lo_pd(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = hi_pd(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = lo_pd(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = hi_pd(t[4 * q + 1], t[4 * q + 3]);
    }
    // 3. gather 128-bit lanes: rows 0..8 then 8..16
    let mut v = [_mm512_setzero_ps(); 16];
    for s in 0..4 {
        v[s] = _mm512_shuffle_f32x4::<0x88>(u[s], u[4 + s]);
        v[4 + s] = _mm512_shuffle_f32x4::<0xDD>(u[s], u[4 + s]);
        v[8 + s] = _mm512_shuffle_f32x4::<0x88>(u[8 + s], u[12 + s]);
        v[12 + s] = _mm512_shuffle_f32x4::<0xDD>(u[8 + s], u[12 + s]);
    }
    let mut o = [_mm512_setzero_ps(); 16];
    for s in 0..8 {
        o[s] = _mm512_shuffle_f32x4::<0x88>(v[s], v[8 + s]);
        o[8 + s] = _mm512_shuffle_f32x4::<0xDD>(v[s], v[8 + s]);
    }
    o
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn task(_: &[bf16], _: usize, _: &[u32], _: usize, _: usize, _: usize, _: std::ops::Range<usize>, _: OutPtr) {
    unreachable!("available() is false off x86_64")
}

/// Peak probe: `iters` rounds of 4 independent `TDPBF16PS` on register tiles (no memory traffic) on the
/// calling thread; returns the FLOPs done (None without AMX).
pub fn peak_loop(iters: usize) -> Option<f64> {
    if !available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AMX is enabled for the process; the loop touches only tile registers.
    unsafe {
        use std::arch::asm;
        asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            options(nostack, nomem)
        );
        for _ in 0..iters {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
        asm!("tilerelease", options(nostack, nomem));
    }
    Some((iters * 4 * TILE * TILE * KB * 2) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_bf16_rounded_reference_and_is_batch_invariant() {
        if !available() {
            eprintln!("SKIP: no AMX-BF16 on this CPU");
            return;
        }
        let val = |i: usize, s: usize| (((i * 2654435761 + s) >> 7) % 2001) as f32 / 1000.0 - 1.0;
        for &(n, m, k) in &[(1, 32, 32), (5, 40, 64), (33, 70, 96), (16, 32, 1024), (70, 100, 160)] {
            let x: Vec<f32> = (0..n * k).map(|i| val(i, 1)).collect();
            let wv: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32(val(i, 2))).collect();
            let w = WeightMatrix::bf16(m, k, wv.clone());
            let mut y = vec![0f32; n * m];
            assert!(matmul_bf16(&x, n, &w, &mut y));
            for t in 0..n {
                for j in 0..m {
                    let want: f64 = (0..k)
                        .map(|c| bf16::from_f32(x[t * k + c]).to_f32() as f64 * wv[j * k + c].to_f32() as f64)
                        .sum();
                    let got = y[t * m + j] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "n={n} m={m} k={k} t={t} j={j}");
                }
                let mut y1 = vec![0f32; m];
                assert!(matmul_bf16(&x[t * k..(t + 1) * k], 1, &w, &mut y1));
                assert_eq!(&y1[..], &y[t * m..(t + 1) * m], "n={n} m={m} k={k} t={t}: alone ≠ in the batch");
            }
        }
        // Not applicable: f32 weights, k not a multiple of 32.
        let mut y = vec![0f32; 4];
        assert!(!matmul_bf16(&[1.0; 8], 1, &WeightMatrix::f32(4, 8, vec![1.0; 32]), &mut y));
        assert!(!matmul_bf16(&[1.0; 8], 1, &WeightMatrix::bf16(4, 8, vec![bf16::ONE; 32]), &mut y));
    }

    #[test]
    fn simd_packing_rounds_like_bf16_from_f32() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            let (n, k) = (21usize, 64usize);
            // Values with every kind of tail bits, including exact ties.
            let x: Vec<f32> = (0..n * k)
                .map(|i| f32::from_bits(0x3F80_0000 + (i as u32).wrapping_mul(2_654_435_761) % 0x0080_0000))
                .collect();
            let groups = n.div_ceil(TOKENS) * 2;
            let mut a = vec![0u32; groups * (k / KB) * TILE * TILE];
            let mut b = a.clone();
            let kb = k / KB;
            for (tok, row) in x.chunks_exact(k).enumerate() {
                let (g, t) = (tok / TILE, tok % TILE);
                for cb in 0..kb {
                    for p in 0..TILE {
                        let lo = bf16::from_f32(row[cb * KB + 2 * p]).to_bits() as u32;
                        let hi = bf16::from_f32(row[cb * KB + 2 * p + 1]).to_bits() as u32;
                        a[((g * kb + cb) * TILE + p) * TILE + t] = lo | (hi << 16);
                    }
                }
            }
            pack(&x, n, k, &mut b);
            assert_eq!(a, b);
        }
    }
}
