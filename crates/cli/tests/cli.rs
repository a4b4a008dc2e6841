//! End to end through the `latentmas` binary on the tiny models: every method and topology runs, JSON and
//! trace outputs have their documented shape, and bad input exits non-zero with a clear message (no panic).

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use harness::trial;
use std::path::PathBuf;
use std::process::{Command, Output};

fn latentmas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentmas")).args(args).output().expect("run latentmas")
}

fn ok(args: &[&str]) -> String {
    let out = latentmas(args);
    assert!(out.status.success(), "latentmas {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns stderr after checking it is a clean error.
fn fails(args: &[&str]) -> String {
    let out = latentmas(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "latentmas {args:?} should fail");
    assert!(!err.contains("panicked"), "latentmas {args:?} panicked:\n{err}");
    err
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const TINY: &str = "tests/data/tiny-tied";
const PROMPTS: &str = "tests/data/prompts_tiny.json";

fn main() {
    harness::run(vec![
        trial!(every_method_and_topology_runs_and_reports_json),
        trial!(trace_file_has_the_documented_fields),
        trial!(questions_file_runs_as_a_batch_and_bad_lines_are_named),
        trial!(synth_then_generate_json),
        trial!(bad_input_gets_a_clear_error),
        trial!(kernels_lists_every_kernel_with_resources, needs kernels_built),
        trial!(run_on_the_emu_device_traces_like_cpu),
        trial!(devices_names_the_cpu_and_the_cuda_verdict),
    ]);
}

/// Kernels in this build (the CLI is built with the same CUDA_HOME as this test).
fn kernels_built() -> Result<(), String> {
    if latentmas::kernels::kernel_report().is_empty() {
        Err("this build has no kernels: nvcc was not found; run tools/install_cuda.sh and set CUDA_HOME".into())
    } else {
        Ok(())
    }
}

fn every_method_and_topology_runs_and_reports_json() {
    for (method, topology) in [
        ("single", "sequential"),
        ("text", "sequential"),
        ("text", "hierarchical"),
        ("latent", "sequential"),
        ("latent", "hierarchical"),
        ("latent", "parallel"),
    ] {
        let mut args = vec!["run", "--model", TINY, "--prompts", PROMPTS, "--method", method, "--topology", topology];
        args.extend(["--question", "What is 12 plus 30?", "--greedy", "--max-new-tokens", "6", "--json"]);
        if method == "latent" {
            args.extend(["--latent-steps", "2"]);
        }
        let out = ok(&args);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let agents = v["agents"].as_array().unwrap();
        assert_eq!(agents.len(), if method == "single" { 1 } else { 4 }, "{method}/{topology}");
        assert_eq!(v["method"], method);
        let latent: u64 = agents.iter().map(|a| a["latent_steps"].as_u64().unwrap()).sum();
        assert_eq!(latent, if method == "latent" { 6 } else { 0 }, "{method}/{topology}");
        assert!(v["totals"]["generated_tokens"].as_u64().unwrap() >= 1);
        assert!(v["kv_bytes"].as_u64().unwrap() > 0);
    }
}

fn trace_file_has_the_documented_fields() {
    let dir = scratch("trace");
    let trace = dir.join("trace.json");
    // A copy of the model: --realign writes the alignment cache next to the model.
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(PathBuf::from("tests/data/tiny-untied").join(f), model.join(f)).unwrap();
    }
    ok(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--prompts",
        PROMPTS,
        "--question",
        "hi",
        "--latent-steps",
        "3",
        "--realign",
        "--greedy",
        "--max-new-tokens",
        "4",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    assert_eq!(v["realign"], true);
    assert!(v["target_norm"].as_f64().unwrap() > 0.0);
    let agents = v["agents"].as_array().unwrap();
    assert_eq!(agents[0]["role"], "planner");
    let fed = agents[0]["latent_inputs"].as_array().unwrap();
    assert_eq!(fed.len(), 3);
    assert_eq!(fed[0]["head"].as_array().unwrap().len(), 8);
    assert_eq!(agents[1]["kv_len_before"], agents[0]["kv_len_after"]);
    assert!(!agents[3]["generated_ids"].as_array().unwrap().is_empty());
    assert!(model.join("latentmas_align.safetensors").exists(), "the alignment is cached next to the model");
    std::fs::remove_dir_all(&dir).ok();
}

fn questions_file_runs_as_a_batch_and_bad_lines_are_named() {
    let dir = scratch("questions");
    let good = dir.join("q.jsonl");
    std::fs::write(&good, "{\"question\": \"What is 12 plus 30?\"}\n\n{\"question\": \"2+2?\"}\n").unwrap();
    let out = ok(&[
        "run",
        "--model",
        TINY,
        "--questions",
        good.to_str().unwrap(),
        "--greedy",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 2);
    // the first line also carries the startup breakdown (once per process, not per question)
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let startup = &lines[0]["startup"];
    assert!(startup["total_s"].as_f64().unwrap() > 0.0, "{startup}");
    assert!(startup["weights_s"].as_f64().unwrap() <= startup["total_s"].as_f64().unwrap(), "{startup}");
    assert!(startup["weights_bytes"].as_u64().unwrap() > 0 && startup["kv_bytes"].as_u64().unwrap() > 0, "{startup}");
    assert!(lines[1].get("startup").is_none());
    let text =
        ok(&["run", "--model", TINY, "--questions", good.to_str().unwrap(), "--greedy", "--max-new-tokens", "2"]);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("startup ") && first.contains("weights") && first.contains("tokenizer"), "{first}");
    // the per-agent table: one row per agent and a total, columns aligned, then the KV cache's size
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    assert!(rows.first().is_some_and(|h| h.starts_with("| agent ") && h.contains("decode s")), "{text}");
    assert!(rows.iter().any(|l| l.starts_with("| total ")), "{text}");
    assert!(rows.iter().all(|l| l.len() == rows[0].len()), "{text}");
    assert!(text.lines().any(|l| l.starts_with("KV cache: ") && l.ends_with(" MB")), "{text}");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"ok\"}\n{\"q\": 1}\n").unwrap();
    let err = fails(&["run", "--model", TINY, "--questions", bad.to_str().unwrap()]);
    assert!(err.contains("bad.jsonl:2"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn synth_then_generate_json() {
    let dir = scratch("synth");
    let model = dir.join("m");
    ok(&["synth", "--shape", "tiny", "--out", model.to_str().unwrap()]);
    let out = ok(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "4",
        "--greedy",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["prompt_ids"][0], 151644);
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 4);
    let text = ok(&["generate", "--model", model.to_str().unwrap(), "--prompt", "hi", "--max-new-tokens", "3"]);
    assert!(text.contains("tok/s"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

fn bad_input_gets_a_clear_error() {
    // (the tiny model's context holds the default 4096 new tokens only with a short budget of its own)
    let small = fails(&["run", "--model", TINY, "--question", "hi", "--max-new-tokens", "8", "--kv-budget", "10tok"]);
    assert!(small.contains("--kv-budget") && small.contains("needs"), "{small}");
    let think = fails(&["run", "--model", TINY, "--method", "single", "--question", "hi", "--think"]);
    assert!(think.contains("--think"), "{think}");
    let steps = fails(&["run", "--model", TINY, "--method", "text", "--question", "hi", "--latent-steps", "3"]);
    assert!(steps.contains("--latent-steps"), "{steps}");
    let par = fails(&["run", "--model", TINY, "--method", "single", "--topology", "parallel", "--question", "hi"]);
    assert!(par.contains("--topology parallel"), "{par}");
    let temp = fails(&["run", "--model", TINY, "--question", "hi", "--temperature", "0"]);
    assert!(temp.contains("--temperature"), "{temp}");
    let missing = fails(&["run", "--model", "/nonexistent/model", "--question", "hi"]);
    assert!(missing.contains("/nonexistent/model"), "{missing}");
    let hub = fails(&["run", "--model", "latentmas-test/no-such-model", "--question", "hi"]);
    assert!(hub.contains("Hugging Face hub") && hub.contains("--model"), "{hub}");
    let cuda = fails(&["run", "--model", TINY, "--question", "hi", "--device", "cuda"]);
    assert!(cuda.contains("--device cuda"), "{cuda}");
    let prompts = fails(&["run", "--model", TINY, "--question", "hi", "--prompts", "/nonexistent.json"]);
    assert!(prompts.contains("/nonexistent.json"), "{prompts}");
    let shape = fails(&["synth", "--shape", "qwen3-1000b", "--out", "/tmp/never"]);
    assert!(shape.contains("qwen3-1000b"), "{shape}");

    let dir = scratch("notok");
    for f in ["config.json", "model.safetensors", "tokenizer_config.json"] {
        std::fs::copy(PathBuf::from(TINY).join(f), dir.join(f)).unwrap();
    }
    let tok = fails(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "hi"]);
    assert!(tok.contains("tokenizer.json"), "{tok}");
    std::fs::remove_dir_all(&dir).ok();
}

fn kernels_lists_every_kernel_with_resources() {
    let out = ok(&["kernels", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let rows = v.as_array().unwrap();
    assert!(!rows.is_empty(), "`latentmas kernels --json` lists no kernels, but this build has them");
    for k in [
        "latentmas_rmsnorm",
        "latentmas_add_rmsnorm",
        "latentmas_qk_norm_rope_kv",
        "latentmas_attn_prefill",
        "latentmas_attn_decode_partial",
        "latentmas_swiglu",
        "latentmas_embed",
        "latentmas_latent_project",
        "latentmas_kv_splice",
        "latentmas_argmax",
        "latentmas_sample",
    ] {
        assert!(rows.iter().any(|r| r["name"] == k), "{k} missing from `latentmas kernels`");
    }
    for r in rows {
        for field in ["arch", "registers", "shared_bytes"] {
            assert!(!r[field].is_null(), "{r}: no {field}");
        }
        assert_eq!((r["spill_stores"].as_u64(), r["spill_loads"].as_u64()), (Some(0), Some(0)), "{r} spills");
    }
    // the text form: one table row per kernel and architecture, then the spill verdict
    let text = ok(&["kernels"]);
    let table: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), rows.len() + 2, "header, separator and a row per entry:\n{text}");
    assert!(table[0].starts_with("| kernel ") && table[0].contains("| spill st B |"), "{text}");
    assert!(table.iter().any(|l| l.starts_with("| latentmas_rmsnorm ") && l.contains(" sm_90a ")), "{text}");
    assert!(text.contains(&format!("{} entries, no spills", rows.len())), "{text}");
}

/// `--device emu` runs the whole LatentMAS pipeline on the emulated cuda path: its trace has the cpu's prompt
/// ids and KV lengths for every agent (generated ids may differ where the greedy margin is below the bf16
/// error; tests/emu_backend.rs checks those with margins).
fn run_on_the_emu_device_traces_like_cpu() {
    // tiny-trained: confident greedy choices (tools/make_trained_tiny_model.py), so the bf16 device must pick
    // the same tokens as the f32 cpu backend, and the whole trace but the fed vectors' low bits is equal
    let dir = scratch("emu_trace");
    let mut traces = Vec::new();
    for device in ["cpu", "emu"] {
        let path = dir.join(format!("trace_{device}.json"));
        ok(&[
            "run",
            "--model",
            "tests/data/tiny-trained",
            "--question",
            "What is 12 plus 30?",
            "--method",
            "latent",
            "--latent-steps",
            "3",
            "--max-new-tokens",
            "12",
            "--device",
            device,
            "--trace",
            path.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        traces.push(v);
    }
    let (c, e) = (&traces[0]["agents"], &traces[1]["agents"]);
    assert_eq!(c.as_array().unwrap().len(), e.as_array().unwrap().len());
    for (x, y) in c.as_array().unwrap().iter().zip(e.as_array().unwrap()) {
        for key in ["role", "prompt_ids", "kv_len_before", "kv_len_after", "generated_ids"] {
            assert_eq!(x[key], y[key], "{key}");
        }
        assert_eq!(x["latent_inputs"].as_array().map(|a| a.len()), y["latent_inputs"].as_array().map(|a| a.len()));
    }
    assert!(c.as_array().unwrap().last().unwrap()["generated_ids"].as_array().is_some_and(|a| !a.is_empty()));
}

fn devices_names_the_cpu_and_the_cuda_verdict() {
    let out = ok(&["devices"]);
    assert!(out.lines().any(|l| l.starts_with("cpu: ")), "{out}");
    let cuda = out.lines().find(|l| l.starts_with("cuda: ")).unwrap_or_else(|| panic!("no cuda line: {out}"));
    let required = latentmas(&["devices", "--require", "cuda"]);
    let err = String::from_utf8_lossy(&required.stderr);
    if cuda.contains("no CUDA driver/device found") || cuda.contains("kernels are not in this build") {
        // No usable device: --require makes that an error, in one line, without a panic.
        assert!(!required.status.success(), "--require cuda must fail here: {cuda}");
        assert!(err.contains("no CUDA driver/device found") || err.contains("kernels are not in this build"), "{err}");
        assert!(!err.contains("panicked") && err.trim().lines().count() == 1, "{err}");
    } else {
        assert!(required.status.success(), "a usable device ({cuda}) but --require cuda failed: {err}");
    }
}
