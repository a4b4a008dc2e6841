//! `latentmas generate`: one chat turn, streamed, with a tokens/s line (or one JSON object).

use std::io::Write;
use std::time::Instant;

use latentmas::engine::{set_threads, Engine};
use latentmas::kv::KvBudget;
use latentmas::model::hub::resolve_model;

use super::common::{DeviceArg, SamplingArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory or hub id (e.g. Qwen/Qwen3-4B).
    #[arg(long)]
    model: String,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// An optional system message.
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print {"prompt_ids", "generated_ids", "text"} instead of streaming.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    set_threads(super::common::thread_count(a.threads)?);
    let device = a.device.kind()?;
    let params = a.sampling.params()?;
    let dir = resolve_model(&a.model)?;
    // Render first with the tokenizer alone so the KV buffer is sized exactly.
    let tokenizer = latentmas::tokenizer::Tokenizer::load(&dir)?;
    let text = tokenizer.render_chat(a.system.as_deref(), &a.prompt, None)?;
    let prompt_ids = tokenizer.encode(&text)?;
    drop(tokenizer);
    if a.max_new_tokens == 0 {
        anyhow::bail!("--max-new-tokens must be at least 1");
    }
    let context = latentmas::model::config::Qwen3Config::from_file(&dir.join("config.json"))?.max_position_embeddings;
    let need = prompt_ids.len().saturating_add(a.max_new_tokens);
    if need > context {
        anyhow::bail!(
            "the prompt ({} tokens) and --max-new-tokens {} need {need} positions but the model's context length is \
             {context} (max_position_embeddings)",
            prompt_ids.len(),
            a.max_new_tokens
        );
    }
    let mut engine = Engine::open_on(&dir, KvBudget::Tokens(need), device)?;
    let mut row = [engine.kv.reserve(need)?];
    let t0 = Instant::now();
    engine.prefill(&mut row, &[&prompt_ids], true)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut pieces = latentmas::text_stream::TextStream::new();
    let json = a.json;
    // Stream: print each piece once it is complete UTF-8.
    let stream = |tok: &latentmas::tokenizer::Tokenizer, _row: usize, id: u32| {
        if json {
            return;
        }
        if let Ok(piece) = pieces.push(tok, id) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    };
    let decoded = engine.decode(&mut row, &params, a.max_new_tokens, stream)?;
    let decode_s = t1.elapsed().as_secs_f64();
    let generated = &decoded[0].ids;
    let text = engine.tokenizer.decode(generated, true)?.trim().to_string();
    if a.json {
        let obj = serde_json::json!({"prompt_ids": prompt_ids, "generated_ids": generated, "text": text});
        println!("{obj}");
    } else {
        println!();
        println!(
            "[prompt tokens {}, generated tokens {}, prefill {:.1} tok/s, decode {:.2} tok/s]",
            prompt_ids.len(),
            generated.len(),
            prompt_ids.len() as f64 / prefill_s,
            generated.len() as f64 / decode_s.max(1e-9)
        );
    }
    Ok(())
}
