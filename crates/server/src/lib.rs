//! latentmas-server: an OpenAI-compatible HTTP server over the latentmas engine (docs/SERVER.md).
//!
//! - [`api`]: the request and response bodies of `POST /v1/chat/completions`.
//! - [`request`]: a request checked against the model and its limits, ready to queue.
//! - [`queue`]: the bounded queue to the engine's thread, and cancellation by a departed client.
//! - [`worker`]: the engine's thread (TextMAS and LatentMAS runs); [`batch`]: plain-chat requests decoded
//!   together.
//! - [`routes`]: the endpoints; [`text`]: streamed text pieces.
//! - [`error`]: errors in OpenAI's JSON shape.

pub mod api;
pub mod batch;
pub mod error;
pub mod queue;
pub mod request;
pub mod routes;
pub mod text;
pub mod worker;

use std::sync::Arc;

use engine::mas::prompts::PromptSet;
use engine::tokenizer::Tokenizer;

/// What the request handlers share.
pub struct Shared {
    /// The model's name in requests and in `GET /v1/models`.
    pub served_name: String,
    /// The model's tokenizer (a copy of the engine's): requests are rendered and checked before they queue.
    pub tokenizer: Tokenizer,
    /// The multi-agent prompt set (the engine's worker holds the same).
    pub prompts: PromptSet,
    pub limits: request::Limits,
    pub kv_bytes: u64,
    pub queue: Arc<queue::Queue>,
    /// Unix time the server started (the model card's `created`).
    pub started: u64,
}
