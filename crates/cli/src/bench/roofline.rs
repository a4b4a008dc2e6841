//! The machine's own ceilings, measured on the engine's threads: memory bandwidth (a read-only stream,
//! and a STREAM triad for reference) and peak FLOP/s (register-resident f32 FMAs, and AVX512-BF16 dot
//! products where the CPU has them). Decode is judged against the best read-only stream of the runs (a
//! decode step only reads its weights), prefill against the peak of the arithmetic it uses.

use serde::{Deserialize, Serialize};

use super::stats::{time_runs, Stats};
use latentmas::backend::cpu::probe;

/// Floats per triad array: 3 × 256 MiB, well past any L3 share (and comparable to a decode step's
/// 1.2 GB weight stream), so the triad measures DRAM, not cache.
pub const TRIAD_FLOATS: usize = 64 << 20;
/// Iterations of the peak loops: ≈ 0.1 s per run at 3 GHz.
pub const PEAK_ITERS: usize = 20_000_000;

/// Measured ceilings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ceilings {
    /// STREAM triad, GB/s (12 bytes per element: two reads and a write).
    pub triad_gbs: Stats,
    /// Read-only sweep, GB/s.
    pub read_gbs: Stats,
    /// f32 FMA peak, GFLOP/s.
    pub f32_gflops: Stats,
    /// AVX512-BF16 dot-product peak, GFLOP/s (None where the CPU lacks it).
    pub bf16_gflops: Option<Stats>,
    /// AMX bf16 tile peak, GFLOP/s (None where the CPU lacks it): the ceiling of the fast prefill.
    pub amx_gflops: Option<Stats>,
}

/// Triad bandwidth in GB/s over `floats`-element arrays.
pub fn triad_gbs(floats: usize, runs: usize) -> Stats {
    // Touch every page before timing (first-touch page faults are not bandwidth).
    let mut a = vec![1f32; floats];
    let b = vec![2f32; floats];
    let c = vec![3f32; floats];
    let bytes = 12.0 * floats as f64;
    time_runs(1, runs, || probe::triad(&mut a, &b, &c, 0.5)).map(|s| bytes / s / 1e9)
}

/// Read-only bandwidth in GB/s over `floats` elements.
pub fn read_gbs(floats: usize, runs: usize) -> Stats {
    let x = vec![1f32; floats];
    let bytes = 4.0 * floats as f64;
    time_runs(1, runs, || {
        std::hint::black_box(probe::read_sweep(&x));
    })
    .map(|s| bytes / s / 1e9)
}

/// f32 FMA peak in GFLOP/s on all pool threads.
pub fn f32_gflops(iters: usize, runs: usize) -> Stats {
    let flops = probe::fma_peak(1);
    let per_iter = flops;
    time_runs(1, runs, || {
        probe::fma_peak(iters);
    })
    .map(|s| per_iter * iters as f64 / s / 1e9)
}

/// AVX512-BF16 dot-product peak in GFLOP/s, if the CPU has it.
pub fn bf16_gflops(iters: usize, runs: usize) -> Option<Stats> {
    let per_iter = probe::bf16_dot_peak(1)?;
    Some(
        time_runs(1, runs, || {
            probe::bf16_dot_peak(iters);
        })
        .map(|s| per_iter * iters as f64 / s / 1e9),
    )
}

/// AMX bf16 tile peak in GFLOP/s, if the CPU has it.
pub fn amx_gflops(iters: usize, runs: usize) -> Option<Stats> {
    let per_iter = probe::amx_peak(1)?;
    Some(
        time_runs(1, runs, || {
            probe::amx_peak(iters);
        })
        .map(|s| per_iter * iters as f64 / s / 1e9),
    )
}

/// Every ceiling, `runs` times each.
pub fn measure(runs: usize) -> Ceilings {
    Ceilings {
        triad_gbs: triad_gbs(TRIAD_FLOATS, runs),
        // The decode ceiling is the best of these runs: at least 5 of them.
        read_gbs: read_gbs(TRIAD_FLOATS, runs.max(5)),
        f32_gflops: f32_gflops(PEAK_ITERS, runs),
        bf16_gflops: bf16_gflops(PEAK_ITERS, runs),
        // One TDPBF16PS round is 4 × 16 cycles: 1/16 of the FMA loop's iterations take as long.
        amx_gflops: amx_gflops(PEAK_ITERS / 16, runs),
    }
}
