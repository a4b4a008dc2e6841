//! Finding non-finite values (NaN, ±Inf) in raw little-endian tensor bytes, fast enough to run over every
//! weight at load time.
//!
//! A float is non-finite exactly when its exponent bits are all ones, so the test is one mask and compare
//! per element on the raw bits (no conversion). Blocks are scanned branch-free (the compiler vectorises the
//! loop) and only a block that holds a hit is searched again for the first offending index.
//!
//! Operations: [`first_non_finite`], [`FloatKind`].

use half::{bf16, f16};

/// The float encodings a checkpoint's tensors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    F32,
    F16,
    Bf16,
}

impl FloatKind {
    pub fn size(self) -> usize {
        match self {
            FloatKind::F32 => 4,
            FloatKind::F16 | FloatKind::Bf16 => 2,
        }
    }
}

/// Elements checked per branch-free pass: a hit is looked for only once per block.
const BLOCK: usize = 256;

/// The first non-finite element of `bytes` (little-endian `kind` values) as (index, value), or `None`.
pub fn first_non_finite(kind: FloatKind, bytes: &[u8]) -> Option<(usize, f32)> {
    match kind {
        FloatKind::F32 => scan::<4>(bytes, 0x7F80_0000, f32::from_le_bytes),
        FloatKind::Bf16 => scan::<2>(bytes, 0x7F80, |b| bf16::from_le_bytes(b).to_f32()),
        FloatKind::F16 => scan::<2>(bytes, 0x7C00, |b| f16::from_le_bytes(b).to_f32()),
    }
}

fn bits<const N: usize>(b: &[u8]) -> u32 {
    if N == 4 {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    } else {
        u16::from_le_bytes([b[0], b[1]]) as u32
    }
}

fn scan<const N: usize>(bytes: &[u8], exp: u32, value: impl Fn([u8; N]) -> f32) -> Option<(usize, f32)> {
    let elems = bytes.len() / N;
    let mut done = 0;
    for block in bytes[..elems * N].chunks(BLOCK * N) {
        let hit = block.chunks_exact(N).fold(false, |acc, b| acc | (bits::<N>(b) & exp == exp));
        if hit {
            let i = block.chunks_exact(N).position(|b| bits::<N>(b) & exp == exp).expect("the block holds a hit");
            let mut raw = [0u8; N];
            raw.copy_from_slice(&block[i * N..(i + 1) * N]);
            return Some((done + i, value(raw)));
        }
        done += block.len() / N;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le_bytes<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }

    #[test]
    fn finds_the_first_nan_or_inf_in_every_kind() {
        for at in [0usize, 1, 255, 256, 257, 999] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut v = vec![1.5f32; 1000];
                v[at] = bad;
                if at < 999 {
                    v[999] = f32::NAN; // a later hit must not win
                }
                let f = le_bytes(&v, |x| x.to_le_bytes().to_vec());
                let (i, x) = first_non_finite(FloatKind::F32, &f).unwrap();
                assert_eq!(i, at);
                assert!(!x.is_finite() && (x.is_nan() == bad.is_nan()));
                let b = le_bytes(&v, |x| bf16::from_f32(x).to_le_bytes().to_vec());
                assert_eq!(first_non_finite(FloatKind::Bf16, &b).unwrap().0, at);
                let h = le_bytes(&v, |x| f16::from_f32(x).to_le_bytes().to_vec());
                assert_eq!(first_non_finite(FloatKind::F16, &h).unwrap().0, at);
            }
        }
    }

    #[test]
    fn finite_extremes_pass() {
        let v = [f32::MAX, f32::MIN, f32::MIN_POSITIVE, -0.0, 0.0, 1e-45, 65504.0, -65504.0];
        let f = le_bytes(&v, |x| x.to_le_bytes().to_vec());
        assert_eq!(first_non_finite(FloatKind::F32, &f), None);
        // f32::MAX and MIN round to ±Inf in bf16 and f16: each check sees its own format's bits
        let b = le_bytes(&v[2..], |x| bf16::from_f32(x).to_le_bytes().to_vec());
        assert_eq!(first_non_finite(FloatKind::Bf16, &b), None);
        let h = le_bytes(&v[3..], |x| f16::from_f32(x).to_le_bytes().to_vec());
        assert_eq!(first_non_finite(FloatKind::F16, &h), None);
        let inf = f16::from_f32(f32::MAX).to_le_bytes();
        assert_eq!(first_non_finite(FloatKind::F16, &inf).map(|h| h.0), Some(0));
        assert_eq!(first_non_finite(FloatKind::F32, &[]), None);
    }
}
