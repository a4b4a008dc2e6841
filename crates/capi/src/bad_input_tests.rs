//! Hostile input through the C ABI (in-crate: the library has no rlib for an integration test to link): a chat template that would never finish or grow without bound, a KV
//! budget that holds no token, a config with absurd sizes. `lm_engine_open` fails in bounded time with a
//! message in the C API's own words (no Rust Debug output, no CLI flag names).

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{lm_engine_free, lm_engine_open, lm_last_error, LmEngine, LmEngineParams};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/tiny-tied");
/// Longer than any of these cases may take on a loaded 2-core machine; a hang fails instead of blocking.
const LIMIT: Duration = Duration::from_secs(120);

const NESTED_LOOPS: &str = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}\
    x{% endfor %}{% endfor %}{% endfor %}";
const DOUBLING: &str = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}\
    {% endfor %}{{ ns.s | length }}";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lm-capi-bad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the tiny model in `dir` with `edit` applied to the JSON file `file`.
fn edited_copy(dir: &Path, file: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(Path::new(TINY).join(f), out.join(f)).unwrap();
    }
    let path = out.join(file);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    out
}

fn with_template(dir: &Path, t: &str) -> PathBuf {
    edited_copy(dir, "tokenizer_config.json", |v| v["chat_template"] = serde_json::Value::String(t.to_string()))
}

fn c_open(model: &Path, kv_budget_bytes: u64) -> (i32, String) {
    let model = CString::new(model.to_str().unwrap()).unwrap();
    let params = LmEngineParams {
        model: model.as_ptr(),
        device: c"cpu".as_ptr(),
        kv_budget_bytes,
        n_threads: 0,
        realign: false,
    };
    let mut engine: *mut LmEngine = std::ptr::null_mut();
    // SAFETY: params and its strings live across the call; engine is a writable slot.
    let code = unsafe { lm_engine_open(&params, &mut engine) };
    // SAFETY: lm_last_error returns a NUL-terminated string owned by this thread's slot.
    let msg = unsafe { CStr::from_ptr(lm_last_error()) }.to_string_lossy().to_string();
    if !engine.is_null() {
        lm_engine_free(engine);
    }
    (code, msg)
}

#[test]
fn the_c_api_fails_fast_and_in_its_own_words() {
    let dir = scratch("c-api");
    let model = with_template(&dir, NESTED_LOOPS);
    let t = Instant::now();
    let (code, msg) = c_open(&model, 0);
    assert!(code != 0 && msg.contains("template instructions"), "{code}: {msg}");
    assert!(t.elapsed() < LIMIT, "lm_engine_open took {:?}", t.elapsed());

    let model = with_template(&dir.join("doubling"), DOUBLING);
    let (code, msg) = c_open(&model, 0);
    assert!(code != 0 && msg.contains("grow without bound"), "{code}: {msg}");

    let (code, msg) = c_open(Path::new(TINY), 1);
    assert!(code != 0 && msg.contains("params.kv_budget_bytes: 1 bytes holds no token"), "{code}: {msg}");
    assert!(!msg.contains("Bytes(") && !msg.contains("--kv-budget"), "no Rust Debug, no CLI flag: {msg}");

    let model =
        edited_copy(&dir.join("layers"), "config.json", |v| v["num_hidden_layers"] = 1_000_000_000_000u64.into());
    let (code, msg) = c_open(&model, 0);
    assert!(code != 0 && msg.contains("num_hidden_layers"), "{code}: {msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
