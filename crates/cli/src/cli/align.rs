//! `latentmas align`: compute (or find cached) the alignment W_a of a model and report it.

use std::time::Instant;

use latentmas::latent::Alignment;
use latentmas::model::hub::resolve_model;
use latentmas::model::qwen3::Qwen3;
use latentmas::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory or hub id.
    #[arg(long)]
    model: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    latentmas::engine::set_threads(super::common::thread_count(a.threads)?);
    let dir = resolve_model(&a.model)?;
    let vocab = Tokenizer::load(&dir)?.len();
    let model = Qwen3::load(&dir)?;
    let t = Instant::now();
    let (align, cache) = Alignment::load_or_compute(&model, &dir, vocab.min(model.config.vocab_size), true)?;
    let w = align.w_a().unwrap_or_default();
    let d = model.config.hidden_size;
    let off_identity =
        w.iter().enumerate().map(|(i, v)| (v - if i / d == i % d { 1.0 } else { 0.0 }).abs()).fold(0f32, f32::max);
    println!(
        "W_a: {d}x{d} over {vocab} rows ({}), target_norm {:.6}, max |W_a - I| {:.3e}, {:.1} s; cache: {}",
        if model.config.tie_word_embeddings { "tied" } else { "untied" },
        align.target_norm,
        off_identity,
        t.elapsed().as_secs_f64(),
        cache.map(|p| p.display().to_string()).unwrap_or_else(|| "not written".into())
    );
    Ok(())
}
