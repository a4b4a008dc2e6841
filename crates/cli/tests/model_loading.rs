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

/// A copy of `model`'s checkpoint with element `at` of `tensor` replaced by `value` (in the tensor's dtype).
fn poisoned(name: &str, model: &str, tensor: &str, at: usize, value: f32) -> PathBuf {
    let dir = scratch(name);
    std::fs::copy(Path::new(model).join("config.json"), dir.join("config.json")).unwrap();
    let mut bytes = std::fs::read(Path::new(model).join("model.safetensors")).unwrap();
    let (start, dtype) = {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = st.tensor(tensor).unwrap();
        (view.data().as_ptr() as usize - bytes.as_ptr() as usize, view.dtype())
    };
    let raw = match dtype {
        safetensors::Dtype::F32 => value.to_le_bytes().to_vec(),
        safetensors::Dtype::BF16 => half::bf16::from_f32(value).to_le_bytes().to_vec(),
        other => panic!("{other:?}"),
    };
    let at = start + at * raw.len();
    bytes[at..at + raw.len()].copy_from_slice(&raw);
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    dir
}

/// NaN or Inf anywhere in the weights is an error naming the tensor and the element, whichever way the
/// tensor is loaded: read in place (down_proj, lm_head), stacked (q|k|v, gate|up), widened (norms).
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let cases = [
        ("tests/data/tiny-untied", "model.layers.1.mlp.down_proj.weight", 70, f32::NAN),
        ("tests/data/tiny-untied", "model.layers.0.self_attn.k_proj.weight", 3, f32::INFINITY),
        ("tests/data/tiny-untied", "lm_head.weight", 0, f32::NEG_INFINITY),
        ("tests/data/tiny-untied", "model.norm.weight", 5, f32::NAN),
        ("tests/data/tiny-untied-bf16", "model.layers.1.mlp.up_proj.weight", 129, f32::NAN),
        ("tests/data/tiny-untied-bf16", "model.embed_tokens.weight", 64 * 3 + 2, f32::INFINITY),
        ("tests/data/tiny-untied-bf16", "model.layers.0.self_attn.q_norm.weight", 1, f32::NAN),
    ];
    for (i, &(model, tensor, at, value)) in cases.iter().enumerate() {
        let dir = poisoned(&format!("nan{i}"), model, tensor, at, value);
        let e = err_of(&dir);
        assert!(e.contains(tensor) && e.contains("non-finite") && e.contains(&format!("element {at}")), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Through the CLI a poisoned checkpoint fails before any output, never decoding garbage with exit 0.
#[test]
fn run_refuses_a_poisoned_checkpoint() {
    let dir = poisoned("nan-cli", "tests/data/tiny-untied", "model.layers.0.mlp.gate_proj.weight", 17, f32::NAN);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latentmas"))
        .args(["run", "--model", dir.to_str().unwrap(), "--method", "single", "--question", "hi", "--greedy"])
        .args(["--max-new-tokens", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "rc {:?}, stdout {:?}", out.status, out.stdout);
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("non-finite"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A synthesised checkpoint lays q|k|v and gate|up back to back, so every matrix is read in place from the
/// mapping; the same tensors in the alphabetical order `safetensors` writes are stacked by copy. Both give
/// the same rows, and a NaN inside a part read in place is still refused naming that part.
#[test]
fn adjacent_parts_are_stacked_in_place_and_equal_the_copied_stack() {
    use latentmas::model::synth::{shape, write_checkpoint, SynthDtype};
    let synth = scratch("adjacent");
    write_checkpoint(&shape("tiny").unwrap(), SynthDtype::Bf16, 3, &synth).unwrap();
    let a = Qwen3::load(&synth).unwrap();
    assert_eq!(a.weights.mapped_bytes(), a.weights.bytes(), "every matrix in place");

    let sorted = scratch("adjacent-sorted");
    std::fs::copy(synth.join("config.json"), sorted.join("config.json")).unwrap();
    let bytes = std::fs::read(synth.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    safetensors::serialize_to_file(st.tensors(), None, &sorted.join("model.safetensors")).unwrap();
    let b = Qwen3::load(&sorted).unwrap();
    assert!(b.weights.mapped_bytes() < b.weights.bytes(), "q|k|v not adjacent: copied");

    let d = a.config.hidden_size;
    let (mut ra, mut rb) = (vec![0f32; d], vec![0f32; d]);
    for (la, lb) in a.weights.layers.iter().zip(&b.weights.layers) {
        for (ma, mb) in [(&la.qkv, &lb.qkv), (&la.gate_up, &lb.gate_up)] {
            assert_eq!(ma.rows, mb.rows);
            for r in 0..ma.rows {
                ma.row_f32(r, &mut ra);
                mb.row_f32(r, &mut rb);
                assert_eq!(ra, rb, "row {r}");
            }
        }
    }

    let dir = poisoned("adjacent-nan", synth.to_str().unwrap(), "model.layers.1.self_attn.v_proj.weight", 9, f32::NAN);
    let e = err_of(&dir);
    assert!(e.contains("v_proj") && e.contains("non-finite") && e.contains("element 9"), "{e}");
    for p in [synth, sorted, dir] {
        std::fs::remove_dir_all(&p).ok();
    }
}
