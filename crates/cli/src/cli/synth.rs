//! `latentmas synth`: a random-weight checkpoint of a real Qwen3 shape.

use std::path::PathBuf;
use std::time::Instant;

use latentmas::model::synth::{shape, write_checkpoint, SynthDtype};

#[derive(clap::Args)]
pub struct Args {
    /// tiny | qwen3-0.6b | qwen3-1.7b | qwen3-4b | qwen3-8b | qwen3-14b
    #[arg(long)]
    shape: String,
    /// Output directory (created if needed; an existing non-empty one needs --force).
    #[arg(long)]
    out: PathBuf,
    /// Write into an existing non-empty --out directory, replacing the checkpoint files there.
    #[arg(long)]
    force: bool,
    /// Weight dtype: bf16 | f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Tie lm_head to the embedding (default: as the real model of that shape).
    #[arg(long, conflicts_with = "untied")]
    tied: bool,
    /// Give the model its own lm_head.
    #[arg(long)]
    untied: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = shape(&a.shape)?;
    if a.tied {
        cfg.tie_word_embeddings = true;
    }
    if a.untied {
        cfg.tie_word_embeddings = false;
    }
    let dtype = match a.dtype.as_str() {
        "bf16" => SynthDtype::Bf16,
        "f32" => SynthDtype::F32,
        other => anyhow::bail!("--dtype {other:?}: expected bf16 or f32"),
    };
    check_out(&a.out, a.force)?;
    let t = Instant::now();
    write_checkpoint(&cfg, dtype, a.seed, &a.out)?;
    let bytes = std::fs::metadata(a.out.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({}, {} layers, hidden {}, {}) to {} in {:.1} s: {:.2} GB of weights",
        a.shape,
        a.dtype,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        if cfg.tie_word_embeddings { "tied" } else { "untied" },
        a.out.display(),
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e9
    );
    Ok(())
}

/// Refuses to write over something: `--out` must be absent, an empty directory, or `--force` given for a
/// non-empty one (a model directory written over would lose its weights silently).
fn check_out(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    match std::fs::metadata(out) {
        Err(_) => Ok(()),
        Ok(m) if !m.is_dir() => anyhow::bail!("--out {} exists and is not a directory", out.display()),
        Ok(_) => {
            let non_empty =
                std::fs::read_dir(out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?.next().is_some();
            if non_empty && !force {
                anyhow::bail!(
                    "--out {} is not empty; pass --force to write the checkpoint into it (its files of the same \
                     names are replaced)",
                    out.display()
                );
            }
            Ok(())
        }
    }
}
