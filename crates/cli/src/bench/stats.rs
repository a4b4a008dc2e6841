//! Summary statistics of repeated measurements: median, min and max (the bench reports all three).

use serde::{Deserialize, Serialize};

/// Median, min and max of `runs` samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    /// Summarises `samples` (the median of an even count is the mean of the middle two).
    ///
    /// # Panics
    /// When `samples` is empty.
    pub fn of(samples: &[f64]) -> Stats {
        assert!(!samples.is_empty(), "Stats::of: no samples");
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
        Stats { median, min: v[0], max: v[n - 1], runs: n }
    }

    /// The same statistics after a monotone map `f` (min/max swap when `f` is decreasing, e.g. s → tok/s).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Stats {
        let (a, b) = (f(self.min), f(self.max));
        Stats { median: f(self.median), min: a.min(b), max: a.max(b), runs: self.runs }
    }
}

/// Runs `f` `warmup` times untimed, then `runs` times, and summarises the seconds it took.
pub fn time_runs(warmup: usize, runs: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..warmup {
        f();
    }
    let samples: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    Stats::of(&samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_and_decreasing_maps() {
        let s = Stats::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stats::of(&[1.0, 4.0]).median, 2.5);
        let r = s.map(|x| 6.0 / x);
        assert_eq!((r.median, r.min, r.max), (3.0, 2.0, 6.0));
    }
}
