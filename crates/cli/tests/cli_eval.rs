//! `latentmas eval` / `report` / `extract` end to end on the tiny model: every task format runs through the
//! real engine, a rerun resumes without repeating items, and the report reads the results.

use std::process::Command;

fn latentmas(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_latentmas")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn every_task_runs_through_the_engine_and_resumes() {
    let dir = std::env::temp_dir().join(format!("lm-cli-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("results.jsonl");
    let o = out.to_str().unwrap();
    for (task, file) in [
        ("gsm8k", "gsm8k.jsonl"),
        ("aime2024", "aime2024.jsonl"),
        ("aime2025", "aime2025.jsonl"),
        ("gpqa", "gpqa.jsonl"),
        ("arc_easy", "arc_easy.jsonl"),
        ("arc_challenge", "arc_challenge.jsonl"),
        ("medqa", "medqa.json"),
        ("mbppplus", "mbppplus.jsonl"),
        ("humanevalplus", "humanevalplus.jsonl"),
    ] {
        let data = format!("tests/data/eval/{file}");
        let args = [
            "eval",
            "--model",
            "tests/data/tiny-tied",
            "--task",
            task,
            "--data",
            &data,
            "--method",
            "latent",
            "--latent-steps",
            "1",
            "--greedy",
            "--max-new-tokens",
            "3",
            "--limit",
            "2",
            "--batch",
            "2",
            "--out",
            o,
        ];
        let (ok, stdout, stderr) = latentmas(&args);
        assert!(ok, "eval {task} failed: {stderr}");
        assert!(stdout.contains("2 item(s) run now, 0 resumed"), "{task}: {stdout}");
        let (ok, stdout, _) = latentmas(&args);
        assert!(ok && stdout.contains("0 item(s) run now, 2 resumed"), "{task} rerun: {stdout}");
    }
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count(), 18, "9 tasks × 2 items, nothing repeated");
    let svg = dir.join("chart.svg");
    let (ok, stdout, stderr) = latentmas(&["report", o, "--plot", svg.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("humanevalplus") && stdout.contains("latent-sequential-m1"), "{stdout}");
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg") || svg.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn extract_reads_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentmas"))
        .args(["extract", "--task", "gsm8k"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"so the total is \\boxed{ 42 } apples").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
    let (ok, _, err) = latentmas(&["extract", "--task", "gsm9k"]);
    assert!(!ok && err.contains("gsm9k"), "{err}");
}
