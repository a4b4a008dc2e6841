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
//! What only the CLI uses (evaluation, benchmarks, output files, signal cleanup) is the `latentmas-cli`
//! crate (crates/cli); the C library is `latentmas-capi` (crates/capi).
//!
//! Features: `hub` (model ids downloaded from the Hugging Face hub), `emu` (the host kernel emulator
//! and the `emu` device).

pub mod alloc_guard;
pub mod answer;
pub mod backend;
pub mod cache;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod kv;
pub mod latent;
pub mod mas;
pub mod model;
pub mod sample;
pub mod startup;
pub mod text_stream;
pub mod tokenizer;
pub mod tokenizer_json;

pub use error::{Error, Result};
