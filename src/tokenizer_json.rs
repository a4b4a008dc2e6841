//! Reading `tokenizer.json` in one typed pass.
//!
//! `tokenizers::Tokenizer::from_file` deserialises the model through untagged enums and a flattened
//! `serde_json::Value`, so a BPE vocabulary of 151k entries and its 151k merges are parsed into generic
//! trees and copied three times before the model is built (≈ 1 s of CPU for Qwen3's tokenizer). A BPE
//! model, the only kind Qwen3 ships, is read here straight into its vocabulary map and merge list, and the
//! tokenizer is assembled from the same parts with the library's own builder and in the same order as
//! `from_file` does (model, then the added tokens on top), so the result is the same tokenizer: its
//! serialisation is identical (tested). Any other file (another model type, a malformed one) goes through
//! `from_file`, which also words the errors.
//!
//! Operations: [`load_tokenizer_json`].

use std::path::Path;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use tokenizers::models::bpe::{BpeBuilder, Vocab};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams, PostProcessorWrapper,
    PreTokenizerWrapper, TokenizerBuilder, TruncationParams,
};

/// The top level of a `tokenizer.json` whose model is BPE.
#[derive(Deserialize)]
struct TokenizerFile {
    version: String,
    #[serde(default)]
    truncation: Option<TruncationParams>,
    #[serde(default)]
    padding: Option<PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    #[serde(default)]
    normalizer: Option<NormalizerWrapper>,
    #[serde(default)]
    pre_tokenizer: Option<PreTokenizerWrapper>,
    #[serde(default)]
    post_processor: Option<PostProcessorWrapper>,
    #[serde(default)]
    decoder: Option<DecoderWrapper>,
    model: BpeFile,
}

/// The `model` object of a BPE tokenizer (every field `tokenizers` reads from it).
#[derive(Deserialize)]
struct BpeFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    dropout: Option<f32>,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    fuse_unk: Option<bool>,
    #[serde(default)]
    byte_fallback: Option<bool>,
    #[serde(default)]
    ignore_merges: Option<bool>,
    vocab: Vocab,
    merges: Vec<Merge>,
}

/// One merge: `["a", "b"]`, or the older `"a b"`.
struct Merge(String, String);

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct MergeVisitor;
        impl<'de> Visitor<'de> for MergeVisitor {
            type Value = Merge;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a merge: [\"a\", \"b\"] or \"a b\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Merge, E> {
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok(Merge(a.to_string(), b.to_string())),
                    _ => Err(E::custom(format!("merge {s:?} is not two tokens separated by one space"))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Merge, A::Error> {
                let a = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let b = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Merge(a, b))
            }
        }
        d.deserialize_any(MergeVisitor)
    }
}

/// Loads a `tokenizer.json`: the typed pass for a BPE model, `from_file` for anything else.
pub fn load_tokenizer_json(path: &Path) -> tokenizers::Result<tokenizers::Tokenizer> {
    let text = std::fs::read_to_string(path)?;
    match fast_bpe(&text) {
        Some(tok) => Ok(tok),
        None => text.parse(),
    }
}

/// The tokenizer of a BPE `tokenizer.json`, or `None` when the file is anything else.
fn fast_bpe(text: &str) -> Option<tokenizers::Tokenizer> {
    let file: TokenizerFile = serde_json::from_str(text).ok()?;
    if file.version != "1.0" || file.model.kind != "BPE" {
        return None;
    }
    let m = file.model;
    // the same builder calls, field by field, as the library's own BPE deserialiser
    let mut b = BpeBuilder::new();
    if let Some(p) = m.dropout {
        b = b.dropout(p);
    }
    if let Some(t) = m.unk_token {
        b = b.unk_token(t);
    }
    if let Some(p) = m.continuing_subword_prefix {
        b = b.continuing_subword_prefix(p);
    }
    if let Some(s) = m.end_of_word_suffix {
        b = b.end_of_word_suffix(s);
    }
    if let Some(f) = m.fuse_unk {
        b = b.fuse_unk(f);
    }
    if let Some(f) = m.byte_fallback {
        b = b.byte_fallback(f);
    }
    if let Some(f) = m.ignore_merges {
        b = b.ignore_merges(f);
    }
    let merges = m.merges.into_iter().map(|Merge(a, b)| (a, b)).collect();
    let bpe = b.vocab_and_merges(m.vocab, merges).build().ok()?;
    let mut tok =
        TokenizerBuilder::<_, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(ModelWrapper::BPE(bpe))
            .with_normalizer(file.normalizer)
            .with_pre_tokenizer(file.pre_tokenizer)
            .with_post_processor(file.post_processor)
            .with_decoder(file.decoder)
            .with_truncation(file.truncation)
            .with_padding(file.padding)
            .build()
            .ok()?;
    tok.add_tokens(&file.added_tokens);
    Some(tok.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_read_in_both_spellings() {
        let m: Vec<Merge> = serde_json::from_str(r#"[["a", "b"], "c d"]"#).unwrap();
        assert_eq!((m[0].0.as_str(), m[0].1.as_str(), m[1].0.as_str(), m[1].1.as_str()), ("a", "b", "c", "d"));
        assert!(serde_json::from_str::<Vec<Merge>>(r#"["a b c"]"#).is_err());
        assert!(serde_json::from_str::<Vec<Merge>>(r#"[["a"]]"#).is_err());
        assert!(serde_json::from_str::<Vec<Merge>>(r#"[["a", "b", "c"]]"#).is_err());
    }

    #[test]
    fn a_non_bpe_model_takes_the_library_path() {
        let wordlevel = r#"{"version": "1.0", "added_tokens": [], "model": {"type": "WordLevel",
            "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}}"#;
        assert!(fast_bpe(wordlevel).is_none());
        let tok: tokenizers::Tokenizer = wordlevel.parse().unwrap();
        assert_eq!(tok.get_vocab_size(true), 2);
    }
}
