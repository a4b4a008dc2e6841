//! What happens before the first prefill: the model and its tokenizer loaded side by side, and the
//! breakdown of where the time went ([`Startup`], printed by `latentmas run` and reported in its `--json`).
//!
//! The tokenizer (a JSON parse and a BPE build: one core, the critical path) and the weights (page faults,
//! `pread` and the NaN/Inf check: parallel) load side by side. With two or more pool threads the tokenizer
//! takes one pool thread and the weights the others (`rayon::join`), so the critical path owns its core and
//! the total work never oversubscribes the machine; with one pool thread the tokenizer gets a thread of its
//! own.
//!
//! Operations: [`load_model_and_tokenizer`], [`Startup::line`].

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::backend::cpu::mem::resident_bytes;
use crate::error::Result;
use crate::model::config::Qwen3Config;
use crate::model::qwen3::Qwen3;
use crate::model::weights::Weights;
use crate::tokenizer::Tokenizer;

/// Seconds and bytes of a run's startup, phase by phase (wall time; the tokenizer overlaps the weights).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Startup {
    /// Building the thread pool.
    pub threads_s: f64,
    /// Reading the prompt set and resolving the model directory.
    pub prompts_s: f64,
    /// `config.json`.
    pub config_s: f64,
    /// `tokenizer.json` + the chat template, beside the weights (overlaps `weights_s`).
    pub tokenizer_s: f64,
    /// Mapping, reading and checking the weights.
    pub weights_s: f64,
    /// Wall time of the two loads together.
    pub load_s: f64,
    /// Rendering and tokenising the prompts to size the KV buffer (`--kv-budget auto`).
    pub kv_sizing_s: f64,
    /// Allocating the KV buffer (and, on a GPU device, uploading the weights).
    pub engine_s: f64,
    /// The latent alignment (LatentMAS; 0 otherwise).
    pub alignment_s: f64,
    /// Everything before the first prefill.
    pub total_s: f64,
    /// Bytes of the weight matrices, and how many of them are read in place from the mapped checkpoint.
    pub weights_bytes: u64,
    pub weights_mapped_bytes: u64,
    /// Bytes of the KV buffer (reserved; pages become resident as tokens are written).
    pub kv_bytes: u64,
    /// Resident set size when startup ended (0 where it cannot be read).
    pub rss_bytes: u64,
}

impl Startup {
    /// One line for the text report.
    pub fn line(&self) -> String {
        let mb = |b: u64| b as f64 / 1e6;
        format!(
            "startup {:.3} s: threads {:.3}, prompts {:.3}, config {:.3}, weights {:.3} ‖ tokenizer {:.3} (together {:.3}), kv sizing {:.3}, engine {:.3}, alignment {:.3}; weights {:.0} MB ({:.0} MB mapped in place), KV {:.1} MB reserved, RSS {:.0} MB",
            self.total_s,
            self.threads_s,
            self.prompts_s,
            self.config_s,
            self.weights_s,
            self.tokenizer_s,
            self.load_s,
            self.kv_sizing_s,
            self.engine_s,
            self.alignment_s,
            mb(self.weights_bytes),
            mb(self.weights_mapped_bytes),
            mb(self.kv_bytes),
            mb(self.rss_bytes),
        )
    }

    /// Records the resident set size now.
    pub fn sample_rss(&mut self) {
        self.rss_bytes = resident_bytes().unwrap_or(0);
    }
}

/// Loads `config.json`, then the tokenizer and the weights of `dir` side by side (module docs), filling the
/// config/tokenizer/weights/load fields of `startup`. When both fail, the tokenizer's error is returned (the
/// order the loads used to run in).
pub fn load_model_and_tokenizer(dir: &Path, startup: &mut Startup) -> Result<(Qwen3, Tokenizer)> {
    let t = Instant::now();
    let config = Qwen3Config::from_file(&dir.join("config.json"))?;
    startup.config_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let panicked = || crate::Error::Tokenizer(format!("{}: the tokenizer load panicked", dir.display()));
    let load_tokenizer = || {
        let t = Instant::now();
        // a panic in the tokenizer library is this load's error, not the process's end
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Tokenizer::load(dir)))
            .unwrap_or_else(|_| Err(panicked()))
            .map(|tok| (tok, t.elapsed().as_secs_f64()))
    };
    let load_weights = || {
        let t = Instant::now();
        Weights::load(dir, &config).map(|w| (w, t.elapsed().as_secs_f64()))
    };
    let (tokenizer, weights) = if rayon::current_num_threads() >= 2 {
        rayon::join(load_tokenizer, load_weights)
    } else {
        std::thread::scope(|s| {
            let tok = std::thread::Builder::new().name("tokenizer-load".into()).spawn_scoped(s, load_tokenizer);
            let weights = load_weights();
            let tokenizer = match tok {
                Ok(handle) => handle.join().unwrap_or_else(|_| Err(panicked())),
                // no thread to be had: load it here
                Err(_) => load_tokenizer(),
            };
            (tokenizer, weights)
        })
    };
    let (tokenizer, tokenizer_s) = tokenizer?;
    let (weights, weights_s) = weights?;
    startup.load_s = t.elapsed().as_secs_f64();
    startup.tokenizer_s = tokenizer_s;
    startup.weights_s = weights_s;
    startup.weights_bytes = weights.bytes() as u64;
    startup.weights_mapped_bytes = weights.mapped_bytes() as u64;
    Ok((Qwen3::new(config, weights), tokenizer))
}
