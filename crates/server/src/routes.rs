//! The HTTP endpoints: `GET /v1/models`, `GET /v1/models/{model}`, `GET /health` and
//! `POST /v1/chat/completions` (a JSON answer, or server-sent events ending in `data: [DONE]`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::{chunk, completion, usage_chunk, ChatRequest, Envelope};
use crate::error::ApiError;
use crate::queue::{CancelOnDrop, Control, Event, Job, Refused};
use crate::request::{self, Work};
use crate::text::TextStream;
use crate::Shared;

/// Largest request body read (a prompt longer than any context is refused by its length later, with the
/// limit named; this only bounds the memory one request can take).
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// A comment line sent this often on a quiet stream (while queued, while agents think): clients ignore it,
/// and writing it is how the server notices a client that left.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .route("/health", get(health))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint; see docs/SERVER.md") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                ..ApiError::invalid(
                    "this endpoint does not take that method (GET /v1/models, GET /health, POST /v1/chat/completions)",
                )
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

fn model_card(s: &Shared) -> Value {
    json!({
        "id": s.served_name,
        "object": "model",
        "created": s.started,
        "owned_by": "latentmas",
        "max_model_len": s.limits.max_context.min(s.limits.kv_slots),
    })
}

async fn models(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_card(&s)]}))
}

async fn model(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if id == s.served_name {
        return Json(model_card(&s)).into_response();
    }
    ApiError::not_found(
        "model_not_found",
        format!("the model {id:?} does not exist; this server serves {:?}", s.served_name),
    )
    .into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let (waiting, running, closed) = s.queue.snapshot();
    let st = &s.queue.stats;
    let body = json!({
        "status": if closed.is_none() { "ok" } else { "unavailable" },
        "reason": closed,
        "model": s.served_name,
        "queue": {"waiting": waiting, "capacity": s.queue.capacity(), "running": running},
        "requests": {
            "completed": st.completed.load(Ordering::Relaxed),
            "aborted": st.aborted.load(Ordering::Relaxed),
            "skipped": st.skipped.load(Ordering::Relaxed),
            "failed": st.failed.load(Ordering::Relaxed),
            "batched": st.batched.load(Ordering::Relaxed),
        },
        "kv": {"tokens": s.limits.kv_slots, "bytes": s.kv_bytes},
        "max_context": s.limits.max_context,
    });
    let status =
        if closed.is_none() { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn chat_completions(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Response {
    match handle(s, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn handle(s: Arc<Shared>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError {
        status: e.status(),
        ..ApiError::invalid(format!("the request body: {}", e.body_text()))
    })?;
    let req = ChatRequest::parse(&body)?;
    // Rendering the template and tokenizing is CPU work: off the async threads.
    let shared = s.clone();
    let plan = tokio::task::spawn_blocking(move || {
        request::plan(req, &shared.served_name, &shared.tokenizer, &shared.prompts, &shared.limits)
    })
    .await
    .map_err(|e| ApiError::internal(format!("checking the request failed: {e}")))??;
    let strip = matches!(plan.work, Work::Mas { .. });
    let (tx, rx) = unbounded_channel();
    let control = Arc::new(Control::default());
    let job = Job { work: plan.work, stream: plan.stream, events: tx, control: control.clone() };
    s.queue.push(job).map_err(|why| match why {
        Refused::Full { waiting } => ApiError::queue_full(format!(
            "the server is busy: {waiting} request(s) already wait for the engine (--max-queue {}); retry later",
            s.queue.capacity()
        )),
        Refused::Closed(why) => ApiError::unavailable(why),
    })?;
    let guard = CancelOnDrop(control);
    let env = Envelope {
        id: format!("chatcmpl-{}-{}", s.started, NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        created: now(),
        model: s.served_name.clone(),
    };
    if plan.stream {
        let events = sse_events(s, env, plan.include_usage, strip, rx, guard);
        return Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response());
    }
    let mut rx = rx;
    let answer = loop {
        match rx.recv().await {
            Some(Event::Token(_)) => continue,
            Some(ev) => break ev,
            None => return Err(ApiError::internal("the engine dropped the request without an answer")),
        }
    };
    drop(guard);
    match answer {
        Event::Done { text, finish, usage, report } => {
            Ok(Json(completion(&env, &text, finish, usage, report.as_ref())).into_response())
        }
        Event::Failed(e) => Err(e),
        Event::Token(_) => unreachable!("tokens are skipped above"),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Where a stream is.
enum Phase {
    Start,
    Body,
    Finished,
}

struct StreamState {
    shared: Arc<Shared>,
    env: Envelope,
    include_usage: bool,
    rx: UnboundedReceiver<Event>,
    text: TextStream,
    phase: Phase,
    /// Dropped with the stream: a client that disconnects cancels its job.
    _guard: CancelOnDrop,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

fn sse_events(
    shared: Arc<Shared>,
    env: Envelope,
    include_usage: bool,
    strip: bool,
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let st = StreamState {
        shared,
        env,
        include_usage,
        rx,
        text: TextStream::new(strip),
        phase: Phase::Start,
        _guard: guard,
    };
    stream::unfold(st, |mut st| async move {
        let out = next_events(&mut st).await?;
        Some((stream::iter(out.into_iter().map(Ok)), st))
    })
    .flatten()
}

/// The next events of a stream; None when it has ended.
async fn next_events(st: &mut StreamState) -> Option<Vec<SseEvent>> {
    let u = st.include_usage;
    match st.phase {
        Phase::Finished => None,
        Phase::Start => {
            st.phase = Phase::Body;
            Some(vec![data(&chunk(&st.env, json!({"role": "assistant", "content": ""}), None, u))])
        }
        Phase::Body => loop {
            match st.rx.recv().await {
                Some(Event::Token(id)) => {
                    if let Some(piece) = st.text.push(&st.shared.tokenizer, id) {
                        return Some(vec![data(&chunk(&st.env, json!({"content": piece}), None, u))]);
                    }
                }
                Some(Event::Done { text, finish, usage, report }) => {
                    st.phase = Phase::Finished;
                    let mut out = Vec::with_capacity(4);
                    if let Some(rest) = st.text.finish(&text) {
                        out.push(data(&chunk(&st.env, json!({"content": rest}), None, u)));
                    }
                    let mut last = chunk(&st.env, json!({}), Some(finish), u);
                    if let Some(r) = report {
                        last["latentmas"] = r;
                    }
                    out.push(data(&last));
                    if u {
                        out.push(data(&usage_chunk(&st.env, usage)));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                    return Some(out);
                }
                Some(Event::Failed(e)) => {
                    st.phase = Phase::Finished;
                    return Some(vec![data(&e.body()), SseEvent::default().data("[DONE]")]);
                }
                None => {
                    st.phase = Phase::Finished;
                    let e = ApiError::internal("the engine dropped the request without an answer");
                    return Some(vec![data(&e.body()), SseEvent::default().data("[DONE]")]);
                }
            }
        },
    }
}
