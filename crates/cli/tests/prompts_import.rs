//! `latentmas prompts import DIR` runs a checkout's own prompt builders under python3 and caches the set that
//! `--prompts reference` loads. Checked on a builder module of our own (tests/data/prompt_builders, always)
//! and on the authors' prompts.py against their exported reference_prompts.json (when ../shared is present;
//! reported as ignored, with the reason, otherwise).

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::trial;
use latentmas::mas::prompts::{fill, PromptSet};
use latentmas::mas::run::chat_ids;
use latentmas::tokenizer::Tokenizer;

const FIXTURE: &str = "tests/data/prompt_builders";
const TINY: &str = "tests/data/tiny-tied";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lm-prompts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary with its cache directory under `cache`.
fn latentmas(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentmas"))
        .env("XDG_CACHE_HOME", cache)
        .args(args)
        .output()
        .expect("run latentmas")
}

fn ok(cache: &Path, args: &[&str]) -> String {
    let out = latentmas(cache, args);
    assert!(out.status.success(), "latentmas {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(cache: &Path, args: &[&str]) -> String {
    let out = latentmas(cache, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "latentmas {args:?} should fail");
    assert!(!err.contains("panicked"), "latentmas {args:?} panicked:\n{err}");
    err
}

fn json(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object().unwrap().clone()
}

fn cached(cache: &Path) -> PathBuf {
    cache.join("latentmas/prompts/reference.json")
}

fn main() {
    harness::run(vec![
        trial!(import_of_our_builder_module_gives_the_expected_set_and_reference_uses_it),
        trial!(a_module_that_cannot_build_a_prompt_fails_cleanly_and_writes_nothing),
        trial!(import_of_the_authors_prompts_reproduces_their_exported_set, needs authors_prompts),
        trial!(eval_takes_the_imported_set_and_records_its_content),
    ]);
}

/// The authors' prompts.py and the set they exported from it.
fn authors_prompts() -> Result<(), String> {
    harness::shared("reference/prompts.py")?;
    harness::shared("reference/reference_prompts.json").map(drop)
}

fn import_of_our_builder_module_gives_the_expected_set_and_reference_uses_it() {
    let cache = scratch("fixture");
    let err =
        fails(&cache, &["run", "--model", TINY, "--prompts", "reference", "--question", "q", "--max-new-tokens", "1"]);
    assert!(err.contains("latentmas prompts import"), "the error names the import command: {err}");
    assert!(ok(&cache, &["prompts", "path"]).contains("not imported yet"));

    let out = ok(&cache, &["prompts", "import", FIXTURE]);
    assert!(out.contains("imported 43 prompts"), "{out}");
    let mut got = json(&cached(&cache));
    let source = got.remove("_source").unwrap();
    assert!(source.as_str().unwrap().contains("prompt_builders/prompts.py"), "{source}");
    assert_eq!(got, json(&Path::new(FIXTURE).join("expected.json")), "the exported set");
    assert!(!Path::new(FIXTURE).join("__pycache__").exists(), "nothing written into the checkout");

    // A run with --prompts reference renders the imported texts: the trace's prompt ids are those of the set.
    let trace = cache.join("trace.json");
    let question = "What is 2 plus 3?";
    ok(
        &cache,
        &[
            "run",
            "--model",
            TINY,
            "--prompts",
            "reference",
            "--method",
            "latent",
            "--latent-steps",
            "1",
            "--task-family",
            "medqa",
            "--question",
            question,
            "--greedy",
            "--max-new-tokens",
            "1",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let trace: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let set = PromptSet::from_file(&cached(&cache)).unwrap();
    let tok = Tokenizer::load(Path::new(TINY)).unwrap();
    let agents = trace["agents"].as_array().unwrap();
    for (agent, role) in agents.iter().zip(["planner", "critic", "refiner", "judger"]) {
        let template = set.template("latent_sequential", role, "medqa").unwrap();
        let want = chat_ids(&tok, "You are a test assistant.", &fill(template, question, ""), "").unwrap();
        let ids: Vec<u32> =
            agent["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want, "{role}");
    }
}

fn a_module_that_cannot_build_a_prompt_fails_cleanly_and_writes_nothing() {
    let cache = scratch("broken");
    let checkout = cache.join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    let module = std::fs::read_to_string(Path::new(FIXTURE).join("prompts.py")).unwrap();
    // gpqa unknown to the module: its builders raise for that benchmark.
    std::fs::write(checkout.join("prompts.py"), module.replace("\"gpqa\":", "\"not_gpqa\":")).unwrap();
    let err = fails(&cache, &["prompts", "import", checkout.to_str().unwrap()]);
    assert!(err.contains("task gpqa") && err.contains("NotImplementedError"), "{err}");
    assert!(!cached(&cache).exists(), "no partial set");

    // Benchmarks of one family that build different texts cannot be keyed by family.
    let split = module.replace("\"gpqa\": \"End with one option letter", "\"gpqa\": \"Finish with one option letter");
    std::fs::write(checkout.join("prompts.py"), split).unwrap();
    let err = fails(&cache, &["prompts", "import", checkout.to_str().unwrap()]);
    assert!(err.contains("family mc") && err.contains("different prompts"), "{err}");
    assert!(!cached(&cache).exists());

    std::fs::write(checkout.join("prompts.py"), "this is not python(").unwrap();
    assert!(fails(&cache, &["prompts", "import", checkout.to_str().unwrap()]).contains("SyntaxError"));
    let empty = cache.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(fails(&cache, &["prompts", "import", empty.to_str().unwrap()]).contains("no prompts.py"));
    assert!(fails(&cache, &["prompts", "import", "/nonexistent/dir"]).contains("no such directory"));
}

fn import_of_the_authors_prompts_reproduces_their_exported_set() {
    let shared = harness::shared("reference").unwrap();
    let shared = shared.as_path();
    let cache = scratch("authors");
    ok(&cache, &["prompts", "import", shared.to_str().unwrap()]);
    let got = json(&cached(&cache));
    // `_source` is each file's provenance note; `_question/*` describe the dataset loader (data.py), not
    // prompts.py. Everything else, the system message included, must be identical.
    let want: serde_json::Map<_, _> = json(&shared.join("reference_prompts.json"))
        .into_iter()
        .filter(|(k, _)| k != "_source" && !k.starts_with("_question/"))
        .collect();
    let got_prompts: serde_json::Map<_, _> = got.into_iter().filter(|(k, _)| k != "_source").collect();
    assert_eq!(got_prompts.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "the same keys");
    for (k, v) in &want {
        assert_eq!(&got_prompts[k], v, "entry {k}");
    }
}

fn eval_takes_the_imported_set_and_records_its_content() {
    let cache = scratch("eval");
    let out = cache.join("results.jsonl");
    let args = [
        "eval",
        "--model",
        TINY,
        "--task",
        "gsm8k",
        "--data",
        "tests/data/eval/gsm8k.jsonl",
        "--limit",
        "1",
        "--method",
        "latent",
        "--latent-steps",
        "1",
        "--greedy",
        "--max-new-tokens",
        "1",
        "--prompts",
        "reference",
        "--out",
        out.to_str().unwrap(),
    ];
    let err = fails(&cache, &args);
    assert!(err.contains("latentmas prompts import"), "no imported set: the error names the import command: {err}");
    ok(&cache, &["prompts", "import", FIXTURE]);
    ok(&cache, &args);
    let record: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().lines().next().unwrap()).unwrap();
    let want = latentmas_cli::eval::provenance::file_sha256(&cached(&cache)).unwrap();
    assert_eq!(record["provenance"]["prompts"], want.as_str(), "the record names the imported set's content");
}
