//! The wire format of `POST /v1/chat/completions`: the request as OpenAI defines it plus our extension
//! fields, parsed with errors that name the field, and the response and stream-chunk bodies.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Request fields this server reads (OpenAI's and our extensions); any other field is refused by name.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stream",
    "stream_options",
    "n",
    "stop",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "metadata",
    "store",
    "service_tier",
    // extensions, named as the CLI's flags
    "method",
    "topology",
    "task_family",
    "latent_steps",
    "think",
    "compat",
    "text_mas_context_length",
    "enable_thinking",
];

/// Message fields accepted; `name` is read and ignored (Qwen3's template has no use for it).
const MESSAGE_FIELDS: &[&str] = &["role", "content", "name"];

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<RawMessage>>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<serde_json::Number>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u64>,
    pub stop: Option<Value>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    #[allow(dead_code)]
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    pub logit_bias: Option<Map<String, Value>>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    #[allow(dead_code)]
    pub user: Option<String>,
    #[allow(dead_code)]
    pub metadata: Option<Value>,
    #[allow(dead_code)]
    pub store: Option<bool>,
    #[allow(dead_code)]
    pub service_tier: Option<String>,
    pub method: Option<String>,
    pub topology: Option<String>,
    pub task_family: Option<String>,
    pub latent_steps: Option<u64>,
    pub think: Option<bool>,
    pub compat: Option<String>,
    pub text_mas_context_length: Option<i64>,
    pub enable_thinking: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A message as sent; checked by [`ChatRequest::parse`] to have only [`MESSAGE_FIELDS`].
#[derive(Debug, Deserialize)]
pub struct RawMessage {
    pub role: String,
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    pub content: Option<Value>,
}

impl ChatRequest {
    /// Parses a request body: malformed JSON, a field of the wrong type, an unknown field or an unsupported
    /// message field are 400 errors naming the problem.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))?;
        let Value::Object(map) = &value else {
            return Err(ApiError::invalid("the request body must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(ApiError::invalid_param(
                unknown,
                format!("unrecognized request argument supplied: {unknown} (see docs/SERVER.md for the fields served)"),
            ));
        }
        if let Some(Value::Array(messages)) = map.get("messages") {
            for (i, m) in messages.iter().enumerate() {
                let Value::Object(m) = m else {
                    return Err(ApiError::invalid_param(
                        &format!("messages[{i}]"),
                        format!("messages[{i}] must be an object with a role and a content"),
                    ));
                };
                if let Some(field) = m.keys().find(|k| !MESSAGE_FIELDS.contains(&k.as_str())) {
                    let why = match field.as_str() {
                        "tool_calls" | "tool_call_id" | "function_call" => "tool and function calls are not supported",
                        _ => "this server reads only role, content and name",
                    };
                    return Err(ApiError::invalid_param(
                        &format!("messages[{i}].{field}"),
                        format!("messages[{i}].{field}: {why}"),
                    ));
                }
            }
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ApiError::invalid_param(&path, format!("{path}: {}", e.inner()))
        })
    }
}

/// Token counts of a completion (OpenAI's `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// What every response and chunk of one completion carries.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// The body of a non-streamed completion; `report` (a multi-agent run's per-agent accounting) goes into
/// the `latentmas` extension field.
pub fn completion(env: &Envelope, text: &str, finish: &str, usage: Usage, report: Option<&Value>) -> Value {
    let mut v = json!({
        "id": env.id,
        "object": "chat.completion",
        "created": env.created,
        "model": env.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage.json(),
    });
    if let Some(r) = report {
        v["latentmas"] = r.clone();
    }
    v
}

/// One `chat.completion.chunk` with a single choice; `usage` is present (as null) when the client asked
/// for usage, as OpenAI sends it.
pub fn chunk(env: &Envelope, delta: Value, finish: Option<&str>, with_usage: bool) -> Value {
    let mut v = json!({
        "id": env.id,
        "object": "chat.completion.chunk",
        "created": env.created,
        "model": env.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if with_usage {
        v["usage"] = Value::Null;
    }
    v
}

/// The last chunk of a stream with `stream_options.include_usage`: no choices, the usage.
pub fn usage_chunk(env: &Envelope, usage: Usage) -> Value {
    json!({
        "id": env.id,
        "object": "chat.completion.chunk",
        "created": env.created,
        "model": env.model,
        "choices": [],
        "usage": usage.json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_problem() {
        let e = ChatRequest::parse(b"{\"model\": \"m\", ").unwrap_err();
        assert!(e.message.contains("not valid JSON") && e.message.contains("line 1"), "{}", e.message);
        let e = ChatRequest::parse(b"[1]").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        let e = ChatRequest::parse(br#"{"model": "m", "messages": [], "frobnicate": 1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("frobnicate"));
        let e = ChatRequest::parse(br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"), "{}", e.message);
        let e = ChatRequest::parse(br#"{"messages": [{"role": 3, "content": "x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"), "{}", e.message);
        let e = ChatRequest::parse(br#"{"messages": [{"role": "assistant", "tool_calls": []}]}"#).unwrap_err();
        assert!(e.message.contains("tool"), "{}", e.message);
        let ok = ChatRequest::parse(br#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": null}"#)
            .unwrap();
        assert_eq!(ok.messages.unwrap().len(), 1);
    }
}
