//! The model workloads of `latentmas bench`, each timed over several runs on one [`Engine`]:
//! prefill of a fixed prompt, batched decode and latent steps at a given context, time to first token,
//! and one question end to end per method (via [`run_batch`], greedy, fixed token budget).
//!
//! Every workload starts from a freshly reset KV buffer and leaves nothing behind that the next one reads,
//! so they can run in any order.

use serde::{Deserialize, Serialize};

use super::stats::{time_runs, Stats};
use latentmas::engine::Engine;
use latentmas::error::{Error, Result};
use latentmas::kv::KvRow;
use latentmas::latent::Alignment;
use latentmas::mas::method::{Family, Method, Topology};
use latentmas::mas::prompts::PromptSet;
use latentmas::mas::run::{batch_slots, run_batch, RunConfig};
use latentmas::model::qwen3::{Input, RowStep, Select};
use latentmas::sample::{argmax, SamplingParams};

/// The question every end-to-end row runs (a GSM8K-style word problem).
pub const QUESTION: &str = "A bakery sells muffins for $3 each and cookies for $2 each. On Monday it sold 45 muffins \
and twice as many cookies as muffins. On Tuesday it sold 20% more muffins than on Monday and 30 cookies fewer than \
on Monday. How much money did the bakery make over the two days?";

/// Deterministic prompt ids: ordinary (non-special) tokens spread over the first `vocab_limit` ids (the
/// Qwen3 specials start at 151643). The transformers script uses the same formula: both see the same ids.
pub fn synthetic_ids(len: usize, vocab_limit: usize) -> Vec<u32> {
    let modulus = vocab_limit.clamp(1, 150_000);
    (0..len).map(|i| ((1000 + i * 7919) % modulus) as u32).collect()
}

/// Token accounting of one end-to-end run (summed over agents).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TokenCounts {
    pub prompt_tokens: usize,
    pub latent_steps: usize,
    pub generated_tokens: usize,
}

/// Config of one end-to-end method row.
pub fn e2e_config(method: Method, latent_steps: usize, new_tokens: usize) -> RunConfig {
    RunConfig {
        method,
        topology: Topology::Sequential,
        family: Family::Math,
        latent_steps: if method == Method::Latent { latent_steps } else { 0 },
        think: false,
        compat_reference: false,
        sampling: SamplingParams::greedy(),
        max_new_tokens: new_tokens,
        text_mas_context_length: latentmas::mas::run::REFERENCE_CONTEXT_LENGTH,
    }
}

/// KV slots the end-to-end rows need (the engine's buffer must hold at least this many).
pub fn e2e_slots(engine: &Engine, latent_steps: usize, new_tokens: usize) -> Result<usize> {
    let prompts = PromptSet::builtin();
    let mut need = 0;
    for m in Method::ALL {
        let cfg = e2e_config(*m, latent_steps, new_tokens);
        need = need.max(batch_slots(&engine.tokenizer, &prompts, &cfg, &[QUESTION.to_string()])?);
    }
    Ok(need)
}

/// Seconds to prefill `ids` on a fresh row (logits of the last position included).
pub fn prefill(engine: &mut Engine, ids: &[u32], runs: usize) -> Result<Stats> {
    let mut err = None;
    let stats = time_runs(1, runs, || {
        engine.kv.reset();
        let r = engine.kv.reserve(ids.len()).and_then(|row| engine.prefill(&mut [row], &[ids], true));
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    });
    err.map_or(Ok(stats), Err)
}

/// Seconds from a rendered single-agent chat prompt to its first greedy token (prefill + sampling).
pub fn ttft(engine: &mut Engine, runs: usize) -> Result<(Stats, usize)> {
    let prompts = PromptSet::builtin();
    let user = latentmas::mas::prompts::fill(prompts.baseline(Family::Math.as_str())?, QUESTION, "");
    let ids = engine.chat_ids(Some(&prompts.system), &user, "")?;
    let vocab = engine.model.config.vocab_size;
    let limit = engine.vocab_limit();
    let mut err = None;
    let stats = time_runs(1, runs, || {
        engine.kv.reset();
        let r = engine.kv.reserve(ids.len() + 1).and_then(|row| engine.prefill(&mut [row], &[&ids], true));
        match r {
            Ok(()) => {
                std::hint::black_box(argmax(engine.ws.logits_row(0, vocab), limit));
            }
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    });
    err.map_or(Ok((stats, ids.len())), Err)
}

/// Fills `batch` rows with the same `context` tokens (prefilled once, then copied slot for slot) and
/// returns them with the hidden state and greedy next token of the context's last position.
fn context_rows(
    engine: &mut Engine,
    batch: usize,
    context: usize,
    extra: usize,
) -> Result<(Vec<KvRow>, Vec<f32>, u32)> {
    engine.kv.reset();
    let mut rows: Vec<KvRow> = (0..batch).map(|_| engine.kv.reserve(context + extra)).collect::<Result<_>>()?;
    let ids = synthetic_ids(context, engine.vocab_limit());
    engine.prefill(&mut rows[..1], &[&ids], true)?;
    let first = argmax(engine.ws.logits_row(0, engine.model.config.vocab_size), engine.vocab_limit());
    let hidden = engine.ws.hidden_row(0, engine.hidden_size()).to_vec();
    let src = rows[0].slot_base;
    for r in rows.iter_mut().skip(1) {
        engine.kv.splice(src, r.slot_base, context)?;
        r.len = context;
    }
    Ok((rows, hidden, first))
}

/// Seconds per decode step (every row gains one token) at `context` for `batch` rows: `steps` greedy
/// steps per run, no stop tokens, at the engine's `decode_precision`. Returns the per-run mean step time.
pub fn decode(engine: &mut Engine, batch: usize, context: usize, steps: usize, runs: usize) -> Result<Stats> {
    let (mut rows, _, first) = context_rows(engine, batch, context, steps)?;
    let vocab = engine.model.config.vocab_size;
    let limit = engine.vocab_limit();
    let mut next = vec![first; batch];
    let mut err = None;
    let stats = time_runs(1, runs, || {
        for r in rows.iter_mut() {
            r.len = context;
        }
        next.fill(first);
        for _ in 0..steps {
            let mut s: Vec<RowStep> = rows
                .iter_mut()
                .zip(&next)
                .map(|(row, id)| RowStep { row, input: Input::Tokens(std::slice::from_ref(id)), select: Select::Last })
                .collect();
            let p = engine.decode_precision;
            if let Err(e) = engine.forward_with(&mut s, true, p) {
                err.get_or_insert(e);
                return;
            }
            for (j, id) in next.iter_mut().enumerate() {
                *id = argmax(engine.ws.logits_row(j, vocab), limit);
            }
        }
    });
    err.map_or(Ok(stats.map(|s| s / steps as f64)), Err)
}

/// Seconds per latent step at `context` (one row; hidden → aligned input embedding → forward, no logits).
pub fn latent_step(engine: &mut Engine, align: &Alignment, context: usize, steps: usize, runs: usize) -> Result<Stats> {
    let (mut rows, hidden, _) = context_rows(engine, 1, context, steps)?;
    let mut err = None;
    let stats = time_runs(1, runs, || {
        rows[0].len = context;
        engine.ws.hidden.clear();
        engine.ws.hidden.extend_from_slice(&hidden);
        if let Err(e) = engine.latent_steps(&mut rows, steps, align, |_, _| {}) {
            err.get_or_insert(e);
        }
    });
    err.map_or(Ok(stats.map(|s| s / steps as f64)), Err)
}

/// Seconds for one question with `method` (sequential topology, greedy), and its token accounting.
pub fn end_to_end(
    engine: &mut Engine,
    align: &Alignment,
    method: Method,
    latent_steps: usize,
    new_tokens: usize,
    runs: usize,
) -> Result<(Stats, TokenCounts)> {
    let prompts = PromptSet::builtin();
    let cfg = e2e_config(method, latent_steps, new_tokens);
    let questions = [QUESTION.to_string()];
    let mut counts = None;
    let mut err: Option<Error> = None;
    let stats = time_runs(0, runs, || match run_batch(engine, &prompts, Some(align), &cfg, &questions) {
        Ok(out) => {
            let t = &out.reports[0].totals;
            counts = Some(TokenCounts {
                prompt_tokens: t.prompt_tokens,
                latent_steps: t.latent_steps,
                generated_tokens: t.generated_tokens,
            });
        }
        Err(e) => {
            err.get_or_insert(e);
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok((stats, counts.unwrap_or_default())),
    }
}

/// Seconds to load the model and tokenizer of `dir` once more (config, then weights ‖ tokenizer: what
/// `latentmas run` does before it sizes the KV buffer), with the checkpoint already in the page cache.
pub fn load(dir: &std::path::Path, runs: usize) -> Result<Stats> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let loaded = latentmas::startup::load_model_and_tokenizer(dir, &mut latentmas::startup::Startup::default())?;
        samples.push(t.elapsed().as_secs_f64());
        drop(loaded);
    }
    Ok(Stats::of(&samples))
}
