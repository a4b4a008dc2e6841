//! Loading Qwen3 weights from safetensors (single file or sharded with `model.safetensors.index.json`),
//! memory-mapped. bf16 tensors stay bf16, f32 stay f32, f16 are widened to f32. q|k|v and gate|up are
//! stacked at load time so each projection group is one pass over the weights.
//!
//! Each file's header is parsed once. A matrix used as it lies in the file (the embedding, o_proj, down,
//! lm_head of a bf16 or f32 checkpoint) is not copied: it borrows the mapping ([`Elems::Mapped`]), so it is
//! resident once, in the page cache. So is a stacked matrix whose parts lie back to back in the file in
//! stack order (q, k, v; gate, up: how the synthesised checkpoints lay them out). Other stacked matrices
//! are read with `pread` straight into their (huge-page) buffer, so their bytes in the mapping are never
//! touched. Every tensor is checked for NaN/Inf while its
//! bytes pass through the cache anyway; a non-finite weight is an error naming the tensor and element.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use super::config::Qwen3Config;
use super::finite::{first_non_finite, FloatKind};
use super::matrix::{Elems, WeightMatrix};
use crate::backend::cpu::mem::{advise_huge_pages, zeroed_vec};
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

    /// Every matrix, for accounting.
    fn matrices(&self) -> impl Iterator<Item = &WeightMatrix> {
        let layers = self.layers.iter().flat_map(|l| [&l.qkv, &l.o_proj, &l.gate_up, &l.down]);
        std::iter::once(&self.embed).chain(layers).chain(self.lm_head.as_ref())
    }

    /// Bytes of all matrices (norm vectors are negligible).
    pub fn bytes(&self) -> usize {
        self.matrices().map(|m| m.bytes()).sum()
    }

    /// Bytes of the matrices read in place from the mapped checkpoint (the rest are owned copies).
    pub fn mapped_bytes(&self) -> usize {
        self.matrices().filter(|m| m.is_mapped()).map(|m| m.bytes()).sum()
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
            let qkv = files.stacked(
                &[
                    (&format!("{p}.self_attn.q_proj.weight"), h * hd),
                    (&format!("{p}.self_attn.k_proj.weight"), kvh * hd),
                    (&format!("{p}.self_attn.v_proj.weight"), kvh * hd),
                ],
                d,
            )?;
            let gate_up = files.stacked(
                &[(&format!("{p}.mlp.gate_proj.weight"), inter), (&format!("{p}.mlp.up_proj.weight"), inter)],
                d,
            )?;
            layers.push(LayerWeights {
                input_norm: files.vector(&format!("{p}.input_layernorm.weight"), d)?,
                qkv,
                q_norm: files.vector(&format!("{p}.self_attn.q_norm.weight"), hd)?,
                k_norm: files.vector(&format!("{p}.self_attn.k_norm.weight"), hd)?,
                o_proj: files.matrix(&format!("{p}.self_attn.o_proj.weight"), d, h * hd)?,
                post_norm: files.vector(&format!("{p}.post_attention_layernorm.weight"), d)?,
                gate_up,
                down: files.matrix(&format!("{p}.mlp.down_proj.weight"), d, inter)?,
            });
        }
        let final_norm = files.vector("model.norm.weight", d)?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(files.matrix("lm_head.weight", v, d)?) };
        Ok(Weights { embed, layers, final_norm, lm_head })
    }
}

/// Where one tensor's bytes lie.
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range inside the file (and its mapping, which covers the whole file).
    offset: usize,
    len: usize,
}

/// An open checkpoint file and its read-only mapping.
struct MappedFile {
    path: PathBuf,
    file: File,
    map: Arc<Mmap>,
}

/// The memory-mapped safetensors files of a checkpoint and where each tensor lies.
struct SafetensorFiles {
    dir: PathBuf,
    files: Vec<MappedFile>,
    index: HashMap<String, Entry>,
}

/// Bytes per parallel work item of the checks and reads: big enough to amortise a task, small enough to
/// stay in cache between the read and the check, and to spread one tensor over every thread.
const WORK_BYTES: usize = 1 << 20;

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
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the map is read-only and lives as long as the matrices that borrow it (they hold an
            // `Arc`); a checkpoint modified on disk while we run is outside what any loader can guard against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            // The header is parsed (and every tensor's offsets validated) once per file.
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::Weights(format!("{}: not a valid safetensors file ({e})", path.display())))?;
            for (tensor, view) in st.iter() {
                let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
                let entry = Entry {
                    file: files.len(),
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    offset,
                    len: view.data().len(),
                };
                index.insert(tensor.to_string(), entry);
            }
            drop(st);
            files.push(MappedFile { path, file, map: Arc::new(map) });
        }
        Ok(SafetensorFiles { dir: dir.to_path_buf(), files, index })
    }

    /// A tensor's entry, its shape checked against `want`.
    fn checked(&self, name: &str, want: &[usize]) -> Result<&Entry> {
        let e = self.index.get(name).ok_or_else(|| {
            Error::Weights(format!("tensor {name} is missing from the checkpoint in {}", self.dir.display()))
        })?;
        if e.shape != want {
            return Err(Error::Weights(format!(
                "{}: tensor {name} has shape {:?}, expected {want:?} from config.json",
                self.files[e.file].path.display(),
                e.shape
            )));
        }
        Ok(e)
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        &self.files[e.file].map[e.offset..e.offset + e.len]
    }

    /// Fails naming the tensor and element when `bytes` (element `first` onwards of tensor `name`, rows of
    /// `cols`) hold a NaN or an infinity.
    fn finite(&self, e: &Entry, name: &str, cols: usize, first: usize, kind: FloatKind, bytes: &[u8]) -> Result<()> {
        match first_non_finite(kind, bytes) {
            None => Ok(()),
            Some((i, x)) => {
                let i = first + i;
                Err(Error::Weights(format!(
                    "{}: tensor {name} holds a non-finite value ({x}) at element {i} (row {}, column {}); the checkpoint is corrupt",
                    self.files[e.file].path.display(),
                    i / cols.max(1),
                    i % cols.max(1)
                )))
            }
        }
    }

    /// Checks a whole tensor in place, in parallel blocks (first touch of its pages in the mapping).
    fn check_in_place(&self, e: &Entry, name: &str, cols: usize, kind: FloatKind) -> Result<()> {
        let bytes = self.bytes(e);
        let block = WORK_BYTES / kind.size() * kind.size();
        // the first failing block in order, so the error names the first bad element
        bytes
            .par_chunks(block)
            .enumerate()
            .map(|(b, chunk)| self.finite(e, name, cols, b * block / kind.size(), kind, chunk))
            .find_first(|r| r.is_err())
            .unwrap_or(Ok(()))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix> {
        let e = self.checked(name, &[rows, cols])?;
        let kind = float_kind(e.dtype, name)?;
        let map = &self.files[e.file].map;
        let in_place = match e.dtype {
            Dtype::BF16 => Elems::<bf16>::mapped(map.clone(), e.offset, rows * cols)
                .map(|v| WeightMatrix::bf16_elems(rows, cols, v)),
            Dtype::F32 => {
                Elems::<f32>::mapped(map.clone(), e.offset, rows * cols).map(|v| WeightMatrix::f32_elems(rows, cols, v))
            }
            _ => None,
        };
        match in_place {
            Some(m) => {
                self.check_in_place(e, name, cols, kind)?;
                Ok(m)
            }
            // widened or misaligned: an owned copy
            None => self.stacked(&[(name, rows)], cols),
        }
    }

    /// Parts `(name, rows)` of `cols` columns each, stacked in order into one owned matrix: bf16 when every
    /// part is bf16, else f32.
    fn stacked(&self, parts: &[(&str, usize)], cols: usize) -> Result<WeightMatrix> {
        let entries =
            parts.iter().map(|&(name, rows)| self.checked(name, &[rows, cols])).collect::<Result<Vec<_>>>()?;
        for (e, (name, _)) in entries.iter().zip(parts) {
            float_kind(e.dtype, name)?;
        }
        let rows: usize = parts.iter().map(|p| p.1).sum();
        if let Some(m) = self.stacked_in_place(&entries, parts, rows, cols)? {
            return Ok(m);
        }
        let alloc_err = || Error::Weights(format!("cannot allocate {rows}×{cols} elements for {}", parts[0].0));
        if entries.iter().all(|e| e.dtype == Dtype::BF16) {
            let mut v: Vec<bf16> = zeroed_vec(rows * cols).ok_or_else(alloc_err)?;
            advise_huge_pages(&mut v);
            let mut rest = &mut v[..];
            for (e, &(name, r)) in entries.iter().zip(parts) {
                let (dst, tail) = rest.split_at_mut(r * cols);
                self.read_raw(e, name, cols, FloatKind::Bf16, bytemuck::cast_slice_mut(dst))?;
                rest = tail;
            }
            Ok(WeightMatrix::bf16(rows, cols, v))
        } else {
            let mut v: Vec<f32> = zeroed_vec(rows * cols).ok_or_else(alloc_err)?;
            advise_huge_pages(&mut v);
            let mut rest = &mut v[..];
            for (e, &(name, r)) in entries.iter().zip(parts) {
                let (dst, tail) = rest.split_at_mut(r * cols);
                if e.dtype == Dtype::F32 {
                    self.read_raw(e, name, cols, FloatKind::F32, bytemuck::cast_slice_mut(dst))?;
                } else {
                    let kind = float_kind(e.dtype, name)?;
                    self.check_in_place(e, name, cols, kind)?;
                    widen_into(e.dtype, self.bytes(e), dst);
                }
                rest = tail;
            }
            Ok(WeightMatrix::f32(rows, cols, v))
        }
    }

    /// The stacked matrix borrowed from the mapping when its parts lie back to back in one file, in stack
    /// order and one dtype the kernels read as is (as the synthesised checkpoints write q|k|v and gate|up):
    /// no copy, and its pages are resident once, in the page cache. `None` when they do not.
    fn stacked_in_place(
        &self,
        entries: &[&Entry],
        parts: &[(&str, usize)],
        rows: usize,
        cols: usize,
    ) -> Result<Option<WeightMatrix>> {
        let first = entries[0];
        let adjacent = entries
            .windows(2)
            .all(|w| w[1].file == first.file && w[1].dtype == first.dtype && w[0].offset + w[0].len == w[1].offset);
        if !adjacent {
            return Ok(None);
        }
        let map = &self.files[first.file].map;
        let m = match first.dtype {
            Dtype::BF16 => Elems::<bf16>::mapped(map.clone(), first.offset, rows * cols)
                .map(|v| WeightMatrix::bf16_elems(rows, cols, v)),
            Dtype::F32 => Elems::<f32>::mapped(map.clone(), first.offset, rows * cols)
                .map(|v| WeightMatrix::f32_elems(rows, cols, v)),
            _ => None,
        };
        let Some(m) = m else { return Ok(None) };
        let kind = float_kind(first.dtype, parts[0].0)?;
        for (e, &(name, _)) in entries.iter().zip(parts) {
            self.check_in_place(e, name, cols, kind)?;
        }
        Ok(Some(m))
    }

    /// Reads a tensor's bytes (already in the element type of `dst`) from its file into `dst` in parallel
    /// blocks, checking each block while it is in cache.
    fn read_raw(&self, e: &Entry, name: &str, cols: usize, kind: FloatKind, dst: &mut [u8]) -> Result<()> {
        debug_assert_eq!(dst.len(), e.len);
        let f = &self.files[e.file];
        let block = WORK_BYTES / kind.size() * kind.size();
        dst.par_chunks_mut(block)
            .enumerate()
            .map(|(b, chunk)| {
                let at = e.offset + b * block;
                if cfg!(target_endian = "little") {
                    f.file.read_exact_at(chunk, at as u64).map_err(|err| Error::io(&f.path, err))?;
                } else {
                    chunk.copy_from_slice(&f.map[at..at + chunk.len()]);
                }
                self.finite(e, name, cols, b * block / kind.size(), kind, chunk)
            })
            .find_first(|r| r.is_err())
            .unwrap_or(Ok(()))?;
        if cfg!(target_endian = "big") {
            // the file's little-endian elements, swapped to the host's order
            for el in dst.chunks_exact_mut(kind.size()) {
                el.reverse();
            }
        }
        Ok(())
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let e = self.checked(name, &[len])?;
        let kind = float_kind(e.dtype, name)?;
        let bytes = self.bytes(e);
        self.finite(e, name, len, 0, kind, bytes)?;
        let mut out = vec![0f32; len];
        widen_into(e.dtype, bytes, &mut out);
        Ok(out)
    }
}

/// The float kind of a supported tensor dtype, or an error naming the tensor.
fn float_kind(dtype: Dtype, name: &str) -> Result<FloatKind> {
    match dtype {
        Dtype::F32 => Ok(FloatKind::F32),
        Dtype::BF16 => Ok(FloatKind::Bf16),
        Dtype::F16 => Ok(FloatKind::F16),
        other => Err(Error::Weights(format!("tensor {name}: dtype {other:?} is not supported (f32, bf16, f16)"))),
    }
}

/// Little-endian `dtype` elements → f32 (exact for every supported dtype).
fn widen_into(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => unreachable!("callers check the dtype with float_kind"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elems_are_read_in_place_only_when_aligned() {
        let dir = std::env::temp_dir().join(format!("latentmas-elems-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bytes");
        std::fs::write(&path, (0u8..64).collect::<Vec<_>>()).unwrap();
        let file = File::open(&path).unwrap();
        let map = Arc::new(unsafe { Mmap::map(&file) }.unwrap());
        let v = Elems::<f32>::mapped(map.clone(), 4, 2).unwrap();
        assert_eq!(v[0], f32::from_le_bytes([4, 5, 6, 7]));
        assert!(Elems::<f32>::mapped(map.clone(), 2, 2).is_none(), "misaligned");
        assert!(Elems::<f32>::mapped(map.clone(), 60, 2).is_none(), "past the end");
        assert!(Elems::<bf16>::mapped(map.clone(), 2, 31).is_some());
        assert!(Elems::<bf16>::mapped(map, 2, usize::MAX).is_none(), "overflowing length");
        std::fs::remove_dir_all(&dir).ok();
    }
}
