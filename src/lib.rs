//! latentmas: LatentMAS (multi-agent reasoning in latent space, arXiv 2511.20639) on a minimal Qwen3 engine.
//!
//! Layers, bottom up:
//! - [`model`]: Qwen3 config, weights (safetensors, memory-mapped), the forward pass.
//! - [`backend`]: the ops the forward is made of; `cpu` is the reference.
//! - [`kv`]: the ONE preallocated KV buffer that every agent of every question appends to.
//! - [`tokenizer`]: tokenizer + the model's own chat template; [`text_stream`]: generated tokens as text pieces.
//! - [`sample`]: greedy and temperature → top-k → top-p sampling.
//! - [`latent`]: the alignment matrix W_a and the latent step's input vector.
//! - [`mas`]: prompts, agents, topologies, baselines, reports; [`answer`]: the answer a report carries.
//! - [`alloc_guard`]: the allocator, which bounds the memory of a chat template's render.
//!
//! What only the CLI uses (feature `cli`, default on; the C library leaves it out):
//! - `eval`: datasets, scoring, the code sandbox, results files and reports; `bench`: the benchmarks.
//! - `output` + `interrupt`: files written whole or not at all, and cleanup on SIGINT/SIGTERM.
//!
//! Other features: `hub` (model ids downloaded from the Hugging Face hub), `emu` (the host kernel emulator
//! and the `emu` device).

pub mod alloc_guard;
pub mod answer;
pub mod backend;
#[cfg(feature = "cli")]
pub mod bench;
pub mod cache;
pub mod engine;
pub mod error;
#[cfg(feature = "cli")]
pub mod eval;
#[cfg(feature = "cli")]
pub mod interrupt;
pub mod kernels;
pub mod kv;
pub mod latent;
pub mod mas;
pub mod model;
#[cfg(feature = "cli")]
pub mod output;
pub mod sample;
pub mod startup;
#[cfg(feature = "cli")]
pub mod table;
pub mod text_stream;
pub mod tokenizer;
pub mod tokenizer_json;

pub use error::{Error, Result};
