//! latentmas: LatentMAS (multi-agent reasoning in latent space, arXiv 2511.20639) on a minimal Qwen3 engine.
//!
//! Layers, bottom up:
//! - [`model`]: Qwen3 config, weights (safetensors, memory-mapped), the forward pass.
//! - [`backend`]: the ops the forward is made of; `cpu` is the reference.
//! - [`kv`]: the ONE preallocated KV buffer that every agent of every question appends to.
//! - [`tokenizer`]: tokenizer + the model's own chat template.
//! - [`sample`]: greedy and temperature → top-k → top-p sampling.
//! - [`latent`]: the alignment matrix W_a and the latent step's input vector.
//! - [`mas`]: prompts, agents, topologies, baselines, reports.
//! - [`eval`]: datasets, answer extraction, scoring.
//! - [`output`] + [`interrupt`]: files written whole or not at all, and cleanup on SIGINT/SIGTERM.
//! - [`alloc_guard`]: the allocator, which bounds the memory of a chat template's render.

pub mod alloc_guard;
pub mod backend;
pub mod bench;
pub mod engine;
pub mod error;
pub mod eval;
pub mod interrupt;
pub mod kernels;
pub mod kv;
pub mod latent;
pub mod mas;
pub mod model;
pub mod output;
pub mod sample;
pub mod startup;
pub mod tokenizer;
pub mod tokenizer_json;

pub use error::{Error, Result};
