//! Hostile input, kept as a table: each case corrupts a copy of a tiny model (config values, chat template,
//! weights) or passes extreme flags, and must fail in bounded time with a clear message containing the
//! expected text: no panic, no abort, no hang, no garbage text with exit 0. The C ABI's cases are in
//! crates/capi/tests/bad_input.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latentmas::engine::Engine;
use latentmas::kv::KvBudget;
use latentmas::latent::Alignment;
use latentmas::sample::SamplingParams;

const TINY: &str = "tests/data/tiny-tied";
const TINY_BF16: &str = "tests/data/tiny-untied-bf16";
const PROMPTS: &str = "tests/data/prompts_tiny.json";
/// Longer than any of these cases may take on a loaded 2-core machine; a hang fails instead of blocking.
const LIMIT: Duration = Duration::from_secs(120);

/// How a case changes its copy of the model.
enum Edit {
    None,
    /// Set a `config.json` field to this JSON value.
    Config(&'static str, &'static str),
    /// Replace the chat template.
    Template(&'static str),
    /// Rewrite every f32 weight tensor whose name contains the pattern with `f(old value)`.
    Weights(&'static str, fn(f32) -> f32),
}

struct Case {
    name: &'static str,
    model: &'static str,
    edit: Edit,
    /// Arguments after `latentmas`; `MODEL` is replaced by the edited copy's path.
    args: &'static [&'static str],
    expect: &'static str,
}

const Q: &str = "What is 12 plus 30?";

/// Grows the residual stream past f32's range in layer 0's MLP: finite weights, Inf/NaN activations.
fn overflow(v: f32) -> f32 {
    v * 1e32
}

fn nan(_: f32) -> f32 {
    f32::NAN
}

const NESTED_LOOPS: &str = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}\
    x{% endfor %}{% endfor %}{% endfor %}";
/// Forty doublings: a terabyte within a few hundred instructions.
const DOUBLING: &str = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}\
    {% endfor %}{{ ns.s | length }}";
const FLOOD: &str = "{% for a in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";

fn cases() -> Vec<Case> {
    let run = |rest: &'static [&'static str]| rest;
    vec![
        // 7: template fuel and output bounds
        Case {
            name: "nested range loops",
            model: TINY,
            edit: Edit::Template(NESTED_LOOPS),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "template instructions",
        },
        Case {
            name: "output flood",
            model: TINY,
            edit: Edit::Template(FLOOD),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "rendered chat exceeds",
        },
        Case {
            name: "string doubling",
            model: TINY,
            edit: Edit::Template(DOUBLING),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "the template's strings grow without bound",
        },
        // 8: config values
        Case {
            name: "layers 1e12",
            model: TINY,
            edit: Edit::Config("num_hidden_layers", "1000000000000"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "num_hidden_layers 1000000000000 is out of range",
        },
        Case {
            name: "layers 2^62",
            model: TINY,
            edit: Edit::Config("num_hidden_layers", "4611686018427387904"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "num_hidden_layers 4611686018427387904 is out of range",
        },
        Case {
            name: "vocab 2^62",
            model: TINY,
            edit: Edit::Config("vocab_size", "4611686018427387904"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "vocab_size",
        },
        Case {
            name: "intermediate 2^40",
            model: TINY,
            edit: Edit::Config("intermediate_size", "1099511627776"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "intermediate_size",
        },
        Case {
            name: "head_dim 2^40",
            model: TINY,
            edit: Edit::Config("head_dim", "1099511627776"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "head_dim",
        },
        Case {
            name: "negative eps",
            model: TINY,
            edit: Edit::Config("rms_norm_eps", "-0.001"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "rms_norm_eps",
        },
        Case {
            name: "zero rope_theta",
            model: TINY,
            edit: Edit::Config("rope_theta", "0"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "rope_theta",
        },
        Case {
            name: "negative rope_theta",
            model: TINY,
            edit: Edit::Config("rope_theta", "-10000.0"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "rope_theta",
        },
        Case {
            name: "context 0",
            model: TINY,
            edit: Edit::Config("max_position_embeddings", "0"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "max_position_embeddings",
        },
        Case {
            name: "context 1",
            model: TINY,
            edit: Edit::Config("max_position_embeddings", "1"),
            args: run(&["run", "--model", "MODEL", "--question", Q, "--greedy", "--max-new-tokens", "2"]),
            expect: "max_position_embeddings 1 is too small",
        },
        // 9: flags whose arithmetic overflowed
        Case {
            name: "kv budget 2^57 tokens",
            model: TINY,
            edit: Edit::None,
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--question",
                Q,
                "--max-new-tokens",
                "8",
                "--kv-budget",
                "144115188075855872tok",
            ]),
            expect: "--kv-budget \"144115188075855872tok\"",
        },
        Case {
            name: "latent steps u64::MAX",
            model: TINY,
            edit: Edit::None,
            args: run(&["run", "--model", "MODEL", "--question", Q, "--latent-steps", "18446744073709551615"]),
            expect: "--latent-steps 18446744073709551615",
        },
        Case {
            name: "max new tokens u64::MAX",
            model: TINY,
            edit: Edit::None,
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--method",
                "single",
                "--question",
                Q,
                "--max-new-tokens",
                "18446744073709551615",
            ]),
            expect: "--max-new-tokens 18446744073709551615",
        },
        Case {
            name: "generate max new tokens u64::MAX",
            model: TINY,
            edit: Edit::None,
            args: run(&["generate", "--model", "MODEL", "--prompt", Q, "--max-new-tokens", "18446744073709551615"]),
            expect: "context length",
        },
        // 10: non-finite numbers are errors naming the phase, on every device and decoding mode
        Case {
            name: "overflowing MLP, greedy",
            model: TINY,
            edit: Edit::Weights("layers.0.mlp", overflow),
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--method",
                "single",
                "--question",
                Q,
                "--greedy",
                "--max-new-tokens",
                "3",
            ]),
            expect: "prefill produced NaN or Inf",
        },
        Case {
            name: "overflowing MLP, sampled",
            model: TINY,
            edit: Edit::Weights("layers.0.mlp", overflow),
            args: run(&["run", "--model", "MODEL", "--method", "single", "--question", Q, "--max-new-tokens", "3"]),
            expect: "prefill produced NaN or Inf",
        },
        Case {
            name: "overflowing MLP, latent",
            model: TINY,
            edit: Edit::Weights("layers.0.mlp", overflow),
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--prompts",
                PROMPTS,
                "--question",
                Q,
                "--latent-steps",
                "2",
                "--max-new-tokens",
                "3",
            ]),
            expect: "prefill produced NaN or Inf",
        },
        Case {
            name: "overflowing MLP, emu device",
            model: TINY,
            edit: Edit::Weights("layers.0.mlp", overflow),
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--device",
                "emu",
                "--method",
                "single",
                "--question",
                Q,
                "--greedy",
                "--max-new-tokens",
                "3",
            ]),
            expect: "NaN or Inf",
        },
        Case {
            name: "NaN weights",
            model: TINY,
            edit: Edit::Weights("layers.1.self_attn.o_proj", nan),
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--method",
                "single",
                "--question",
                Q,
                "--greedy",
                "--max-new-tokens",
                "3",
            ]),
            expect: "NaN",
        },
        // 11: context length
        Case {
            name: "latent chain past the context",
            model: TINY,
            edit: Edit::None,
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--prompts",
                PROMPTS,
                "--question",
                Q,
                "--latent-steps",
                "5000",
                "--max-new-tokens",
                "2",
            ]),
            expect: "the model's context length is 4096",
        },
        Case {
            name: "prompt past a small context",
            model: TINY,
            edit: Edit::Config("max_position_embeddings", "32"),
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--method",
                "single",
                "--prompts",
                PROMPTS,
                "--question",
                Q,
                "--greedy",
                "--max-new-tokens",
                "2",
            ]),
            expect: "--max-context",
        },
        Case {
            name: "max-context 0",
            model: TINY,
            edit: Edit::None,
            args: run(&["run", "--model", "MODEL", "--question", Q, "--max-context", "0"]),
            expect: "--max-context",
        },
        // 16: a prompt set that drops the question
        Case {
            name: "prompts without {question}",
            model: TINY,
            edit: Edit::None,
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--method",
                "single",
                "--prompts",
                "PROMPTS_NOQ",
                "--question",
                Q,
                "--greedy",
            ]),
            expect: "has no {question} placeholder",
        },
        // 17: messages that named the wrong thing
        Case {
            name: "limit 0",
            model: TINY,
            edit: Edit::None,
            args: run(&[
                "eval",
                "--model",
                "MODEL",
                "--task",
                "gsm8k",
                "--data",
                "tests/data/eval/gsm8k.jsonl",
                "--limit",
                "0",
                "--out",
                "OUT",
            ]),
            expect: "--limit must be at least 1",
        },
        Case {
            name: "TiB is a unit",
            model: TINY,
            edit: Edit::None,
            args: run(&[
                "run",
                "--model",
                "MODEL",
                "--method",
                "single",
                "--question",
                Q,
                "--max-new-tokens",
                "8",
                "--kv-budget",
                "0.000000001TiB",
            ]),
            expect: "--kv-budget 0.000000001TiB holds 2 tokens",
        },
        Case {
            name: "unknown unit lists the units",
            model: TINY,
            edit: Edit::None,
            args: run(&["run", "--model", "MODEL", "--question", Q, "--max-new-tokens", "8", "--kv-budget", "1EiB"]),
            expect: "units: tok, B, KB, MB, GB, TB, KiB, MiB, GiB, TiB",
        },
        Case {
            name: "single + parallel",
            model: TINY,
            edit: Edit::None,
            args: run(&["run", "--model", "MODEL", "--method", "single", "--topology", "parallel", "--question", Q]),
            expect: "--topology parallel is a LatentMAS topology (--method latent), not one of --method single",
        },
        Case {
            name: "text + parallel",
            model: TINY,
            edit: Edit::None,
            args: run(&["run", "--model", "MODEL", "--method", "text", "--topology", "parallel", "--question", Q]),
            expect: "--topology parallel is a LatentMAS topology (--method latent), not one of --method text",
        },
    ]
}

fn scratch(name: &str) -> PathBuf {
    let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let d = std::env::temp_dir().join(format!("lm-bad-{slug}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of `model` (without any alignment cache) in `dir`, with `edit` applied.
fn edited_copy(model: &str, edit: &Edit, dir: &Path) -> PathBuf {
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(Path::new(model).join(f), out.join(f)).unwrap();
    }
    match edit {
        Edit::None => {}
        Edit::Config(key, value) => {
            let path = out.join("config.json");
            let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            cfg[*key] = serde_json::from_str(value).unwrap();
            std::fs::write(&path, cfg.to_string()).unwrap();
        }
        Edit::Template(t) => {
            let path = out.join("tokenizer_config.json");
            let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            cfg["chat_template"] = serde_json::Value::String(t.to_string());
            std::fs::write(&path, cfg.to_string()).unwrap();
        }
        Edit::Weights(pattern, f) => rewrite_weights(&out.join("model.safetensors"), pattern, *f),
    }
    out
}

fn rewrite_weights(path: &Path, pattern: &str, f: fn(f32) -> f32) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut hit = 0;
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if name.contains(pattern) {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}: the edit is for f32 weights");
            for c in data.chunks_exact_mut(4) {
                let v = f(f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                c.copy_from_slice(&v.to_le_bytes());
            }
            hit += 1;
        }
        owned.push((name, view.dtype(), view.shape().to_vec(), data));
    }
    assert!(hit > 0, "no tensor matches {pattern}");
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Runs the binary with a time limit; returns (exit status success, stderr).
fn run_bounded(args: &[String]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentmas"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run latentmas");
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            );
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return (false, String::new(), format!("(killed: still running after {LIMIT:?})"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_bad_input_fails_with_its_message() {
    let mut failures = Vec::new();
    for case in cases() {
        let dir = scratch(case.name);
        let model = edited_copy(case.model, &case.edit, &dir);
        let no_question = dir.join("prompts_noq.json");
        std::fs::write(&no_question, r#"{"_system": "S", "baseline/math": "Solve the problem."}"#).unwrap();
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| match *a {
                "MODEL" => model.display().to_string(),
                "PROMPTS_NOQ" => no_question.display().to_string(),
                "OUT" => dir.join("results.jsonl").display().to_string(),
                other => other.to_string(),
            })
            .collect();
        let (ok, stdout, stderr) = run_bounded(&args);
        let clean = !ok
            && stderr.contains(case.expect)
            && !stderr.contains("panicked")
            && stderr.lines().filter(|l| l.starts_with("error:")).count() == 1;
        if !clean {
            failures.push(format!(
                "{}: expected a failure containing {:?}; exit ok = {ok}\n  stdout: {}\n  stderr: {}",
                case.name,
                case.expect,
                stdout.trim(),
                stderr.trim()
            ));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn max_context_overrides_an_understating_config() {
    let dir = scratch("max-context");
    let model = edited_copy(TINY, &Edit::Config("max_position_embeddings", "32"), &dir);
    let model = model.display().to_string();
    let base = ["run", "--model", &model, "--method", "single", "--prompts", PROMPTS, "--question", Q, "--greedy"];
    let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    args.extend(["--max-new-tokens", "2", "--max-context", "4096"].map(String::from));
    let (ok, _, stderr) = run_bounded(&args);
    assert!(ok, "--max-context 4096 should lift the config's 32: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nan_trace_run_writes_no_trace() {
    let dir = scratch("nan-trace");
    let model = edited_copy(TINY, &Edit::Weights("layers.0.mlp", overflow), &dir);
    let trace = dir.join("trace.json");
    let args: Vec<String> = [
        "run",
        "--model",
        model.to_str().unwrap(),
        "--prompts",
        PROMPTS,
        "--question",
        Q,
        "--latent-steps",
        "2",
        "--max-new-tokens",
        "3",
        "--trace",
        trace.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, stdout, stderr) = run_bounded(&args);
    assert!(!ok && stderr.contains("NaN or Inf"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("answer:"), "no report may be printed: {stdout}");
    assert!(!trace.exists(), "no trace may be written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn latent_and_decode_phases_are_named() {
    latentmas::engine::set_threads(Some(2));
    let mut engine = Engine::open(Path::new(TINY_BF16), KvBudget::Tokens(64)).unwrap();
    // A NaN target norm makes every fed latent vector NaN: the first latent step's forward turns it into
    // NaN hidden states.
    let mut rows = vec![engine.kv.reserve(32).unwrap()];
    engine.prefill(&mut rows, &[&[5, 9, 13]], false).unwrap();
    let err = engine.latent_steps(&mut rows, 3, &Alignment::identity(f32::NAN), |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("latent step 1 of 3 produced NaN or Inf"), "{err}");

    // NaN in the cached keys: the prefill's logits are fine, the first decode step attends to the NaN. The
    // prompt is one whose first greedy token is not a stop token (else no decode step runs).
    let params = SamplingParams { greedy: true, ..SamplingParams::default() };
    let stops = engine.tokenizer.stop_ids();
    let prompt: Vec<u32> = (1..60u32)
        .map(|t| vec![t, t + 7, t + 3])
        .find(|p| {
            engine.kv.reset();
            let mut rows = vec![engine.kv.reserve(32).unwrap()];
            engine.prefill(&mut rows, &[p], true).unwrap();
            let first = engine.decode(&mut rows, &params, 1, |_, _, _| {}).unwrap()[0].ids[0];
            !stops.contains(&first)
        })
        .expect("a prompt whose first token is not a stop token");
    engine.kv.reset();
    let mut rows = vec![engine.kv.reserve(32).unwrap()];
    engine.prefill(&mut rows, &[&prompt], true).unwrap();
    let (k, _) = engine.kv.layer_mut(0);
    k[..16].fill(f32::NAN);
    let err = engine.decode(&mut rows, &params, 5, |_, _, _| {}).unwrap_err().to_string();
    assert!(err.contains("decode step 1 produced NaN or Inf"), "{err}");
}

#[test]
fn an_alignment_cache_holding_nan_is_recomputed() {
    let dir = scratch("nan-align");
    let model = edited_copy("tests/data/tiny-untied", &Edit::None, &dir);
    let args = |trace: &Path| -> Vec<String> {
        [
            "run",
            "--model",
            model.to_str().unwrap(),
            "--prompts",
            PROMPTS,
            "--question",
            Q,
            "--realign",
            "--greedy",
            "--latent-steps",
            "2",
            "--max-new-tokens",
            "3",
            "--trace",
            trace.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (ok, _, stderr) = run_bounded(&args(&dir.join("t1.json")));
    assert!(ok, "{stderr}");
    let cache = model.join(latentmas::latent::CACHE_FILE);
    // Keep the header (and its matching key), poison the values.
    let bytes = std::fs::read(&cache).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut poisoned = bytes[..header].to_vec();
    for c in bytes[header..].chunks_exact(4) {
        let _ = c;
        poisoned.extend_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&cache, &poisoned).unwrap();
    let (ok, _, stderr) = run_bounded(&args(&dir.join("t2.json")));
    assert!(ok, "a poisoned cache is recomputed, not fatal: {stderr}");
    assert!(stderr.contains("holds NaN or Inf"), "the poisoned cache is named: {stderr}");
    assert_eq!(std::fs::read(&cache).unwrap(), bytes, "the cache is rewritten with the recomputed W_a");
    let t1 = std::fs::read_to_string(dir.join("t1.json")).unwrap();
    let t2 = std::fs::read_to_string(dir.join("t2.json")).unwrap();
    assert_eq!(t1, t2, "the recomputed alignment gives the same run");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn synth_refuses_a_non_empty_directory_without_force() {
    let dir = scratch("synth");
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let out = dir.display().to_string();
    let args: Vec<String> = ["synth", "--shape", "tiny", "--out", &out].iter().map(|s| s.to_string()).collect();
    let (ok, _, stderr) = run_bounded(&args);
    assert!(!ok && stderr.contains("is not empty; pass --force"), "{stderr}");
    assert!(!dir.join("config.json").exists(), "nothing may be written");
    let mut forced = args.clone();
    forced.push("--force".into());
    let (ok, _, stderr) = run_bounded(&forced);
    assert!(ok, "{stderr}");
    assert!(dir.join("config.json").exists() && dir.join("keep.txt").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
