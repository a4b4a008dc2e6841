//! Qwen3 (dense) model configuration, read from a Hugging Face `config.json`.
//!
//! Only the Qwen3 dense architecture is accepted; anything else is refused with an error naming what was
//! found, because silently running a different architecture would give wrong text, not an error.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Upper bounds on `config.json` sizes, a generous margin above every released dense model (Qwen3: vocab
/// 151,936, hidden ≤ 5,120, intermediate ≤ 25,600, ≤ 64 layers, ≤ 64 heads, head_dim 128, 40,960 positions).
const MAX_VOCAB: usize = 1 << 22;
const MAX_WIDTH: usize = 1 << 16;
const MAX_INTERMEDIATE: usize = 1 << 18;
const MAX_LAYERS: usize = 1 << 10;
const MAX_HEADS: usize = 1 << 10;
const MAX_HEAD_DIM: usize = 1 << 11;
const MAX_POSITIONS: usize = 1 << 24;
/// The fewest positions that can hold a chat prompt and an answer.
const MIN_POSITIONS: usize = 16;
/// 2^41 weights (2 T), far above any model this engine can load.
const MAX_PARAMETERS: u64 = 1 << 41;

/// The hyper-parameters the forward pass needs. Field names follow `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen3Config {
    /// Rows of the embedding (and lm_head). May exceed the tokenizer's length: the extra rows are padding.
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head dimension; Qwen3 sets it explicitly (128), it is NOT always hidden / heads.
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

/// The raw JSON, permissive, so that we can report what is wrong instead of a serde error.
#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    tie_word_embeddings: Option<bool>,
    max_position_embeddings: Option<usize>,
    rope_scaling: Option<serde_json::Value>,
    attention_bias: Option<bool>,
    use_sliding_window: Option<bool>,
    hidden_act: Option<String>,
}

impl Qwen3Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| Error::Config(format!("invalid JSON: {e}")))?;
        let arch = raw.architectures.clone().unwrap_or_default();
        let model_type = raw.model_type.clone().unwrap_or_default();
        if model_type != "qwen3" || !arch.iter().any(|a| a == "Qwen3ForCausalLM") {
            return Err(Error::Config(format!(
                "unsupported architecture (model_type {model_type:?}, architectures {arch:?}); only Qwen3 dense \
                 (model_type \"qwen3\", Qwen3ForCausalLM) is supported"
            )));
        }
        if let Some(scaling) = raw.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            return Err(Error::Config(format!("rope_scaling {scaling} is not supported (Qwen3 dense uses none)")));
        }
        if raw.attention_bias == Some(true) {
            return Err(Error::Config("attention_bias = true is not supported (Qwen3 has no biases)".into()));
        }
        if raw.use_sliding_window == Some(true) {
            return Err(Error::Config("use_sliding_window = true is not supported".into()));
        }
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(Error::Config(format!("hidden_act {act:?} is not supported (expected \"silu\")")));
        }
        fn need(v: Option<usize>, name: &str) -> Result<usize> {
            match v {
                Some(n) if n > 0 => Ok(n),
                Some(_) => Err(Error::Config(format!("{name} must be positive"))),
                None => Err(Error::Config(format!("missing field {name}"))),
            }
        }
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = need(raw.num_key_value_heads.or(raw.num_attention_heads), "num_key_value_heads")?;
        let head_dim = need(raw.head_dim.or(Some(hidden_size / num_attention_heads)), "head_dim")?;
        let cfg = Qwen3Config {
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rope_theta: raw.rope_theta.unwrap_or(1_000_000.0),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(40_960),
        };
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(Error::Config(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(Error::Config(format!("head_dim {head_dim} must be even for RoPE")));
        }
        cfg.check_bounds()?;
        Ok(cfg)
    }

    /// Refuses sizes no real checkpoint has, before anything is sized from them: every later product
    /// (weight shapes, KV bytes per token, workspace widths) then fits in a `usize` with room to spare, and a
    /// hostile `config.json` gets an error instead of a huge allocation or an overflow. Also refuses the
    /// floating-point values the forward would turn into NaN or Inf.
    pub fn check_bounds(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_INTERMEDIATE),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_key_value_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            ("max_position_embeddings", self.max_position_embeddings, MAX_POSITIONS),
        ];
        for (name, value, max) in sizes {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
            if value > max {
                return Err(Error::Config(format!("{name} {value} is out of range (at most {max})")));
            }
        }
        if self.max_position_embeddings < MIN_POSITIONS {
            return Err(Error::Config(format!(
                "max_position_embeddings {} is too small: a chat prompt alone needs more (at least {MIN_POSITIONS})",
                self.max_position_embeddings
            )));
        }
        if self.num_key_value_heads > self.num_attention_heads {
            return Err(Error::Config(format!(
                "num_key_value_heads {} exceeds num_attention_heads {}",
                self.num_key_value_heads, self.num_attention_heads
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::Config(format!("rope_theta {} must be positive and finite", self.rope_theta)));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return Err(Error::Config(format!("rms_norm_eps {} must be in (0, 1)", self.rms_norm_eps)));
        }
        let params = self.parameter_count().ok_or_else(|| Error::Config("the weight sizes overflow".into()))?;
        if params > MAX_PARAMETERS {
            return Err(Error::Config(format!(
                "these sizes make {params} weights, more than any supported model ({MAX_PARAMETERS})"
            )));
        }
        Ok(())
    }

    /// Number of weights these sizes imply (None on overflow).
    pub fn parameter_count(&self) -> Option<u64> {
        let m = |a: usize, b: usize| (a as u64).checked_mul(b as u64);
        let d = self.hidden_size;
        let per_layer = m(self.qkv_width_checked()?, d)?
            .checked_add(m(self.num_attention_heads.checked_mul(self.head_dim)?, d)?)?
            .checked_add(m(self.intermediate_size, d)?.checked_mul(3)?)?
            .checked_add(2 * d as u64 + 2 * self.head_dim as u64)?;
        let embed = m(self.vocab_size, d)?;
        let heads = if self.tie_word_embeddings { embed } else { embed.checked_mul(2)? };
        per_layer.checked_mul(self.num_hidden_layers as u64)?.checked_add(heads)?.checked_add(d as u64)
    }

    fn qkv_width_checked(&self) -> Option<usize> {
        self.num_attention_heads.checked_add(self.num_key_value_heads.checked_mul(2)?)?.checked_mul(self.head_dim)
    }

    /// Query heads per KV head (the GQA group size).
    pub fn gqa_group(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Width of the fused q|k|v projection output.
    pub fn qkv_width(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim
    }

    /// Width of the attention output (input of o_proj).
    pub fn q_width(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of one KV entry (K or V) of one layer for one token.
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// The config.json text for this shape (used by `synth`).
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "attention_bias": false,
            "rope_scaling": null,
            "use_sliding_window": false,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "torch_dtype": "bfloat16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN3_06B: &str = r#"{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"bos_token_id":151643,
      "eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":1024,"intermediate_size":3072,
      "max_position_embeddings":40960,"model_type":"qwen3","num_attention_heads":16,"num_hidden_layers":28,
      "num_key_value_heads":8,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":1000000,
      "tie_word_embeddings":true,"torch_dtype":"bfloat16","use_sliding_window":false,"vocab_size":151936}"#;

    #[test]
    fn parses_qwen3_0_6b() {
        let c = Qwen3Config::from_json(QWEN3_06B).unwrap();
        assert_eq!(c.head_dim, 128);
        assert_eq!(c.gqa_group(), 2);
        assert_eq!(c.qkv_width(), (16 + 16) * 128);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn refuses_other_architectures() {
        let llama = QWEN3_06B.replace("Qwen3ForCausalLM", "LlamaForCausalLM").replace("\"qwen3\"", "\"llama\"");
        let err = Qwen3Config::from_json(&llama).unwrap_err().to_string();
        assert!(err.contains("unsupported architecture") && err.contains("llama"), "{err}");
    }

    #[test]
    fn reports_missing_fields_and_bad_gqa() {
        let no_hidden = QWEN3_06B.replace("\"hidden_size\":1024,", "");
        assert!(Qwen3Config::from_json(&no_hidden).unwrap_err().to_string().contains("hidden_size"));
        let bad = QWEN3_06B.replace("\"num_key_value_heads\":8", "\"num_key_value_heads\":5");
        assert!(Qwen3Config::from_json(&bad).unwrap_err().to_string().contains("multiple"));
    }

    #[test]
    fn round_trips_through_hf_json() {
        let c = Qwen3Config::from_json(QWEN3_06B).unwrap();
        let again = Qwen3Config::from_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(c, again);
    }
}
