//! What a run reports: per agent and per question accounting (`--json`), and the debugging trace
//! (`--trace FILE`, whose field names are part of the CLI's contract).
//!
//! Timings are wall time of the batch phase the agent ran in: rows of a batch prefill, think and decode
//! together, so each row of a batch reports the same phase times.

use serde::Serialize;

/// One agent of one question.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentReport {
    pub role: String,
    pub prompt_tokens: usize,
    pub latent_steps: usize,
    pub generated_tokens: usize,
    pub kv_len_before: usize,
    pub kv_len_after: usize,
    pub prefill_s: f64,
    pub latent_s: f64,
    pub decode_s: f64,
    /// Decoded text (decoding agents only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Sums over a question's agents.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub prompt_tokens: usize,
    pub latent_steps: usize,
    pub generated_tokens: usize,
    pub prefill_s: f64,
    pub latent_s: f64,
    pub decode_s: f64,
}

/// One question's result.
#[derive(Debug, Clone, Serialize)]
pub struct QuestionReport {
    pub question: String,
    pub method: String,
    pub topology: String,
    /// The final agent's text (special tokens skipped, stripped).
    pub text: String,
    /// The extracted answer (see `eval::extract`), if any.
    pub answer: Option<String>,
    pub agents: Vec<AgentReport>,
    pub totals: Totals,
    /// Peak KV slots this question held, and their bytes.
    pub kv_tokens: usize,
    pub kv_bytes: u64,
}

impl QuestionReport {
    pub fn finish_totals(&mut self) {
        let mut t = Totals::default();
        for a in &self.agents {
            t.prompt_tokens += a.prompt_tokens;
            t.latent_steps += a.latent_steps;
            t.generated_tokens += a.generated_tokens;
            t.prefill_s += a.prefill_s;
            t.latent_s += a.latent_s;
            t.decode_s += a.decode_s;
        }
        self.totals = t;
    }
}

/// One fed latent vector: its norm and first 8 values in the JSON; the full vector for tests.
#[derive(Debug, Clone, Serialize)]
pub struct LatentInput {
    pub norm: f32,
    pub head: Vec<f32>,
    #[serde(skip)]
    pub full: Vec<f32>,
}

impl LatentInput {
    pub fn new(e: &[f32]) -> Self {
        LatentInput {
            norm: e.iter().map(|v| v * v).sum::<f32>().sqrt(),
            head: e.iter().take(8).copied().collect(),
            full: e.to_vec(),
        }
    }
}

/// One agent in the trace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TraceAgent {
    pub role: String,
    pub prompt_ids: Vec<u32>,
    pub kv_len_before: usize,
    pub kv_len_after: usize,
    pub latent_inputs: Vec<LatentInput>,
    pub generated_ids: Vec<u32>,
}

/// The `--trace` document of one question.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    pub realign: bool,
    pub target_norm: f32,
    pub agents: Vec<TraceAgent>,
}
