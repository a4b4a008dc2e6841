//! `latentmas bench` end to end on a tiny model: the JSON has the keys tools/bench_transformers.py shares,
//! `--compare` (given three times) prints ours, each engine's figure and the ratios (and the per-question row of a
//! report that timed both engines), `--device cuda` without a
//! device says it ran nothing, a bad compare file fails before any measuring.

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use harness::trial;
use std::process::{Command, Output};

fn latentmas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentmas")).args(args).output().expect("run latentmas")
}

fn main() {
    harness::run(vec![
        trial!(bench_writes_the_shared_keys_and_compares),
        trial!(the_paired_question_row_needs_both_figures),
        trial!(cuda_runs_nothing_and_says_so, needs no_device),
        trial!(a_bad_compare_file_fails_first),
    ]);
}

fn no_device() -> Result<(), String> {
    match latentmas::backend::cuda::probe() {
        Ok(_) => Err("a CUDA device is present; this test checks the no-device path".into()),
        Err(_) => Ok(()),
    }
}

fn bench_writes_the_shared_keys_and_compares() {
    let dir = std::env::temp_dir().join(format!("lm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let theirs = dir.join("theirs.json");
    std::fs::write(
        &theirs,
        r#"{"engine": "other", "prefill_tok_s": 10.0, "decode_ms_per_token": {"1": 1000.0}, "end_to_end_s": {"latent": 100.0}}"#,
    )
    .unwrap();
    let llama = dir.join("llama.json");
    std::fs::write(
        &llama,
        r#"{"engine": "llama.cpp", "cpu": "Some CPU", "prefill_tok_s": 1e9, "decode_ms_per_token": {"1": 2000.0}, "decode_effective_gbs": 27.5}"#,
    )
    .unwrap();
    let reference = dir.join("reference.json");
    std::fs::write(
        &reference,
        r#"{"engine": "reference", "latentmas_question_s": 2.0, "reference_question_s": 8.0, "workload_label": "gsm8k, m = 10"}"#,
    )
    .unwrap();
    let json = dir.join("ours.json");
    let args = ["bench", "--model", "tests/data/tiny-tied", "--runs", "1", "--steps", "1", "--threads", "2"];
    let out = latentmas(
        &[
            &args[..],
            &["--json", json.to_str().unwrap()],
            &["--compare", theirs.to_str().unwrap()],
            &["--compare", llama.to_str().unwrap()],
            &["--compare", reference.to_str().unwrap()],
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("% roofline") && stdout.contains("row (median)"), "{stdout}");
    assert!(stdout.contains("× better"), "the compare table shows ratios:\n{stdout}");
    // both engines get a column; llama.cpp's absurd prefill makes ours worse there, its effective GB/s is printed
    assert!(stdout.contains("vs other") && stdout.contains("vs llama.cpp"), "{stdout}");
    assert!(stdout.contains("× worse"), "{stdout}");
    assert!(stdout.contains("27.5 GB/s effective") && stdout.contains("llama.cpp ran on Some CPU"), "{stdout}");
    // the report that timed both engines itself gets its own line
    assert!(
        stdout.contains("(gsm8k, m = 10): latentmas 2.00 s, reference 8.00 s per question: 4.00× better"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in
        ["bandwidth_gbs", "prefill_tok_s", "latent_step_ms", "decode_roofline_pct", "ttft_ms", "load_ms", "peak_gflops"]
    {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    for b in ["1", "4", "16"] {
        assert!(v["decode_ms_per_token"][b].as_f64().is_some_and(|x| x > 0.0), "decode_ms_per_token.{b}");
    }
    for m in ["single", "text", "latent"] {
        assert!(v["end_to_end_s"][m].as_f64().is_some_and(|x| x > 0.0), "end_to_end_s.{m}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn the_paired_question_row_needs_both_figures() {
    use latentmas_cli::bench::paired_question_row;
    let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    let slower = v(r#"{"latentmas_question_s": 3.0, "reference_question_s": 1.5}"#);
    assert_eq!(
        paired_question_row("ref", &slower),
        "ref, both engines timed by its script (one question): latentmas 3.00 s, ref 1.50 s per question: 0.50× worse\n"
    );
    assert_eq!(paired_question_row("ref", &v(r#"{"latentmas_question_s": 3.0}"#)), "", "one side only: no row");
    assert_eq!(paired_question_row("ref", &v(r#"{"prefill_tok_s": 3.0}"#)), "");
    let zero = v(r#"{"latentmas_question_s": 0.0, "reference_question_s": 1.0}"#);
    assert!(paired_question_row("ref", &zero).ends_with("per question: -\n"), "no ratio of a zero time");
}

fn cuda_runs_nothing_and_says_so() {
    let out = latentmas(&["bench", "--model", "tests/data/tiny-tied", "--device", "cuda"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("SKIP"));
}

fn a_bad_compare_file_fails_first() {
    let out = latentmas(&["bench", "--model", "tests/data/tiny-tied", "--compare", "/nonexistent/theirs.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("theirs.json") && !err.contains("panicked"), "{err}");
}
