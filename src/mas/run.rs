//! Running methods over a batch of questions on one engine: the single baseline, TextMAS, and LatentMAS
//! (sequential, hierarchical, and our parallel-experts extension), exactly as LATENTMAS.md specifies.
//!
//! Every question is one row of the shared KV buffer. Rows are independent (own slots, own positions from
//! 0, no padding entries), so a batch gives each question the same tokens as running it alone (greedy; with
//! sampling, each row's sampler is seeded alike). Phases run batched: all rows prefill an agent together,
//! think together, decode together.

use std::time::Instant;

use super::method::{AgentSpec, Family, Method, Topology};
use super::prompts::{fill, PromptSet};
use super::report::{AgentReport, LatentInput, QuestionReport, Trace, TraceAgent};
use crate::answer::{predict_answer, py_strip};
use crate::backend::cuda::nvtx;
use crate::engine::{Decoded, Engine};
use crate::error::{Error, Result};
use crate::kv::KvRow;
use crate::latent::Alignment;
use crate::sample::SamplingParams;
use crate::tokenizer::Tokenizer;

/// Appended to every agent's prompt of a LatentMAS run with `--think`.
const THINK_SUFFIX: &str = "<think>";
/// Upper bound on the tokens a TextMAS context label and separator add per agent ("[Science Agent]:\n…\n\n").
const CTX_LABEL_TOKENS: usize = 16;
/// Re-tokenised decoded text can take more tokens than were generated (a lossy U+FFFD from a partial UTF-8
/// sequence costs up to 3); `--kv-budget auto` sizes TextMAS contexts with this many tokens per generated one.
const CTX_TOKENS_PER_GENERATED: usize = 3;

/// Everything that defines a run besides the questions.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub method: Method,
    pub topology: Topology,
    pub family: Family,
    /// m: latent steps per non-final agent (LatentMAS only).
    pub latent_steps: usize,
    /// Append `<think>` to every agent's prompt (LatentMAS only).
    pub think: bool,
    /// Reference compatibility: with m = 0 the final agent decodes on an empty cache.
    pub compat_reference: bool,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// TextMAS: each agent sees the accumulated context cut like Python's `text[:n]` in characters
    /// ([`REFERENCE_CONTEXT_LENGTH`], the reference's default, drops the last character).
    pub text_mas_context_length: i64,
}

/// The reference's `--text_mas_context_length` default, -1: its `context[:-1]` drops the context's last
/// character (one of the two newlines after the last agent's text).
pub const REFERENCE_CONTEXT_LENGTH: i64 = -1;

impl RunConfig {
    /// Rejects combinations that mean nothing, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.method != Method::Latent {
            if self.think {
                return Err(Error::InvalidArgument("--think applies to --method latent only".into()));
            }
            if self.compat_reference {
                return Err(Error::InvalidArgument("--compat reference applies to --method latent only".into()));
            }
            if self.latent_steps != 0 {
                return Err(Error::InvalidArgument("--latent-steps applies to --method latent only".into()));
            }
        }
        if self.method != Method::Latent && self.topology == Topology::Parallel {
            return Err(Error::InvalidArgument(format!(
                "--topology parallel is a LatentMAS topology (--method latent), not one of --method {}",
                self.method
            )));
        }
        if self.max_new_tokens == 0 {
            return Err(Error::InvalidArgument("--max-new-tokens must be at least 1".into()));
        }
        self.sampling.validate()
    }
}

/// What a batch run returns: one report and one trace per question.
pub struct RunOutput {
    pub reports: Vec<QuestionReport>,
    pub traces: Vec<Trace>,
}

/// Renders a `[system, user]` chat and tokenizes it, with `suffix` appended to the rendered text.
pub fn chat_ids(tok: &Tokenizer, system: &str, user: &str, suffix: &str) -> Result<Vec<u32>> {
    let mut text = tok.render_chat(Some(system), user, None)?;
    text.push_str(suffix);
    tok.encode(&text)
}

/// Prompt ids of agent `spec` for `question` with context `ctx` (TextMAS) under `cfg`.
fn agent_ids(
    tok: &Tokenizer,
    prompts: &PromptSet,
    cfg: &RunConfig,
    spec: &AgentSpec,
    question: &str,
    ctx: &str,
) -> Result<Vec<u32>> {
    let template = match cfg.method {
        Method::Single => prompts.baseline(cfg.family.as_str())?,
        m => prompts.template(&cfg.topology.prompt_key(m), spec.key, cfg.family.as_str())?,
    };
    let suffix = if cfg.think { THINK_SUFFIX } else { "" };
    chat_ids(tok, &prompts.system, &fill(template, question, ctx), suffix)
}

/// KV slots each question needs. Exact for latent and single runs (their prompts are known up front);
/// for TextMAS a generous bound (later prompts hold text not generated yet); each TextMAS agent re-reserves
/// exactly what it needs when its prompt is known.
pub fn plan_capacity(
    tok: &Tokenizer,
    prompts: &PromptSet,
    cfg: &RunConfig,
    questions: &[String],
) -> Result<Vec<usize>> {
    cfg.validate()?;
    let agents = cfg.topology.agents();
    // Flags and prompts are user input: every sum is checked (an overflow is an error, never a wrap).
    let overflow = || {
        Error::InvalidArgument(format!(
            "--max-new-tokens {} with --latent-steps {} makes a KV need beyond any buffer",
            cfg.max_new_tokens, cfg.latent_steps
        ))
    };
    let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(overflow);
    let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(overflow);
    questions
        .iter()
        .map(|q| {
            Ok(match cfg.method {
                Method::Single => add(agent_ids(tok, prompts, cfg, &agents[3], q, "")?.len(), cfg.max_new_tokens)?,
                Method::Latent => {
                    let mut n = cfg.max_new_tokens;
                    for (i, spec) in agents.iter().enumerate() {
                        n = add(n, agent_ids(tok, prompts, cfg, spec, q, "")?.len())?;
                        if i < 3 {
                            n = add(n, cfg.latent_steps)?;
                        }
                    }
                    n
                }
                Method::Text => {
                    let per_agent = add(mul(CTX_TOKENS_PER_GENERATED, cfg.max_new_tokens)?, CTX_LABEL_TOKENS)?;
                    let ctx_bound = mul(3, per_agent)?;
                    let longest = agents
                        .iter()
                        .map(|s| agent_ids(tok, prompts, cfg, s, q, "").map(|ids| ids.len()))
                        .collect::<Result<Vec<_>>>()?
                        .into_iter()
                        .max()
                        .unwrap_or(0);
                    add(add(longest, ctx_bound)?, cfg.max_new_tokens)?
                }
            })
        })
        .collect()
}

/// Checks every question fits the model's context (`max_context` positions, the config's
/// `max_position_embeddings` unless overridden) before any work: a prompt, a latent chain or a generation
/// running past the positions the model was trained on gives garbage, not an error, so it is refused here
/// with the numbers. Exact for single and LatentMAS runs; for TextMAS each agent's prompt without its
/// context (the context is checked again when it exists, see [`check_positions`]).
pub fn check_context(
    tok: &Tokenizer,
    prompts: &PromptSet,
    cfg: &RunConfig,
    questions: &[String],
    max_context: usize,
) -> Result<()> {
    let needs = match cfg.method {
        Method::Text => first_text_phase(tok, prompts, cfg, questions)?,
        _ => plan_capacity(tok, prompts, cfg, questions)?,
    };
    for (q, need) in needs.into_iter().enumerate() {
        check_positions(cfg, q, need, max_context)?;
    }
    Ok(())
}

/// Refuses `need` positions (prompts + latent steps + `--max-new-tokens`) for question `q` past `max_context`.
pub fn check_positions(cfg: &RunConfig, q: usize, need: usize, max_context: usize) -> Result<()> {
    if need <= max_context {
        return Ok(());
    }
    let latent = if cfg.method == Method::Latent {
        format!(", {} latent steps per thinking agent", cfg.latent_steps)
    } else {
        String::new()
    };
    Err(Error::InvalidArgument(format!(
        "question {} needs {need} positions (its prompts{latent} and --max-new-tokens {}) but the model's context \
         length is {max_context} (max_position_embeddings); shorten the question, lower --max-new-tokens or \
         --latent-steps, or raise --max-context if the model's config understates its context",
        q + 1,
        cfg.max_new_tokens
    )))
}

/// Runs `questions` as one batch. The KV buffer is reset first; every row is reserved before any work, so
/// a buffer too small for the batch fails here with the numbers, not halfway through.
pub fn run_batch(
    engine: &mut Engine,
    prompts: &PromptSet,
    align: Option<&Alignment>,
    cfg: &RunConfig,
    questions: &[String],
) -> Result<RunOutput> {
    run_batch_streaming(engine, prompts, align, cfg, questions, &mut |_, _| {})
}

/// One token of a run's decodes, as [`run_batch_streaming`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct RunToken {
    /// The question's index in the batch.
    pub question: usize,
    /// The agent's index in its topology (0 for the single agent).
    pub agent: usize,
    /// Whether the agent is the final one, whose text is the run's answer.
    pub is_final: bool,
    pub id: u32,
}

/// [`run_batch`], telling `on_token` of every token as it is decoded (every agent that decodes text: the
/// final one, and TextMAS's others), with the tokenizer to turn them into text
/// ([`crate::text_stream::TextStream`]). The engine's abort flag, set from `on_token`, stops the run after
/// that token with [`Error::Interrupted`].
pub fn run_batch_streaming(
    engine: &mut Engine,
    prompts: &PromptSet,
    align: Option<&Alignment>,
    cfg: &RunConfig,
    questions: &[String],
    on_token: &mut dyn FnMut(&Tokenizer, RunToken),
) -> Result<RunOutput> {
    cfg.validate()?;
    if questions.is_empty() {
        return Err(Error::InvalidArgument("no questions to run".into()));
    }
    check_context(&engine.tokenizer, prompts, cfg, questions, engine.max_context)?;
    let caps = match cfg.method {
        // TextMAS agents each start from an empty cache; the first agent's need is exact, later ones are
        // reserved when their prompts exist (see `Batch::text`).
        Method::Text => first_text_phase(&engine.tokenizer, prompts, cfg, questions)?,
        _ => plan_capacity(&engine.tokenizer, prompts, cfg, questions)?,
    };
    let mut rows = reserve_rows(engine, &caps)?;
    let mut b = Batch {
        reports: questions
            .iter()
            .map(|q| QuestionReport {
                question: q.clone(),
                method: cfg.method.to_string(),
                topology: cfg.topology.to_string(),
                text: String::new(),
                answer: None,
                agents: Vec::new(),
                totals: Default::default(),
                kv_tokens: 0,
                kv_bytes: 0,
            })
            .collect(),
        traces: questions
            .iter()
            .map(|_| Trace {
                realign: align.map(|a| a.realign).unwrap_or(false),
                target_norm: align.map(|a| a.target_norm).unwrap_or(0.0),
                agents: Vec::new(),
            })
            .collect(),
        peak: vec![0; questions.len()],
        on_token,
    };
    match cfg.method {
        Method::Single => b.single(engine, prompts, cfg, questions, &mut rows)?,
        Method::Text => b.text(engine, prompts, cfg, questions)?,
        Method::Latent => {
            let align = align.ok_or_else(|| Error::InvalidArgument("a LatentMAS run needs the alignment".into()))?;
            b.latent(engine, prompts, align, cfg, questions, &mut rows)?
        }
    }
    for (r, peak) in b.reports.iter_mut().zip(&b.peak) {
        r.kv_tokens = *peak;
        r.kv_bytes = engine.kv.bytes_for(*peak);
        r.finish_totals();
    }
    Ok(RunOutput { reports: b.reports, traces: b.traces })
}

struct Batch<'a> {
    reports: Vec<QuestionReport>,
    traces: Vec<Trace>,
    /// Peak KV length per question.
    peak: Vec<usize>,
    on_token: &'a mut dyn FnMut(&Tokenizer, RunToken),
}

impl Batch<'_> {
    /// Records one agent of every question.
    fn push(&mut self, q: usize, report: AgentReport, trace: TraceAgent) {
        self.peak[q] = self.peak[q].max(report.kv_len_after);
        self.reports[q].agents.push(report);
        self.traces[q].agents.push(trace);
    }

    /// Prefills `ids[q]` on every row, then decodes; records each question's agent (number `agent` of its
    /// topology). Returns the texts.
    #[allow(clippy::too_many_arguments)]
    fn prefill_and_decode(
        &mut self,
        engine: &mut Engine,
        cfg: &RunConfig,
        spec: &AgentSpec,
        (agent, is_final): (usize, bool),
        rows: &mut [KvRow],
        ids: &[Vec<u32>],
    ) -> Result<Vec<String>> {
        let _agent = nvtx::range(&format!("agent {}", spec.name));
        let before: Vec<usize> = rows.iter().map(|r| r.len).collect();
        let t = Instant::now();
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        engine.prefill(rows, &refs, true)?;
        let prefill_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let on_token = &mut *self.on_token;
        let decoded: Vec<Decoded> = engine.decode(rows, &cfg.sampling, cfg.max_new_tokens, |tok, question, id| {
            on_token(tok, RunToken { question, agent, is_final, id })
        })?;
        let decode_s = t.elapsed().as_secs_f64();
        let mut texts = Vec::with_capacity(rows.len());
        for (q, d) in decoded.into_iter().enumerate() {
            let text = py_strip(&engine.tokenizer.decode(&d.ids, true)?).to_string();
            let report = AgentReport {
                role: spec.name.to_string(),
                prompt_tokens: ids[q].len(),
                latent_steps: 0,
                generated_tokens: d.ids.len(),
                kv_len_before: before[q],
                kv_len_after: rows[q].len,
                prefill_s,
                latent_s: 0.0,
                decode_s,
                text: Some(text.clone()),
            };
            let trace = TraceAgent {
                role: spec.name.to_string(),
                prompt_ids: ids[q].clone(),
                kv_len_before: before[q],
                kv_len_after: rows[q].len,
                latent_inputs: Vec::new(),
                generated_ids: d.ids,
            };
            self.push(q, report, trace);
            self.reports[q].answer = predict_answer(cfg.family == Family::Code, &text);
            self.reports[q].text = text.clone();
            texts.push(text);
        }
        Ok(texts)
    }

    fn single(
        &mut self,
        engine: &mut Engine,
        prompts: &PromptSet,
        cfg: &RunConfig,
        questions: &[String],
        rows: &mut [KvRow],
    ) -> Result<()> {
        const SINGLE: AgentSpec = AgentSpec { key: "single", name: "single", label: "Single" };
        let ids = questions
            .iter()
            .map(|q| agent_ids(&engine.tokenizer, prompts, cfg, &SINGLE, q, ""))
            .collect::<Result<Vec<_>>>()?;
        self.prefill_and_decode(engine, cfg, &SINGLE, (0, true), rows, &ids)?;
        Ok(())
    }

    /// TextMAS: every agent decodes on its own (fresh) cache; a context string carries the text on.
    fn text(&mut self, engine: &mut Engine, prompts: &PromptSet, cfg: &RunConfig, questions: &[String]) -> Result<()> {
        let agents = cfg.topology.agents();
        let mut ctx = vec![String::new(); questions.len()];
        for (i, spec) in agents.iter().enumerate() {
            let is_final = i == agents.len() - 1;
            // Hierarchical experts work independently; sequential agents see everything so far.
            let sees_ctx = is_final || cfg.topology == Topology::Sequential;
            let ids = questions
                .iter()
                .zip(&ctx)
                .map(|(q, c)| {
                    // The reference passes `context[:text_mas_context_length]` (by default minus its last character).
                    let passed = if sees_ctx { py_prefix(c, cfg.text_mas_context_length) } else { "" };
                    agent_ids(&engine.tokenizer, prompts, cfg, spec, q, passed)
                })
                .collect::<Result<Vec<_>>>()?;
            let need: Vec<usize> = ids.iter().map(|p| p.len().saturating_add(cfg.max_new_tokens)).collect();
            for (q, &n) in need.iter().enumerate() {
                check_positions(cfg, q, n, engine.max_context)?;
            }
            let mut rows = reserve_rows(engine, &need)?;
            let texts = self.prefill_and_decode(engine, cfg, spec, (i, is_final), &mut rows, &ids)?;
            if !is_final {
                for (c, t) in ctx.iter_mut().zip(texts) {
                    c.push_str(&format!("[{}]:\n{}\n\n", spec.label, t));
                }
            }
        }
        Ok(())
    }

    /// LatentMAS: each non-final agent prefills on top of the shared cache and thinks m latent steps; the
    /// final agent prefills on top and decodes.
    fn latent(
        &mut self,
        engine: &mut Engine,
        prompts: &PromptSet,
        align: &Alignment,
        cfg: &RunConfig,
        questions: &[String],
        rows: &mut [KvRow],
    ) -> Result<()> {
        let agents = cfg.topology.agents();
        let m = cfg.latent_steps;
        let ids: Vec<Vec<Vec<u32>>> = agents
            .iter()
            .map(|spec| {
                questions
                    .iter()
                    .map(|q| agent_ids(&engine.tokenizer, prompts, cfg, spec, q, ""))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let nq = questions.len();
        if cfg.topology == Topology::Parallel {
            // Expert i of question q is a sub-row laid out where it would sit in the chain (after experts
            // 0..i and their latents), seeing only itself. All 3·Q sub-rows run as one batch; since they are
            // carved contiguously in the question's row, the row is contiguous when they finish and needs
            // no splice before the summarizer.
            let mut subs = Vec::with_capacity(3 * nq);
            for q in 0..nq {
                let mut offset = 0;
                for expert in &ids[..3] {
                    let len = expert[q].len() + m;
                    subs.push(rows[q].sub_row(offset, len)?);
                    offset += len;
                }
            }
            let sub_ids: Vec<Vec<u32>> =
                (0..nq).flat_map(|q| (0..3).map(move |e| (q, e))).map(|(q, e)| ids[e][q].clone()).collect();
            let results = {
                let _agents = nvtx::range("agents: parallel experts");
                self.think(engine, align, m, &mut subs, &sub_ids)?
            };
            for (k, (prefill_s, latent_s, trace)) in results.into_iter().enumerate() {
                let (q, e) = (k / 3, k % 3);
                self.push_thinker(
                    q,
                    &agents[e],
                    &sub_ids[k],
                    subs[k].pos_base,
                    // kv_len_after in the question's row: the expert ends at offset + its length.
                    subs[k].pos_base + subs[k].len,
                    m,
                    prefill_s,
                    latent_s,
                    trace,
                );
            }
            for q in 0..nq {
                rows[q].len = subs[3 * q + 2].pos_base - rows[q].pos_base + subs[3 * q + 2].len;
            }
        } else {
            for (e, spec) in agents[..3].iter().enumerate() {
                let _agent = nvtx::range(&format!("agent {}", spec.name));
                let before: Vec<usize> = rows.iter().map(|r| r.len).collect();
                let results = self.think(engine, align, m, rows, &ids[e])?;
                for (q, (prefill_s, latent_s, trace)) in results.into_iter().enumerate() {
                    self.push_thinker(q, spec, &ids[e][q], before[q], rows[q].len, m, prefill_s, latent_s, trace);
                }
            }
        }
        if m == 0 && cfg.compat_reference {
            // The reference's m = 0 quirk: the final agent decodes with no cache at all.
            for r in rows.iter_mut() {
                r.len = 0;
            }
        }
        self.prefill_and_decode(engine, cfg, &agents[3], (3, true), rows, &ids[3])?;
        Ok(())
    }

    /// Prefill then m latent steps on every row; per row (prefill_s, latent_s, fed vectors).
    fn think(
        &mut self,
        engine: &mut Engine,
        align: &Alignment,
        m: usize,
        rows: &mut [KvRow],
        ids: &[Vec<u32>],
    ) -> Result<Vec<(f64, f64, Vec<LatentInput>)>> {
        let t = Instant::now();
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        engine.prefill(rows, &refs, false)?;
        let prefill_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut fed: Vec<Vec<LatentInput>> = vec![Vec::with_capacity(m); rows.len()];
        engine.latent_steps(rows, m, align, |r, e| fed[r].push(LatentInput::new(e)))?;
        let latent_s = t.elapsed().as_secs_f64();
        Ok(fed.into_iter().map(|f| (prefill_s, latent_s, f)).collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn push_thinker(
        &mut self,
        q: usize,
        spec: &AgentSpec,
        ids: &[u32],
        before: usize,
        after: usize,
        m: usize,
        prefill_s: f64,
        latent_s: f64,
        fed: Vec<LatentInput>,
    ) {
        let report = AgentReport {
            role: spec.name.to_string(),
            prompt_tokens: ids.len(),
            latent_steps: m,
            generated_tokens: 0,
            kv_len_before: before,
            kv_len_after: after,
            prefill_s,
            latent_s,
            decode_s: 0.0,
            text: None,
        };
        let trace = TraceAgent {
            role: spec.name.to_string(),
            prompt_ids: ids.to_vec(),
            kv_len_before: before,
            kv_len_after: after,
            latent_inputs: fed,
            generated_ids: Vec::new(),
        };
        self.push(q, report, trace);
    }
}

/// Frees the buffer and carves one row per question, failing with the numbers when they do not fit.
fn reserve_rows(engine: &mut Engine, need: &[usize]) -> Result<Vec<KvRow>> {
    let total = need.iter().try_fold(0usize, |a, &n| a.checked_add(n)).unwrap_or(usize::MAX);
    if total > engine.kv.reservable() {
        return Err(Error::KvCapacity(format!(
            "{} question(s) need {total} KV slots ({} bytes) but the buffer has {}; raise --kv-budget or lower --batch",
            need.len(),
            engine.kv.bytes_for(total),
            engine.kv.reservable()
        )));
    }
    engine.kv.reset();
    need.iter().map(|&c| engine.kv.reserve(c)).collect()
}

/// Exact KV need of the first TextMAS agent (its prompt has no context yet).
fn first_text_phase(tok: &Tokenizer, prompts: &PromptSet, cfg: &RunConfig, questions: &[String]) -> Result<Vec<usize>> {
    let spec = &cfg.topology.agents()[0];
    questions
        .iter()
        .map(|q| Ok(agent_ids(tok, prompts, cfg, spec, q, "")?.len().saturating_add(cfg.max_new_tokens)))
        .collect()
}

/// Python's `s[:n]` on characters: n ≥ 0 keeps the first n, n < 0 drops the last |n| (all, if fewer).
fn py_prefix(s: &str, n: i64) -> &str {
    let chars = s.chars().count() as i64;
    let keep = if n >= 0 { n.min(chars) } else { (chars + n).max(0) } as usize;
    match s.char_indices().nth(keep) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// KV slots a batch needs in total: what `--kv-budget auto` allocates.
pub fn batch_slots(tok: &Tokenizer, prompts: &PromptSet, cfg: &RunConfig, questions: &[String]) -> Result<usize> {
    plan_capacity(tok, prompts, cfg, questions)?
        .into_iter()
        .try_fold(0usize, |a, n| a.checked_add(n))
        .ok_or_else(|| Error::InvalidArgument("the batch's KV need overflows; lower --batch".into()))
}

#[cfg(test)]
mod tests {
    use super::py_prefix;

    #[test]
    fn context_cut_is_pythons_prefix_slice_on_characters() {
        let s = "[Planner]:\nplan é\n\n";
        assert_eq!(py_prefix(s, -1), "[Planner]:\nplan é\n");
        assert_eq!(py_prefix(s, -3), "[Planner]:\nplan ");
        assert_eq!(py_prefix(s, 4), "[Pla");
        assert_eq!(py_prefix(s, 0), "");
        assert_eq!(py_prefix(s, 1000), s);
        assert_eq!(py_prefix(s, -1000), "");
        assert_eq!(py_prefix("", -1), "");
    }
}
