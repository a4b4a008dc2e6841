//! Finding non-finite values (NaN, ±Inf) in raw little-endian tensor bytes, fast enough to run over every
//! weight at load time.
//!
//! A float is non-finite exactly when its exponent bits are all ones, so the test is one mask and compare
//! per element on the raw bits (no conversion). Blocks are scanned branch-free, four bf16 or two f32 lanes per
//! 64-bit word (plain integer ops on any CPU, which the compiler widens to its vector registers), and
//! only a block that holds a hit is searched again for the first offending index.
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

/// Bytes checked per branch-free pass (a multiple of 8): a hit is looked for only once per block.
const BLOCK_BYTES: usize = 2048;

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

/// The exponent mask `exp` in every `N`-byte lane of a u64, each lane's top bit, and the per-lane addend
/// that carries into that top bit exactly when the lane is non-zero.
fn lanes<const N: usize>(exp: u32) -> (u64, u64, u64) {
    if N == 4 {
        let e = exp as u64;
        (e | e << 32, 0x8000_0000_8000_0000, 0x7FFF_FFFF_7FFF_FFFF)
    } else {
        let e = exp as u64;
        (e | e << 16 | e << 32 | e << 48, 0x8000_8000_8000_8000, 0x7FFF_7FFF_7FFF_7FFF)
    }
}

/// Whether a block holds a non-finite element, eight bytes at a time: `(w & exp) ^ exp` is zero in a lane
/// exactly when its exponent is all ones. Those lanes never reach their top bit, so adding `add` sets the
/// top bit of every non-zero lane and carries no further: a block is clean when every top bit stays set.
fn block_has_hit<const N: usize>(block: &[u8], exp: u32) -> bool {
    let (mask, high, add) = lanes::<N>(exp);
    let words = block.chunks_exact(8);
    let rest = words.remainder();
    let all_set = words.fold(high, |acc, w| {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc & (((w & mask) ^ mask).wrapping_add(add) & high)
    });
    all_set != high || rest.chunks_exact(N).any(|b| bits::<N>(b) & exp == exp)
}

fn scan<const N: usize>(bytes: &[u8], exp: u32, value: impl Fn([u8; N]) -> f32) -> Option<(usize, f32)> {
    let elems = bytes.len() / N;
    let mut done = 0;
    for block in bytes[..elems * N].chunks(BLOCK_BYTES) {
        if block_has_hit::<N>(block, exp) {
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

    #[test]
    fn every_lane_of_every_word_is_seen_at_any_alignment_and_length() {
        // positions around the word and block boundaries, in slices that start off a word boundary
        // and end with a partial word
        for skip in 0..4usize {
            for n in [1usize, 3, 4, 5, 1023, 1024, 1025, 1031, 3001] {
                for at in [0, 1, 2, 3, n / 2, n.saturating_sub(2), n - 1] {
                    if at >= n {
                        continue;
                    }
                    let mut v = vec![-2.25f32; n];
                    v[at] = f32::INFINITY;
                    let b: Vec<u8> = std::iter::repeat_n(0u8, skip * 2)
                        .chain(v.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()))
                        .collect();
                    assert_eq!(
                        first_non_finite(FloatKind::Bf16, &b[skip * 2..]).map(|h| h.0),
                        Some(at),
                        "{skip} {n} {at}"
                    );
                    let f: Vec<u8> =
                        std::iter::repeat_n(0u8, skip).chain(v.iter().flat_map(|&x| x.to_le_bytes())).collect();
                    assert_eq!(first_non_finite(FloatKind::F32, &f[skip..]).map(|h| h.0), Some(at), "{skip} {n} {at}");
                    v[at] = 65504.0; // the largest finite f16: no hit, nor from a neighbour's bits
                    let h: Vec<u8> = v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
                    assert_eq!(first_non_finite(FloatKind::F16, &h), None, "{n} {at}");
                }
            }
        }
    }
}
