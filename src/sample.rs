//! Choosing the next token from logits: greedy (argmax, first index on ties, as torch.argmax), or
//! temperature → top-k → top-p in that order (the LatentMAS reference: 0.6, 20, 0.95), seedable.
//! Only ids below the tokenizer's length are ever candidates: the embedding's padding rows are skipped.

/// Decoding settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub greedy: bool,
    pub temperature: f32,
    /// 0 = no top-k cut.
    pub top_k: usize,
    /// 1.0 = no top-p cut.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// The reference's sampling settings.
    fn default() -> Self {
        SamplingParams { greedy: false, temperature: 0.6, top_k: 20, top_p: 0.95, seed: 0 }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { greedy: true, ..Self::default() }
    }

    /// Rejects values that make no distribution.
    pub fn validate(&self) -> crate::Result<()> {
        let usable_temperature = self.temperature > 0.0 && self.temperature.is_finite();
        if !self.greedy && !usable_temperature {
            return Err(crate::Error::InvalidArgument(format!("--temperature {} must be > 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(crate::Error::InvalidArgument(format!("--top-p {} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}

/// splitmix64: tiny, seedable, and identical on every platform (results do not depend on a crate version).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A sampler with its own random stream and scratch space (no allocation per token after the first).
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(f32, u32)>,
}

/// Index of the largest value among the first `limit`; the first one on ties.
pub fn argmax(logits: &[f32], limit: usize) -> u32 {
    let mut best = 0;
    for (i, &v) in logits[..limit].iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Sampler { params, rng: Rng::new(params.seed), candidates: Vec::new() }
    }

    /// Picks a token among ids `< limit`.
    pub fn sample(&mut self, logits: &[f32], limit: usize) -> u32 {
        let limit = limit.min(logits.len());
        if self.params.greedy {
            return argmax(logits, limit);
        }
        let p = self.params;
        // 1. temperature
        self.candidates.clear();
        self.candidates.extend(logits[..limit].iter().enumerate().map(|(i, &l)| (l / p.temperature, i as u32)));
        // 2. top-k: keep the k largest (ties broken by lower id for determinism)
        let by_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if p.top_k > 0 && p.top_k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(p.top_k - 1, by_desc);
            self.candidates.truncate(p.top_k);
        }
        self.candidates.sort_unstable_by(by_desc);
        // softmax over the survivors
        let max = self.candidates[0].0;
        let mut total = 0.0f32;
        for c in self.candidates.iter_mut() {
            c.0 = (c.0 - max).exp();
            total += c.0;
        }
        // 3. top-p: the smallest prefix whose mass reaches p (at least one token)
        let mut mass = 0.0f32;
        let mut keep = self.candidates.len();
        for (i, c) in self.candidates.iter().enumerate() {
            mass += c.0 / total;
            if mass >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        self.candidates.truncate(keep);
        let kept: f32 = self.candidates.iter().map(|c| c.0).sum();
        let mut r = self.rng.uniform() * kept;
        for c in &self.candidates {
            r -= c.0;
            if r < 0.0 {
                return c.1;
            }
        }
        self.candidates[keep - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_first_argmax_within_limit() {
        let logits = [1.0, 3.0, 3.0, 9.0];
        assert_eq!(argmax(&logits, 4), 3);
        assert_eq!(argmax(&logits, 3), 1);
        assert_eq!(Sampler::new(SamplingParams::greedy()).sample(&logits, 3), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_padding_rows_are_never_drawn() {
        let mut s = Sampler::new(SamplingParams { top_k: 1, seed: 7, ..Default::default() });
        let logits = [0.0, 5.0, 1.0, 100.0];
        for _ in 0..50 {
            assert_eq!(s.sample(&logits, 3), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail_and_seed_reproduces() {
        // Probabilities ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps exactly the first two.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let params = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.7, seed: 42, greedy: false };
        let mut s = Sampler::new(params);
        let draws: Vec<u32> = (0..400).map(|_| s.sample(&logits, 4)).collect();
        assert!(draws.iter().all(|&t| t < 2));
        let zeros = draws.iter().filter(|&&t| t == 0).count() as f32 / 400.0;
        assert!((zeros - 0.7275).abs() < 0.08, "{zeros}");
        let mut again = Sampler::new(params);
        assert_eq!(draws, (0..400).map(|_| again.sample(&logits, 4)).collect::<Vec<_>>());
        assert!(SamplingParams { temperature: 0.0, ..params }.validate().is_err());
    }
}
