//! The GPU's own ceilings for `latentmas bench --device cuda`: HBM copy bandwidth (a device-to-device copy
//! of 1 GiB, counted as bytes read + bytes written) and peak dense bf16 GEMM throughput (cuBLAS GemmEx
//! 8192³, f32 accumulation). Timed on the host around the queued work and a stream synchronisation, so a
//! sample includes the launch latency (negligible at these sizes).

use std::time::Instant;

use super::CudaDevice;
use crate::backend::gpu::{DevBuf, Device, Gemm};
use crate::error::Result;

/// Bytes per copy: 1 GiB, far past the 50 MB L2 of an H100.
const COPY_BYTES: usize = 1 << 30;
/// Square GEMM size: 8192³ bf16 (1.1 TFLOP, ~2 ms on an H100).
const GEMM_N: usize = 8192;

/// Samples of each ceiling.
pub struct GpuCeilings {
    /// Copy bandwidth samples, GB/s (2 × bytes / seconds).
    pub copy_gbs: Vec<f64>,
    /// Dense bf16 GEMM samples, GFLOP/s.
    pub gemm_gflops: Vec<f64>,
}

/// Measures both ceilings `runs` times (after one warm-up each).
pub fn measure(dev: &mut CudaDevice, runs: usize) -> Result<GpuCeilings> {
    let runs = runs.max(1);
    let src = DevBuf::alloc(dev, COPY_BYTES)?;
    let dst = DevBuf::alloc(dev, COPY_BYTES)?;
    let mut copy_gbs = Vec::with_capacity(runs);
    for i in 0..=runs {
        let t = Instant::now();
        // SAFETY: two live, disjoint buffers of COPY_BYTES each.
        unsafe { dev.copy(dst.addr(), src.addr(), COPY_BYTES)? };
        dev.synchronize()?;
        if i > 0 {
            copy_gbs.push(2.0 * COPY_BYTES as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    drop((src, dst));
    let elems = GEMM_N * GEMM_N;
    let (a, b) = (DevBuf::alloc(dev, elems * 2)?, DevBuf::alloc(dev, elems * 2)?);
    let c = DevBuf::alloc(dev, elems * 2)?;
    let g = Gemm { x: a.addr(), w: b.addr(), out: c.addr(), n: GEMM_N, rows: GEMM_N, cols: GEMM_N, out_f32: false };
    let flops = 2.0 * (GEMM_N as f64).powi(3);
    let mut gemm_gflops = Vec::with_capacity(runs);
    for i in 0..=runs {
        let t = Instant::now();
        // SAFETY: a, b and c each hold GEMM_N² bf16 (zeros: the timing does not depend on the values).
        unsafe { dev.gemm(&g)? };
        dev.synchronize()?;
        if i > 0 {
            gemm_gflops.push(flops / t.elapsed().as_secs_f64() / 1e9);
        }
    }
    Ok(GpuCeilings { copy_gbs, gemm_gflops })
}
