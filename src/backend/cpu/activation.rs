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
        super::regions::enter();
        gate_up.par_chunks_exact(2 * inter).zip(out.par_chunks_exact_mut(inter)).for_each(row);
    }
}

/// [`swiglu`] with a vectorised `exp` ([`super::vexp::exp512`] / [`super::vexp::exp256`], the same bits,
/// within 2 ulp): the SwiGLU of the bf16-activation path, whose output is rounded to bf16 for the down
/// projection right after (2⁻⁹ relative, far above the `exp` error). AVX-512 where the CPU has it, else
/// AVX2 + FMA (the same bits: the same `exp` and the same three operations per element), else [`swiglu`].
pub fn swiglu_fast(gate_up: &[f32], inter: usize, out: &mut [f32]) {
    assert_eq!(gate_up.len(), 2 * out.len(), "swiglu: out must be half of gate_up");
    #[cfg(target_arch = "x86_64")]
    {
        type RowFn = unsafe fn(&[f32], usize, &mut [f32]);
        let kernel: Option<RowFn> = if std::arch::is_x86_feature_detected!("avx512f") {
            Some(swiglu_row_avx512)
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            Some(swiglu_row_avx2)
        } else {
            None
        };
        if let Some(kernel) = kernel {
            // SAFETY: the kernel's features were just detected; each row reads [2·inter] and writes [inter].
            let row = |(gu, o): (&[f32], &mut [f32])| unsafe { kernel(gu, inter, o) };
            if out.len() <= PARALLEL_MIN_ELEMS {
                gate_up.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)).for_each(row);
            } else {
                super::regions::enter();
                gate_up.par_chunks_exact(2 * inter).zip(out.par_chunks_exact_mut(inter)).for_each(row);
            }
            return;
        }
    }
    swiglu(gate_up, inter, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn swiglu_row_avx512(gu: &[f32], inter: usize, o: &mut [f32]) {
    use std::arch::x86_64::*;
    let (g, u) = gu.split_at(inter);
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < inter {
        let m: __mmask16 = if inter - i >= 16 { 0xFFFF } else { ((1u32 << (inter - i)) - 1) as __mmask16 };
        let x = _mm512_maskz_loadu_ps(m, g.as_ptr().add(i));
        let e = super::vexp::exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
        let s = _mm512_div_ps(x, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(o.as_mut_ptr().add(i), m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u.as_ptr().add(i))));
        i += 16;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_row_avx2(gu: &[f32], inter: usize, o: &mut [f32]) {
    use std::arch::x86_64::*;
    // silu(g)·u on 8 lanes: the AVX-512 row's operations
    #[inline(always)]
    unsafe fn lanes(g: *const f32, u: *const f32, o: *mut f32) {
        let x = _mm256_loadu_ps(g);
        let e = super::vexp::exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(o, _mm256_mul_ps(s, _mm256_loadu_ps(u)));
    }
    let (g, u) = gu.split_at(inter);
    let mut i = 0;
    while i + 8 <= inter {
        lanes(g.as_ptr().add(i), u.as_ptr().add(i), o.as_mut_ptr().add(i));
        i += 8;
    }
    if i < inter {
        // the last partial vector through zero-padded copies
        let (mut xg, mut xu, mut y) = ([0f32; 8], [0f32; 8], [0f32; 8]);
        let rest = inter - i;
        xg[..rest].copy_from_slice(&g[i..]);
        xu[..rest].copy_from_slice(&u[i..]);
        lanes(xg.as_ptr(), xu.as_ptr(), y.as_mut_ptr());
        o[i..].copy_from_slice(&y[..rest]);
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

    /// The AVX2 row kernel has the AVX-512 one's bits (where this CPU runs both) and, like it, stays
    /// within a few ulp of the exact SwiGLU, partial last vectors included.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_rows_match_the_exact_swiglu_and_the_avx512_bits() {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            eprintln!("SKIP: the AVX2 SwiGLU needs AVX2 + FMA, which this CPU lacks");
            return;
        }
        for inter in [1usize, 7, 8, 37, 3072] {
            let gu: Vec<f32> = (0..2 * inter).map(|i| ((i * 37 % 101) as f32 - 50.0) / 5.0).collect();
            let (mut exact, mut fast) = (vec![0f32; inter], vec![0f32; inter]);
            swiglu(&gu, inter, &mut exact);
            // SAFETY: the features were just detected; gu is [2·inter], fast is [inter].
            unsafe { swiglu_row_avx2(&gu, inter, &mut fast) };
            for (x, y) in exact.iter().zip(&fast) {
                assert!((x - y).abs() <= 4.0 * f32::EPSILON * x.abs().max(1e-30), "inter {inter}: {x} vs {y}");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut wide = vec![0f32; inter];
                // SAFETY: as above, AVX-512F detected.
                unsafe { swiglu_row_avx512(&gu, inter, &mut wide) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&wide), "inter {inter}: AVX2 vs AVX-512");
            }
        }
    }

    #[test]
    fn fast_matches_exact_within_a_few_ulp() {
        let inter = 37;
        let gu: Vec<f32> = (0..3 * 2 * inter).map(|i| ((i * 37 % 101) as f32 - 50.0) / 5.0).collect();
        let (mut a, mut b) = (vec![0f32; 3 * inter], vec![0f32; 3 * inter]);
        swiglu(&gu, inter, &mut a);
        swiglu_fast(&gu, inter, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 4.0 * f32::EPSILON * x.abs().max(1e-30), "{x} vs {y}");
        }
    }
}
