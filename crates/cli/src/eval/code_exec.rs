//! Running a model's Python answer against a benchmark's tests, in a sandbox, never in our process.
//!
//! Public operations:
//! - [`ExecConfig`] (+ `Default`): interpreter, timeout, resource limits. The default interpreter is
//!   `$LATENTMAS_PYTHON` when set (what `tools/install_sandbox_python.sh` prints), else `python3` on `PATH`.
//! - [`run_python`]: run one program in a fresh sandbox, returning an [`ExecOutcome`].
//! - [`preflight`]: check once that the sandbox starts and its user can import numpy (the tests of both
//!   code benchmarks need it); returns the isolation in force ([`SandboxInfo`]).
//! - [`prepare`]: [`preflight`], returning the config to score with.
//!
//! What counts as correct, and why: the reference (`utils.run_with_timeout`) `exec`s the program in a
//! forked process inside `try: … except Exception`, and an item is right iff that `exec` returns. We
//! reproduce that with a small harness (`code_harness.py`) that `exec`s `solution.py` in a fresh
//! namespace, so, as in the reference:
//! - `if __name__ == "__main__":` blocks do NOT run (the namespace has no `__name__` of its own);
//! - any exception fails, and so does `exit(3)` or even `sys.exit(0)`: `SystemExit` is not an
//!   `Exception`, so in the reference the worker dies without setting its success flag;
//! - stdin is empty (`input()` raises `EOFError`), stdout is discarded;
//! - the 10 s timeout covers sandbox set-up and interpreter start-up too.
//!
//! Passing = the sandbox's init saw the harness connect to it after `exec` returned and then exit 0
//! (see `code_sandbox` and the harness for why the program cannot fake that); any exception, any exit
//! the program makes itself (even `os._exit(0)`), a signal, or the timeout fails.
//!
//! Sandbox, per run (see `code_sandbox`): new PID, mount, network, IPC and UTS namespaces (through a
//! user namespace when we lack CAP_SYS_ADMIN); as root the program runs as `nobody` (65534), otherwise
//! as our own user; a private tmpfs on /tmp (working directory, `HOME`, `TMPDIR`) and /dev/shm, every
//! other mount read-only (kernel ≥ 5.12), an own /proc; no network interface up; no_new_privs; rlimits
//! on address space, processes, file size, core dumps and CPU time; a cleared environment (only `PATH`,
//! `PYTHONPATH`, `PYTHONHOME`, `VIRTUAL_ENV` pass through; BLAS pools pinned to one thread;
//! `PYTHONHASHSEED=0` so set order, and so scoring, is reproducible). The namespace's init ends with
//! every item, and the kernel then kills whatever the program left behind (double forks and `setsid`
//! included). There is no fallback: when the namespaces cannot be created, or the sandbox's user cannot
//! import numpy, scoring stops with an error that says how to fix it. Not covered: what the sandbox's
//! user may read (the program can read world-readable files, or, when we are not root, ours).

use std::ffi::{CString, OsStr};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::code_sandbox::{self, Ended, Plan, Rlimits, SetupError, Step};
pub use super::code_sandbox::{Isolation, NOBODY};
use latentmas::error::{Error, Result};

/// The reference's per-program timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Address-space limit. The reference sets none; MBPP+ item 255's canonical solution peaks at 2.2 GB
/// resident, so 4 GiB lets every canonical solution pass while still stopping runaway allocations.
pub const DEFAULT_MEMORY_BYTES: u64 = 4 << 30;
/// RLIMIT_NPROC. Linux counts threads of the whole uid, so this is a fork-bomb brake, not an exact count.
pub const DEFAULT_MAX_PROCESSES: u64 = 256;
/// RLIMIT_FSIZE: bounds every file the program writes, its stderr (kept in memory) included.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
/// The environment variable naming the default interpreter (the CLI's `--python` reads it too).
pub const PYTHON_ENV: &str = "LATENTMAS_PYTHON";
/// How much of the child's stderr is kept for the failure detail.
const STDERR_TAIL_BYTES: u64 = 2048;

/// Runs `/tmp/solution.py` like the reference's `exec(code, {})` inside `try/except Exception`.
const HARNESS: &str = include_str!("code_harness.py");

/// Sandbox settings. `Default` gives the reference's 10 s timeout and the limits above.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Interpreter, looked up on `PATH` when it has no slash. As root it must be one that `nobody` can
    /// run (not under /root); /tmp is private inside the sandbox, so it must not live there either.
    pub python: PathBuf,
    /// Wall-clock limit, sandbox set-up and start-up included.
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_processes: u64,
    pub max_file_bytes: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            python: std::env::var_os(PYTHON_ENV).map_or_else(|| PathBuf::from("python3"), PathBuf::from),
            timeout: DEFAULT_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_processes: DEFAULT_MAX_PROCESSES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
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
    /// Still running at the timeout; its whole namespace was killed.
    TimedOut,
}

/// The result of [`run_python`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutcome {
    pub status: ExecStatus,
    /// Wall time from the sandbox's start to the program's end (or to the kill).
    pub seconds: f64,
    /// The last bytes of the child's stderr (the traceback's end), lossily decoded.
    pub stderr_tail: String,
    /// The isolation the run had (`None` only when the timeout hit before the sandbox was set up).
    pub isolation: Option<Isolation>,
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

/// What [`preflight`] found: the isolation every program will run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub isolation: Isolation,
}

impl fmt::Display for SandboxInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.isolation.fmt(f)
    }
}

/// [`preflight`] for the config to score with (returned unchanged: there is no fallback).
pub fn prepare(cfg: &ExecConfig) -> Result<(ExecConfig, SandboxInfo)> {
    Ok((cfg.clone(), preflight(cfg)?))
}

/// Checks that the sandbox starts and its user can import numpy. Code tasks call this once before
/// scoring: a sandbox that cannot import numpy would score every item wrong without saying why.
pub fn preflight(cfg: &ExecConfig) -> Result<SandboxInfo> {
    let outcome = run_python("import numpy", cfg).map_err(|e| Error::Other(format!("{e}. {}", fix(cfg))))?;
    match (outcome.passed(), outcome.isolation) {
        (true, Some(isolation)) => Ok(SandboxInfo { isolation }),
        _ => Err(Error::Other(format!(
            "code scoring: the sandboxed {} (running as {}) cannot import numpy, which the benchmark tests need \
             ({outcome}). {}",
            cfg.python.display(),
            sandbox_user(),
            fix(cfg)
        ))),
    }
}

fn sandbox_user() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    match unsafe { libc::geteuid() } {
        0 => format!("uid {NOBODY}, nobody, since we are root"),
        uid => format!("uid {uid}"),
    }
}

fn fix(cfg: &ExecConfig) -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    format!(
        "Fix: run `tools/install_sandbox_python.sh` from the latentmas repository (it sets up a venv with numpy \
         that the sandbox's user can run) and pass the path it prints as `--python PATH` (or set {PYTHON_ENV}); \
         or point `--python` at another interpreter with numpy{} (now: {})",
        if root {
            " that uid 65534 can run: it and its libraries world-readable, outside /root and /tmp; \
             code never runs as root"
        } else {
            ", outside /tmp"
        },
        cfg.python.display()
    )
}

/// Runs `program` in a fresh sandbox. `Ok` for every way the program itself can end (pass, fail,
/// timeout); `Err` only when the sandbox could not be set up or the interpreter could not start.
pub fn run_python(program: &str, cfg: &ExecConfig) -> Result<ExecOutcome> {
    let python = resolve_interpreter(&cfg.python)?;
    let python_c = CString::new(python.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("code scoring: interpreter path {} holds a NUL", python.display())))?;
    let env = child_env()?;
    let rlimits = Rlimits {
        memory: capped(libc::RLIMIT_AS, cfg.memory_bytes),
        processes: capped(libc::RLIMIT_NPROC, cfg.max_processes),
        file_bytes: capped(libc::RLIMIT_FSIZE, cfg.max_file_bytes),
        // A CPU-time backstop just past the wall-clock timeout, should our kill be late.
        cpu_seconds: capped(libc::RLIMIT_CPU, cfg.timeout.as_secs() + 2),
    };
    let mut plan = Plan::new(python_c, env, HARNESS, program, rlimits);
    let run =
        code_sandbox::run(&mut plan, cfg.timeout, STDERR_TAIL_BYTES).map_err(|e| setup_error(e, &python, &plan))?;
    let status = match run.ended {
        Ended::TimedOut => ExecStatus::TimedOut,
        Ended::Exited { wait_status, verdict } => {
            let s = ExitStatus::from_raw(wait_status);
            if verdict && s.code() == Some(0) {
                ExecStatus::Passed
            } else {
                ExecStatus::Failed { exit_code: s.code(), signal: s.signal() }
            }
        }
    };
    Ok(ExecOutcome {
        status,
        seconds: run.seconds,
        stderr_tail: String::from_utf8_lossy(&run.stderr_tail).into_owned(),
        isolation: run.isolation,
    })
}

fn setup_error(e: SetupError, python: &Path, plan: &Plan) -> Error {
    let os = |errno: i32| std::io::Error::from_raw_os_error(errno);
    Error::Other(match e {
        SetupError::Start { step: Step::Exec, errno } => format!(
            "code scoring: cannot start {} as uid {} in the sandbox: {}",
            python.display(),
            plan.uid(),
            os(errno)
        ),
        SetupError::Start { step, errno } | SetupError::Step { step, errno } => {
            let hint = if step == Step::Unshare {
                ". The sandbox needs new PID, mount and network namespaces: run as root (with CAP_SYS_ADMIN, \
                 e.g. a container started with --cap-add SYS_ADMIN) or enable unprivileged user namespaces \
                 (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, and on Ubuntu \
                 kernel.apparmor_restrict_unprivileged_userns=0); code is never run without them"
            } else {
                ""
            };
            format!("code scoring: the sandbox failed {}: {}{hint}", step.describe(), os(errno))
        }
        SetupError::Vanished => "code scoring: the sandbox ended without a report".to_string(),
        SetupError::Local(e) => format!("code scoring: cannot prepare the sandbox: {e}"),
    })
}

/// An absolute interpreter path (the sandbox starts it from /tmp): `PATH` is searched for a bare name,
/// a relative path is made absolute. Symlinks are kept, so a venv's `bin/python` stays a venv.
fn resolve_interpreter(python: &Path) -> Result<PathBuf> {
    if python.components().count() > 1 || python.is_absolute() {
        return std::path::absolute(python).map_err(|e| Error::io(python, e));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(python))
        .find(|p| p.is_absolute() && p.is_file())
        .ok_or_else(|| Error::Other(format!("code scoring: cannot start {}: not found on PATH", python.display())))
}

fn child_env() -> Result<Vec<CString>> {
    let mut env = vec![
        ("HOME", "/tmp".to_string()),
        ("TMPDIR", "/tmp".to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("PYTHONIOENCODING", "utf-8".to_string()),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
        ("PYTHONHASHSEED", "0".to_string()),
        // One BLAS thread: faster start-up on few cores, and no thread pool hitting RLIMIT_NPROC.
        ("OPENBLAS_NUM_THREADS", "1".to_string()),
        ("OMP_NUM_THREADS", "1".to_string()),
        ("MKL_NUM_THREADS", "1".to_string()),
    ];
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
    env.push(("PATH", path));
    for key in ["PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"] {
        if let Ok(v) = std::env::var(key) {
            env.push((key, v));
        }
    }
    env.into_iter()
        .map(|(k, v)| {
            let mut kv = OsStr::new(k).as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| Error::Other(format!("code scoring: environment variable {k} holds a NUL")))
        })
        .collect()
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
