//! Running a model's Python answer against a benchmark's tests, in a child process, never in ours.
//!
//! Public operations:
//! - [`ExecConfig`] (+ `Default`): interpreter, timeout, resource limits, network isolation. The default
//!   interpreter is `$LATENTMAS_PYTHON` when set (what `tools/install_sandbox_python.sh` prints), else
//!   `python3` on `PATH`.
//! - [`run_python`]: run one program in a fresh sandbox, returning an [`ExecOutcome`].
//! - [`preflight`]: check once that the sandbox works and can import numpy (the tests of both code
//!   benchmarks need it); reports whether network isolation is in force ([`SandboxInfo`]).
//! - [`prepare`]: [`preflight`], falling back from `nobody` to our own user when only we can reach a
//!   Python with numpy; returns the config to score with.
//!
//! What counts as correct, and why: the reference (`utils.run_with_timeout`) `exec`s the program in a
//! forked process inside `try: … except Exception`, and an item is right iff that `exec` returns. We
//! reproduce that with a small harness (`harness.py`) that `exec`s `solution.py` in a fresh namespace,
//! so, as in the reference:
//! - `if __name__ == "__main__":` blocks do NOT run (the namespace has no `__name__` of its own);
//! - any exception fails, and so does `exit(3)` or even `sys.exit(0)`: `SystemExit` is not an
//!   `Exception`, so in the reference the worker dies without setting its success flag;
//! - stdin is empty (`input()` raises `EOFError`), stdout is discarded;
//! - the 10 s timeout covers interpreter start-up too.
//!
//! Passing = the harness saw `exec` return (it then writes a per-run token to a file and exits 0); any
//! exception, any exit the program makes itself (even `os._exit(0)`), a signal, or the timeout fails.
//!
//! Sandbox, per run: a new temporary directory (working directory, `HOME`, `TMPDIR`; removed after),
//! a cleared environment (only `PATH`, `PYTHONPATH`, `PYTHONHOME`, `VIRTUAL_ENV` pass through; BLAS
//! pools pinned to one thread; `PYTHONHASHSEED=0` so set order, and so scoring, is reproducible), its own
//! process group (the whole group is SIGKILLed at the timeout and after every run, so stray
//! grandchildren die too), rlimits on address space, processes, file size, core dumps and CPU time.
//! When we run as root, the child runs as `nobody` (65534). Network: best effort, a new user + network
//! namespace (only a down loopback inside) when the kernel allows unprivileged user namespaces; where it
//! does not, the program runs with the host network, which [`preflight`] reports.
//! Not covered: filesystem isolation beyond the working directory and the uid (the program can read
//! whatever `nobody`, or our user when not root, can read).

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The reference's per-program timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Address-space limit. The reference sets none; MBPP+ item 255's canonical solution peaks at 2.2 GB
/// resident, so 4 GiB lets every canonical solution pass while still stopping runaway allocations.
pub const DEFAULT_MEMORY_BYTES: u64 = 4 << 30;
/// RLIMIT_NPROC. Linux counts threads of the whole uid, so this is a fork-bomb brake, not an exact count.
pub const DEFAULT_MAX_PROCESSES: u64 = 256;
/// RLIMIT_FSIZE: stops a program from filling the disk; its stderr goes to a file under this limit too.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
/// uid/gid the child runs as when we are root.
pub const NOBODY: u32 = 65534;
/// The environment variable naming the default interpreter (the CLI's `--python` reads it too).
pub const PYTHON_ENV: &str = "LATENTMAS_PYTHON";
/// How much of the child's stderr is kept for the failure detail.
const STDERR_TAIL_BYTES: u64 = 2048;

/// Runs `solution.py` like the reference's `exec(code, {})` inside `try/except Exception`; argv[2] is a
/// per-run token written to `harness.ok` only when `exec` returned, so a program that ends the process
/// itself (`os._exit(0)`) is not mistaken for one that finished.
const HARNESS: &str = r#"import os, sys, traceback
with open(sys.argv[1], encoding="utf-8") as f:
    src = f.read()
try:
    exec(compile(src, "<string>", "exec"), {})
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
fd = os.open("harness.ok", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, sys.argv[2].encode())
os.close(fd)
sys.stderr.flush()
os._exit(0)
"#;

/// How hard to try to cut the program off the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetIsolation {
    /// Run with the host network.
    Off,
    /// New network namespace when possible, otherwise run anyway.
    BestEffort,
    /// New network namespace or the run fails with an error.
    Required,
}

/// Sandbox settings. `Default` gives the reference's 10 s timeout and the limits above.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Interpreter, looked up on `PATH` when it has no slash.
    pub python: PathBuf,
    /// Wall-clock limit, start-up included.
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_processes: u64,
    pub max_file_bytes: u64,
    pub network: NetIsolation,
    /// Run the child as `nobody` when we are root.
    pub drop_root: bool,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            python: std::env::var_os(PYTHON_ENV).map_or_else(|| PathBuf::from("python3"), PathBuf::from),
            timeout: DEFAULT_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_processes: DEFAULT_MAX_PROCESSES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            network: NetIsolation::BestEffort,
            drop_root: true,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecStatus {
    /// The program ran to its end without an exception.
    Passed,
    /// Exception (harness exit 1), an exit the program made itself (any code, 0 included), or a signal.
    Failed { exit_code: Option<i32>, signal: Option<i32> },
    /// Still running at the timeout; its process group was killed.
    TimedOut,
}

/// The result of [`run_python`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutcome {
    pub status: ExecStatus,
    /// Wall time from spawn to exit (or to the kill).
    pub seconds: f64,
    /// The last bytes of the child's stderr (the traceback's end), lossily decoded.
    pub stderr_tail: String,
}

impl ExecOutcome {
    pub fn passed(&self) -> bool {
        self.status == ExecStatus::Passed
    }
}

impl fmt::Display for ExecOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            ExecStatus::Passed => return write!(f, "passed in {:.2} s", self.seconds),
            ExecStatus::TimedOut => return write!(f, "timed out after {:.1} s", self.seconds),
            ExecStatus::Failed { exit_code: Some(0), .. } => {
                write!(f, "the program ended the process itself (exit 0)")?
            }
            ExecStatus::Failed { exit_code: Some(c), .. } => write!(f, "exit {c}")?,
            ExecStatus::Failed { signal: Some(s), .. } => write!(f, "killed by signal {s}")?,
            ExecStatus::Failed { .. } => write!(f, "failed")?,
        }
        // The last non-empty stderr line is the exception (`AssertionError`, `NameError: …`).
        match self.stderr_tail.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => write!(f, ": {}", line.trim()),
            None => Ok(()),
        }
    }
}

/// What [`preflight`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// A new network namespace could be created, so programs run without network.
    pub network_isolated: bool,
    /// The child runs as `nobody` (we are root and `drop_root` is set).
    pub runs_as_nobody: bool,
    /// Why [`prepare`] changed the config, if it did.
    pub note: Option<String>,
}

/// [`preflight`] for the config to score with. When we are root, `drop_root` is set and the Python that
/// `nobody` reaches cannot import numpy (as with pyenv or conda under `/root`, which `nobody` cannot
/// enter), the programs run as our own user instead, and the returned info says so: scoring every
/// item wrong would be worse.
pub fn prepare(cfg: &ExecConfig) -> Result<(ExecConfig, SandboxInfo)> {
    match preflight(cfg) {
        Ok(info) => Ok((cfg.clone(), info)),
        Err(first) if drop_to_nobody(cfg) => {
            let own = ExecConfig { drop_root: false, ..cfg.clone() };
            match preflight(&own) {
                Ok(mut info) => {
                    info.note = Some(format!("running code as root: as uid {NOBODY} it failed ({first})"));
                    Ok((own, info))
                }
                Err(_) => Err(first),
            }
        }
        Err(e) => Err(e),
    }
}

/// Checks that the sandbox starts and can import numpy, and whether network isolation works.
/// Code tasks should call this once before scoring: a sandbox that cannot import numpy would score
/// every item wrong without saying why.
pub fn preflight(cfg: &ExecConfig) -> Result<SandboxInfo> {
    let probe = ExecConfig { network: NetIsolation::Required, ..cfg.clone() };
    let network_isolated = cfg.network != NetIsolation::Off && run_python("pass", &probe).is_ok();
    let outcome = run_python("import numpy", cfg)?;
    if !outcome.passed() {
        let who = if drop_to_nobody(cfg) { format!(" as uid {NOBODY} (we are root)") } else { String::new() };
        return Err(Error::Other(format!(
            "code scoring: the sandboxed {}{who} cannot import numpy, which the benchmark tests need ({outcome}). \
             Fix: run `tools/install_sandbox_python.sh` from the latentmas repository (it sets up a venv with numpy \
             that the sandbox can run) and pass the path it prints as `--python PATH` (or set {PYTHON_ENV}); by hand: \
             `python3 -m venv DIR && DIR/bin/pip install numpy`, then `--python DIR/bin/python`{}",
            cfg.python.display(),
            if drop_to_nobody(cfg) {
                ", with DIR and its interpreter readable by uid 65534 (not under /root)"
            } else {
                ""
            }
        )));
    }
    Ok(SandboxInfo { network_isolated, runs_as_nobody: drop_to_nobody(cfg), note: None })
}

/// Runs `program` in a fresh sandbox. `Ok` for every way the program itself can end (pass, fail,
/// timeout); `Err` only when the sandbox could not be set up or the interpreter could not start.
pub fn run_python(program: &str, cfg: &ExecConfig) -> Result<ExecOutcome> {
    let as_nobody = drop_to_nobody(cfg);
    let dir = SandboxDir::create(as_nobody)?;
    dir.write("harness.py", HARNESS)?;
    dir.write("solution.py", program)?;
    let stderr_path = dir.path.join("stderr.txt");
    let stderr = File::create(&stderr_path).map_err(|e| Error::io(&stderr_path, e))?;

    let mut cmd = Command::new(&cfg.python);
    let token = dir.token();
    cmd.arg("harness.py")
        .arg("solution.py")
        .arg(&token)
        .current_dir(&dir.path)
        .env_clear()
        .envs(child_env(&dir.path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    if as_nobody {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let limits = Limits::new(cfg);
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setrlimit, unshare) on values copied into it; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || limits.apply());
    }

    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        let who = if as_nobody { " as uid 65534 (we are root)" } else { "" };
        Error::Other(format!("code scoring: cannot start {}{who} in {}: {e}", cfg.python.display(), dir.path.display()))
    })?;
    let status = wait_with_timeout(&mut child, cfg.timeout)?;
    let seconds = start.elapsed().as_secs_f64();
    let stderr_tail = read_tail(&stderr_path);
    let status = match status {
        None => ExecStatus::TimedOut,
        Some(s) if s.success() && dir.read("harness.ok").as_deref() == Some(token.as_str()) => ExecStatus::Passed,
        Some(s) => ExecStatus::Failed { exit_code: s.code(), signal: s.signal() },
    };
    Ok(ExecOutcome { status, seconds, stderr_tail })
}

fn drop_to_nobody(cfg: &ExecConfig) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    cfg.drop_root && unsafe { libc::geteuid() } == 0
}

fn child_env(dir: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOME".to_string(), dir.display().to_string()),
        ("TMPDIR".to_string(), dir.display().to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("PYTHONIOENCODING".to_string(), "utf-8".to_string()),
        ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
        ("PYTHONHASHSEED".to_string(), "0".to_string()),
        // One BLAS thread: faster start-up on few cores, and no thread pool hitting RLIMIT_NPROC.
        ("OPENBLAS_NUM_THREADS".to_string(), "1".to_string()),
        ("OMP_NUM_THREADS".to_string(), "1".to_string()),
        ("MKL_NUM_THREADS".to_string(), "1".to_string()),
    ];
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
    env.push(("PATH".to_string(), path));
    for key in ["PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"] {
        if let Ok(v) = std::env::var(key) {
            env.push((key.to_string(), v));
        }
    }
    env
}

/// The rlimits and namespace flags, copied into the pre-exec closure.
#[derive(Clone, Copy)]
struct Limits {
    memory: u64,
    processes: u64,
    file_bytes: u64,
    cpu_seconds: u64,
    network: NetIsolation,
}

impl Limits {
    fn new(cfg: &ExecConfig) -> Self {
        Limits {
            memory: capped(libc::RLIMIT_AS, cfg.memory_bytes),
            processes: capped(libc::RLIMIT_NPROC, cfg.max_processes),
            file_bytes: capped(libc::RLIMIT_FSIZE, cfg.max_file_bytes),
            // A CPU-time backstop just past the wall-clock timeout, should our kill be late.
            cpu_seconds: capped(libc::RLIMIT_CPU, cfg.timeout.as_secs() + 2),
            network: cfg.network,
        }
    }

    /// Runs in the forked child: no allocation, no locks.
    fn apply(&self) -> std::io::Result<()> {
        set_rlimit(libc::RLIMIT_AS, self.memory)?;
        set_rlimit(libc::RLIMIT_NPROC, self.processes)?;
        set_rlimit(libc::RLIMIT_FSIZE, self.file_bytes)?;
        set_rlimit(libc::RLIMIT_CORE, 0)?;
        set_rlimit(libc::RLIMIT_CPU, self.cpu_seconds)?;
        if self.network != NetIsolation::Off {
            // A user namespace lets an unprivileged process own the new network namespace.
            // SAFETY: unshare takes only flags; the child is single-threaded after fork, as
            // CLONE_NEWUSER requires.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) };
            if rc != 0 && self.network == NetIsolation::Required {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

// glibc types the resource argument as an enum-like unsigned int, other libcs as int.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// `value`, lowered to our own hard limit: an unprivileged process may not raise a hard limit, and the
/// child would fail to start.
fn capped(resource: Resource, value: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 || lim.rlim_max == libc::RLIM_INFINITY {
        return value;
    }
    // rlim_t is u64 on 64-bit Linux but not on every target.
    #[allow(clippy::unnecessary_cast)]
    let hard = lim.rlim_max as u64;
    value.min(hard)
}

fn set_rlimit(resource: Resource, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the child; `None` when it hit the timeout. Either way the child's whole process group is
/// killed before the child is reaped, so its pid (= the group id) cannot have been reused meanwhile.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    let timed_out = loop {
        if has_exited(pid).map_err(|e| Error::Other(format!("waiting for python: {e}")))? {
            break false;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            break true;
        }
        std::thread::sleep(nap.min(timeout - elapsed));
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    // SAFETY: kill takes plain integers; the group id is our unreaped child's pid.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = child.wait().map_err(|e| Error::Other(format!("waiting for python: {e}")))?;
    Ok((!timed_out).then_some(status))
}

/// True once the child has exited, without reaping it (WNOWAIT).
fn has_exited(pid: libc::pid_t) -> std::io::Result<bool> {
    // SAFETY: siginfo_t is plain data for which all-zero is valid; waitid writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
    if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // With WNOHANG, si_pid stays 0 while the child runs.
    // SAFETY: reading si_pid of a siginfo_t filled by waitid (or zeroed).
    Ok(unsafe { info.si_pid() } != 0)
}

fn read_tail(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(STDERR_TAIL_BYTES)));
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A fresh private directory for one run, removed on drop.
struct SandboxDir {
    path: PathBuf,
    owner: Option<u32>,
}

impl SandboxDir {
    fn create(as_nobody: bool) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!("latentmas-exec-{}-{n}-{nanos}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let dir = SandboxDir { path, owner: as_nobody.then_some(NOBODY) };
                    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700))
                        .map_err(|e| Error::io(&dir.path, e))?;
                    dir.chown(&dir.path)?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Other(format!("no fresh sandbox directory under {}", base.display())))
    }

    fn write(&self, name: &str, text: &str) -> Result<()> {
        let path = self.path.join(name);
        fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        self.chown(&path)
    }

    /// A value unique to this run (directory names are unique per process and time).
    fn token(&self) -> String {
        self.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    fn read(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.path.join(name)).ok()
    }

    fn chown(&self, path: &Path) -> Result<()> {
        match self.owner {
            Some(uid) => std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(|e| Error::io(path, e)),
            None => Ok(()),
        }
    }
}

impl Drop for SandboxDir {
    fn drop(&mut self) {
        // Best effort: the program may have left files we cannot delete (only possible when not root).
        let _ = fs::remove_dir_all(&self.path);
    }
}
