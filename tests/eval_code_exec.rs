//! The python sandbox: what passes and fails (as the reference counts it), the timeout kill, resource
//! limits, the process group, and network isolation where the kernel allows it.

use std::time::{Duration, Instant};

use latentmas::eval::code_exec::{preflight, run_python, ExecConfig, ExecOutcome, ExecStatus, NetIsolation};

fn cfg() -> ExecConfig {
    ExecConfig { timeout: Duration::from_secs(2), ..ExecConfig::default() }
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

/// A background process started by the program dies with it: the whole process group is killed.
#[test]
fn stray_children_are_killed() {
    let program = "import subprocess, sys\np = subprocess.Popen(['sleep', '30'])\nprint('PID', p.pid, file=sys.stderr)";
    let o = run(program);
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    let pid: u32 = o
        .stderr_tail
        .split_whitespace()
        .skip_while(|w| *w != "PID")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("pid printed");
    std::thread::sleep(Duration::from_millis(100));
    // Gone, or a zombie waiting for an init that does not reap.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = state.rsplit(')').next().and_then(|r| r.split_whitespace().next()).is_some_and(|s| s != "Z");
    assert!(!alive, "sleep {pid} survived: {state}");
}

#[test]
fn runs_in_a_fresh_private_directory() {
    let o = run("import os\nassert sorted(os.listdir('.')) == ['harness.py', 'solution.py', 'stderr.txt'], os.listdir('.')\nopen('scratch.txt', 'w').write('x')");
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    let o = run("import os\nassert not os.path.exists('scratch.txt')");
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
}

#[test]
fn root_runs_as_nobody() {
    // Only meaningful when the tests run as root.
    let o = run("import os\nprint(os.getuid(), file=__import__('sys').stderr)");
    let uid = o.stderr_tail.trim().to_string();
    let we_are_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    if we_are_root {
        assert_ne!(uid, "0", "sandbox ran as root");
        let own = ExecConfig { drop_root: false, ..cfg() };
        let o = run_python("import os, sys\nprint(os.geteuid(), file=sys.stderr)", &own).expect("runs");
        assert!(o.passed(), "{o}");
    } else {
        println!("not root: uid {uid}; nothing to drop");
    }
}

#[test]
fn network_is_cut_when_the_kernel_allows() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let program = format!(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('127.0.0.1', {port}))\n    reached = True\nexcept OSError:\n    reached = False\nassert not reached, 'reached the host network'"
    );
    let isolated = match run_python("pass", &ExecConfig { network: NetIsolation::Required, ..cfg() }) {
        Ok(o) => o.passed(),
        Err(e) => {
            println!("no network namespace here ({e}); checking that best effort still runs");
            false
        }
    };
    let o = run(&program);
    assert_eq!(o.passed(), isolated, "{o} / {}", o.stderr_tail);
    let open = run_python(&program, &ExecConfig { network: NetIsolation::Off, ..cfg() }).expect("runs");
    assert!(!open.passed(), "with isolation off the loopback listener must be reachable");
}

#[test]
fn preflight_reports() {
    // Without numpy for the sandbox's user this is an error, which is the point of preflight.
    match preflight(&ExecConfig { drop_root: false, ..cfg() }) {
        Ok(info) => println!("{info:?}"),
        Err(e) => println!("preflight: {e}"),
    }
    let missing = ExecConfig { python: "/nonexistent/python3".into(), ..cfg() };
    let err = run_python("pass", &missing).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cannot start /nonexistent/python3"), "{err}");
}
