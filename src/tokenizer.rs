//! The model's tokenizer (`tokenizer.json`, pure-Rust `tokenizers`) and its own chat template
//! (`tokenizer_config.json` → `chat_template`, rendered with minijinja the way transformers renders it:
//! trim_blocks + lstrip_blocks, Python string methods available).
//!
//! Operations: [`Tokenizer::load`], [`Tokenizer::encode`], [`Tokenizer::decode`], [`Tokenizer::render_chat`],
//! [`Tokenizer::render_messages`] (a whole conversation),
//! [`Tokenizer::len`] (ids the tokenizer can produce; the embedding may have more padding rows),
//! [`Tokenizer::stop_ids`].

use std::path::Path;

use minijinja::{context, Environment};

use crate::alloc_guard::{run_bounded, Bounded};
use crate::error::{Error, Result};

/// Template instructions one render may execute. A chat template walks its messages a few times (Qwen3's
/// takes a few thousand instructions on a two-message chat); a template that loops far beyond that is
/// stopped with an error instead of hanging the load.
const TEMPLATE_FUEL: u64 = 2_000_000;
/// Bytes a render may write beyond its inputs' own size (and each input may appear a few times).
const TEMPLATE_OUTPUT_BASE: usize = 16 << 20;
const TEMPLATE_OUTPUT_PER_INPUT_BYTE: usize = 4;
/// Live heap a render may hold (template, values, strings it builds, the output), beyond its inputs.
const TEMPLATE_MEMORY_BASE: usize = 64 << 20;
const TEMPLATE_MEMORY_PER_INPUT_BYTE: usize = 16;

/// Ids of the tokens the engine treats specially, looked up by their text (not hard-coded), so tiny test
/// tokenizers work the same way as Qwen3's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<|endoftext|>` (pad; also a stop token).
    pub end_of_text: u32,
    /// `<|im_start|>`.
    pub im_start: u32,
    /// `<|im_end|>` (end of a chat turn; the main stop token).
    pub im_end: u32,
    /// `<think>` (not special: decoding keeps it).
    pub think: u32,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: String,
    specials: SpecialIds,
    /// [`Tokenizer::len`], counted once: the library's own count clones the whole vocabulary map.
    len: usize,
}

impl Tokenizer {
    /// Loads `tokenizer.json` and `tokenizer_config.json` from a model directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(Error::Tokenizer(format!("{} is missing", tok_path.display())));
        }
        let inner = crate::tokenizer_json::load_tokenizer_json(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: cfg_path.clone(), message: e.to_string() })?;
        let chat_template = cfg
            .get("chat_template")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::Tokenizer(format!("{}: no chat_template string", cfg_path.display())))?
            .to_string();
        let id = |s: &str| {
            inner
                .token_to_id(s)
                .ok_or_else(|| Error::Tokenizer(format!("{}: the vocabulary has no {s} token", tok_path.display())))
        };
        let specials = SpecialIds {
            end_of_text: id("<|endoftext|>")?,
            im_start: id("<|im_start|>")?,
            im_end: id("<|im_end|>")?,
            think: id("<think>")?,
        };
        let len = vocab_len(&inner);
        let tok = Tokenizer { inner, chat_template, specials, len };
        // Fail at load time, not at the first question, if the template does not compile.
        tok.render_chat(Some("s"), "u", None)?;
        Ok(tok)
    }

    /// Number of ids the tokenizer can produce (Qwen3: 151669). Sampling never goes beyond this.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true for a loaded tokenizer; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// Generation stops at `<|im_end|>` or `<|endoftext|>`.
    pub fn stop_ids(&self) -> [u32; 2] {
        [self.specials.im_end, self.specials.end_of_text]
    }

    /// Text → ids, with no BOS or other additions (Qwen3 uses none); special tokens in the text are parsed.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids → text. With `skip_special`, tokens marked special (`<|im_end|>`…) are dropped; `<think>` stays.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::Tokenizer(format!("decode: {e}")))
    }

    /// Renders `[{system}, {user}]` with the generation prompt. `enable_thinking: None` leaves the variable
    /// undefined (the template's default: thinking on), as the LatentMAS reference does.
    pub fn render_chat(&self, system: Option<&str>, user: &str, enable_thinking: Option<bool>) -> Result<String> {
        let mut messages = Vec::with_capacity(2);
        if let Some(s) = system {
            messages.push(ChatMessage { role: "system".into(), content: s.to_string() });
        }
        messages.push(ChatMessage { role: "user".into(), content: user.to_string() });
        self.render_messages(&messages, enable_thinking)
    }

    /// Renders a whole conversation (system, user and assistant turns in the caller's order) with the
    /// generation prompt, as transformers' `apply_chat_template(messages, add_generation_prompt=True)` does.
    /// The roles are passed to the template as given: which ones it accepts is the template's business.
    pub fn render_messages(&self, messages: &[ChatMessage], enable_thinking: Option<bool>) -> Result<String> {
        // The template is the model's, i.e. input: it renders on a thread whose memory is bounded (see
        // alloc_guard), with bounded instructions (fuel) and bounded output.
        let input_bytes = messages.iter().map(|m| m.content.len()).fold(0usize, usize::saturating_add);
        let memory = TEMPLATE_MEMORY_BASE.saturating_add(input_bytes.saturating_mul(TEMPLATE_MEMORY_PER_INPUT_BYTE));
        let template = self.chat_template.clone();
        let messages = messages.to_vec();
        match run_bounded(memory, move || render(&template, &messages, input_bytes, enable_thinking)) {
            Bounded::Done(r) => r,
            Bounded::Exceeded => Err(Error::Template(format!(
                "rendering needed more than {memory} bytes of memory (its inputs are {input_bytes}); the \
                 template's strings grow without bound"
            ))),
            Bounded::Panicked => Err(Error::Template("the template engine failed while rendering".into())),
            Bounded::NoThread(e) => Err(Error::Template(format!("cannot start the rendering thread: {e}"))),
        }
    }
}

/// One turn of a conversation for [`Tokenizer::render_messages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` for Qwen3's template.
    pub role: String,
    pub content: String,
}

/// Distinct tokens of the model's vocabulary and the added tokens together: what
/// `get_vocab_size(true)` returns, without building (and cloning 151k strings into) the merged map.
fn vocab_len(inner: &tokenizers::Tokenizer) -> usize {
    use tokenizers::Model;
    let model = inner.get_model();
    let added = inner.get_added_vocabulary().get_vocab();
    model.get_vocab_size() + added.keys().filter(|t| model.token_to_id(t).is_none()).count()
}

/// Renders `messages` with `template` (see [`Tokenizer::render_messages`]); `input_bytes` is their size.
fn render(
    template: &str,
    messages: &[ChatMessage],
    input_bytes: usize,
    enable_thinking: Option<bool>,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_template("chat", template).map_err(|e| Error::Template(e.to_string()))?;
    let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
    let messages: Vec<_> =
        messages.iter().map(|m| context! { role => m.role.as_str(), content => m.content.as_str() }).collect();
    let limit = TEMPLATE_OUTPUT_BASE.saturating_add(input_bytes.saturating_mul(TEMPLATE_OUTPUT_PER_INPUT_BYTE));
    let mut out = BoundedOutput { bytes: Vec::new(), limit, exceeded: false };
    let rendered = match enable_thinking {
        Some(flag) => tmpl.render_captured_to(
            context! { messages, add_generation_prompt => true, enable_thinking => flag },
            &mut out,
        ),
        None => tmpl.render_captured_to(context! { messages, add_generation_prompt => true }, &mut out),
    }
    .map(|_| ());
    if out.exceeded {
        return Err(Error::Template(format!(
            "the rendered chat exceeds {limit} bytes (its inputs are {input_bytes}); the template expands \
             without bound"
        )));
    }
    rendered.map_err(|e| match e.kind() {
        minijinja::ErrorKind::OutOfFuel => Error::Template(format!(
            "rendering ran past {TEMPLATE_FUEL} template instructions (a chat template needs a few \
             thousand); the template loops without bound"
        )),
        _ => Error::Template(e.to_string()),
    })?;
    String::from_utf8(out.bytes).map_err(|e| Error::Template(format!("the rendered chat is not UTF-8: {e}")))
}

/// The render's sink: refuses to grow past `limit` bytes (a template writing without bound fails here, not
/// by exhausting memory).
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counted_length_matches_the_library_with_added_tokens_in_and_out_of_the_vocabulary() {
        let json = r#"{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
            "merges": ["a b"]}, "added_tokens": [
            {"id": 2, "content": "ab", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 3, "content": "<x>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 4, "content": "<y>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}]}"#;
        let tok: tokenizers::Tokenizer = json.parse().unwrap();
        assert_eq!(vocab_len(&tok), 5);
        assert_eq!(vocab_len(&tok), tok.get_vocab_size(true));
    }
}
