//! From a parsed request to the work the engine does: the method, the prompt (rendered with the model's own
//! chat template and tokenized), sampling and the token limit, every limit checked before the request is
//! queued so that a too-long prompt or a too-small KV buffer is a 400 naming the limit.

use engine::mas::method::{Family, Method, Topology};
use engine::mas::prompts::PromptSet;
use engine::mas::run::{batch_slots, check_context, RunConfig, REFERENCE_CONTEXT_LENGTH};
use engine::sample::SamplingParams;
use engine::tokenizer::{ChatMessage, Tokenizer};
use serde_json::Value;

use crate::api::ChatRequest;
use crate::error::ApiError;

/// Latent steps per thinking agent when a LatentMAS request does not say (the CLI's default).
pub const DEFAULT_LATENT_STEPS: usize = 10;
/// New tokens of a multi-agent run that gives no `max_tokens` (the C API's default), lowered to what fits.
pub const DEFAULT_MAS_MAX_TOKENS: usize = 2048;
/// OpenAI's range of `temperature`.
const MAX_TEMPERATURE: f64 = 2.0;

/// What the server knows of its model and engine: enough to check a request without the engine.
pub struct Limits {
    /// Slots of the one KV buffer (`--kv-budget`).
    pub kv_slots: usize,
    /// Positions a row may reach (the config's `max_position_embeddings`).
    pub max_context: usize,
}

/// A checked request.
#[derive(Debug, Clone)]
pub enum Work {
    /// Plain chat generation: the conversation's prompt, decoded by one agent.
    Chat { prompt_ids: Vec<u32>, sampling: SamplingParams, max_new: usize },
    /// A TextMAS or LatentMAS run on one question; the final agent's text is the answer.
    Mas { cfg: RunConfig, question: String },
}

/// A request ready to queue.
#[derive(Debug, Clone)]
pub struct Plan {
    pub work: Work,
    pub stream: bool,
    pub include_usage: bool,
}

/// Rewrites the engine's CLI flag names in a message into this API's field names.
pub fn api_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("--max-new-tokens", "max_tokens"),
        ("--latent-steps", "latent_steps"),
        ("--method", "method"),
        ("--topology", "topology"),
        ("--think", "think"),
        ("--compat reference", "compat \"reference\""),
        ("--temperature", "temperature"),
        ("--top-p", "top_p"),
        ("--max-context", "the model's config"),
        ("--batch", "concurrent requests"),
    ];
    let mut s = message.to_string();
    for (flag, field) in WORDS {
        s = s.replace(flag, field);
    }
    s
}

/// Checks a request against the server's model, limits and prompt set.
pub fn plan(
    req: ChatRequest,
    served_name: &str,
    tok: &Tokenizer,
    prompts: &PromptSet,
    limits: &Limits,
) -> Result<Plan, ApiError> {
    match req.model.as_deref() {
        None => {
            return Err(ApiError::invalid_param(
                "model",
                format!("model is required (this server serves {served_name:?})"),
            ))
        }
        Some(m) if m != served_name => {
            return Err(ApiError::not_found(
                "model_not_found",
                format!("the model {m:?} does not exist; this server serves {served_name:?} (GET /v1/models)"),
            ))
        }
        Some(_) => {}
    }
    refuse_unsupported(&req)?;
    let messages = messages(&req)?;
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid_param("stream_options", "stream_options is only allowed with stream: true"));
    }
    let include_usage = req.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
    let sampling = sampling(&req)?;
    let max_tokens = max_tokens(&req)?;
    let method = match req.method.as_deref() {
        None | Some("single") => None,
        Some(word) => match word.parse::<Method>() {
            Ok(m) => Some(m),
            Err(_) => {
                return Err(ApiError::invalid_param(
                    "method",
                    format!("unknown method {word:?}; expected one of: single, text, latent"),
                ))
            }
        },
    };
    let work = match method {
        None => {
            for (field, given) in [
                ("topology", req.topology.is_some()),
                ("task_family", req.task_family.is_some()),
                ("latent_steps", req.latent_steps.is_some()),
                ("think", req.think.is_some()),
                ("compat", req.compat.is_some()),
                ("text_mas_context_length", req.text_mas_context_length.is_some()),
            ] {
                if given {
                    return Err(ApiError::invalid_param(
                        field,
                        format!("{field} applies to the multi-agent methods (method \"text\" or \"latent\"), not to plain chat"),
                    ));
                }
            }
            chat_work(tok, &messages, req.enable_thinking, sampling, max_tokens, limits)?
        }
        Some(m) => {
            if req.enable_thinking.is_some() {
                return Err(ApiError::invalid_param(
                    "enable_thinking",
                    "enable_thinking applies to plain chat; a multi-agent run uses its prompt set (see think)",
                ));
            }
            mas_work(&req, m, &messages, sampling, max_tokens, tok, prompts, limits)?
        }
    };
    Ok(Plan { work, stream, include_usage })
}

/// Fields of OpenAI's API this server does not implement: a clear 400 instead of a silent difference.
fn refuse_unsupported(req: &ChatRequest) -> Result<(), ApiError> {
    let unsupported = |field: &str, what: &str| {
        Err(ApiError::invalid_param(field, format!("{field}: {what} is not supported by this server")))
    };
    if let Some(n) = req.n {
        if n != 1 {
            return unsupported("n", &format!("n = {n} (more than one choice per request)"));
        }
    }
    let non_empty = |v: &Option<Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if non_empty(&req.tools) || non_empty(&req.functions) {
        return unsupported("tools", "tool and function calling");
    }
    match &req.tool_choice {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(_) => return unsupported("tool_choice", "tool calling"),
    }
    match &req.function_call {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(_) => return unsupported("function_call", "function calling"),
    }
    if non_empty(&req.stop) {
        return unsupported("stop", "a stop sequence (generation stops at the model's own end-of-turn token)");
    }
    match &req.response_format {
        None | Some(Value::Null) => {}
        Some(v) if v.get("type").and_then(Value::as_str) == Some("text") => {}
        Some(_) => return unsupported("response_format", "a response format other than text (JSON mode, schemas)"),
    }
    if req.logprobs == Some(true) || req.top_logprobs.is_some_and(|n| n > 0) {
        return unsupported("logprobs", "returning log probabilities");
    }
    if req.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return unsupported("logit_bias", "a logit bias");
    }
    for (field, v) in [("presence_penalty", req.presence_penalty), ("frequency_penalty", req.frequency_penalty)] {
        if v.is_some_and(|p| p != 0.0) {
            return unsupported(field, "a repetition penalty");
        }
    }
    Ok(())
}

/// The conversation, roles checked and content parts joined.
fn messages(req: &ChatRequest) -> Result<Vec<ChatMessage>, ApiError> {
    let raw = match &req.messages {
        None => return Err(ApiError::invalid_param("messages", "messages is required")),
        Some(m) if m.is_empty() => {
            return Err(ApiError::invalid_param("messages", "messages must hold at least one message"))
        }
        Some(m) => m,
    };
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" | "function" => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!("messages[{i}].role {:?}: tool and function messages are not supported", m.role),
                ))
            }
            other => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!("messages[{i}].role {other:?} is not a role; expected system, user or assistant"),
                ))
            }
        };
        let param = format!("messages[{i}].content");
        let content = match &m.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => texts.push(t),
                        (Some(kind), _) if kind != "text" => {
                            return Err(ApiError::invalid_param(
                                &param,
                                format!("{param}[{j}]: content parts of type {kind:?} are not supported (text only)"),
                            ))
                        }
                        _ => {
                            return Err(ApiError::invalid_param(
                                &param,
                                format!("{param}[{j}] must be {{\"type\": \"text\", \"text\": \"...\"}}"),
                            ))
                        }
                    }
                }
                texts.join("\n")
            }
            None | Some(Value::Null) => {
                return Err(ApiError::invalid_param(&param, format!("{param} is required (a string or text parts)")))
            }
            Some(_) => {
                return Err(ApiError::invalid_param(
                    &param,
                    format!("{param} must be a string or a list of text parts"),
                ))
            }
        };
        out.push(ChatMessage { role: role.to_string(), content });
    }
    Ok(out)
}

/// temperature (0 = greedy), top_p, top_k and seed; the engine's defaults (Qwen3's generation config:
/// 0.6 / 0.95 / 20) for what is not given. No seed: a fresh one per request.
fn sampling(req: &ChatRequest) -> Result<SamplingParams, ApiError> {
    let mut s = SamplingParams::default();
    if let Some(t) = req.temperature {
        if !(0.0..=MAX_TEMPERATURE).contains(&t) {
            return Err(ApiError::invalid_param(
                "temperature",
                format!("temperature = {t} must be in [0, {MAX_TEMPERATURE}] (0 = greedy)"),
            ));
        }
        if t == 0.0 {
            s.greedy = true;
        } else {
            s.temperature = t as f32;
        }
    }
    if let Some(p) = req.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid_param("top_p", format!("top_p = {p} must be in (0, 1]")));
        }
        s.top_p = p as f32;
    }
    if let Some(k) = req.top_k {
        s.top_k = match k {
            -1 | 0 => 0,
            k if k > 0 => k as usize,
            k => return Err(ApiError::invalid_param("top_k", format!("top_k = {k} must be >= 0 (0 or -1 = no cut)"))),
        };
    }
    s.seed = match &req.seed {
        // a negative seed is taken by its bits, as the same 64 bits
        Some(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|v| v as u64))
            .ok_or_else(|| ApiError::invalid_param("seed", format!("seed = {n} must be an integer")))?,
        None => fresh_seed(),
    };
    Ok(s)
}

/// A seed no other request shares: the standard library's per-process random keys, hashed with a counter.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// max_completion_tokens or max_tokens (OpenAI's old name); both given must agree.
fn max_tokens(req: &ChatRequest) -> Result<Option<usize>, ApiError> {
    let n = match (req.max_completion_tokens, req.max_tokens) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid_param(
                "max_completion_tokens",
                format!("max_completion_tokens = {a} and max_tokens = {b} disagree; give one of them"),
            ))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Ok(None),
    };
    if n == 0 {
        return Err(ApiError::invalid_param("max_tokens", "max_tokens must be at least 1"));
    }
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

/// The positions a plain chat may reach: its KV row and its positions are one and the same.
fn chat_limit(limits: &Limits) -> (usize, String) {
    if limits.kv_slots < limits.max_context {
        (limits.kv_slots, format!("the server's KV buffer of {} tokens (--kv-budget)", limits.kv_slots))
    } else {
        (limits.max_context, format!("the model's context length of {} tokens", limits.max_context))
    }
}

fn chat_work(
    tok: &Tokenizer,
    messages: &[ChatMessage],
    enable_thinking: Option<bool>,
    sampling: SamplingParams,
    max_tokens: Option<usize>,
    limits: &Limits,
) -> Result<Work, ApiError> {
    let text = tok.render_messages(messages, enable_thinking).map_err(ApiError::from_engine)?;
    let prompt_ids = tok.encode(&text).map_err(ApiError::from_engine)?;
    let (limit, what) = chat_limit(limits);
    let p = prompt_ids.len();
    if p >= limit {
        return Err(ApiError::context_length(format!(
            "the prompt is {p} tokens, which leaves no room to generate within {what}; shorten the messages"
        )));
    }
    let max_new = match max_tokens {
        Some(n) if n > limit - p => {
            return Err(ApiError::context_length(format!(
                "the prompt ({p} tokens) and max_tokens = {n} need {} tokens but the limit is {what}; lower \
                 max_tokens to at most {} or shorten the messages",
                p.saturating_add(n),
                limit - p
            )))
        }
        Some(n) => n,
        None => limit - p,
    };
    Ok(Work::Chat { prompt_ids, sampling, max_new })
}

#[allow(clippy::too_many_arguments)]
fn mas_work(
    req: &ChatRequest,
    method: Method,
    messages: &[ChatMessage],
    sampling: SamplingParams,
    max_tokens: Option<usize>,
    tok: &Tokenizer,
    prompts: &PromptSet,
    limits: &Limits,
) -> Result<Work, ApiError> {
    let question = match messages {
        [m] if m.role == "user" => m.content.clone(),
        _ => {
            return Err(ApiError::invalid_param(
                "messages",
                format!(
                    "method \"{method}\" takes exactly one user message, the question (the agents' own system and \
                     role prompts come from the server's prompt set); got {} message(s)",
                    messages.len()
                ),
            ))
        }
    };
    let topology: Topology = req
        .topology
        .as_deref()
        .unwrap_or("sequential")
        .parse()
        .map_err(|e: engine::Error| ApiError::invalid_param("topology", api_words(&e.to_string())))?;
    let family: Family = req
        .task_family
        .as_deref()
        .unwrap_or("math")
        .parse()
        .map_err(|e: engine::Error| ApiError::invalid_param("task_family", api_words(&e.to_string())))?;
    let latent = method == Method::Latent;
    let only_latent =
        |field: &str| Err(ApiError::invalid_param(field, format!("{field} applies to method \"latent\" only")));
    if !latent {
        if req.latent_steps.is_some() {
            return only_latent("latent_steps");
        }
        if req.think.is_some() {
            return only_latent("think");
        }
        if req.compat.is_some() {
            return only_latent("compat");
        }
        if topology == Topology::Parallel {
            return Err(ApiError::invalid_param(
                "topology",
                "topology \"parallel\" is a LatentMAS topology (method \"latent\")",
            ));
        }
    } else if req.text_mas_context_length.is_some() {
        return Err(ApiError::invalid_param(
            "text_mas_context_length",
            "text_mas_context_length applies to method \"text\" only",
        ));
    }
    let compat_reference = match req.compat.as_deref() {
        None => false,
        Some("reference") => true,
        Some(other) => {
            return Err(ApiError::invalid_param("compat", format!("compat {other:?}: the only value is \"reference\"")))
        }
    };
    let latent_steps = if latent {
        let m = req.latent_steps.map_or(DEFAULT_LATENT_STEPS, |m| usize::try_from(m).unwrap_or(usize::MAX));
        if m >= limits.max_context {
            return Err(ApiError::context_length(format!(
                "latent_steps = {m} does not fit the model's context length of {} positions",
                limits.max_context
            )));
        }
        m
    } else {
        0
    };
    let mut cfg = RunConfig {
        method,
        topology,
        family,
        latent_steps,
        think: req.think.unwrap_or(false),
        compat_reference,
        sampling,
        max_new_tokens: max_tokens.unwrap_or(DEFAULT_MAS_MAX_TOKENS),
        text_mas_context_length: req.text_mas_context_length.unwrap_or(REFERENCE_CONTEXT_LENGTH),
    };
    cfg.validate().map_err(|e| ApiError::invalid(api_words(&e.to_string())))?;
    let questions = std::slice::from_ref(&question);
    let need = |cfg: &RunConfig| {
        batch_slots(tok, prompts, cfg, questions).map_err(|e| ApiError::invalid(api_words(&e.to_string())))
    };
    if max_tokens.is_none() {
        // The need grows linearly with max_tokens: take the largest default that fits the buffer.
        let at = |n: usize| need(&RunConfig { max_new_tokens: n, ..cfg.clone() });
        let (one, two) = (at(1)?, at(2)?);
        let per_token = two.saturating_sub(one).max(1);
        let fits = limits.kv_slots.saturating_sub(one) / per_token + 1;
        cfg.max_new_tokens = DEFAULT_MAS_MAX_TOKENS.min(fits).max(1);
    }
    let slots = need(&cfg)?;
    if slots > limits.kv_slots {
        return Err(ApiError::context_length(format!(
            "this {method} run needs {slots} KV tokens (its agents' prompts{}, and max_tokens = {}{}) but the \
             server's KV buffer holds {} (--kv-budget); lower max_tokens{} or restart the server with a larger \
             --kv-budget",
            if latent { format!(", {latent_steps} latent steps per thinking agent") } else { String::new() },
            cfg.max_new_tokens,
            if method == Method::Text { " per agent, as text passed on" } else { "" },
            limits.kv_slots,
            if latent { " or latent_steps" } else { "" },
        )));
    }
    check_context(tok, prompts, &cfg, questions, limits.max_context)
        .map_err(|e| ApiError::context_length(api_words(&e.to_string())))?;
    Ok(Work::Mas { cfg, question })
}

#[cfg(test)]
mod tests {
    use super::api_words;

    #[test]
    fn flag_names_become_field_names() {
        assert_eq!(
            api_words("--think applies to --method latent only; lower --max-new-tokens"),
            "think applies to method latent only; lower max_tokens"
        );
    }
}
