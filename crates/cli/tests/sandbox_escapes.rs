//! Attacks on the code sandbox from inside the scored program: escaping the item's lifetime (`setsid`,
//! fork bombs), forging a pass, killing the evaluator, writing outside the private /tmp, the network,
//! and the evaluator being interrupted mid-item. Plus the set-up error when the sandbox's user has no
//! numpy. Meant to pass both as root (programs run as nobody) and as an ordinary user:
//!
//! ```sh
//! cargo test --release --test sandbox_escapes                      # as root (or as any user)
//! setpriv --reuid=65534 --regid=65534 --clear-groups \
//!     env LATENTMAS_PYTHON=$LATENTMAS_PYTHON target/release/deps/sandbox_escapes-<hash>   # as nobody
//! ```
//! (`LATENTMAS_PYTHON`: an interpreter the tests' user can run, e.g. tools/install_sandbox_python.sh's.)
//! As root, run them once more with `LATENTMAS_SANDBOX_NO_USERNS=1`: the path taken where the kernel
//! refuses user namespaces (root-owned namespaces, the program drops to nobody itself).

#[path = "../../../tests/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harness::trial;
use latentmas_cli::eval::code_exec::{prepare, run_python, ExecConfig, ExecOutcome, NOBODY};

fn cfg() -> ExecConfig {
    ExecConfig { timeout: Duration::from_secs(5), ..ExecConfig::default() }
}

fn run(program: &str) -> ExecOutcome {
    match run_python(program, &cfg()) {
        Ok(o) => o,
        Err(e) => panic!("sandbox failed to run {program:?}: {e}"),
    }
}

fn we_are_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A `sleep` argument unique to this test process and call, so that its process can be found in /proc.
fn marker() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("7{:07}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Host pids of live (not zombie) `sleep MARKER` processes.
fn sleepers(marker: &str) -> Vec<u32> {
    let needle = format!("sleep\0{marker}\0");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !cmdline.ends_with(needle.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
        if state != "Z" && !state.is_empty() {
            found.push(pid);
        }
    }
    found
}

fn assert_all_gone(marker: &str, what: &str) {
    let start = Instant::now();
    while !sleepers(marker).is_empty() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = sleepers(marker);
    assert!(left.is_empty(), "{what}: {} process(es) outlived the item: {left:?}", left.len());
}

/// Python that starts `sleep MARKER` in a new session behind a double fork, and checks it runs.
fn escape_program(marker: &str) -> String {
    format!(
        r#"import os, shutil, time
sleep = shutil.which("sleep")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sleep, ["sleep", "{marker}"])
    os._exit(0)
def running():
    for p in os.listdir("/proc"):
        try:
            if open(f"/proc/{{p}}/cmdline", "rb").read().endswith(b"sleep\x00{marker}\x00"):
                return True
        except OSError:
            pass
    return False
for _ in range(100):
    if running():
        break
    time.sleep(0.02)
assert running(), "the escapee did not start"
"#
    )
}

fn main() {
    harness::run(vec![
        trial!(setsid_escape_dies_with_the_item),
        trial!(fork_bomb_is_bounded_and_dies),
        trial!(killing_the_parent_or_init_is_harmless),
        trial!(a_pass_cannot_be_forged),
        trial!(writes_outside_the_private_tmp_fail),
        trial!(no_network),
        trial!(no_numpy_for_the_sandbox_user_is_an_error_with_the_fix),
        trial!(root_never_runs_code_as_root, needs root),
        trial!(interrupt_child, needs in_the_interrupt_child),
        trial!(interrupting_the_evaluator_kills_the_sandbox),
    ]);
}

/// Only the child process `interrupting_the_evaluator_kills_the_sandbox` starts runs [`interrupt_child`].
fn in_the_interrupt_child() -> Result<(), String> {
    match std::env::var_os(CHILD_ENV) {
        Some(_) => Ok(()),
        None => Err("run in a child process by interrupting_the_evaluator_kills_the_sandbox".into()),
    }
}

fn root() -> Result<(), String> {
    if we_are_root() {
        Ok(())
    } else {
        Err("only meaningful as root: an ordinary user's code runs as that user".into())
    }
}

fn setsid_escape_dies_with_the_item() {
    let m = marker();
    let o = run(&escape_program(&m));
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    assert_all_gone(&m, "double fork + setsid");
}

fn fork_bomb_is_bounded_and_dies() {
    let m = marker();
    let program = format!(
        r#"import os, shutil, sys
sleep = shutil.which("sleep")
n = 0
try:
    for _ in range(400):
        if os.fork() == 0:
            os.setsid()
            os.execv(sleep, ["sleep", "{m}"])
        n += 1
except OSError as e:
    print("stopped:", e, file=sys.stderr)
print("FORKED", n, file=sys.stderr)
"#
    );
    let o = run(&program);
    let forked: usize = o
        .stderr_tail
        .split_whitespace()
        .skip_while(|w| *w != "FORKED")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count: {o} / {}", o.stderr_tail));
    assert!(forked < 400, "RLIMIT_NPROC did not bind: {forked} forks");
    assert_all_gone(&m, "fork bomb");
}

fn killing_the_parent_or_init_is_harmless() {
    // Inside the PID namespace the parent is the sandbox's init, which ignores signals from its
    // namespace; the evaluator is out of sight. This test process surviving is the check.
    let program = "import os, signal, time\nfor pid in (os.getppid(), 1, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\ntime.sleep(0.2)\nassert os.getppid() == 1";
    let o = run(program);
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    let o =
        run("import os\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError:\n    pass\nassert False, 'still scored'");
    assert!(!o.passed(), "{o}");
}

/// Every way the program could claim a pass without its tests running; each ends in a failing assert.
fn a_pass_cannot_be_forged() {
    let attacks: &[(&str, &str)] = &[
        ("marker file + os._exit(0)", "import os, sys\nopen('harness.ok', 'w').write(sys.argv[-1])\nopen('/tmp/harness.ok', 'w').write(sys.argv[-1])\nos._exit(0)"),
        ("exit 0 without exec returning", "import os\nos._exit(0)"),
        (
            "connect to the verdict socket",
            "import os, socket\ntry:\n    s = socket.socket(socket.AF_UNIX)\n    s.connect('\\0latentmas-verdict')\n    s.sendall(b'returned')\nfinally:\n    os._exit(0)",
        ),
        (
            "call the harness's own objects through its frame",
            "import os, sys\nf = sys._getframe()\nwhile f.f_code.co_name != 'main':\n    f = f.f_back\nv = f.f_locals\ntry:\n    s = v['raw_socket'](v['unix'], v['stream'])\n    s.connect('\\0latentmas-verdict')\nfinally:\n    v['exit_now'](0)",
        ),
        (
            "frame from a signal handler",
            "import os, signal\ndef h(sig, frame):\n    while frame.f_code.co_name != 'main':\n        frame = frame.f_back\n    v = frame.f_locals\n    try:\n        s = v['raw_socket'](v['unix'], v['stream'])\n        s.connect('\\0latentmas-verdict')\n    finally:\n        os._exit(0)\nsignal.signal(signal.SIGUSR1, h)\nos.kill(os.getpid(), signal.SIGUSR1)",
        ),
        (
            "replace the process with one that reports",
            "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('\\\\0latentmas-verdict'); s.sendall(b'x')\"])",
        ),
        (
            "a forked child reports, the parent exits 0",
            "import os, socket, time\nif os.fork() == 0:\n    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect('\\0latentmas-verdict')\n    finally:\n        os._exit(0)\ntime.sleep(0.3)\nos._exit(0)",
        ),
        (
            "a subprocess reports, the parent exits 0",
            "import os, subprocess, sys\nsubprocess.run([sys.executable, '-c', \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('\\\\0latentmas-verdict')\"])\nos._exit(0)",
        ),
        (
            "a thread reports while the tests fail",
            "import os, socket, threading, time\ndef forge():\n    time.sleep(0.2)\n    try:\n        socket.socket(socket.AF_UNIX).connect('\\0latentmas-verdict')\n    finally:\n        os._exit(0)\nthreading.Thread(target=forge).start()\ntime.sleep(1)",
        ),
        ("ctypes", "import ctypes, os\nlibc = ctypes.CDLL(None)\nlibc.connect\nos._exit(0)"),
        ("disarm the guard through gc", "import gc, os\nfor o in gc.get_objects():\n    pass\nos._exit(0)"),
        ("a tracer to move the harness's line", "import sys, os\nsys.settrace(lambda *a: None)\nos._exit(0)"),
        ("patch memory through /proc/self/mem", "import os\nopen('/proc/self/mem', 'r+b')\nos._exit(0)"),
    ];
    for (name, attack) in attacks {
        let o = run(&format!("{attack}\nassert False, 'the tests ran and failed'"));
        assert!(!o.passed(), "{name}: forged a pass ({o} / {})", o.stderr_tail);
    }
    // The same program without the attack passes: the check is the verdict, not the code.
    assert!(run("import os, socket, sys, threading, time\nassert True").passed());
}

fn writes_outside_the_private_tmp_fail() {
    let open_dir = scratch().join(format!("sandbox-escape-{}", marker()));
    std::fs::create_dir_all(&open_dir).expect("test dir");
    set_mode(&open_dir, 0o777);
    let m = marker();
    let targets =
        [open_dir.join("escape.txt"), PathBuf::from(format!("/var/tmp/{m}")), PathBuf::from(format!("/dev/shm/{m}"))];
    let list: Vec<String> = targets.iter().map(|p| format!("{:?}", p.display().to_string())).collect();
    let program = format!(
        r#"import sys
written = []
for p in [{}]:
    try:
        with open(p, "w") as f:
            f.write("escaped")
        written.append(p)
    except OSError as e:
        print("blocked", p, e, file=sys.stderr)
open("/tmp/{m}", "w").write("private")
assert open("/tmp/{m}").read() == "private"
print("WRITTEN", written, file=sys.stderr)
"#,
        list.join(", ")
    );
    let o = run(&program);
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    for t in &targets {
        assert!(!t.exists(), "the program wrote {} ({})", t.display(), o.stderr_tail);
    }
    assert!(!Path::new(&format!("/tmp/{m}")).exists(), "the sandbox's /tmp is the host's");
    let iso = o.isolation.expect("isolation reported");
    assert!(iso.read_only_root, "this kernel should allow a read-only view: {iso}");
    let _ = std::fs::remove_dir_all(&open_dir);
}

fn no_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let program = format!(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('127.0.0.1', {port}))\n    reached = True\nexcept OSError:\n    reached = False\nassert not reached, 'reached the host network'"
    );
    let o = run(&program);
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
}

/// An interpreter whose `import numpy` fails for everyone: a wrapper that shadows numpy.
fn no_numpy_for_the_sandbox_user_is_an_error_with_the_fix() {
    let dir = wrapper_dir("nonumpy", 0o755);
    std::fs::create_dir_all(dir.join("shadow/numpy")).unwrap();
    std::fs::write(dir.join("shadow/numpy/__init__.py"), "raise ImportError('no numpy here')\n").unwrap();
    let python = write_wrapper(&dir, &format!("PYTHONPATH={}", dir.join("shadow").display()));
    let err = prepare(&ExecConfig { python: python.clone(), ..cfg() }).err().map(|e| e.to_string()).unwrap_or_default();
    for want in ["cannot import numpy", "tools/install_sandbox_python.sh", "--python", "no numpy here"] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
}

/// As root, an interpreter only root can reach (like pyenv under /root) is an error, never a run as root.
fn root_never_runs_code_as_root() {
    let dir = wrapper_dir("rootonly", 0o700);
    let python = write_wrapper(&dir, "");
    let err = match prepare(&ExecConfig { python, ..cfg() }) {
        Ok((_, info)) => panic!("an interpreter under a root-only directory was used: {info:?}"),
        Err(e) => e.to_string(),
    };
    for want in ["cannot start", "uid 65534", "tools/install_sandbox_python.sh", "code never runs as root"] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    let o = run("import os\nassert os.getuid() == os.geteuid() == 65534 and os.getgid() == 65534, os.getuid()\nassert os.getgroups() in ([], [65534])");
    assert!(o.passed(), "{o} / {}", o.stderr_tail);
    assert_eq!(o.isolation.map(|i| i.uid), Some(NOBODY));
}

fn wrapper_dir(name: &str, mode: u32) -> PathBuf {
    let dir = scratch().join(format!("sandbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, mode);
    dir
}

/// `dir/python`: a shell script that runs the configured interpreter with `env_prefix` set.
fn write_wrapper(dir: &Path, env_prefix: &str) -> PathBuf {
    let real = real_python();
    let path = dir.join("python");
    std::fs::write(&path, format!("#!/bin/sh\n{env_prefix} exec {} \"$@\"\n", real.display())).unwrap();
    set_mode(&path, 0o755);
    path
}

fn real_python() -> PathBuf {
    let p = cfg().python;
    if p.components().count() > 1 {
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(&p)).find(|c| c.is_file()).expect("python on PATH")
}

/// Where tests put files the sandbox must see: not under /tmp (private inside the sandbox). Cargo's
/// target tmp dir, or /var/tmp when that is not ours to write (the tests run as another user).
fn scratch() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let probe = target.join(format!("probe-{}", std::process::id()));
    if std::fs::create_dir_all(&probe).is_ok() {
        let _ = std::fs::remove_dir(&probe);
        return target;
    }
    PathBuf::from("/var/tmp")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

const CHILD_ENV: &str = "LATENTMAS_TEST_SANDBOX_INTERRUPT_CHILD";

/// The file the interrupted child holds as a pending temporary output while its sandbox runs.
fn pending_output(marker: &str) -> PathBuf {
    scratch().join(format!("pending-{marker}"))
}

/// Run by `interrupting_the_evaluator_kills_the_sandbox` in a child process.
fn interrupt_child() {
    let m = std::env::var(CHILD_ENV).expect("the marker, set by the parent");
    // An output being written while code is scored (an eval's cache or report file): the interrupt must
    // remove it, so the sandbox's signal handling must leave the process's cleanups their turn.
    let pending = pending_output(&m);
    std::fs::write(&pending, "partial").unwrap();
    latentmas_cli::interrupt::install().unwrap();
    // A cleanup that takes a while runs first: a handler that ended the process at once would leave the
    // pending output behind every time, not only when it wins a race.
    let _slow = latentmas_cli::interrupt::on_interrupt(|| std::thread::sleep(Duration::from_millis(300)));
    let _temp = latentmas_cli::interrupt::TempPath::new(pending);
    let program = format!("{}\nimport time\ntime.sleep(60)", escape_program(&m));
    let _ = run_python(&program, &ExecConfig { timeout: Duration::from_secs(60), ..ExecConfig::default() });
    panic!("the run ended before the signal");
}

fn interrupting_the_evaluator_kills_the_sandbox() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let m = marker();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["interrupt_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &m)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("test binary");
        let start = Instant::now();
        while sleepers(&m).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(20), "the child's sandbox never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(pending_output(&m).exists(), "the child holds its pending output while its sandbox runs");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal), "the evaluator should end by the signal: {status}");
        assert_all_gone(&m, &format!("signal {signal} to the evaluator"));
        let pending = pending_output(&m);
        assert!(!pending.exists(), "signal {signal}: the pending output {} was left behind", pending.display());
        let prefix = format!("latentmas-exec-{}-", child.id());
        let left: Vec<_> = std::fs::read_dir("/tmp")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "temporary directories left behind: {left:?}");
    }
}
