//! W_a is computed once and cached next to the model, keyed by a hash of both embeddings: a second load
//! reads the cache, a changed embedding or a corrupt file recomputes, and realign off needs no cache.

use std::path::{Path, PathBuf};

use latentmas::latent::{Alignment, CACHE_FILE};
use latentmas::model::qwen3::Qwen3;

fn scratch_model(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lm-align-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(Path::new("tests/data/tiny-untied").join(f), dir.join(f)).unwrap();
    }
    dir
}

#[test]
fn cache_is_written_reused_and_invalidated() {
    let dir = scratch_model("cache");
    let model = Qwen3::load(&dir).unwrap();
    let (a, path) = Alignment::load_or_compute(&model, &dir, 355, true).unwrap();
    assert_eq!(path.as_deref(), Some(dir.join(CACHE_FILE).as_path()));
    let before = std::fs::metadata(dir.join(CACHE_FILE)).unwrap().modified().unwrap();
    let (b, _) = Alignment::load_or_compute(&model, &dir, 355, true).unwrap();
    assert_eq!(a.w_a(), b.w_a(), "the cached W_a is read back exactly");
    assert_eq!(a.target_norm, b.target_norm);
    assert_eq!(std::fs::metadata(dir.join(CACHE_FILE)).unwrap().modified().unwrap(), before, "not rewritten");

    // A different row count is a different key: recomputed, not misread.
    let (c, _) = Alignment::load_or_compute(&model, &dir, 300, true).unwrap();
    assert_ne!(a.w_a(), c.w_a());

    // A corrupt cache is ignored and replaced.
    std::fs::write(dir.join(CACHE_FILE), b"garbage").unwrap();
    let (d, _) = Alignment::load_or_compute(&model, &dir, 355, true).unwrap();
    assert_eq!(a.w_a(), d.w_a());

    // Realign off: identity with the rescale, nothing cached.
    let (off, path) = Alignment::load_or_compute(&model, &dir, 355, false).unwrap();
    assert!(off.w_a().is_none() && path.is_none());
    assert_eq!(off.target_norm, a.target_norm);
    std::fs::remove_dir_all(&dir).ok();
}
