//! The python sandbox: what passes and fails (as the reference counts it), the timeout kill, resource
//! limits, stray children, the private directory, the user code runs as, and the isolation report.
//! Attacks on the sandbox are in crates/cli/tests/sandbox_escapes.rs.

use std::time::{Duration, Instant};

use latentmas_cli::eval::code_exec::{preflight, run_python, ExecConfig, ExecOutcome, ExecStatus, NOBODY};

fn cfg() -> ExecConfig {
    // 5 s, not the reference's 10: enough for a 200 MB allocation on a slow, loaded machine.
    ExecConfig { timeout: Duration::from_secs(5), ..ExecConfig::default() }
}

fn run(program: &str) -> ExecOutcome {
    match run_python(program, &cfg()) {
        Ok(o) => o,
        Err(e) => panic!("sandbox failed to run {program:?}: {e}"),
    }
}

#[test]
fn pass_and_fail() {
    let cases: &[(&str, bool)] = &[
        ("def f(x):\n    return x + 1\nassert f(1) == 2", true),
        ("def f(x):\n    return x\nassert f(1) == 2", false),
        ("raise ValueError('boom')", false),
        ("import sys\nsys.exit(0)", false), // SystemExit is not an Exception: the reference never sets ok
        ("exit(3)", false),
        ("import os\nos._exit(0)", false), // ends the process before the harness can say it finished
        ("import os\nos.kill(os.getpid(), 9)", false),
        ("if __name__ == '__main__':\n    raise RuntimeError('main ran')", true), // no `__main__` under exec()
        ("x = input()", false),                                                   // stdin is empty
        ("print('lots of output ' * 100000)", true),                              // stdout is discarded
        ("import threading\nt = threading.Thread(target=lambda: None)\nt.start()\nt.join()", true),
        ("def f(:\n    pass", false), // syntax error
    ];
    for (program, want) in cases {
        let o = run(program);
        assert_eq!(o.passed(), *want, "{program:?} → {o} / {}", o.stderr_tail);
    }
}

#[test]
fn failure_text_names_the_exception() {
    let o = run("assert 1 == 2, 'mismatch'");
    assert_eq!(o.status, ExecStatus::Failed { exit_code: Some(1), signal: None });
    assert_eq!(o.to_string(), "exit 1: AssertionError: mismatch");
    let o = run("import sys\nsys.exit(3)");
    assert_eq!(o.to_string(), "exit 1: SystemExit: 3");
    let o = run("import os\nos._exit(0)");
    assert_eq!(o.to_string(), "the program ended the process itself (exit 0)");
}

#[test]
fn hang_is_killed_at_the_timeout() {
    let start = Instant::now();
    let o = run_python("while True:\n    pass", &ExecConfig { timeout: Duration::from_millis(700), ..cfg() })
        .expect("runs");
    assert_eq!(o.status, ExecStatus::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    let o = run_python("import time\ntime.sleep(60)", &ExecConfig { timeout: Duration::from_millis(500), ..cfg() })
        .expect("runs");
    assert_eq!(o.status, ExecStatus::TimedOut);
    assert!(o.to_string().starts_with("timed out after 0."), "{o}");
}

#[test]
fn memory_is_limited() {
    let o = run("x = bytearray(6 << 30)");
    assert!(!o.passed() && o.stderr_tail.contains("MemoryError"), "{o} / {}", o.stderr_tail);
    let o = run("x = bytearray(200 << 20)\nassert len(x) == 200 << 20");
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    let small = ExecConfig { memory_bytes: 256 << 20, ..cfg() };
    let o = run_python("x = bytearray(300 << 20)", &small).expect("runs");
    assert!(!o.passed() && o.stderr_tail.contains("MemoryError"), "{o} / {}", o.stderr_tail);
}

/// A background process started by the program dies with it.
#[test]
fn stray_children_are_killed() {
    let marker = format!("6{:07}.5", std::process::id());
    let program = format!("import subprocess\np = subprocess.Popen(['sleep', '{marker}'])");
    let o = run(&program);
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    std::thread::sleep(Duration::from_millis(200));
    // Gone, or a zombie waiting for an init that does not reap.
    let needle = format!("sleep\0{marker}\0");
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state.rsplit(')').next().and_then(|r| r.split_whitespace().next()) == Some("Z");
        assert!(!cmdline.ends_with(needle.as_bytes()) || zombie, "sleep survived: {state}");
    }
}

#[test]
fn runs_in_a_fresh_private_directory() {
    let o = run("import os\nassert os.getcwd() == '/tmp' == os.environ['HOME']\nassert sorted(os.listdir('.')) == ['harness.py', 'solution.py'], os.listdir('.')\nopen('scratch.txt', 'w').write('x')");
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    let o = run("import os\nassert not os.path.exists('scratch.txt')");
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
}

#[test]
fn runs_as_nobody_when_root_else_as_us() {
    let o = run("import os, sys\nprint('UID', os.getuid(), os.geteuid(), file=sys.stderr)");
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    let want = if ours == 0 { NOBODY } else { ours };
    assert!(o.stderr_tail.contains(&format!("UID {want} {want}")), "{}", o.stderr_tail);
    let iso = o.isolation.expect("isolation reported");
    assert_eq!(iso.uid, want);
    let text = iso.to_string();
    assert!(text.contains("PID, mount, network") && text.contains("private /tmp"), "{text}");
}

#[test]
fn preflight_reports() {
    match preflight(&cfg()) {
        Ok(info) => {
            println!("{info}");
            assert!(info.to_string().contains("namespace is killed"), "{info}");
        }
        // Without numpy for the sandbox's user this is an error, which is the point of preflight.
        Err(e) => {
            let e = e.to_string();
            println!("preflight: {e}");
            assert!(e.contains("tools/install_sandbox_python.sh"), "{e}");
        }
    }
    let missing = ExecConfig { python: "/nonexistent/python3".into(), ..cfg() };
    let err = run_python("pass", &missing).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cannot start /nonexistent/python3"), "{err}");
    let missing = ExecConfig { python: "no-such-python-anywhere".into(), ..cfg() };
    let err = run_python("pass", &missing).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("not found on PATH"), "{err}");
}
