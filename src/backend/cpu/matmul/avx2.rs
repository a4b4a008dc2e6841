//! The kernels of [`super`] for x86 CPUs with AVX2 + FMA and no AVX-512 (e.g. AMD Zen 2/3, Intel
//! client cores), in two orders:
//! - exact (`SPLIT = true`): the canonical order of the module docs, bit for bit. Each 16-lane
//!   accumulator is two 8-lane registers, `lo` (lanes 0–7) and `hi` (lanes 8–15); a 32-block is read as
//!   four 8-wide chunks `q = 0..4`, chunk `q` updating `lo` (q even) or `hi` (q odd), so every lane adds
//!   its step-0 element before its step-1 element, then the [`super::reduce16`] tree. `_mm256_fmadd_ps`
//!   rounds once, like `f32::mul_add` in [`super::dot_canonical`]: the same bits as the portable path.
//! - bf16 activations (`SPLIT = false`): one 8-lane accumulator per output (all four chunks into it, the
//!   fixed 8-lane tree at the end), so a tile holds twice the outputs in the 16 registers. The
//!   activations were rounded to bf16 by the caller, so every product is exact in f32; only the summation
//!   order differs from the canonical one. Per output the order depends on `k` alone, never on the tile
//!   or the batch: batch = single holds bit for bit.
//!
//! Tiles (16 ymm registers): exact 3 rows × 2 tokens (12 accumulator registers), bf16 activations
//! 4 rows × 3 tokens (12); the GEMV (one token) runs 4 rows at a time with the next group prefetched.
//! Partial last blocks are copied into a zero-padded 32-element buffer (missing elements add exact zeros,
//! as on the AVX-512 path).

use std::arch::x86_64::*;

use super::{give_back, take, Elem, OutPtr, BLOCK, SMALL_N, TOKEN_CHUNK, WIDE};
use crate::backend::cpu::cache_size::super_block_bytes;

/// Rows of the GEMV step.
const GEMV_ROWS: usize = 4;

/// How a kernel reads one operand row: chunk `Q` (0..4) of the 32-block at element `c`, as the 8 lanes
/// that accumulator half `Q & 1` adds in step `Q >> 1` of the canonical order.
trait Src: Copy {
    type E: Elem;
    /// Full block.
    unsafe fn chunk<const Q: usize>(p: *const Self::E, c: usize) -> __m256;
    /// A last block holding only `len` (< 32) elements; the missing ones read as zero.
    #[inline(always)]
    unsafe fn chunk_tail<const Q: usize>(p: *const Self::E, c: usize, len: usize) -> __m256 {
        let mut buf = [Self::E::default(); BLOCK];
        std::ptr::copy_nonoverlapping(p.add(c), buf.as_mut_ptr(), len);
        Self::chunk::<Q>(buf.as_ptr(), 0)
    }
}

/// bf16 weights straight from memory, widened in registers: the even elements of each 32-bit pair by a
/// shift, the odd ones by a mask (both exact); chunks 2 and 3 reload the 64 bytes chunks 0 and 1 read
/// (an L1 hit).
#[derive(Clone, Copy)]
struct Bf16Raw;
impl Src for Bf16Raw {
    type E = half::bf16;
    #[inline(always)]
    unsafe fn chunk<const Q: usize>(p: *const half::bf16, c: usize) -> __m256 {
        let raw = _mm256_loadu_si256(p.add(c + (Q & 1) * 16) as *const __m256i);
        if Q < 2 {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(raw))
        } else {
            _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(0xFFFF_0000u32 as i32)))
        }
    }
}

/// f32 rows whose lanes run over consecutive k: f32 weights and the activations they multiply.
#[derive(Clone, Copy)]
struct F32Raw;
impl Src for F32Raw {
    type E = f32;
    #[inline(always)]
    unsafe fn chunk<const Q: usize>(p: *const f32, c: usize) -> __m256 {
        _mm256_loadu_ps(p.add(c + 8 * Q))
    }
}

/// f32 rows already in canonical lane order and zero padded to whole blocks (the even/odd-permuted
/// activations of bf16 weights, the GEMM's widened weights): plain loads, a last block reads its padding.
#[derive(Clone, Copy)]
struct Laid;
impl Src for Laid {
    type E = f32;
    #[inline(always)]
    unsafe fn chunk<const Q: usize>(p: *const f32, c: usize) -> __m256 {
        _mm256_loadu_ps(p.add(c + 8 * Q))
    }
    #[inline(always)]
    unsafe fn chunk_tail<const Q: usize>(p: *const f32, c: usize, _len: usize) -> __m256 {
        _mm256_loadu_ps(p.add(c + 8 * Q))
    }
}

/// The canonical 16-lane tree of [`super::reduce16`] over (`lo`, `hi`), in registers.
#[inline(always)]
unsafe fn reduce16(lo: __m256, hi: __m256) -> f32 {
    reduce8(_mm256_add_ps(lo, hi))
}

/// The 8-lane tree (4, 2, 1): the last three levels of [`super::reduce16`].
#[inline(always)]
unsafe fn reduce8(a: __m256) -> f32 {
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<0b01>(c, c)))
}

/// A register-tile kernel with one named variable per accumulator (LLVM allocates named locals into
/// registers; arrays of vectors in unrolled loops it rotates and spills). Generates
/// `fn $name::<W, X, SPLIT>(w, ldw, x, ldx, k, out, ldo, prefetch)` computing
/// `out[t·ldo + r] = Σ_c w[r·ldw + c]·x[t·ldx + c]` in the order of `SPLIT` (module docs); `prefetch` > 0
/// prefetches each weight row that many bytes ahead into L2.
macro_rules! tile_kernel {
    ($name:ident; xs: [$($x:ident @ $xt:literal),+];
     rows: [$($r:literal => [$(($lo:ident, $hi:ident) $ax:ident @ $at:literal),+]),+]) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<W: Src, X: Src<E = f32>, const SPLIT: bool>(
            w: *const W::E,
            ldw: usize,
            x: *const f32,
            ldx: usize,
            k: usize,
            out: *mut f32,
            ldo: usize,
            prefetch: usize,
        ) {
            $($(let mut $lo = _mm256_setzero_ps(); let mut $hi = _mm256_setzero_ps();)+)+
            let full = k / BLOCK * BLOCK;
            let mut c = 0;
            while c < full {
                if prefetch > 0 {
                    $(_mm_prefetch::<_MM_HINT_T1>((w.add($r * ldw + c) as *const i8).add(prefetch));)+
                }
                tile_kernel!(@chunk 0, W, X, w, ldw, x, ldx, c, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                if SPLIT {
                    tile_kernel!(@chunk 1, W, X, w, ldw, x, ldx, c, [$($x @ $xt),+], [$($r => [$($hi $ax),+]),+]);
                } else {
                    tile_kernel!(@chunk 1, W, X, w, ldw, x, ldx, c, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                }
                tile_kernel!(@chunk 2, W, X, w, ldw, x, ldx, c, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                if SPLIT {
                    tile_kernel!(@chunk 3, W, X, w, ldw, x, ldx, c, [$($x @ $xt),+], [$($r => [$($hi $ax),+]),+]);
                } else {
                    tile_kernel!(@chunk 3, W, X, w, ldw, x, ldx, c, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                }
                c += BLOCK;
            }
            if c < k {
                let len = k - c;
                tile_kernel!(@tail 0, W, X, w, ldw, x, ldx, c, len, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                if SPLIT {
                    tile_kernel!(@tail 1, W, X, w, ldw, x, ldx, c, len, [$($x @ $xt),+], [$($r => [$($hi $ax),+]),+]);
                } else {
                    tile_kernel!(@tail 1, W, X, w, ldw, x, ldx, c, len, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                }
                tile_kernel!(@tail 2, W, X, w, ldw, x, ldx, c, len, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                if SPLIT {
                    tile_kernel!(@tail 3, W, X, w, ldw, x, ldx, c, len, [$($x @ $xt),+], [$($r => [$($hi $ax),+]),+]);
                } else {
                    tile_kernel!(@tail 3, W, X, w, ldw, x, ldx, c, len, [$($x @ $xt),+], [$($r => [$($lo $ax),+]),+]);
                }
            }
            $($(*out.add($at * ldo + $r) = if SPLIT { reduce16($lo, $hi) } else { reduce8($lo) };)+)+
        }
    };
    (@chunk $q:literal, $W:ident, $X:ident, $w:ident, $ldw:ident, $xp:ident, $ldx:ident, $c:ident,
     [$($x:ident @ $xt:literal),+], [$($r:literal => [$($a:ident $ax:ident),+]),+]) => {
        $(let $x = $X::chunk::<$q>($xp.add($xt * $ldx), $c);)+
        $({
            let wv = $W::chunk::<$q>($w.add($r * $ldw), $c);
            $($a = _mm256_fmadd_ps(wv, $ax, $a);)+
        })+
    };
    (@tail $q:literal, $W:ident, $X:ident, $w:ident, $ldw:ident, $xp:ident, $ldx:ident, $c:ident, $len:ident,
     [$($x:ident @ $xt:literal),+], [$($r:literal => [$($a:ident $ax:ident),+]),+]) => {
        $(let $x = $X::chunk_tail::<$q>($xp.add($xt * $ldx), $c, $len);)+
        $({
            let wv = $W::chunk_tail::<$q>($w.add($r * $ldw), $c, $len);
            $($a = _mm256_fmadd_ps(wv, $ax, $a);)+
        })+
    };
}

// bf16-activation GEMM tile: 4 rows × 3 tokens.
tile_kernel!(t4x3; xs: [x0 @ 0, x1 @ 1, x2 @ 2]; rows: [
    0 => [(a00, b00) x0 @ 0, (a01, b01) x1 @ 1, (a02, b02) x2 @ 2],
    1 => [(a10, b10) x0 @ 0, (a11, b11) x1 @ 1, (a12, b12) x2 @ 2],
    2 => [(a20, b20) x0 @ 0, (a21, b21) x1 @ 1, (a22, b22) x2 @ 2],
    3 => [(a30, b30) x0 @ 0, (a31, b31) x1 @ 1, (a32, b32) x2 @ 2]
]);
tile_kernel!(t4x2; xs: [x0 @ 0, x1 @ 1]; rows: [
    0 => [(a00, b00) x0 @ 0, (a01, b01) x1 @ 1],
    1 => [(a10, b10) x0 @ 0, (a11, b11) x1 @ 1],
    2 => [(a20, b20) x0 @ 0, (a21, b21) x1 @ 1],
    3 => [(a30, b30) x0 @ 0, (a31, b31) x1 @ 1]
]);
// GEMV (both orders) and the 4-row edge of the bf16-activation tile.
tile_kernel!(t4x1; xs: [x0 @ 0]; rows: [
    0 => [(a0, b0) x0 @ 0], 1 => [(a1, b1) x0 @ 0], 2 => [(a2, b2) x0 @ 0], 3 => [(a3, b3) x0 @ 0]
]);
// Exact GEMM tile: 3 rows × 2 tokens, and its edges.
tile_kernel!(t3x2; xs: [x0 @ 0, x1 @ 1]; rows: [
    0 => [(a00, b00) x0 @ 0, (a01, b01) x1 @ 1],
    1 => [(a10, b10) x0 @ 0, (a11, b11) x1 @ 1],
    2 => [(a20, b20) x0 @ 0, (a21, b21) x1 @ 1]
]);
tile_kernel!(t3x1; xs: [x0 @ 0]; rows: [0 => [(a0, b0) x0 @ 0], 1 => [(a1, b1) x0 @ 0], 2 => [(a2, b2) x0 @ 0]]);
// One row against 1–3 tokens (row edges of both tiles).
tile_kernel!(t1x3; xs: [x0 @ 0, x1 @ 1, x2 @ 2]; rows: [0 => [(a0, b0) x0 @ 0, (a1, b1) x1 @ 1, (a2, b2) x2 @ 2]]);
tile_kernel!(t1x2; xs: [x0 @ 0, x1 @ 1]; rows: [0 => [(a0, b0) x0 @ 0, (a1, b1) x1 @ 1]]);
tile_kernel!(t1x1; xs: [x0 @ 0]; rows: [0 => [(a0, b0) x0 @ 0]]);

/// The register tile of each order: (rows, tokens).
const fn tile_shape(split: bool) -> (usize, usize) {
    if split {
        (3, 2)
    } else {
        (4, 3)
    }
}

/// `tt` (1..=tile tokens) tokens against a full tile of rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_full<W: Src, X: Src<E = f32>, const SPLIT: bool>(
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
    if SPLIT {
        match tt {
            2 => t3x2::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, pf),
            _ => t3x1::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, pf),
        }
    } else {
        match tt {
            3 => t4x3::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, pf),
            2 => t4x2::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, pf),
            _ => t4x1::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, pf),
        }
    }
}

/// `tt` (1..=3) tokens against one row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows1<W: Src, X: Src<E = f32>, const SPLIT: bool>(
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
        3 => t1x3::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, 0),
        2 => t1x2::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, 0),
        _ => t1x1::<W, X, SPLIT>(w, ldw, x, ldx, k, out, m, 0),
    }
}

/// Output rows `rows` for all n tokens in the order of `SPLIT`: `x` is `[n, ldx]` (even/odd-permuted,
/// `ldx` ≥ k rounded up to 32 and zero padded, for bf16 weights), `w` is `[m, k]`, `out` `[n, m]`.
///
/// # Safety
/// The CPU must have AVX2 and FMA; columns `rows` of `out` are the caller's alone; shapes as above.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block<E: Elem, const SPLIT: bool>(
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
        typed::<Bf16Raw, Laid, SPLIT>(x.as_ptr(), ldx, n, k, m, w.as_ptr() as *const half::bf16, rows, out)
    } else {
        typed::<F32Raw, F32Raw, SPLIT>(x.as_ptr(), ldx, n, k, m, w.as_ptr() as *const f32, rows, out)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn typed<W: Src, X: Src<E = f32>, const SPLIT: bool>(
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
    let (tr, tk) = tile_shape(SPLIT);
    if n == 1 {
        // GEMV: GEMV_ROWS rows per step (prefetching the next group), then single rows.
        let pf = GEMV_ROWS * k * esz;
        let mut j = rows.start;
        while j + GEMV_ROWS <= rows.end {
            let ahead = if j + 2 * GEMV_ROWS <= rows.end { pf } else { 0 };
            t4x1::<W, X, SPLIT>(wp.add(j * k), k, xp, ldx, k, op.add(j), m, ahead);
            j += GEMV_ROWS;
        }
        while j < rows.end {
            t1x1::<W, X, SPLIT>(wp.add(j * k), k, xp, ldx, k, op.add(j), m, 0);
            j += 1;
        }
        return;
    }
    if n <= SMALL_N {
        // Few tokens (batched decode): each row block is read from memory once (the next one
        // prefetched) and stays in L1 for all token tiles, widened in registers per tile.
        let pf = tr * k * esz;
        let mut j = rows.start;
        while j < rows.end {
            let full = j + tr <= rows.end;
            let ahead = if j + 2 * tr <= rows.end { pf } else { 0 };
            let mut t = 0;
            while t < n {
                let tt = (n - t).min(tk);
                let (xr, ot) = (xp.add(t * ldx), op.add(t * m + j));
                if full {
                    let pf = if t == 0 { ahead } else { 0 };
                    rows_full::<W, X, SPLIT>(wp.add(j * k), k, xr, ldx, k, tt, ot, m, pf);
                } else {
                    rows1::<W, X, SPLIT>(wp.add(j * k), k, xr, ldx, k, tt, ot, m);
                }
                t += tt;
            }
            j += if full { tr } else { 1 };
        }
        return;
    }
    // GEMM (prefill): widen a super-block of rows once into a per-thread f32 buffer (canonical lane
    // order, padded stride), then for each token tile (its activations in L1) stream the super-block's
    // row blocks from L2.
    let kp = k.div_ceil(BLOCK) * BLOCK + 8;
    let sb_rows = (super_block_bytes() / (kp * 4)).max(tr) / tr * tr;
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
            let full = rb / tr * tr;
            for r in 0..full {
                widen_row::<W>(wp.add((j0 + r) * k), k, wb.add(r * kp));
            }
            let mut t = 0;
            while t < nt {
                let tt = (nt - t).min(tk);
                let (xr, ot) = (xc.add(t * ldx), oc.add(t * m + j0));
                let mut r = 0;
                while r < full {
                    rows_full::<Laid, X, SPLIT>(wb.add(r * kp), kp, xr, ldx, k, tt, ot.add(r), m, 0);
                    r += tr;
                }
                for r in full..rb {
                    rows1::<W, X, SPLIT>(wp.add((j0 + r) * k), k, xr, ldx, k, tt, ot.add(r), m);
                }
                t += tt;
            }
            j0 += rb;
        }
        t0 += nt;
    }
    give_back(&WIDE, wide);
}

/// One weight row widened into canonical lane order (chunk q of a block at offset 8q), zero padded to
/// whole blocks: [`Laid`] reads it back chunk for chunk.
#[inline(always)]
unsafe fn widen_row<W: Src>(src: *const W::E, k: usize, dst: *mut f32) {
    let full = k / BLOCK * BLOCK;
    let mut c = 0;
    while c < full {
        _mm256_storeu_ps(dst.add(c), W::chunk::<0>(src, c));
        _mm256_storeu_ps(dst.add(c + 8), W::chunk::<1>(src, c));
        _mm256_storeu_ps(dst.add(c + 16), W::chunk::<2>(src, c));
        _mm256_storeu_ps(dst.add(c + 24), W::chunk::<3>(src, c));
        c += BLOCK;
    }
    if c < k {
        let len = k - c;
        _mm256_storeu_ps(dst.add(c), W::chunk_tail::<0>(src, c, len));
        _mm256_storeu_ps(dst.add(c + 8), W::chunk_tail::<1>(src, c, len));
        _mm256_storeu_ps(dst.add(c + 16), W::chunk_tail::<2>(src, c, len));
        _mm256_storeu_ps(dst.add(c + 24), W::chunk_tail::<3>(src, c, len));
    }
}
