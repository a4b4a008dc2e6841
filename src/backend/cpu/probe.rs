//! Machine-ceiling probes for the roofline: a STREAM-style triad and a read-only sweep (memory bandwidth),
//! and register-resident FMA loops (peak f32 and bf16 dot-product FLOP/s), on AVX-512, AVX2 or portable
//! code. Each runs on every thread of
//! the current rayon pool, so the ceilings are those of the threads the engine itself uses.
//!
//! Operations: [`triad`], [`read_sweep`], [`fma_peak`], [`bf16_dot_peak`], [`has_bf16_dot`],
//! [`bf16_dot_and_fma_rates`], [`amx_peak`].

use rayon::prelude::*;

/// Independent accumulator chains in the peak loops: FMA latency (4 cycles) × 2 ports = 8 in flight, so
/// 12 hide it with room to spare while staying inside the 32 vector registers.
const CHAINS: usize = 12;

/// `a[i] = b[i] + s·c[i]`, one contiguous chunk per pool thread (STREAM counts 12 bytes per element).
pub fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    assert!(a.len() == b.len() && b.len() == c.len(), "triad: lengths differ");
    let chunk = a.len().div_ceil(rayon::current_num_threads()).max(1);
    a.par_chunks_mut(chunk).zip(b.par_chunks(chunk).zip(c.par_chunks(chunk))).for_each(|(a, (b, c))| {
        triad_chunk(a, b, c, s);
    });
}

fn triad_chunk(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { triad_avx512(a, b, c, s) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected.
        return unsafe { triad_avx2(a, b, c, s) };
    }
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn triad_avx512(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    // Plain code compiled for AVX-512: LLVM vectorises it with 64-byte loads and stores.
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn triad_avx2(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    // Plain code compiled for AVX2: LLVM vectorises it with 32-byte loads and stores.
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

/// Sums `x` (one contiguous chunk per pool thread) with several vector accumulators: the read-only
/// bandwidth a decode step's weight stream can hope for. Returns the sum so the work is not optimised away.
pub fn read_sweep(x: &[f32]) -> f32 {
    let chunk = x.len().div_ceil(rayon::current_num_threads()).max(1);
    x.par_chunks(chunk).map(read_chunk).sum()
}

fn read_chunk(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { avx512::read_sum(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected.
        return unsafe { avx2::read_sum(x) };
    }
    // 16 independent lanes so the adds are not one serial chain.
    let mut acc = [0f32; 16];
    for c in x.chunks(16) {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum()
}

/// Runs `iters` iterations of CHAINS independent f32 FMA chains on every pool thread; returns the FLOPs
/// done in total (2 per multiply-add lane).
pub fn fma_peak(iters: usize) -> f64 {
    let per_thread: Vec<f64> = rayon::broadcast(|_| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            let sink = unsafe { avx512::fma_loop(iters) };
            std::hint::black_box(sink);
            return (iters * CHAINS * 16 * 2) as f64;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            let sink = unsafe { avx2::fma_loop(iters) };
            std::hint::black_box(sink);
            return (iters * CHAINS * 8 * 2) as f64;
        }
        let mut acc = [[1.0f32; 8]; CHAINS];
        let (m, a) = (std::hint::black_box(0.999_f32), std::hint::black_box(1e-3_f32));
        for _ in 0..iters {
            for c in acc.iter_mut() {
                for v in c.iter_mut() {
                    *v = v.mul_add(m, a);
                }
            }
        }
        std::hint::black_box(acc);
        (iters * CHAINS * 8 * 2) as f64
    });
    per_thread.iter().sum()
}

/// Whether this CPU has AVX512-BF16 (`vdpbf16ps`: bf16 pairs, f32 accumulation).
pub fn has_bf16_dot() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Like [`fma_peak`] with `vdpbf16ps` (32 bf16 products per instruction); `None` without AVX512-BF16.
pub fn bf16_dot_peak(iters: usize) -> Option<f64> {
    if !has_bf16_dot() {
        return None;
    }
    let per_thread: Vec<f64> = rayon::broadcast(|_| {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: has_bf16_dot() checked the feature.
            let sink = unsafe { avx512::bf16_dot_loop(iters) };
            std::hint::black_box(sink);
        }
        (iters * CHAINS * 32 * 2) as f64
    });
    Some(per_thread.iter().sum())
}

/// Per-thread FLOP/s of `vdpbf16ps` and of the f32 FMA, measured on the calling thread (best of 3 short
/// loops, about 1 ms each); `None` without AVX512-BF16. The two differ by CPU: on AMD Zen 4 the dot does
/// twice the FMA's multiply-adds per cycle, while some Intel parts issue it at half the FMA's rate, so
/// which family of the bf16 matmul is faster is measured, not assumed.
pub fn bf16_dot_and_fma_rates() -> Option<(f64, f64)> {
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot() {
        const ITERS: usize = 100_000;
        let best = |f: &dyn Fn() -> f32| {
            (0..3)
                .map(|_| {
                    let t = std::time::Instant::now();
                    std::hint::black_box(f());
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        // SAFETY: has_bf16_dot() checked avx512bf16 (which implies avx512f).
        let dot_s = best(&|| unsafe { avx512::bf16_dot_loop(ITERS) });
        // SAFETY: as above.
        let fma_s = best(&|| unsafe { avx512::fma_loop(ITERS) });
        let flops = |lanes: usize| (ITERS * CHAINS * lanes * 2) as f64;
        return Some((flops(32) / dot_s, flops(16) / fma_s));
    }
    None
}

/// Like [`fma_peak`] with AMX `TDPBF16PS` tiles; `None` without AMX-BF16.
pub fn amx_peak(iters: usize) -> Option<f64> {
    if !super::amx::available() {
        return None;
    }
    let per_thread: Vec<f64> = rayon::broadcast(|_| super::amx::peak_loop(iters).unwrap_or(0.0));
    Some(per_thread.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    #[target_feature(enable = "avx512f")]
    pub fn read_sum(x: &[f32]) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut blocks = x.chunks_exact(64);
        for b in &mut blocks {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: `b` holds 64 floats, so 16 at offset 16·u are in bounds.
                *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(b.as_ptr().add(16 * u)) });
            }
        }
        let tail: f32 = blocks.remainder().iter().sum();
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) + tail
    }

    #[target_feature(enable = "avx512f")]
    pub fn fma_loop(iters: usize) -> f32 {
        let m = _mm512_set1_ps(std::hint::black_box(0.999));
        let a = _mm512_set1_ps(std::hint::black_box(1e-3));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_fmadd_ps(*c, m, a);
            }
        }
        let mut s = _mm512_setzero_ps();
        for c in acc {
            s = _mm512_add_ps(s, c);
        }
        _mm512_reduce_add_ps(s)
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub fn bf16_dot_loop(iters: usize) -> f32 {
        // 0x3F80 = bf16 1.0 in every half of every lane.
        let ones: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi16(std::hint::black_box(0x3F80))) };
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm512_dpbf16_ps(*c, ones, ones);
            }
        }
        let mut s = _mm512_setzero_ps();
        for c in acc {
            s = _mm512_add_ps(s, c);
        }
        _mm512_reduce_add_ps(s)
    }
}

/// The AVX2 twins of the AVX-512 probes (8-lane registers; 16 of them, so the FMA loop's 12 chains fit).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    #[target_feature(enable = "avx2")]
    pub fn read_sum(x: &[f32]) -> f32 {
        // 8 independent accumulators over 256-byte steps: 4 cache lines in flight per iteration.
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut blocks = x.chunks_exact(64);
        for b in &mut blocks {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: `b` holds 64 floats, so 8 at offset 8·u are in bounds.
                *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(b.as_ptr().add(8 * u)) });
            }
        }
        let tail: f32 = blocks.remainder().iter().sum();
        let mut s = _mm256_setzero_ps();
        for a in acc {
            s = _mm256_add_ps(s, a);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        lanes.iter().sum::<f32>() + tail
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn fma_loop(iters: usize) -> f32 {
        let m = _mm256_set1_ps(std::hint::black_box(0.999));
        let a = _mm256_set1_ps(std::hint::black_box(1e-3));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for c in acc.iter_mut() {
                *c = _mm256_fmadd_ps(*c, m, a);
            }
        }
        let mut s = _mm256_setzero_ps();
        for c in acc {
            s = _mm256_add_ps(s, c);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        lanes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triad_and_sweep_compute_what_they_say() {
        let b: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let c = vec![2.0f32; 1000];
        let mut a = vec![0f32; 1000];
        triad(&mut a, &b, &c, 0.5);
        assert!(a.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0));
        assert_eq!(read_sweep(&a), (0..1000).map(|i| i as f32 + 1.0).sum::<f32>());
        assert!(fma_peak(10) > 0.0);
        if let Some(f) = bf16_dot_peak(10) {
            assert!(f > 0.0);
        }
    }
}
