//! The Qwen3 model: [`config::Qwen3Config`], [`weights::Weights`] (safetensors loading),
//! [`qwen3::Qwen3::forward`], [`hub::resolve_model`] (local dir or hub id) and [`synth`] (random checkpoints
//! of real shapes).

pub mod config;
pub mod finite;
pub mod hub;
pub mod matrix;
pub mod qwen3;
pub mod synth;
pub mod weights;
