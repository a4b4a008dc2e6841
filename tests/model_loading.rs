//! Loading checkpoints: sharded = single file, and every kind of bad input gets an error naming the problem.

use std::path::{Path, PathBuf};

use latentmas::model::qwen3::Qwen3;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lm-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(Path::new("tests/data/tiny-untied").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn err_of(dir: &Path) -> String {
    match Qwen3::load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Splits tiny-untied's tensors over two shard files with an index, as HF does for big models.
fn write_sharded(dir: &Path) {
    let bytes = std::fs::read("tests/data/tiny-untied/model.safetensors").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let half = names.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in part.iter() {
            map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let dir = scratch("sharded");
    write_sharded(&dir);
    let a = Qwen3::load(&dir).unwrap();
    let b = Qwen3::load(Path::new("tests/data/tiny-untied")).unwrap();
    assert_eq!(a.config, b.config);
    assert_eq!(a.weights.decode_bytes(), b.weights.decode_bytes());
    let (mut ra, mut rb) = (vec![0f32; 64], vec![0f32; 64]);
    a.weights.lm_head().row_f32(7, &mut ra);
    b.weights.lm_head().row_f32(7, &mut rb);
    assert_eq!(ra, rb);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_weights_are_reported() {
    let dir = scratch("missing");
    let e = err_of(&dir);
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_safetensors_is_reported_with_its_path() {
    let dir = scratch("truncated");
    let bytes = std::fs::read("tests/data/tiny-untied/model.safetensors").unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&dir);
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = scratch("shape");
    std::fs::copy("tests/data/tiny-untied/model.safetensors", dir.join("model.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"))
        .unwrap();
    let e = err_of(&dir);
    assert!(e.contains("gate_proj") && e.contains("[128, 64]") && e.contains("[96, 64]"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch("tensor");
    let bytes = std::fs::read("tests/data/tiny-untied/model.safetensors").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .names()
        .into_iter()
        .filter(|n| *n != "model.layers.1.self_attn.k_norm.weight")
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let e = err_of(&dir);
    assert!(e.contains("model.layers.1.self_attn.k_norm.weight") && e.contains("missing"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unsupported_architecture_is_refused() {
    let dir = scratch("arch");
    std::fs::copy("tests/data/tiny-untied/model.safetensors", dir.join("model.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("Qwen3ForCausalLM", "Qwen2ForCausalLM").replace("\"qwen3\"", "\"qwen2\""),
    )
    .unwrap();
    let e = err_of(&dir);
    assert!(e.contains("unsupported architecture") && e.contains("qwen2"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
