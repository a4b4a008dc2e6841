//! Vectorised math for the fast (bf16-activation) paths, where a few ulp of f32 error vanish under the
//! bf16 rounding of the next projection's input.
//!
//! Operations: [`exp512`] (AVX-512 `e^x`, 16 lanes), [`exp256`] (AVX2 + FMA, 8 lanes, the same bits per lane).

/// ln 2 split in two for the reduction `r = x − n·ln 2` (the high part has trailing zero bits, so `n·LN2_HI`
/// is exact for the n that occur).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf`'s polynomial for `(e^r − 1 − r) / r²`, highest degree first (Horner).
const POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

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
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(POLY[0]);
    for c in &POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let r2 = _mm512_mul_ps(r, r);
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(y, n)
}

/// [`exp512`] on 8 lanes with AVX2 + FMA, the same bits per lane: the same reduction and polynomial, and
/// `y·2ⁿ` (n ∈ [−150, 128] after the clamps) as `(y·2^⌊n/2⌋)·2^(n−⌊n/2⌋)`, two powers of two that are
/// normal floats, so only the last product rounds, once, like `VSCALEFPS` (denormal results included).
/// Inputs above 88.8 are clamped to it (`e^88.8` overflows to +∞ all the same); NaN stays NaN.
///
/// # Safety
/// The CPU must support AVX2 and FMA (call it from a `#[target_feature(enable = "avx2,fma")]` function).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn exp256(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // max/min return their second operand when either is NaN: NaN propagates through both.
    let x = _mm256_min_ps(_mm256_set1_ps(88.8), _mm256_max_ps(_mm256_set1_ps(-104.0), x));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(POLY[0]);
    for c in &POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // 2^k for an integer k in [-126, 127]: the biased exponent in place.
    let pow2 = |k: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(k, _mm256_set1_epi32(127))));
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    _mm256_mul_ps(_mm256_mul_ps(y, pow2(n1)), pow2(n2))
}

#[cfg(test)]
mod tests {
    /// [`super::exp256`] on 16 inputs (two registers), where the CPU has AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    fn exp256_of(xs: &[f32; 16]) -> Option<[f32; 16]> {
        use std::arch::x86_64::*;
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(xs: &[f32; 16], ys: &mut [f32; 16]) {
            for h in 0..2 {
                _mm256_storeu_ps(ys.as_mut_ptr().add(8 * h), super::exp256(_mm256_loadu_ps(xs.as_ptr().add(8 * h))));
            }
        }
        let mut ys = [0f32; 16];
        // SAFETY: the features were just detected; 16 floats in and out.
        unsafe { run(xs, &mut ys) };
        Some(ys)
    }

    /// Within 2 ulp of the true value over the range softmax and SiLU use, the edges exact, and (where the CPU
    /// also has AVX-512) bit for bit [`super::exp512`], denormal results included.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn exp256_is_within_two_ulp_and_has_the_exp512_bits() {
        let Some(_) = exp256_of(&[0.0; 16]) else {
            eprintln!("SKIP: exp256 needs AVX2 + FMA, which this CPU lacks");
            return;
        };
        let mut x = -110.0f32;
        while x <= 90.0 {
            let xs: [f32; 16] = std::array::from_fn(|i| x - i as f32 * 1e-3);
            let ys = exp256_of(&xs).unwrap();
            for (a, y) in xs.iter().zip(&ys) {
                let want = (*a as f64).exp();
                if *a < -104.0 {
                    assert_eq!(*y, 0.0, "exp({a}) below the clamp");
                } else if want > f32::MAX as f64 {
                    assert_eq!(*y, f32::INFINITY, "exp({a}) overflows");
                } else if want >= f32::MIN_POSITIVE as f64 {
                    let ulp = (want as f32).abs() * f32::EPSILON;
                    assert!(((*y as f64) - want).abs() <= 2.0 * ulp as f64, "exp({a}) = {y}, want {want}");
                } else {
                    // a denormal result: within one denormal step of 2 ulp of the polynomial's value
                    assert!(((*y as f64) - want).abs() <= want * 3.0 * f32::EPSILON as f64 + 1.5e-45, "exp({a}) = {y}");
                }
            }
            if is_x86_feature_detected!("avx512f") {
                use std::arch::x86_64::*;
                #[target_feature(enable = "avx512f")]
                unsafe fn run512(xs: &[f32; 16], ys: &mut [f32; 16]) {
                    _mm512_storeu_ps(ys.as_mut_ptr(), super::exp512(_mm512_loadu_ps(xs.as_ptr())));
                }
                let mut want = [0f32; 16];
                // SAFETY: the feature was just detected.
                unsafe { run512(&xs, &mut want) };
                let bits = |v: &[f32; 16]| v.map(f32::to_bits);
                assert_eq!(bits(&ys), bits(&want), "exp256 vs exp512 at {xs:?}");
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
            88.8,
            -103.9,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        let ys = exp256_of(&special).unwrap();
        assert!(ys[0].is_nan());
        assert_eq!(&ys[1..8], &[0.0, 0.0, f32::INFINITY, f32::INFINITY, 1.0, 1.0, std::f32::consts::E]);
        assert_eq!(ys[8], f32::INFINITY);
        assert!(ys[9] > 0.0 && ys[9] < f32::MIN_POSITIVE, "exp(-103.9) is a denormal: {}", ys[9]);
    }

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
