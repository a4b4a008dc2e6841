//! SwiGLU: `h = silu(gate) · up`, reading the fused `[n, 2·I]` gate|up projection output.

use rayon::prelude::*;

/// `silu(x) = x · sigmoid(x)`, written as torch does (`x / (1 + e^(−x))`).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Outputs at or below this many elements are computed on the calling thread (decode sizes).
const PARALLEL_MIN_ELEMS: usize = 1 << 14;

/// `out[t, i] = silu(gate_up[t, i]) · gate_up[t, inter + i]` for `gate_up [n, 2·inter]`, `out [n, inter]`.
/// Tokens are spread over the pool when there are many (prefill); each element is computed alike.
pub fn swiglu(gate_up: &[f32], inter: usize, out: &mut [f32]) {
    assert_eq!(gate_up.len(), 2 * out.len(), "swiglu: out must be half of gate_up");
    let row = |(gu, o): (&[f32], &mut [f32])| {
        let (g, u) = gu.split_at(inter);
        for i in 0..inter {
            o[i] = silu(g[i]) * u[i];
        }
    };
    if out.len() <= PARALLEL_MIN_ELEMS {
        gate_up.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)).for_each(row);
    } else {
        gate_up.par_chunks_exact(2 * inter).zip(out.par_chunks_exact_mut(inter)).for_each(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_formula() {
        let gu = [1.0f32, -2.0, 0.5, 3.0];
        let mut h = [0f32; 2];
        swiglu(&gu, 2, &mut h);
        let s = |x: f64| x / (1.0 + (-x).exp());
        assert!((h[0] as f64 - s(1.0) * 0.5).abs() < 1e-6);
        assert!((h[1] as f64 - s(-2.0) * 3.0).abs() < 1e-6);
    }
}
