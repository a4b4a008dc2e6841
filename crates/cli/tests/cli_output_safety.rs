//! Output the CLI writes is whole or absent: SIGINT while a file is being written leaves neither the file
//! nor a temporary one; `run --json` writes each line in one `write(2)`; `--threads` beyond the CPUs is
//! clamped with a note instead of spawning thousands of threads.

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use harness::trial;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_latentmas");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lm-output-safety-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp-latentmas"))
        .collect()
}

/// One results record, as `latentmas eval` writes it.
const RECORD: &str = "{\"id\":\"0\",\"task\":\"gsm8k\",\"method\":\"single\",\"prediction\":\"2\",\"gold\":\"2\",\
                      \"correct\":true,\"output_tokens\":3,\"latent_steps\":0,\"seconds\":0.5,\"agents\":[],\"output\":\"2\"}\n";

fn main() {
    harness::run(vec![
        trial!(sigint_during_a_write_leaves_no_file),
        trial!(run_json_writes_each_line_in_one_write, needs strace_works),
        trial!(absurd_thread_counts_are_clamped),
    ]);
}

/// strace is installed and may trace here (containers often forbid ptrace).
fn strace_works() -> Result<(), String> {
    let ok = Command::new("strace").args(["-o", "/dev/null", "true"]).output().is_ok_and(|o| o.status.success());
    if ok {
        Ok(())
    } else {
        Err("strace is not installed or cannot trace here".into())
    }
}

fn sigint_during_a_write_leaves_no_file() {
    let dir = scratch("sigint");
    let results = dir.join("r.jsonl");
    std::fs::write(&results, RECORD).expect("write");
    let (chart, trace) = (dir.join("chart.svg"), dir.join("trace.json"));
    let r = results.display().to_string();
    let runs: [(&Path, Vec<String>); 2] = [
        (&chart, vec!["report".into(), r, "--plot".into(), chart.display().to_string()]),
        (
            &trace,
            ["run", "--model", "tests/data/tiny-tied", "--question", "1+1?", "--greedy", "--max-new-tokens", "2"]
                .iter()
                .map(|s| s.to_string())
                .chain(["--trace".to_string(), trace.display().to_string()])
                .collect(),
        ),
    ];
    for (target, args) in runs {
        let mut child = Command::new(BIN)
            .args(&args)
            // Holds the temporary file for 20 s before the rename, so the signal lands mid-write.
            .env(latentmas_cli::output::WRITE_DELAY_ENV, "20000")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        while temp_files(&dir).is_empty() {
            if start.elapsed() > Duration::from_secs(60) || child.try_wait().expect("wait").is_some() {
                let _ = child.kill();
                panic!("{args:?}: the temporary file of {} never appeared", target.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: signalling a child this test spawned.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let status = child.wait().expect("wait");
        assert!(start.elapsed() < Duration::from_secs(15), "{args:?}: SIGINT did not stop the write");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGINT), "{args:?}: dies of the signal, as without a handler");
        assert!(temp_files(&dir).is_empty(), "{args:?}: left {:?}", temp_files(&dir));
        assert!(!target.exists(), "{args:?}: a file appeared although its write was interrupted");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn run_json_writes_each_line_in_one_write() {
    let dir = scratch("strace");
    let log = dir.join("strace.log");
    // A long question makes the JSON line well over 1 KiB (it was written in two syscalls).
    let question = "How many apples are left? ".repeat(80);
    let run = Command::new("strace")
        .args(["-f", "-e", "trace=write", "-o"])
        .arg(&log)
        .arg(BIN)
        .args(["run", "--model", "tests/data/tiny-tied", "--greedy", "--max-new-tokens", "4", "--json"])
        .args(["--questions"])
        .arg({
            let q = dir.join("q.jsonl");
            let line = serde_json::json!({ "question": question }).to_string();
            std::fs::write(&q, format!("{line}\n{line}\n")).expect("write");
            q
        })
        .args(["--batch", "1"])
        .output();
    let out = run.expect("run strace");
    assert!(log.exists(), "strace wrote no log: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.len() > 1024 && serde_json::from_str::<serde_json::Value>(l).is_ok()));
    let trace = std::fs::read_to_string(&log).expect("strace log");
    let writes: Vec<usize> = trace
        .lines()
        .filter(|l| l.contains("write(1,"))
        .filter_map(|l| l.rsplit("= ").next().and_then(|n| n.trim().parse().ok()))
        .collect();
    let want: Vec<usize> = lines.iter().map(|l| l.len() + 1).collect();
    assert_eq!(writes, want, "one write(2) per JSON line");
    std::fs::remove_dir_all(&dir).ok();
}

fn absurd_thread_counts_are_clamped() {
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(["run", "--model", "tests/data/tiny-tied", "--question", "1+1?", "--greedy"])
        .args(["--max-new-tokens", "3", "--method", "single", "--threads", "10000"])
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("--threads 10000 clamped to"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}
