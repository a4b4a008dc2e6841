//! Rotary position embedding, half-split ("NeoX") form as Qwen3 uses it: for pair i < d/2,
//! `(x[i], x[i + d/2]) ← (x[i]·cos − x[i + d/2]·sin, x[i + d/2]·cos + x[i]·sin)` with angle
//! `pos · θ^(−2i/d)`. The position is the token's cache index in its row.

/// Inverse frequencies `θ^(−2i/d)` for i < d/2, computed in f32 the way transformers does.
pub fn inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// Fills `cos`/`sin` (`[d/2]` each) for one position.
pub fn angles(pos: usize, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let a = pos as f32 * f;
        *c = a.cos();
        *s = a.sin();
    }
}

/// Rotates one head vector `x [d]` in place.
#[inline]
pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    for i in 0..half {
        let (a, b) = (lo[i], hi[i]);
        lo[i] = a * cos[i] - b * sin[i];
        hi[i] = b * cos[i] + a * sin[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let f = inv_freq(8, 1e6);
        let (mut c, mut s) = (vec![0f32; 4], vec![0f32; 4]);
        let x0 = vec![0.3f32, -1.0, 2.0, 0.1, 0.7, 0.2, -0.4, 1.5];
        angles(0, &f, &mut c, &mut s);
        let mut x = x0.clone();
        rotate(&mut x, &c, &s);
        assert_eq!(x, x0);
        angles(17, &f, &mut c, &mut s);
        rotate(&mut x, &c, &s);
        let n0: f32 = x0.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-5);
        // Pair 0 rotates by exactly pos radians (θ^0 = 1).
        assert!((x[0] - (0.3 * 17f32.cos() - 0.7 * 17f32.sin())).abs() < 1e-6);
    }
}
