//! Resolving `--model`: a local directory is used as is; an `org/name` id that is not a local path is
//! downloaded from the Hugging Face hub into its usual cache with `hf-hub` (the `hub` feature; a build without
//! it takes local directories only and says so).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Files a model directory must hold besides the weights.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];

/// Returns a local directory holding the model named by `spec`.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/');
    if !looks_like_id {
        return Err(Error::Hub(format!(
            "{spec}: no such model directory (expected a directory with config.json, *.safetensors and tokenizer files, or a hub id like Qwen/Qwen3-4B)"
        )));
    }
    download(spec)
}

#[cfg(not(feature = "hub"))]
fn download(id: &str) -> Result<PathBuf> {
    Err(Error::Hub(format!(
        "{id}: no such model directory, and this build of latentmas has no hub support (built without the `hub` \
         feature) to download it: pass a local model directory"
    )))
}

#[cfg(feature = "hub")]
fn download(id: &str) -> Result<PathBuf> {
    let unreachable = |what: &str, e: &dyn std::fmt::Display| {
        Error::Hub(format!(
            "could not download {what} of {id} from the Hugging Face hub ({e}). If this machine is offline, \
             download the model elsewhere and pass its local directory: --model /path/to/{}",
            id.rsplit('/').next().unwrap_or(id)
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_progress(true)
        .build()
        .map_err(|e| unreachable("the hub client", &e))?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for f in REQUIRED_FILES {
        let p = repo.get(f).map_err(|e| unreachable(f, &e))?;
        dir = p.parent().map(Path::to_path_buf);
    }
    match repo.get("model.safetensors.index.json") {
        Ok(index_path) => {
            let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Json { path: index_path.clone(), message: e.to_string() })?;
            let mut shards: Vec<String> = json["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                repo.get(&s).map_err(|e| unreachable(&s, &e))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors").map_err(|e| unreachable("model.safetensors", &e))?;
        }
    }
    dir.ok_or_else(|| Error::Hub(format!("{id}: download produced no files")))
}
