//! What produced a results record: the model's identity, the device, the data file and every setting that
//! changes answers. Each record carries it, so resuming reuses only records made the same way and `report`
//! refuses to merge records made differently.
//!
//! Public operations:
//! - [`Provenance`]: an ordered map `setting → value` (serialised as a JSON object); [`Provenance::set`],
//!   [`Provenance::differences`] (what differs, in words).
//! - [`model_identity`]: a cheap fingerprint of a model directory (see its doc for what it covers).
//! - [`file_sha256`]: the SHA-256 of a whole file (data files, prompt sets).
//!
//! Settings that do not change answers (batch size, threads, KV budget, `--limit`, `--shard`) are not
//! recorded, so a resumed or sharded run may choose them freely.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use latentmas::error::{Error, Result};

/// `setting → value`, compared as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Provenance(pub BTreeMap<String, String>);

impl Provenance {
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// Every setting whose value differs, as `key: A vs B` (a missing value reads as `(none)`).
    pub fn differences(&self, other: &Provenance) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = self.0.keys().chain(other.0.keys()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let (a, b) = (self.0.get(k), other.0.get(k));
                (a != b).then(|| format!("{k}: {} vs {}", show(a), show(b)))
            })
            .collect()
    }
}

fn show(v: Option<&String>) -> String {
    match v {
        None => "(none)".to_string(),
        // Hashes are long; their first 16 hex digits tell them apart in a message.
        Some(s) if s.starts_with("sha256:") && s.len() > 23 => format!("{}…", &s[..23]),
        Some(s) => s.clone(),
    }
}

/// Bytes sampled from each weight file's data, in blocks of [`SAMPLE_BLOCK`].
const SAMPLE_BLOCKS: u64 = 16;
const SAMPLE_BLOCK: u64 = 4096;
/// A safetensors header longer than this is not a real one; refuse rather than read it.
const MAX_HEADER: u64 = 100 << 20;

/// A fingerprint (`sha256:…`) of the model in `dir`, cheap enough for every eval start on a 30 GB model:
/// the bytes of `config.json`, `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`
/// (those present), and for each `*.safetensors` file (sorted by name) its name, size, whole header (names,
/// dtypes, shapes, offsets) and 16 blocks of 4 KiB spread evenly over its data, so retrained weights of the
/// same shapes differ too. Reads well under 1 MB per weight file.
pub fn model_identity(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(bytes) => {
                h.update(name.as_bytes());
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(p, e)),
        }
    }
    let mut weights: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    for p in &weights {
        hash_weight_file(&mut h, p)?;
    }
    Ok(format!("sha256:{:x}", h.finalize()))
}

fn hash_weight_file(h: &mut Sha256, path: &Path) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    h.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
    h.update(size.to_le_bytes());
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).map_err(io)?;
    let header_len = u64::from_le_bytes(len8);
    if header_len > MAX_HEADER || header_len > size - 8 {
        return Err(Error::Weights(format!("{}: header length {header_len} is not plausible", path.display())));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(io)?;
    h.update(&header);
    let data_start = 8 + header_len;
    let data_len = size - data_start;
    let mut block = vec![0u8; SAMPLE_BLOCK as usize];
    for i in 0..SAMPLE_BLOCKS {
        let off = data_start + data_len.saturating_sub(SAMPLE_BLOCK) * i / (SAMPLE_BLOCKS - 1).max(1);
        let n = SAMPLE_BLOCK.min(size - off) as usize;
        f.seek(SeekFrom::Start(off)).map_err(io)?;
        f.read_exact(&mut block[..n]).map_err(io)?;
        h.update(&block[..n]);
    }
    Ok(())
}

/// `sha256:…` of a whole file.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(format!("sha256:{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_setting() {
        let mut a = Provenance::default();
        a.set("device", "cpu").set("model", format!("sha256:{}", "a".repeat(64)));
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.set("device", "cuda").set("data", "sha256:00");
        assert_eq!(a.differences(&b), ["data: (none) vs sha256:00", "device: cpu vs cuda"]);
    }

    #[test]
    fn identity_tells_models_apart() {
        let tied = model_identity(Path::new("tests/data/tiny-tied")).expect("hashes");
        let untied = model_identity(Path::new("tests/data/tiny-untied")).expect("hashes");
        assert!(tied.starts_with("sha256:") && tied.len() == 71);
        assert_ne!(tied, untied);
        assert_eq!(tied, model_identity(Path::new("tests/data/tiny-tied")).expect("hashes"));
    }
}
