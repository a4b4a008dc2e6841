//! Errors as OpenAI's API returns them: an HTTP status and `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One failed request. `message` names the problem (and the limit or field involved) in words.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `rate_limit_error`, `server_error`, ...
    pub kind: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }

    /// 400: the request is malformed or asks for something this server does not do.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the field at fault.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        ApiError { param: Some(param.to_string()), ..Self::invalid(message) }
    }

    /// 400: the request needs more positions or KV slots than the server has.
    pub fn context_length(message: impl Into<String>) -> Self {
        ApiError { param: Some("messages".into()), code: Some("context_length_exceeded"), ..Self::invalid(message) }
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { code: Some(code), ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message) }
    }

    /// 429: the queue of waiting requests is full.
    pub fn queue_full(message: impl Into<String>) -> Self {
        ApiError { code: Some("queue_full"), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message) }
    }

    /// 503: no engine to run the request on (shut down, or failed on an earlier request).
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            code: Some("engine_unavailable"),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    /// 500: the engine failed on a valid request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// An engine error on a request that passed validation: a capacity or argument error is the request's
    /// (400), anything else the server's (500).
    pub fn from_engine(e: engine::Error) -> Self {
        use engine::Error as E;
        match e {
            E::KvCapacity(_) => Self::context_length(crate::request::api_words(&e.to_string())),
            E::InvalidArgument(_) | E::Template(_) | E::Tokenizer(_) => {
                Self::invalid(crate::request::api_words(&e.to_string()))
            }
            e => Self::internal(e.to_string()),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // the queue drains at the engine's pace: a second is a fair first retry
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}
