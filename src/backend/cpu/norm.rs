//! RMSNorm over the last dimension, as Qwen3 computes it: `y = w · (x / sqrt(mean(x²) + eps))`, f32.
//! `add_rms_norm` is the fused "residual += delta; y = rmsnorm(residual)" that the pre-norm decoder does
//! between its two halves (and the CUDA kernel fuses the same way).

use rayon::prelude::*;

/// Rows at or below this many elements in total are normalised on the calling thread (decode sizes).
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// Normalises one row.
#[inline]
pub fn rms_norm_row(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * r);
    }
}

/// `out[i] = rmsnorm(x[i]) · weight` for every row i of `x [n, d]`, d = weight.len().
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    assert!(x.len().is_multiple_of(d) && out.len() == x.len(), "rms_norm: shapes");
    if x.len() <= PARALLEL_MIN_ELEMS {
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            rms_norm_row(xr, weight, eps, or);
        }
    } else {
        super::regions::enter();
        x.par_chunks_exact(d).zip(out.par_chunks_exact_mut(d)).for_each(|(xr, or)| rms_norm_row(xr, weight, eps, or));
    }
}

/// `residual += delta; out = rmsnorm(residual) · weight`, row by row.
pub fn add_rms_norm(residual: &mut [f32], delta: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    assert!(residual.len().is_multiple_of(d) && delta.len() == residual.len() && out.len() == residual.len());
    let body = |(r, (dl, o)): (&mut [f32], (&[f32], &mut [f32]))| {
        for (a, b) in r.iter_mut().zip(dl) {
            *a += b;
        }
        rms_norm_row(r, weight, eps, o);
    };
    if residual.len() <= PARALLEL_MIN_ELEMS {
        residual.chunks_exact_mut(d).zip(delta.chunks_exact(d).zip(out.chunks_exact_mut(d))).for_each(body);
    } else {
        super::regions::enter();
        residual.par_chunks_exact_mut(d).zip(delta.par_chunks_exact(d).zip(out.par_chunks_exact_mut(d))).for_each(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_formula() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 0.5, 2.0, -1.0];
        let mut y = [0f32; 4];
        rms_norm(&x, &w, 1e-6, &mut y);
        let ms = (1.0 + 4.0 + 9.0 + 0.25) / 4.0;
        let r = 1.0 / (ms + 1e-6f64).sqrt();
        for i in 0..4 {
            assert!((y[i] as f64 - w[i] as f64 * x[i] as f64 * r).abs() < 1e-6);
        }
        let mut res = [0.5f32, -1.0, 1.5, 0.25];
        let delta = res;
        let mut y2 = [0f32; 4];
        add_rms_norm(&mut res, &delta, &w, 1e-6, &mut y2);
        assert_eq!(res, x);
        assert_eq!(y2, y);
    }
}
