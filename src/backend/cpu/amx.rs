//! `y = x · Wᵀ` on Intel AMX tiles for bf16 weights, with the activations ROUNDED TO BF16 (round to
//! nearest even) and f32 accumulation: the fast prefill path of [`super::matmul::Precision::Bf16Activations`].
//! This is what transformers and llama.cpp do with bf16 weights on this CPU; it is not the exact f32 path
//! (relative error of each product ≈ 2⁻⁹ from the rounded activation), so the engine uses it only where it
//! is asked to (prefill of bf16-weight models by default) and every other path stays exact.
//!
//! How: `TDPBF16PS` multiplies a 16×32 bf16 tile by a 32×16 bf16 tile (pairs of k interleaved, "VNNI")
//! into a 16×16 f32 tile, 16 K multiply-adds per instruction. We compute `y'[j, t] = Σ_c W[j, c]·x[t, c]`:
//! - A tiles are 16 weight rows × 32 k, loaded straight from the row-major weights (stride = row bytes):
//!   the big operand is never repacked;
//! - B tiles are 16 k-pairs × 16 tokens, built once per call from x (round to bf16, transpose pairs);
//! - per 32 rows × 32 tokens, four f32 accumulator tiles stay in tile registers over the whole k loop,
//!   then are stored and written to `out` transposed.
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
    packed.clear();
    packed.resize(groups * kb * TILE * TILE, 0);
    pack(x, n, k, &mut packed);
    let ptr = OutPtr(out.as_mut_ptr());
    let tasks = (rayon::current_num_threads() * TASKS_PER_THREAD).max(1);
    let per = m.div_ceil(tasks).div_ceil(ROWS).max(1) * ROWS;
    let tasks = m.div_ceil(per);
    let body = |t: usize| {
        let rows = t * per..((t + 1) * per).min(m);
        // SAFETY: AMX was enabled (available()); the task owns columns `rows` of out; shapes were checked.
        unsafe { task(wd, k, &packed, groups, n, m, rows, ptr) }
    };
    if tasks == 1 {
        body(0);
    } else {
        (0..tasks).into_par_iter().for_each(body);
    }
    PACKED.with(|c| *c.borrow_mut() = packed);
    true
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
/// converting 32 floats per instruction into a 16×16 block that is then transposed into the tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_avx512(x: &[f32], n: usize, k: usize, packed: &mut [u32]) {
    use std::arch::x86_64::*;
    let kb = k / KB;
    let mut block = [0u32; TILE * TILE];
    for g in 0..n.div_ceil(TILE) {
        let rows = (n - g * TILE).min(TILE);
        for cb in 0..kb {
            for t in 0..TILE {
                let v = if t < rows {
                    let src = x.as_ptr().add((g * TILE + t) * k + cb * KB);
                    let pairs = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
                    std::mem::transmute::<__m512bh, __m512i>(pairs)
                } else {
                    _mm512_setzero_si512()
                };
                _mm512_storeu_si512(block.as_mut_ptr().add(t * TILE) as *mut _, v);
            }
            let dst = &mut packed[(g * kb + cb) * TILE * TILE..][..TILE * TILE];
            for p in 0..TILE {
                for t in 0..TILE {
                    dst[p * TILE + t] = block[t * TILE + p];
                }
            }
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
    let mut acc = [0f32; 4 * TILE * TILE];
    // A zero-padded copy of the last rows when fewer than 32 remain.
    let mut edge: Vec<bf16> = Vec::new();
    asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
    let mut j = rows.start;
    while j < rows.end {
        let valid = (rows.end - j).min(ROWS);
        let wj = if valid == ROWS {
            w.as_ptr().add(j * k)
        } else {
            edge.clear();
            edge.extend_from_slice(&w[j * k..(j + valid) * k]);
            edge.resize(ROWS * k, bf16::ZERO);
            edge.as_ptr()
        };
        let mut g = 0;
        while g < groups {
            let b0 = packed.as_ptr().add(g * kb * TILE * TILE);
            let b1 = packed.as_ptr().add((g + 1) * kb * TILE * TILE);
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
            for cb in 0..kb {
                // tmm4/5: weight rows j..j+16 / j+16..j+32 at k = 32cb (stride: one weight row);
                // tmm6/7: token groups g / g+1 at k-block cb (stride 64 bytes).
                asm!(
                    "tileloadd tmm4, [{a0} + {lda}*1]",
                    "tileloadd tmm5, [{a1} + {lda}*1]",
                    "tileloadd tmm6, [{b0} + {ldb}*1]",
                    "tileloadd tmm7, [{b1} + {ldb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) wj.add(cb * KB),
                    a1 = in(reg) wj.add(TILE * k + cb * KB),
                    b0 = in(reg) b0.add(cb * TILE * TILE),
                    b1 = in(reg) b1.add(cb * TILE * TILE),
                    lda = in(reg) k * 2,
                    ldb = in(reg) TILE * 4,
                    options(nostack, readonly),
                );
            }
            let a = acc.as_mut_ptr();
            asm!(
                "tilestored [{p0} + {ld}*1], tmm0",
                "tilestored [{p1} + {ld}*1], tmm1",
                "tilestored [{p2} + {ld}*1], tmm2",
                "tilestored [{p3} + {ld}*1], tmm3",
                p0 = in(reg) a,
                p1 = in(reg) a.add(TILE * TILE),
                p2 = in(reg) a.add(2 * TILE * TILE),
                p3 = in(reg) a.add(3 * TILE * TILE),
                ld = in(reg) TILE * 4,
                options(nostack),
            );
            // acc[(half_j·2 + half_t)·256 + jj·16 + tt] = y'[j + 16·half_j + jj, 16·(g + half_t) + tt]
            for ht in 0..2 {
                for tt in 0..TILE {
                    let tok = (g + ht) * TILE + tt;
                    if tok >= n {
                        break;
                    }
                    let orow = out.0.add(tok * m + j);
                    for hj in 0..2 {
                        for jj in 0..TILE {
                            let r = hj * TILE + jj;
                            if r < valid {
                                *orow.add(r) = acc[(hj * 2 + ht) * TILE * TILE + jj * TILE + tt];
                            }
                        }
                    }
                }
            }
            g += 2;
        }
        j += valid;
    }
    asm!("tilerelease", options(nostack, nomem));
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
