//! Streamed text: token ids in, text pieces out, whose concatenation is exactly the answer's text.
//!
//! Each token re-decodes the ids so far (special tokens skipped) and sends what is new, holding a piece back
//! while the text ends inside a character. A multi-agent answer is reported stripped (Python's
//! `str.strip()`, as the engine's report has it), so in that mode leading whitespace is never sent and
//! trailing whitespace waits until something follows it.

use engine::answer::py_strip;
use engine::tokenizer::Tokenizer;

pub struct TextStream {
    ids: Vec<u32>,
    /// The text sent so far.
    sent: String,
    strip: bool,
}

impl TextStream {
    pub fn new(strip: bool) -> Self {
        TextStream { ids: Vec::new(), sent: String::new(), strip }
    }

    /// The piece `id` adds, if any is complete yet.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Option<String> {
        self.ids.push(id);
        let full = tok.decode(&self.ids, true).ok()?;
        if full.ends_with('\u{FFFD}') {
            return None;
        }
        let visible = if self.strip { py_strip(&full) } else { full.as_str() };
        self.take(visible)
    }

    /// The rest of the answer once its whole text is known: what was not sent yet.
    pub fn finish(&mut self, text: &str) -> Option<String> {
        if !text.starts_with(self.sent.as_str()) {
            // A decoder whose text is not a prefix of its longer texts; never the case for byte-level BPE.
            tracing::warn!("the streamed text is not a prefix of the answer; the stream differs from it");
        }
        self.take(text)
    }

    fn take(&mut self, visible: &str) -> Option<String> {
        if visible.len() <= self.sent.len() || !visible.starts_with(self.sent.as_str()) {
            return None;
        }
        let piece = visible[self.sent.len()..].to_string();
        self.sent.push_str(&piece);
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tokenizer() -> Tokenizer {
        Tokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/tiny-trained")).unwrap()
    }

    fn stream(strip: bool, text: &str) -> (Vec<String>, String) {
        let tok = tokenizer();
        let ids = tok.encode(text).unwrap();
        let mut s = TextStream::new(strip);
        let mut pieces: Vec<String> = ids.iter().filter_map(|&id| s.push(&tok, id)).collect();
        let answer = tok.decode(&ids, true).unwrap();
        let answer = if strip { py_strip(&answer).to_string() } else { answer };
        pieces.extend(s.finish(&answer));
        (pieces, answer)
    }

    #[test]
    fn pieces_concatenate_to_the_text_and_multi_byte_characters_arrive_whole() {
        let (pieces, answer) = stream(false, "  héllo wörld ∑ 12 \n");
        assert_eq!(pieces.concat(), answer);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        assert!(pieces.len() > 3, "the text arrives in pieces: {pieces:?}");
    }

    #[test]
    fn stripped_mode_never_sends_the_outer_whitespace() {
        let (pieces, answer) = stream(true, " \n a b  c \n ");
        assert_eq!(answer, "a b  c");
        assert_eq!(pieces.concat(), answer);
        assert!(!pieces[0].starts_with(' '), "{pieces:?}");
    }
}
