//! Per-(task, method) aggregates of scored records, and their text table.
//!
//! Public operations:
//! - [`Summary::from_records`]: n, accuracy, 95% Wilson interval, mean output tokens, mean latent steps,
//!   seconds per item.
//! - [`wilson_interval`]: the score interval for a binomial proportion.
//! - [`SummaryTable`]: `Display` of several summaries side by side; `Display` of one [`Summary`] is the
//!   same table with one row.

use std::fmt;

use super::record::Record;
use super::task::Task;
use crate::table::{self, Align::Left, Align::Right};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Aggregates over the records of one task and method.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub task: Task,
    pub method: String,
    pub n: usize,
    pub correct: usize,
    /// correct / n; 0 when n = 0.
    pub accuracy: f64,
    /// 95% Wilson score interval of the accuracy; (0, 1) when n = 0.
    pub ci95: (f64, f64),
    pub mean_output_tokens: f64,
    pub mean_latent_steps: f64,
    /// Mean of the records' `seconds`.
    pub seconds_per_item: f64,
}

impl Summary {
    /// Aggregates `records`, which the caller has already restricted to one task and method.
    pub fn from_records<'a>(task: Task, method: &str, records: impl IntoIterator<Item = &'a Record>) -> Self {
        let (mut n, mut correct, mut tokens, mut latent, mut secs) = (0usize, 0usize, 0f64, 0f64, 0f64);
        for r in records {
            n += 1;
            correct += usize::from(r.correct);
            tokens += r.output_tokens as f64;
            latent += r.latent_steps as f64;
            secs += r.seconds;
        }
        let mean = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
        Summary {
            task,
            method: method.to_string(),
            n,
            correct,
            accuracy: mean(correct as f64),
            ci95: wilson_interval(correct, n),
            mean_output_tokens: mean(tokens),
            mean_latent_steps: mean(latent),
            seconds_per_item: mean(secs),
        }
    }
}

/// 95% Wilson score interval for `k` successes out of `n`. Unlike p ± 1.96·SE it stays inside [0, 1]
/// and is sensible at 0% and 100%, which small benchmarks (AIME: 30 items) hit.
pub fn wilson_interval(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Several summaries as one aligned text table.
pub struct SummaryTable<'a>(pub &'a [Summary]);

impl fmt::Display for SummaryTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = table::with_header(&[
            ("task", Left),
            ("method", Left),
            ("n", Right),
            ("accuracy", Right),
            ("95% CI", Right),
            ("out tok", Right),
            ("latent", Right),
            ("s/item", Right),
        ]);
        for s in self.0 {
            t.add_row(vec![
                s.task.as_str().to_string(),
                s.method.clone(),
                s.n.to_string(),
                format!("{:.1}%", 100.0 * s.accuracy),
                format!("[{:.1}, {:.1}]", 100.0 * s.ci95.0, 100.0 * s.ci95.1),
                format!("{:.1}", s.mean_output_tokens),
                format!("{:.1}", s.mean_latent_steps),
                format!("{:.2}", s.seconds_per_item),
            ]);
        }
        f.write_str(&table::render(&t))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SummaryTable(std::slice::from_ref(self)).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_known_values() {
        // Reference values from the closed form (e.g. statsmodels proportion_confint(method="wilson")).
        let (lo, hi) = wilson_interval(8, 10);
        assert!((lo - 0.490_162).abs() < 1e-5 && (hi - 0.943_318).abs() < 1e-5, "{lo} {hi}");
        let (lo, hi) = wilson_interval(0, 30);
        assert!(lo.abs() < 1e-12 && (hi - 0.113_513).abs() < 1e-5, "{lo} {hi}");
        let (lo, hi) = wilson_interval(30, 30);
        assert!((lo - 0.886_487).abs() < 1e-5 && (hi - 1.0).abs() < 1e-12, "{lo} {hi}");
        assert_eq!(wilson_interval(0, 0), (0.0, 1.0));
    }

    #[test]
    fn aggregates_and_table() {
        let rec = |correct, tok, secs| Record {
            id: "x".into(),
            task: Task::Gsm8k,
            method: "single".into(),
            prediction: None,
            gold: "1".into(),
            correct,
            output_tokens: tok,
            latent_steps: 4,
            seconds: secs,
            agents: serde_json::Value::Null,
            detail: None,
            output: String::new(),
            provenance: None,
        };
        let rs = [rec(true, 10, 1.0), rec(false, 30, 3.0)];
        let s = Summary::from_records(Task::Gsm8k, "single", &rs);
        assert_eq!((s.n, s.correct), (2, 1));
        assert_eq!((s.accuracy, s.mean_output_tokens, s.mean_latent_steps, s.seconds_per_item), (0.5, 20.0, 4.0, 2.0));
        let table = s.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "header, separator, one row:\n{table}");
        assert!(lines[0].contains("accuracy") && lines[0].contains("95% CI"), "{table}");
        let cells: Vec<&str> = lines[2].split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells, ["gsm8k", "single", "2", "50.0%", "[9.5, 90.5]", "20.0", "4.0", "2.00"], "{table}");
    }
}
