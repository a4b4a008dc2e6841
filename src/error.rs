//! The library's one error type. Every failure a user can cause (bad files, bad shapes, bad arguments,
//! a full KV buffer) maps to a variant whose message names the problem and, where useful, the fix.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("model config: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("model hub: {0}")]
    Hub(String),
    #[error("KV buffer: {0}")]
    KvCapacity(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("prompts: {0}")]
    Prompts(String),
    #[error("dataset: {0}")]
    Dataset(String),
    #[error("device: {0}")]
    Device(String),
    /// A NaN or Inf came out of a forward phase (bad weights, an overflowing activation).
    #[error("non-finite numbers: {0}")]
    NonFinite(String),
    /// The caller asked the engine to stop ([`crate::engine::Engine::abort_flag`]).
    #[error("interrupted: {0}")]
    Interrupted(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
