//! Generated token ids as text pieces, for streaming: the text so far is decoded again after each token and
//! the new part released once it is complete UTF-8 (one character may span several byte-level tokens, and
//! a partial one decodes to U+FFFD until its last byte arrives).

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// The pieces of one decode, in order; concatenated they are the decode's text (special tokens skipped).
#[derive(Debug, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    shown: String,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next token; returns the text it completes ("" while a character is still partial).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        Ok(self.release(text))
    }

    /// What is still held back (a trailing partial character, as U+FFFD): the end of the decode.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        let text = tok.decode(&self.ids, true)?;
        Ok(self.release(text))
    }

    /// The part of `text` not yet shown. A byte-level decode of more tokens extends the shorter one's text;
    /// were that ever not so, nothing already shown is repeated and the rest waits for a text that is.
    fn release(&mut self, text: String) -> String {
        if text.len() <= self.shown.len() || !text.starts_with(&self.shown) {
            return String::new();
        }
        let piece = text[self.shown.len()..].to_string();
        self.shown = text;
        piece
    }

    /// The tokens taken so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::TextStream;
    use crate::tokenizer::Tokenizer;
    use std::path::Path;

    fn qwen3() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qwen3-tokenizer");
        Tokenizer::load(&dir).expect("the committed Qwen3 tokenizer loads")
    }

    #[test]
    fn pieces_concatenate_to_the_text_and_never_split_a_character() {
        let tok = qwen3();
        let text = "Sum: 12 + 30 = 42. Café, naïve, 日本語, 𝌆, emoji 🙂🚀 and spaces   end.";
        let ids = tok.encode(text).unwrap();
        let mut s = TextStream::new();
        let mut pieces = Vec::new();
        for &id in &ids {
            pieces.push(s.push(&tok, id).unwrap());
        }
        pieces.push(s.finish(&tok).unwrap());
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
        assert!(pieces.iter().any(String::is_empty), "𝌆 spans tokens, so some token completes nothing");
        assert_eq!(s.ids(), &ids[..]);
    }

    #[test]
    fn a_trailing_partial_character_comes_out_at_the_finish() {
        let tok = qwen3();
        let ids = tok.encode("𝌆").unwrap();
        assert!(ids.len() > 1, "the tetragram is several byte-level tokens: {ids:?}");
        let mut s = TextStream::new();
        for &id in &ids[..ids.len() - 1] {
            assert_eq!(s.push(&tok, id).unwrap(), "");
        }
        assert_eq!(s.finish(&tok).unwrap(), tok.decode(&ids[..ids.len() - 1], true).unwrap());
    }
}
