//! Vectorised math for the fast (bf16-activation) paths, where a few ulp of f32 error vanish under the
//! bf16 rounding of the next projection's input.
//!
//! Operations: [`exp512`] (AVX-512 `e^x`, 16 lanes).

/// `e^x` per lane (Cephes `expf`: x = n·ln 2 + r, degree-6 polynomial in r, scaled by 2ⁿ with `VSCALEFPS`):
/// within 2 ulp of the true value; below −104 gives 0, above ~88.7 gives +∞, NaN stays NaN.
///
/// # Safety
/// The CPU must support AVX-512F (call it from a `#[target_feature(enable = "avx512f")]` function).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn exp512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // max(c, NaN) returns its second operand: NaN propagates.
    let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_199_9e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    let r2 = _mm512_mul_ps(r, r);
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(y, n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_two_ulp() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            use std::arch::x86_64::*;
            #[target_feature(enable = "avx512f")]
            unsafe fn run(xs: &[f32; 16], ys: &mut [f32; 16]) {
                _mm512_storeu_ps(ys.as_mut_ptr(), super::exp512(_mm512_loadu_ps(xs.as_ptr())));
            }
            let mut x = -100.0f32;
            while x <= 88.0 {
                let xs: [f32; 16] = std::array::from_fn(|i| x - i as f32 * 1e-3);
                let mut ys = [0f32; 16];
                // SAFETY: the feature was just detected; 16 floats in and out.
                unsafe { run(&xs, &mut ys) };
                for (a, y) in xs.iter().zip(&ys) {
                    let want = (*a as f64).exp();
                    let ulp = (want as f32).abs() * f32::EPSILON;
                    assert!(((*y as f64) - want).abs() <= 2.0 * ulp as f64 + 1e-44, "exp({a}) = {y}, want {want}");
                }
                x += 0.0137;
            }
            let special = [
                f32::NAN,
                f32::NEG_INFINITY,
                -200.0,
                100.0,
                f32::INFINITY,
                0.0,
                -0.0,
                1.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
            ];
            let mut ys = [0f32; 16];
            // SAFETY: as above.
            unsafe { run(&special, &mut ys) };
            assert!(ys[0].is_nan());
            assert_eq!(&ys[1..8], &[0.0, 0.0, f32::INFINITY, f32::INFINITY, 1.0, 1.0, std::f32::consts::E]);
        }
    }
}
