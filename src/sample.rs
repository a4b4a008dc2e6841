//! Choosing the next token from logits: greedy (argmax, first index on ties, as torch.argmax), or
//! temperature → top-k → top-p in that order (the LatentMAS reference: 0.6, 20, 0.95), seedable.
//! Only ids below the tokenizer's length are ever candidates: the embedding's padding rows are skipped.
//!
//! The rule is the one the CUDA `latentmas_sample` kernel implements (crates/kernels/cuda/sampling.cu), so both backends
//! pick the same id for the same uniform number u:
//! - top-k keeps every id whose logit is ≥ the k-th largest (ties with the k-th are kept, as transformers'
//!   TopKLogitsWarper does);
//! - top-p keeps every id whose strictly-more-probable mass is < p (transformers' TopPLogitsWarper up to ties);
//! - the pick is the inverse CDF at u over the kept ids in id order.

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
    sorted: Vec<f32>,
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
        Sampler { params, rng: Rng::new(params.seed), candidates: Vec::new(), sorted: Vec::new() }
    }

    /// The uniform number the next non-greedy [`Sampler::sample`] would draw, drawn now (device-side
    /// sampling: the kernel gets it, and the stream stays the one host sampling would use). `None` when
    /// greedy (nothing is drawn).
    pub fn draw_uniform(&mut self) -> Option<f32> {
        (!self.params.greedy).then(|| self.rng.uniform())
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token among ids `< limit`.
    pub fn sample(&mut self, logits: &[f32], limit: usize) -> u32 {
        let limit = limit.min(logits.len());
        if self.params.greedy {
            return argmax(logits, limit);
        }
        let p = self.params;
        let logits = &logits[..limit];
        // 1. top-k threshold: the k-th largest logit (temperature > 0 keeps the order).
        let threshold = if p.top_k > 0 && p.top_k < limit {
            self.candidates.clear();
            self.candidates.extend(logits.iter().enumerate().map(|(i, &l)| (l, i as u32)));
            self.candidates.select_nth_unstable_by(p.top_k - 1, |a, b| b.0.total_cmp(&a.0));
            self.candidates[p.top_k - 1].0
        } else {
            f32::NEG_INFINITY
        };
        // 2. temperature-scaled weights of the survivors, in id order.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, &l)| l >= threshold)
                .map(|(i, &l)| (((l - max) / p.temperature).exp(), i as u32)),
        );
        let total: f32 = self.candidates.iter().map(|c| c.0).sum();
        // 3. top-p: keep ids whose strictly-more-probable mass is < p·total.
        if p.top_p < 1.0 {
            self.sorted.clear();
            self.sorted.extend(self.candidates.iter().map(|c| c.0));
            self.sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            let (mut prefix, mut above, mut cut) = (0.0f32, 0.0f32, f32::NEG_INFINITY);
            for (i, &w) in self.sorted.iter().enumerate() {
                // Ties share their mass-above, so a group of equal weights is kept or dropped together.
                if i > 0 && w < self.sorted[i - 1] {
                    above = prefix;
                }
                if above >= p.top_p * total {
                    break;
                }
                cut = w;
                prefix += w;
            }
            self.candidates.retain(|c| c.0 >= cut);
        }
        // 4. inverse CDF at u in id order.
        let kept: f32 = self.candidates.iter().map(|c| c.0).sum();
        let target = self.rng.uniform() * kept;
        let mut running = 0.0f32;
        for c in &self.candidates {
            running += c.0;
            if running > target {
                return c.1;
            }
        }
        self.candidates.last().map(|c| c.1).unwrap_or(0)
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
    fn top_k_keeps_ties_and_top_p_keeps_tie_groups_together() {
        // k = 1 with two equal maxima keeps both (the kernel's rule); both get drawn.
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, top_k: 1, top_p: 1.0, seed: 3, greedy: false });
        let logits = [2.0f32, 5.0, 5.0, 1.0];
        let draws: Vec<u32> = (0..200).map(|_| s.sample(&logits, 4)).collect();
        assert!(draws.iter().all(|&t| t == 1 || t == 2) && draws.contains(&1) && draws.contains(&2));
        // top_p 0.3 with weights [e^5, e^5, ...]: the tie group's mass-above is 0, so both stay.
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.3, seed: 3, greedy: false });
        let draws: Vec<u32> = (0..200).map(|_| s.sample(&logits, 4)).collect();
        assert!(draws.iter().all(|&t| t == 1 || t == 2) && draws.contains(&2));
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
