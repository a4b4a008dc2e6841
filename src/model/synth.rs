//! Random-weight checkpoints of real Qwen3 shapes, with the real Qwen3 tokenizer files, so benchmarks and
//! demos need no download. Weights are uniform with std 0.02 (norm weights 1), deterministic per seed.
//! Tensors are generated and written in chunks, so a 14B checkpoint never has to fit in memory; every file
//! is written under a temporary name and renamed when complete (no partial output).

use std::io::{BufWriter, Write};
use std::path::Path;

use half::bf16;
use rayon::prelude::*;

use super::config::Qwen3Config;
use crate::error::{Error, Result};
use crate::sample::Rng;

/// The committed Qwen3 tokenizer, embedded so `synth` works from the bare binary.
const TOKENIZER_JSON: &[u8] = include_bytes!("../../tests/data/qwen3-tokenizer/tokenizer.json");
const TOKENIZER_CONFIG_JSON: &[u8] = include_bytes!("../../tests/data/qwen3-tokenizer/tokenizer_config.json");

/// Standard deviation of the random linear and embedding weights (HF's initializer_range).
const INIT_STD: f32 = 0.02;
/// Elements generated per parallel chunk.
const CHUNK: usize = 1 << 20;

/// Known shapes: `tiny`, and the real Qwen3 dense sizes.
pub fn shape(name: &str) -> Result<Qwen3Config> {
    let (h, i, l, qh, kvh, tied) = match name {
        "tiny" => (64, 128, 2, 4, 2, true),
        "qwen3-0.6b" => (1024, 3072, 28, 16, 8, true),
        "qwen3-1.7b" => (2048, 6144, 28, 16, 8, true),
        "qwen3-4b" => (2560, 9728, 36, 32, 8, true),
        "qwen3-8b" => (4096, 12288, 36, 32, 8, false),
        "qwen3-14b" => (5120, 17408, 40, 40, 8, false),
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown shape {other:?}; known: tiny, qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b, qwen3-14b"
            )))
        }
    };
    Ok(Qwen3Config {
        vocab_size: 151_936,
        hidden_size: h,
        intermediate_size: i,
        num_hidden_layers: l,
        num_attention_heads: qh,
        num_key_value_heads: kvh,
        head_dim: if name == "tiny" { 16 } else { 128 },
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: tied,
        max_position_embeddings: 40_960,
    })
}

/// Storage dtype of a synthesized checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthDtype {
    Bf16,
    F32,
}

/// Names and shapes of every tensor, in HF order; `true` marks norm weights (initialised to 1).
pub fn tensor_list(cfg: &Qwen3Config) -> Vec<(String, Vec<usize>, bool)> {
    let (d, hd, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, d], false)];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        v.push((format!("{p}.input_layernorm.weight"), vec![d], true));
        v.push((format!("{p}.self_attn.q_proj.weight"), vec![cfg.num_attention_heads * hd, d], false));
        v.push((format!("{p}.self_attn.k_proj.weight"), vec![cfg.num_key_value_heads * hd, d], false));
        v.push((format!("{p}.self_attn.v_proj.weight"), vec![cfg.num_key_value_heads * hd, d], false));
        v.push((format!("{p}.self_attn.o_proj.weight"), vec![d, cfg.num_attention_heads * hd], false));
        v.push((format!("{p}.self_attn.q_norm.weight"), vec![hd], true));
        v.push((format!("{p}.self_attn.k_norm.weight"), vec![hd], true));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![d], true));
        v.push((format!("{p}.mlp.gate_proj.weight"), vec![inter, d], false));
        v.push((format!("{p}.mlp.up_proj.weight"), vec![inter, d], false));
        v.push((format!("{p}.mlp.down_proj.weight"), vec![d, inter], false));
    }
    v.push(("model.norm.weight".to_string(), vec![d], true));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, d], false));
    }
    v
}

/// Writes `config.json`, `model.safetensors`, `generation_config.json` and the tokenizer files into `out`.
pub fn write_checkpoint(cfg: &Qwen3Config, dtype: SynthDtype, seed: u64, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut config = cfg.to_hf_json();
    config["torch_dtype"] = serde_json::json!(if dtype == SynthDtype::Bf16 { "bfloat16" } else { "float32" });
    write_atomic(&out.join("config.json"), serde_json::to_string_pretty(&config).expect("json").as_bytes())?;
    let generation = serde_json::json!({"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
        "do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.95});
    write_atomic(&out.join("generation_config.json"), generation.to_string().as_bytes())?;
    write_atomic(&out.join("tokenizer.json"), TOKENIZER_JSON)?;
    write_atomic(&out.join("tokenizer_config.json"), TOKENIZER_CONFIG_JSON)?;
    write_safetensors(cfg, dtype, seed, &out.join("model.safetensors"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn write_safetensors(cfg: &Qwen3Config, dtype: SynthDtype, seed: u64, path: &Path) -> Result<()> {
    let tensors = tensor_list(cfg);
    let elem = if dtype == SynthDtype::Bf16 { 2 } else { 4 };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, _) in &tensors {
        let bytes = shape.iter().product::<usize>() * elem;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": if elem == 2 { "BF16" } else { "F32" }, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt", "generator": "latentmas synth"}));
    let mut head = serde_json::to_string(&header).expect("json").into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let tmp = path.with_extension("safetensors.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 22, file);
    let io = |e| Error::io(&tmp, e);
    w.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&head).map_err(io)?;
    let bound = INIT_STD * 3f32.sqrt();
    for (ti, (_, shape, is_norm)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            let chunk_seed = seed ^ ((ti as u64) << 40) ^ (start as u64);
            let values: Vec<f32> = if *is_norm {
                vec![1.0; len]
            } else {
                let mut v = vec![0f32; len];
                v.par_chunks_mut(4096).enumerate().for_each(|(ci, c)| {
                    let mut rng = Rng::new(chunk_seed.wrapping_mul(0x9E37_79B9).wrapping_add(ci as u64));
                    for x in c {
                        *x = (rng.uniform() * 2.0 - 1.0) * bound;
                    }
                });
                v
            };
            if elem == 2 {
                let b: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
                w.write_all(bytemuck::cast_slice(&b)).map_err(io)?;
            } else {
                w.write_all(bytemuck::cast_slice(&values)).map_err(io)?;
            }
            start += len;
        }
    }
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
