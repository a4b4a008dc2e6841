//! Loading Qwen3 weights from safetensors (single file or sharded with `model.safetensors.index.json`),
//! memory-mapped. bf16 tensors stay bf16, f32 stay f32, f16 are widened to f32. q|k|v and gate|up are
//! stacked at load time so each projection group is one pass over the weights.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::config::Qwen3Config;
use super::matrix::WeightMatrix;
use crate::backend::cpu::mem::advise_huge_pages;
use crate::error::{Error, Result};

/// One decoder layer.
pub struct LayerWeights {
    pub input_norm: Vec<f32>,
    /// `[q; k; v]` stacked: `[(H + 2·KVH)·d, D]`.
    pub qkv: WeightMatrix,
    pub q_norm: Vec<f32>,
    pub k_norm: Vec<f32>,
    /// `[D, H·d]`.
    pub o_proj: WeightMatrix,
    pub post_norm: Vec<f32>,
    /// `[gate; up]` stacked: `[2·I, D]`.
    pub gate_up: WeightMatrix,
    /// `[D, I]`.
    pub down: WeightMatrix,
}

/// All weights of a Qwen3 causal LM.
pub struct Weights {
    /// `[vocab, D]`.
    pub embed: WeightMatrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `None` when tied (`lm_head = embed`).
    pub lm_head: Option<WeightMatrix>,
}

impl Weights {
    /// The output projection (lm_head, or the embedding when tied).
    pub fn lm_head(&self) -> &WeightMatrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes one decode step streams (every layer matrix + the lm_head; norms are negligible).
    pub fn decode_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.qkv.bytes() + l.o_proj.bytes() + l.gate_up.bytes() + l.down.bytes()).sum::<usize>()
            + self.lm_head().bytes()
    }

    /// Loads every tensor the config calls for from `dir`, checking names, dtypes and shapes.
    pub fn load(dir: &Path, cfg: &Qwen3Config) -> Result<Self> {
        let files = SafetensorFiles::open(dir)?;
        let (d, h, kvh, hd, inter, v) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cfg.intermediate_size,
            cfg.vocab_size,
        );
        let embed = files.matrix("model.embed_tokens.weight", v, d)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let q = files.matrix(&format!("{p}.self_attn.q_proj.weight"), h * hd, d)?;
            let k = files.matrix(&format!("{p}.self_attn.k_proj.weight"), kvh * hd, d)?;
            let vv = files.matrix(&format!("{p}.self_attn.v_proj.weight"), kvh * hd, d)?;
            let gate = files.matrix(&format!("{p}.mlp.gate_proj.weight"), inter, d)?;
            let up = files.matrix(&format!("{p}.mlp.up_proj.weight"), inter, d)?;
            layers.push(LayerWeights {
                input_norm: files.vector(&format!("{p}.input_layernorm.weight"), d)?,
                qkv: WeightMatrix::stack(&[q, k, vv]),
                q_norm: files.vector(&format!("{p}.self_attn.q_norm.weight"), hd)?,
                k_norm: files.vector(&format!("{p}.self_attn.k_norm.weight"), hd)?,
                o_proj: files.matrix(&format!("{p}.self_attn.o_proj.weight"), d, h * hd)?,
                post_norm: files.vector(&format!("{p}.post_attention_layernorm.weight"), d)?,
                gate_up: WeightMatrix::stack(&[gate, up]),
                down: files.matrix(&format!("{p}.mlp.down_proj.weight"), d, inter)?,
            });
        }
        let final_norm = files.vector("model.norm.weight", d)?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(files.matrix("lm_head.weight", v, d)?) };
        Ok(Weights { embed, layers, final_norm, lm_head })
    }
}

/// The memory-mapped safetensors files of a checkpoint and which file holds which tensor.
struct SafetensorFiles {
    dir: PathBuf,
    maps: Vec<(PathBuf, Mmap)>,
    /// tensor name → index into `maps`.
    index: HashMap<String, usize>,
}

impl SafetensorFiles {
    fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let names: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Json { path: index_path.clone(), message: e.to_string() })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Weights(format!("{}: no \"weight_map\" object", index_path.display())))?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
            files.sort();
            files.dedup();
            files
        } else if single.exists() {
            vec!["model.safetensors".into()]
        } else {
            return Err(Error::Weights(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json found",
                dir.display()
            )));
        };
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the map is read-only and lives as long as `self`; a checkpoint modified on disk while we
            // run is outside what any loader can guard against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::Weights(format!("{}: not a valid safetensors file ({e})", path.display())))?;
            for tensor in st.names() {
                index.insert(tensor.to_string(), maps.len());
            }
            maps.push((path, map));
        }
        Ok(SafetensorFiles { dir: dir.to_path_buf(), maps, index })
    }

    /// Raw bytes, dtype and shape of a tensor.
    fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8], &Path)> {
        let &i = self.index.get(name).ok_or_else(|| {
            Error::Weights(format!("tensor {name} is missing from the checkpoint in {}", self.dir.display()))
        })?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map)
            .map_err(|e| Error::Weights(format!("{}: not a valid safetensors file ({e})", path.display())))?;
        let view = st.tensor(name).map_err(|e| Error::Weights(format!("{}: {name}: {e}", path.display())))?;
        let (dtype, shape, data) = (view.dtype(), view.shape().to_vec(), view.data());
        // Re-slice from the map so the bytes borrow `self`, not the temporary `st`.
        let offset = data.as_ptr() as usize - map.as_ptr() as usize;
        Ok((dtype, shape, &map[offset..offset + data.len()], path))
    }

    fn checked(&self, name: &str, want: &[usize]) -> Result<(Dtype, &[u8])> {
        let (dtype, shape, bytes, path) = self.raw(name)?;
        if shape != want {
            return Err(Error::Weights(format!(
                "{}: tensor {name} has shape {shape:?}, expected {want:?} from config.json",
                path.display()
            )));
        }
        Ok((dtype, bytes))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix> {
        let (dtype, bytes) = self.checked(name, &[rows, cols])?;
        match dtype {
            Dtype::BF16 => Ok(WeightMatrix::bf16(
                rows,
                cols,
                huge_vec(rows * cols, bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]))),
            )),
            Dtype::F32 | Dtype::F16 => {
                Ok(WeightMatrix::f32(rows, cols, huge_vec(rows * cols, to_f32(dtype, bytes).into_iter())))
            }
            other => Err(Error::Weights(format!("tensor {name}: dtype {other:?} is not supported (f32, bf16, f16)"))),
        }
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (dtype, bytes) = self.checked(name, &[len])?;
        match dtype {
            Dtype::BF16 | Dtype::F32 | Dtype::F16 => Ok(to_f32(dtype, bytes)),
            other => Err(Error::Weights(format!("tensor {name}: dtype {other:?} is not supported (f32, bf16, f16)"))),
        }
    }
}

/// A vector of `len` elements from `items`, backed by huge pages where the system allows (weights are
/// streamed once per decode step; see [`advise_huge_pages`]).
pub(crate) fn huge_vec<T>(len: usize, items: impl Iterator<Item = T>) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    advise_huge_pages(&mut v);
    v.extend(items);
    v
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => unreachable!("callers check the dtype"),
    }
}
