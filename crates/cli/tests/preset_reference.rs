//! `--preset reference`: the reference run.py's settings, printed, with explicit flags winning; with
//! `--prompts reference` every agent's prompt ids on every task family are the reference's (expected ids from
//! tools/golden_prompts.py, rendered by transformers). `--text-mas-context-length` cuts the TextMAS context.

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::trial;
use latentmas::mas::prompts::{fill, PromptSet};
use latentmas::mas::run::chat_ids;
use latentmas::tokenizer::Tokenizer;
use serde_json::Value;

const TINY: &str = "tests/data/tiny-tied";
const PROMPTS: &str = "tests/data/prompts_tiny.json";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lm-preset-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn latentmas(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentmas"))
        .env("XDG_CACHE_HOME", cache)
        .args(args)
        .output()
        .expect("run latentmas")
}

/// Runs a command that must succeed; returns (stdout, stderr).
fn ok(cache: &Path, args: &[&str]) -> (String, String) {
    let out = latentmas(cache, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "latentmas {args:?} failed:\n{err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

fn trace_ids(path: &Path) -> Vec<Vec<u32>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["prompt_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

fn main() {
    harness::run(vec![
        trial!(preset_reference_with_reference_prompts_gives_the_reference_prompt_ids_on_every_family, needs authors_prompts),
        trial!(preset_reference_prints_what_it_set_and_explicit_flags_win),
        trial!(text_mas_context_length_cuts_the_context_each_agent_sees),
    ]);
}

/// The authors' prompts.py (the test imports it).
fn authors_prompts() -> Result<(), String> {
    harness::shared("reference/prompts.py").map(drop)
}

fn preset_reference_with_reference_prompts_gives_the_reference_prompt_ids_on_every_family() {
    let shared = harness::shared("reference/prompts.py").unwrap();
    let cache = scratch("ids");
    ok(&cache, &["prompts", "import", shared.parent().unwrap().to_str().unwrap()]);
    // A random-weight model with the real Qwen3 tokenizer, so the ids are comparable with transformers'.
    let model = cache.join("model");
    ok(&cache, &["synth", "--shape", "tiny", "--out", model.to_str().unwrap()]);
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/golden/reference_prompt_ids.json").unwrap()).unwrap();
    let runs = golden["runs"].as_array().unwrap();
    let mut families = std::collections::BTreeSet::new();
    for run in runs {
        let (method, topology, family) =
            (run["method"].as_str().unwrap(), run["topology"].as_str().unwrap(), run["family"].as_str().unwrap());
        families.insert(family);
        let trace = cache.join("trace.json");
        // One new token: the prompts do not depend on it, and the preset's 4096 would only cost time.
        let (_, err) = ok(
            &cache,
            &[
                "run",
                "--model",
                model.to_str().unwrap(),
                "--preset",
                "reference",
                "--prompts",
                "reference",
                "--method",
                method,
                "--topology",
                topology,
                "--task-family",
                family,
                "--question",
                run["question"].as_str().unwrap(),
                "--max-new-tokens",
                "1",
                "--trace",
                trace.to_str().unwrap(),
            ],
        );
        assert!(err.contains("preset reference") && err.contains("kept: --max-new-tokens 1"), "{err}");
        let got = trace_ids(&trace);
        for (i, agent) in run["agents"].as_array().unwrap().iter().enumerate() {
            let want: Vec<u32> = agent["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(got[i], want, "{method}/{topology}/{family}: agent {} ({})", agent["role"], agent["key"]);
        }
    }
    assert_eq!(families.len(), 4, "math, mc, medqa and code");
    assert!(runs.len() >= 20);
}

fn preset_reference_prints_what_it_set_and_explicit_flags_win() {
    let cache = scratch("flags");
    let q = "What is 12 plus 30?";
    let base = ["run", "--model", TINY, "--prompts", PROMPTS, "--question", q, "--json"];
    let (out, err) = ok(&cache, &[&base[..], &["--preset", "reference", "--max-new-tokens", "3"]].concat());
    assert!(
        err.contains("preset reference (--method latent): set --latent-steps 0 --compat reference --temperature 0.6 --top-k 20 --top-p 0.95 --seed 42; given explicitly, kept: --max-new-tokens 3"),
        "{err}"
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let latent: u64 = v["agents"].as_array().unwrap().iter().map(|a| a["latent_steps"].as_u64().unwrap()).sum();
    assert_eq!(latent, 0, "m = 0");
    let (out, err) = ok(
        &cache,
        &[&base[..], &["--preset", "reference", "--max-new-tokens", "3", "--latent-steps", "2", "--greedy"]].concat(),
    );
    assert!(
        !err.contains("set --temperature") && err.contains("kept: --latent-steps 2 --max-new-tokens 3 --greedy"),
        "{err}"
    );
    assert!(!err.contains("--compat reference"), "m > 0: the m = 0 quirk is not applied: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let latent: u64 = v["agents"].as_array().unwrap().iter().map(|a| a["latent_steps"].as_u64().unwrap()).sum();
    assert_eq!(latent, 6, "three agents × 2");
    let (_, err) =
        ok(&cache, &[&base[..], &["--method", "text", "--preset", "reference", "--max-new-tokens", "2"]].concat());
    assert!(
        err.contains(
            "(--method text): set --temperature 0.6 --top-k 20 --top-p 0.95 --seed 42 --text-mas-context-length -1"
        ),
        "{err}"
    );
    let (_, err) = ok(&cache, &[&base[..], &["--max-new-tokens", "2"]].concat());
    assert!(!err.contains("preset"), "no preset, no line: {err}");
}

fn text_mas_context_length_cuts_the_context_each_agent_sees() {
    let cache = scratch("ctx");
    let q = "What is 12 plus 30?";
    let run = |extra: &[&str]| {
        let trace = cache.join("trace.json");
        let args = [
            &["run", "--model", TINY, "--prompts", PROMPTS, "--method", "text", "--question", q, "--greedy"][..],
            &["--max-new-tokens", "4", "--trace", trace.to_str().unwrap()],
            extra,
        ]
        .concat();
        ok(&cache, &args);
        trace_ids(&trace)
    };
    let tok = Tokenizer::load(Path::new(TINY)).unwrap();
    let set = PromptSet::from_file(Path::new(PROMPTS)).unwrap();
    let empty = |role: &str| {
        let t = set.template("text_sequential", role, "math").unwrap();
        chat_ids(&tok, &set.system, &fill(t, q, ""), "").unwrap()
    };
    let cut = run(&["--text-mas-context-length", "0"]);
    for (i, role) in ["critic", "refiner", "judger"].iter().enumerate() {
        assert_eq!(cut[i + 1], empty(role), "{role} sees no context with length 0");
    }
    let full = run(&[]);
    for i in 1..4 {
        assert!(full[i].len() > cut[i].len(), "agent {i} sees the context by default");
    }
    let out = latentmas(&cache, &["run", "--model", TINY, "--question", q, "--text-mas-context-length", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--text-mas-context-length applies to --method text only"), "{err}");
}
