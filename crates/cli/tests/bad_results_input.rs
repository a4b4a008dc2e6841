//! Bad results files and output paths, one row each: the CLI must fail (within seconds, never hang) with a
//! message holding the expected words, and leave the files it was given byte for byte as they were.
//! Covers: resume across another model / data file / device, a second writer on one file, files that are
//! not ours (no final newline, JSON documents, text), output paths that are directories, devices, pipes or
//! in missing directories, report inputs that are missing, repeated or made differently, bad `--shard`,
//! `--threads 0`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_latentmas");

/// Runs the CLI with stdout and stderr piped; kills it after `limit` (a hang is a failure, not a wait).
fn latentmas(args: &[String], limit: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn latentmas");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            panic!("latentmas {args:?} still running after {limit:?} (hang); stderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A gsm8k eval of two items on the tiny model into `out`, with `extra` flags replacing the defaults.
fn eval_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = s(&["eval", "--task", "gsm8k", "--method", "latent", "--latent-steps", "1", "--greedy"]);
    a.extend(s(&["--max-new-tokens", "3", "--limit", "2", "--batch", "2"]));
    let has = |flag: &str| extra.contains(&flag);
    if !has("--model") {
        a.extend(s(&["--model", "tests/data/tiny-tied"]));
    }
    if !has("--data") {
        a.extend(s(&["--data", "tests/data/eval/gsm8k.jsonl"]));
    }
    a.extend(s(extra));
    a.extend(s(&["--out", &out.display().to_string()]));
    a
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    expect: Vec<&'static str>,
    /// Files that must be unchanged afterwards.
    untouched: Vec<PathBuf>,
    /// Held open (and locked) while the case runs.
    _hold: Option<std::fs::File>,
}

fn case(name: &'static str, args: Vec<String>, expect: &[&'static str], untouched: &[&Path]) -> Case {
    Case {
        name,
        args,
        expect: expect.to_vec(),
        untouched: untouched.iter().map(|p| p.to_path_buf()).collect(),
        _hold: None,
    }
}

fn copy(from: &Path, to: &Path) -> PathBuf {
    std::fs::copy(from, to).expect("copy");
    to.to_path_buf()
}

#[test]
fn bad_results_inputs_fail_with_clear_messages_and_touch_nothing() {
    let dir = std::env::temp_dir().join(format!("lm-bad-results-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let d = |n: &str| dir.join(n);

    // Two good results files: the tiny tied and untied models, same task and method.
    let good = d("good.jsonl");
    let (rc, _, err) = latentmas(&eval_args(&good, &[]), Duration::from_secs(300));
    assert_eq!(rc, Some(0), "{err}");
    let untied = d("untied.jsonl");
    let (rc, _, err) = latentmas(&eval_args(&untied, &["--model", "tests/data/tiny-untied"]), Duration::from_secs(300));
    assert_eq!(rc, Some(0), "{err}");
    // A data file with one gold changed.
    let data2 = d("gsm8k-edited.jsonl");
    let text = std::fs::read_to_string("tests/data/eval/gsm8k.jsonl").expect("data");
    std::fs::write(&data2, text.replacen("####", "#### 1", 1)).expect("write");

    let other_task =
        "{\"id\":\"7\",\"task\":\"gpqa\",\"method\":\"x\",\"prediction\":null,\"gold\":\"A\",\"correct\":false,\
                      \"output_tokens\":1,\"latent_steps\":0,\"seconds\":0.1,\"agents\":[],\"output\":\"\"}";
    let no_newline = d("other-task.jsonl");
    std::fs::write(&no_newline, other_task).expect("write");
    let dump = d("dump.json");
    std::fs::write(&dump, "{\"accuracy\": 0.5, \"n\": 4}").expect("write");
    let notes = d("notes.txt");
    std::fs::write(&notes, "my notes\n").expect("write");
    let existing = d("existing.jsonl");
    std::fs::write(&existing, "keep me\n").expect("write");

    let model_mismatch = copy(&good, &d("m.jsonl"));
    let data_mismatch = copy(&good, &d("dm.jsonl"));
    let device_mismatch = copy(&good, &d("dev.jsonl"));
    let locked = copy(&good, &d("locked.jsonl"));
    let lock = std::fs::OpenOptions::new().append(true).open(&locked).expect("open");
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);

    let gs = |p: &Path| p.display().to_string();
    let mut cases = vec![
        case(
            "resume with another model",
            eval_args(&model_mismatch, &["--model", "tests/data/tiny-untied"]),
            &["cannot resume", "model: sha256:"],
            &[&model_mismatch],
        ),
        case(
            "resume with another data file",
            eval_args(&data_mismatch, &["--data", &gs(&data2)]),
            &["cannot resume", "data: sha256:"],
            &[&data_mismatch],
        ),
        case(
            "resume on another device",
            eval_args(&device_mismatch, &["--device", "emu"]),
            &["cannot resume", "device: cpu vs emu"],
            &[&device_mismatch],
        ),
        Case {
            _hold: Some(lock),
            ..case("a second writer", eval_args(&locked, &[]), &["in use by another process"], &[&locked])
        },
        case(
            "another task's record without its final newline",
            eval_args(&no_newline, &[]),
            &["complete JSON without a final newline", "left as it is"],
            &[&no_newline],
        ),
        case("a json.dump document", eval_args(&dump, &[]), &["complete JSON without a final newline"], &[&dump]),
        case("a text file", eval_args(&notes, &[]), &["line 1 is not a results record"], &[&notes]),
        case("--out a directory", eval_args(&dir, &[]), &["--out", "is a directory"], &[]),
        case("--out in a missing directory", eval_args(&d("no/such/r.jsonl"), &[]), &["does not exist"], &[]),
        case(
            "--out a device",
            eval_args(Path::new("/dev/null"), &[]),
            &["not a regular file", "character device"],
            &[],
        ),
        // stdout is a pipe here, as in `eval --out /dev/stdout | cat`, which used to hang reading its own pipe.
        case("--out the stdout pipe", eval_args(Path::new("/dev/stdout"), &[]), &["not a regular file", "a pipe"], &[]),
        case("--shard past the end", eval_args(&d("s.jsonl"), &["--shard", "4/4"]), &["--shard", "below N"], &[]),
        case("--shard of zero", eval_args(&d("s.jsonl"), &["--shard", "0/0"]), &["N must be at least 1"], &[]),
        case("--shard not I/N", eval_args(&d("s.jsonl"), &["--shard", "2"]), &["expected I/N"], &[]),
        case("--threads 0", eval_args(&d("t.jsonl"), &["--threads", "0"]), &["--threads must be at least 1"], &[]),
        case("report of a missing file", s(&["report", &gs(&d("nope.jsonl"))]), &["nope.jsonl does not exist"], &[]),
        case(
            "report of one file twice",
            s(&["report", &gs(&good), &gs(&good)]),
            &["recorded twice", "good.jsonl:1"],
            &[&good],
        ),
        case(
            "report mixing models",
            s(&["report", &gs(&good), &gs(&untied)]),
            &["produced differently", "model: sha256:"],
            &[&good, &untied],
        ),
        case(
            "report --plot a directory",
            s(&["report", &gs(&good), "--plot", &gs(&dir)]),
            &["--plot", "is a directory"],
            &[],
        ),
        case(
            "report --merge over an existing file",
            s(&["report", &gs(&good), "--merge", &gs(&existing)]),
            &["--merge", "already exists"],
            &[&existing],
        ),
        case(
            "run --trace a directory",
            s(&["run", "--model", "tests/data/tiny-tied", "--question", "1+1?", "--greedy", "--trace", &gs(&dir)]),
            &["--trace", "is a directory"],
            &[],
        ),
        case(
            "run --trace in a missing directory",
            s(&["run", "--model", "tests/data/tiny-tied", "--question", "1+1?", "--trace", &gs(&d("no/t.json"))]),
            &["--trace", "does not exist"],
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for c in cases.drain(..) {
        let before: Vec<Vec<u8>> = c.untouched.iter().map(|p| std::fs::read(p).expect("read")).collect();
        let (rc, stdout, stderr) = latentmas(&c.args, Duration::from_secs(60));
        let missing: Vec<&&str> = c.expect.iter().filter(|w| !stderr.contains(**w)).collect();
        // 1: a refused run; 2: a flag clap rejected (usage error). Never a signal or a panic's 101.
        if !matches!(rc, Some(1) | Some(2)) || !missing.is_empty() {
            failures.push(format!("{}: rc {rc:?}, missing {missing:?} in stderr: {stderr} (stdout: {stdout})", c.name));
        }
        for (p, b) in c.untouched.iter().zip(before) {
            if std::fs::read(p).ok().as_ref() != Some(&b) {
                failures.push(format!("{}: {} was changed", c.name, p.display()));
            }
        }
        println!("{:<48} -> {}", c.name, stderr.lines().find(|l| l.starts_with("error")).unwrap_or(""));
    }
    // Nothing half-written anywhere, and no empty results files from refused runs.
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp-latentmas") || n == "s.jsonl" || n == "t.jsonl")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    std::fs::remove_dir_all(&dir).ok();
}
