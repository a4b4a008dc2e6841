//! The bf16-activation matmul of [`Precision::Bf16Activations`] (bf16 weights, activations rounded to
//! bf16 with round to nearest even, f32 accumulation: the fast prefill, and the opt-in fast decode) on the
//! best kernel family of this CPU, chosen at run time:
//! 1. [`Bf16Kernel::Amx`]: Intel AMX tiles ([`super::amx`]), when `k` is a multiple of 32;
//! 2. [`Bf16Kernel::Avx512Bf16`]: `VDPBF16PS` ([`super::avx512bf16`]: 32 bf16 products per instruction,
//!    weights read in place, any shape), for CPUs with AVX512-BF16 but no AMX (AMD Zen 4, Intel Cooper
//!    Lake), where it measures [`DOT_OVER_FMA`] × the FMA's FLOP/s (on a Sapphire Rapids-class Xeon it
//!    measures half of it, 63 vs 124 GFLOP/s per thread, so AVX-512 FMA wins there); its order is that of [`super::avx512bf16::matmul_model`], which the tests check it against
//!    bit for bit;
//! 3. [`Bf16Kernel::Avx512`]: the AVX-512 FMA kernels of [`super::matmul`] on the rounded activations;
//! 4. [`Bf16Kernel::Avx2`]: AVX2 + FMA, the bf16 weights widened to f32 in registers, one 8-lane chain
//!    per output (twice the outputs per register tile of the exact kernel);
//! 5. [`Bf16Kernel::Portable`]: the canonical loop on the rounded activations (any CPU, e.g. aarch64).
//!
//! Every path multiplies the same bf16 values exactly (a bf16 × bf16 product fits in f32); they differ
//! only in the order of the f32 sums (and AVX512-BF16 in its flush of denormals to zero), and each
//! output's order depends on `k` alone, so a row's result
//! never depends on the other rows of the call (batch = single, bit for bit, on every path).
//!
//! `LATENTMAS_CPU_GEMM=amx|avx512bf16|avx512|avx2|portable` forces a family (read once; one this CPU cannot run
//! is reported on stderr and the detected one is used). [`matmul_bf16_on`] forces one per call.
//!
//! [`Precision::Bf16Activations`]: super::matmul::Precision::Bf16Activations

use std::sync::OnceLock;

use super::matmul::{self, ExactKernel};
use crate::model::matrix::{WeightData, WeightMatrix};

/// A kernel family of the bf16-activation matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    Amx,
    Avx512Bf16,
    Avx512,
    Avx2,
    Portable,
}

impl Bf16Kernel {
    pub const ALL: [Bf16Kernel; 5] =
        [Bf16Kernel::Amx, Bf16Kernel::Avx512Bf16, Bf16Kernel::Avx512, Bf16Kernel::Avx2, Bf16Kernel::Portable];

    /// The name `LATENTMAS_CPU_GEMM` takes.
    pub fn key(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512Bf16 => "avx512bf16",
            Bf16Kernel::Avx512 => "avx512",
            Bf16Kernel::Avx2 => "avx2",
            Bf16Kernel::Portable => "portable",
        }
    }

    /// What the bench and `latentmas devices` print.
    pub fn label(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "AMX tiles",
            Bf16Kernel::Avx512Bf16 => "AVX512-BF16 dot",
            Bf16Kernel::Avx512 => "AVX-512 FMA",
            Bf16Kernel::Avx2 => "AVX2+FMA",
            Bf16Kernel::Portable => "portable",
        }
    }

    /// Whether this CPU runs the family.
    pub fn runs_here(self) -> bool {
        match self {
            Bf16Kernel::Amx => super::amx::available(),
            Bf16Kernel::Avx512Bf16 => super::avx512bf16::available(),
            Bf16Kernel::Avx512 => ExactKernel::Avx512.runs_here(),
            Bf16Kernel::Avx2 => ExactKernel::Avx2.runs_here(),
            Bf16Kernel::Portable => true,
        }
    }

    /// The best family this CPU runs.
    ///
    /// Where both AVX512-BF16 and AVX-512 run (and AMX does not), the dot instruction is chosen only if it
    /// measures [`DOT_OVER_FMA`] × the FMA's FLOP/s on this CPU ([`super::probe::bf16_dot_and_fma_rates`]).
    pub fn detect() -> Self {
        let first = Self::ALL.into_iter().find(|k| k.runs_here()).unwrap_or(Bf16Kernel::Portable);
        if first == Bf16Kernel::Avx512Bf16 && Bf16Kernel::Avx512.runs_here() {
            if let Some((dot, fma)) = super::probe::bf16_dot_and_fma_rates() {
                return prefer_dot(dot, fma);
            }
        }
        first
    }

    /// The family [`matmul_bf16`] uses: `LATENTMAS_CPU_GEMM` if set and runnable, else [`Self::detect`].
    pub fn selected() -> Self {
        static SELECTED: OnceLock<Bf16Kernel> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let Some(v) = std::env::var_os("LATENTMAS_CPU_GEMM") else { return Self::detect() };
            let v = v.to_string_lossy();
            match Self::ALL.into_iter().find(|k| k.key() == v.trim()) {
                Some(k) if k.runs_here() => k,
                Some(k) => {
                    eprintln!(
                        "latentmas: LATENTMAS_CPU_GEMM={} but this CPU cannot run it; using {}",
                        k.key(),
                        Self::detect().key()
                    );
                    Self::detect()
                }
                None => {
                    eprintln!(
                        "latentmas: LATENTMAS_CPU_GEMM={v:?} is not one of amx, avx512bf16, avx512, avx2, portable; using {}",
                        Self::detect().key()
                    );
                    Self::detect()
                }
            }
        })
    }
}

/// `out[t, j] = Σ_c bf16(x[t, c]) · w[j, c]` (f32 accumulation) on [`Bf16Kernel::selected`]; returns false,
/// touching nothing, for f32 weights (the caller takes the exact path).
pub fn matmul_bf16(x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) -> bool {
    matmul_bf16_on(Bf16Kernel::selected(), x, n, w, out)
}

/// How much faster than the FMA the dot instruction's FLOP/s must measure before the bf16 matmul uses it:
/// its kernel also packs the activations to bf16 and reduces 16 lanes per output, which the FMA kernel
/// does not.
pub const DOT_OVER_FMA: f64 = 1.25;

/// The family for measured per-thread FLOP/s of `vdpbf16ps` (`dot`) and of the f32 FMA (`fma`).
pub fn prefer_dot(dot: f64, fma: f64) -> Bf16Kernel {
    if dot >= DOT_OVER_FMA * fma {
        Bf16Kernel::Avx512Bf16
    } else {
        Bf16Kernel::Avx512
    }
}

/// [`matmul_bf16`] on `kernel`. AMX needs `k` a multiple of 32: other shapes take the next family down.
///
/// # Panics
/// If this CPU cannot run `kernel`, or on shape mismatch.
pub fn matmul_bf16_on(kernel: Bf16Kernel, x: &[f32], n: usize, w: &WeightMatrix, out: &mut [f32]) -> bool {
    assert!(kernel.runs_here(), "matmul_bf16: this CPU cannot run the {} kernel", kernel.key());
    if !matches!(w.data, WeightData::Bf16(_)) {
        return false;
    }
    let fma = match kernel {
        Bf16Kernel::Amx => {
            if super::amx::matmul_bf16(x, n, w, out) {
                return true;
            }
            ExactKernel::detect()
        }
        Bf16Kernel::Avx512Bf16 => {
            // Any shape: the instruction's masked tail covers k not a multiple of 32.
            let done = super::avx512bf16::matmul_bf16(x, n, w, out);
            debug_assert!(done, "runs_here() checked the features and the weights are bf16");
            return done;
        }
        Bf16Kernel::Avx512 => ExactKernel::Avx512,
        Bf16Kernel::Avx2 => ExactKernel::Avx2,
        Bf16Kernel::Portable => ExactKernel::Portable,
    };
    matmul::matmul_rounded(fma, x, n, w, out)
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;

    fn val(i: usize, s: usize) -> f32 {
        (((i.wrapping_mul(2654435761).wrapping_add(s)) >> 7) % 2001) as f32 / 1000.0 - 1.0
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 32, 32),
        (1, 70, 33),
        (2, 9, 64),
        (5, 40, 100),
        (7, 13, 1040),
        (33, 70, 96),
        (70, 100, 160),
        (200, 11, 35),
    ];

    #[test]
    fn the_dot_instruction_is_chosen_only_where_it_measures_faster_than_the_fma() {
        assert_eq!(prefer_dot(2.0, 1.0), Bf16Kernel::Avx512Bf16);
        assert_eq!(prefer_dot(1.0, 1.0), Bf16Kernel::Avx512);
        assert_eq!(prefer_dot(0.5, 1.0), Bf16Kernel::Avx512);
        match super::super::probe::bf16_dot_and_fma_rates() {
            Some((dot, fma)) => {
                println!("vdpbf16ps {:.1} GFLOP/s, f32 FMA {:.1} GFLOP/s per thread", dot / 1e9, fma / 1e9);
                assert!(dot.is_finite() && dot > 0.0 && fma.is_finite() && fma > 0.0);
            }
            None => println!("SKIP (dot vs FMA rates: this CPU has no avx512_bf16)"),
        }
    }

    #[test]
    fn every_path_this_cpu_runs_matches_the_bf16_rounded_reference_and_keeps_batch_equal_to_single() {
        for kernel in Bf16Kernel::ALL {
            if !kernel.runs_here() {
                println!("SKIP ({}: this CPU cannot run it)", kernel.key());
                continue;
            }
            for &(n, m, k) in SHAPES {
                let x: Vec<f32> = (0..n * k).map(|i| val(i, 1)).collect();
                let wv: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32(val(i, 2))).collect();
                let w = WeightMatrix::bf16(m, k, wv.clone());
                let mut y = vec![0f32; n * m];
                assert!(matmul_bf16_on(kernel, &x, n, &w, &mut y));
                for t in 0..n {
                    for j in 0..m {
                        let want: f64 = (0..k)
                            .map(|c| bf16::from_f32(x[t * k + c]).to_f32() as f64 * wv[j * k + c].to_f32() as f64)
                            .sum();
                        let got = y[t * m + j] as f64;
                        let tol =
                            1e-5 * (1.0 + (0..k).map(|c| (x[t * k + c] * wv[j * k + c].to_f32()).abs()).sum::<f32>());
                        assert!(
                            (got - want).abs() <= tol as f64,
                            "{} n={n} m={m} k={k} t={t} j={j}: {got} vs {want}",
                            kernel.key()
                        );
                    }
                    let mut y1 = vec![0f32; m];
                    assert!(matmul_bf16_on(kernel, &x[t * k..(t + 1) * k], 1, &w, &mut y1));
                    assert_eq!(
                        &y1[..],
                        &y[t * m..(t + 1) * m],
                        "{} n={n} m={m} k={k} t={t}: alone ≠ batch",
                        kernel.key()
                    );
                }
            }
        }
        // f32 weights are never rounded: the caller runs the exact path.
        let mut y = vec![0f32; 4];
        assert!(!matmul_bf16_on(Bf16Kernel::Portable, &[1.0; 8], 1, &WeightMatrix::f32(4, 8, vec![1.0; 32]), &mut y));
    }

    #[test]
    fn the_paths_differ_from_each_other_only_in_the_order_of_exact_products() {
        // Activations that bf16 represents exactly and weights whose products with them are small
        // integers: every order sums them exactly, so every path gives the same bits.
        let (n, m, k) = (9, 21, 200);
        let x: Vec<f32> = (0..n * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w = WeightMatrix::bf16(
            m,
            k,
            (0..m * k).map(|i| bf16::from_f32(((i * 5) % 11) as f32 - 5.0)).collect::<Vec<_>>(),
        );
        let mut want = vec![0f32; n * m];
        assert!(matmul_bf16_on(Bf16Kernel::Portable, &x, n, &w, &mut want));
        for kernel in Bf16Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
            let mut y = vec![0f32; n * m];
            assert!(matmul_bf16_on(kernel, &x, n, &w, &mut y));
            assert_eq!(y, want, "{}", kernel.key());
        }
    }
}
