//! Plain-chat requests decoded together: the prompts of every request in the batch prefill in one forward
//! call, then each step feeds every unfinished row's last token in one call. Rows are independent (own
//! slots, positions from 0, own sampler seeded by its request), so each request gets exactly the tokens it
//! gets alone; a request that ends (stop token, its `max_tokens`, or its client gone) drops out of the
//! next step while the others go on.
//!
//! The loop is the engine's `decode` with per-request sampling and per-request ends, which that call (one
//! sampling setting, one abort flag for all rows) does not offer.

use std::sync::atomic::{AtomicBool, Ordering};

use engine::engine::Engine;
use engine::kv::KvRow;
use engine::model::qwen3::{Input, RowStep, Select};
use engine::sample::Sampler;

use crate::api::Usage;
use crate::error::ApiError;
use crate::queue::{Event, Job, Stats};
use crate::request::Work;

/// Requests decoded together at most: beyond this a step's cost grows with the batch while the wait of
/// the queued requests no longer shrinks much (on a CPU a decode step is bound by reading the weights
/// until about this many rows).
pub const MAX_BATCH: usize = 8;

/// One request of a batch.
struct Row<'a> {
    job: &'a Job,
    prompt: &'a [u32],
    max_new: usize,
    sampler: Sampler,
    ids: Vec<u32>,
    kv: KvRow,
}

/// Runs `jobs` (plain chat only) as one batch, answering each; counts completions and departures in
/// `stats`. `shutdown` is the engine's abort flag, raised only when the server stops.
pub fn run(engine: &mut Engine, jobs: &[Job], stats: &Stats, shutdown: &AtomicBool) -> engine::Result<()> {
    engine.kv.reset();
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        let Work::Chat { prompt_ids, sampling, max_new } = &job.work else {
            return Err(engine::Error::Other("a multi-agent request in a chat batch".into()));
        };
        rows.push(Row {
            job,
            prompt: prompt_ids,
            max_new: *max_new,
            sampler: Sampler::new(*sampling),
            ids: Vec::with_capacity((*max_new).min(4096)),
            kv: engine.kv.reserve(prompt_ids.len() + max_new)?,
        });
    }
    if rows.len() > 1 {
        stats.batched.fetch_add(rows.len() as u64, Ordering::Relaxed);
    }
    let mut kvs: Vec<KvRow> = rows.iter().map(|r| r.kv).collect();
    let prompts: Vec<&[u32]> = rows.iter().map(|r| r.prompt).collect();
    engine.prefill(&mut kvs, &prompts, true)?;
    for (r, kv) in rows.iter_mut().zip(kvs) {
        r.kv = kv;
    }
    let vocab = engine.model.config.vocab_size;
    let limit = engine.vocab_limit();
    let stops = engine.tokenizer.stop_ids();
    // `order[j]` = the row whose logits are at position j of the last forward call.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    loop {
        let mut next: Vec<(usize, u32)> = Vec::with_capacity(order.len());
        for (j, &i) in order.iter().enumerate() {
            let r = &mut rows[i];
            let logits = engine.ws.logits_row(j, vocab);
            if logits[..limit].iter().any(|v| !v.is_finite()) {
                return Err(engine::Error::NonFinite(format!(
                    "decode step {} produced NaN or Inf in the logits; the checkpoint's weights overflow",
                    r.ids.len()
                )));
            }
            let id = r.sampler.sample(logits, limit);
            r.ids.push(id);
            let gone = (r.job.stream && r.job.events.send(Event::Token(id)).is_err()) || r.job.control.is_cancelled();
            if gone {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
            } else if stops.contains(&id) || r.ids.len() >= r.max_new {
                let text = engine.tokenizer.decode(&r.ids, true)?;
                let finish = if stops.contains(&id) { "stop" } else { "length" };
                let usage = Usage { prompt_tokens: r.prompt.len(), completion_tokens: r.ids.len() };
                stats.completed.fetch_add(1, Ordering::Relaxed);
                let _ = r.job.events.send(Event::Done { text, finish, usage, report: None });
            } else {
                next.push((i, id));
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        if shutdown.load(Ordering::SeqCst) {
            for &(i, _) in &next {
                let e = ApiError::unavailable("the server is shutting down; the request was stopped");
                let _ = rows[i].job.events.send(Event::Failed(e));
                stats.aborted.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        order = next.iter().map(|&(i, _)| i).collect();
        let ids: Vec<u32> = next.iter().map(|&(_, id)| id).collect();
        let mut kvs: Vec<KvRow> = order.iter().map(|&i| rows[i].kv).collect();
        for kv in &kvs {
            kv.check_append(1)?;
        }
        let mut steps: Vec<RowStep> = kvs
            .iter_mut()
            .zip(&ids)
            .map(|(row, id)| RowStep { row, input: Input::Tokens(std::slice::from_ref(id)), select: Select::Last })
            .collect();
        let precision = engine.decode_precision;
        engine.forward_with(&mut steps, true, precision)?;
        for (&i, kv) in order.iter().zip(kvs) {
            rows[i].kv = kv;
        }
    }
}
