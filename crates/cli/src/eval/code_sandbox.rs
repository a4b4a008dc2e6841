//! The process tree that runs one untrusted program, and the isolation around it (Linux only).
//!
//! ```text
//! evaluator ── fork ──> C: own process group, dies with the evaluator (PDEATHSIG);
//!                       becomes the unprivileged user (nobody when we are root), then unshares a user
//!                       namespace mapping only that uid/gid plus mount, PID, network, IPC and UTS
//!                       namespaces (as root, where user namespaces are refused: the last five alone,
//!                       and H drops to nobody);
//!            ── fork ──> G: PID 1 of the new PID namespace, dies with C; makes every inherited mount
//!                       private and (kernel ≥ 5.12) read-only, mounts a fresh tmpfs on /tmp and
//!                       /dev/shm and a fresh read-only /proc, writes harness.py + solution.py into /tmp, listens
//!                       on the verdict socket, then reaps every process of the namespace until H ends;
//!            ── fork ──> H: no_new_privs, rlimits, exec python (no capability survives the exec).
//! ```
//!
//! Why this shape: when the PID namespace's init (G) exits, the kernel kills every process left in the
//! namespace, so nothing the program starts (double fork + `setsid` included) outlives its item; the
//! evaluator's timeout kills C, which takes G (and so the namespace) with it. Inside, the program
//! cannot see or signal anything outside, and signals to its own init are dropped by the kernel.
//!
//! The verdict (see `code_harness.py`): G counts a pass only when, after H exited 0, its listening
//! socket holds a connection whose peer credentials name H itself. G reports on a pipe that H
//! never holds. The first message (`READY`) says which isolation is in force, the last (`REPORT`)
//! carries H's wait status and the verdict; a setup failure says which step failed and its errno.
//!
//! Everything after `fork` runs in a copy of a multi-threaded process, so it uses only raw system
//! calls on data prepared beforehand: no allocation, no locks, no panics.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::sandbox_interrupt;

/// uid/gid the program runs as when we are root.
pub const NOBODY: u32 = 65534;
/// The abstract unix socket name (private to the sandbox's network namespace) the harness reports on.
const VERDICT_NAME: &[u8] = b"latentmas-verdict";
/// Size of the private /tmp (a tmpfs, so it counts against memory).
const TMP_OPTIONS: &[u8] = b"size=268435456,nr_inodes=65536,mode=1777\0";
const SHM_OPTIONS: &[u8] = b"size=67108864,nr_inodes=4096,mode=1777\0";

// Status messages from C/G to the evaluator: four u32, written in one `write` (atomic on a pipe).
const MSG_READY: u32 = 1;
const MSG_SETUP_FAILED: u32 = 2;
const MSG_START_FAILED: u32 = 3;
const MSG_REPORT: u32 = 4;

// Isolation bits of MSG_READY.
const ISO_USER_NS: u32 = 1;
const ISO_READ_ONLY: u32 = 2;
const ISO_OWN_PROC: u32 = 4;
const ISO_PRIVATE_SHM: u32 = 8;

/// The isolation one run had, as the sandbox's init reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    /// The uid the program ran as (as the host sees it).
    pub uid: u32,
    /// The namespaces belong to a new user namespace (we were not root, or root could not create them).
    pub user_namespace: bool,
    /// Every mount but the private ones was read-only for the program.
    pub read_only_root: bool,
    /// /proc showed only the sandbox's own processes.
    pub own_proc: bool,
    /// /dev/shm was a private tmpfs.
    pub private_shm: bool,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.uid == NOBODY { "nobody".to_string() } else { format!("uid {}", self.uid) };
        write!(f, "runs as {who} in new PID, mount, network (no interfaces up), IPC and UTS namespaces")?;
        if self.user_namespace {
            write!(f, " (inside a user namespace)")?;
        }
        write!(f, "; private /tmp")?;
        if self.private_shm {
            write!(f, " and /dev/shm")?;
        }
        if self.read_only_root {
            write!(f, ", the rest of the filesystem read-only")?;
        } else {
            write!(f, ", the rest of the filesystem NOT read-only (this kernel lacks mount_setattr)")?;
        }
        if self.own_proc {
            write!(f, ", own /proc")?;
        }
        write!(f, "; the whole namespace is killed when the item ends")
    }
}

/// How the run ended, before it is turned into a score.
pub enum Ended {
    /// H exited (wait status); `verdict` = the harness reported that `exec` returned.
    Exited {
        wait_status: i32,
        verdict: bool,
    },
    TimedOut,
}

/// A failure to set the sandbox up or to start the interpreter (not the program's fault).
pub enum SetupError {
    /// The step that failed, and its errno.
    Step { step: Step, errno: i32 },
    /// execve or a step just before it failed in H.
    Start { step: Step, errno: i32 },
    /// C or G ended without a report.
    Vanished,
    /// Preparing in the evaluator failed (pipe, memfd, fork).
    Local(std::io::Error),
}

/// The setup steps, in order; their numbers travel in status messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ParentDeath = 1,
    Descriptors,
    DropToNobody,
    Unshare,
    SetgroupsDeny,
    UidMap,
    GidMap,
    ForkInit,
    PrivateMounts,
    PrivateTmp,
    WriteFiles,
    Chdir,
    VerdictSocket,
    ErrorPipe,
    ForkProgram,
    NoNewPrivs,
    Rlimits,
    Exec,
    Unknown,
}

impl Step {
    fn from_u32(n: u32) -> Step {
        use Step::*;
        [
            ParentDeath,
            Descriptors,
            DropToNobody,
            Unshare,
            SetgroupsDeny,
            UidMap,
            GidMap,
            ForkInit,
            PrivateMounts,
            PrivateTmp,
            WriteFiles,
            Chdir,
            VerdictSocket,
            ErrorPipe,
            ForkProgram,
            NoNewPrivs,
            Rlimits,
            Exec,
        ]
        .into_iter()
        .find(|s| *s as u32 == n)
        .unwrap_or(Unknown)
    }

    /// A step that can fail because the user namespace is refused or powerless.
    fn needs_user_ns(self) -> bool {
        matches!(
            self,
            Step::DropToNobody
                | Step::Unshare
                | Step::SetgroupsDeny
                | Step::UidMap
                | Step::GidMap
                | Step::PrivateMounts
                | Step::PrivateTmp
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Step::ParentDeath => "tying the sandbox's life to the evaluator (prctl PDEATHSIG)",
            Step::Descriptors => "setting up stdin/stdout/stderr",
            Step::DropToNobody => "switching to uid 65534 (nobody)",
            Step::Unshare => "creating the PID, mount and network namespaces (unshare)",
            Step::SetgroupsDeny => "writing /proc/self/setgroups",
            Step::UidMap => "writing /proc/self/uid_map",
            Step::GidMap => "writing /proc/self/gid_map",
            Step::ForkInit => "starting the namespace's init (fork)",
            Step::PrivateMounts => "making the mounts private",
            Step::PrivateTmp => "mounting a private /tmp",
            Step::WriteFiles => "writing the program into the private /tmp",
            Step::Chdir => "entering /tmp",
            Step::VerdictSocket => "creating the verdict socket",
            Step::ErrorPipe => "creating a pipe",
            Step::ForkProgram => "starting the program (fork)",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Rlimits => "setting resource limits",
            Step::Exec => "executing the interpreter",
            Step::Unknown => "an unknown step",
        }
    }
}

/// rlimits for H, already capped to our own hard limits.
#[derive(Clone, Copy)]
pub struct Rlimits {
    pub memory: u64,
    pub processes: u64,
    pub file_bytes: u64,
    pub cpu_seconds: u64,
}

/// Everything the children need, prepared before `fork`.
pub struct Plan {
    python: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    harness: Vec<u8>,
    solution: Vec<u8>,
    rlimits: Rlimits,
    am_root: bool,
    /// Own the namespaces through a new user namespace (always when not root; as root too, so that
    /// RLIMIT_NPROC counts per sandbox, unless the kernel refuses it).
    user_ns: bool,
    uid: u32,
    gid: u32,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

impl Plan {
    /// `python` must be an absolute path (the children chdir to /tmp before exec).
    pub fn new(python: CString, env: Vec<CString>, harness: &str, solution: &str, rlimits: Rlimits) -> Plan {
        // SAFETY: these getters have no preconditions and cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let am_root = euid == 0;
        let (uid, gid) = if am_root { (NOBODY, NOBODY) } else { (euid, egid) };
        let argv = vec![python.clone(), c"/tmp/harness.py".to_owned(), c"/tmp/solution.py".to_owned()];
        Plan {
            python,
            argv,
            env,
            harness: harness.as_bytes().to_vec(),
            solution: solution.as_bytes().to_vec(),
            rlimits,
            am_root,
            user_ns: true,
            uid,
            gid,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }

    /// The uid the program will run as.
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

/// What [`run`] saw.
pub struct Run {
    pub ended: Ended,
    pub seconds: f64,
    pub isolation: Option<Isolation>,
    /// The child's stderr (its last `tail_bytes`).
    pub stderr_tail: Vec<u8>,
}

/// Set once root has found that user namespaces do not work here: later runs go straight to the
/// namespaces root creates itself (the program then drops to nobody in H).
static ROOT_WITHOUT_USER_NS: AtomicBool = AtomicBool::new(false);
/// Set (to anything) to make root skip the user namespace from the start: for kernels whose user
/// namespaces misbehave, and to test that path.
pub const ROOT_WITHOUT_USER_NS_ENV: &str = "LATENTMAS_SANDBOX_NO_USERNS";

/// Runs the plan with a wall-clock `timeout` (namespace set-up and interpreter start-up included).
/// As root, a sandbox whose user namespace the kernel refuses (disabled, or without the capabilities
/// to mount, as under some LSM policies) is retried once with root-owned namespaces.
pub fn run(plan: &mut Plan, timeout: Duration, tail_bytes: u64) -> Result<Run, SetupError> {
    sandbox_interrupt::install();
    if plan.am_root && std::env::var_os(ROOT_WITHOUT_USER_NS_ENV).is_some() {
        ROOT_WITHOUT_USER_NS.store(true, Ordering::Relaxed);
    }
    plan.user_ns = !plan.am_root || !ROOT_WITHOUT_USER_NS.load(Ordering::Relaxed);
    match run_once(plan, timeout, tail_bytes) {
        Err(SetupError::Step { step, .. }) if plan.am_root && plan.user_ns && step.needs_user_ns() => {
            ROOT_WITHOUT_USER_NS.store(true, Ordering::Relaxed);
            plan.user_ns = false;
            run_once(plan, timeout, tail_bytes)
        }
        other => other,
    }
}

fn run_once(plan: &Plan, timeout: Duration, tail_bytes: u64) -> Result<Run, SetupError> {
    let devnull = open_fd(c"/dev/null", libc::O_RDWR | libc::O_CLOEXEC).map_err(SetupError::Local)?;
    // SAFETY: a valid NUL-terminated name; the flags are known.
    let stderr = check_fd(unsafe { libc::memfd_create(c"latentmas-stderr".as_ptr(), libc::MFD_CLOEXEC) })
        .map_err(SetupError::Local)?;
    let (status_r, status_w) = pipe().map_err(SetupError::Local)?;
    let argv = null_terminated(&plan.argv);
    let envp = null_terminated(&plan.env);
    let fds = Fds { devnull: devnull.as_raw_fd(), stderr: stderr.as_raw_fd(), status: status_w.as_raw_fd() };
    // SAFETY: getpid cannot fail.
    let evaluator = unsafe { libc::getpid() };

    let start = Instant::now();
    // SAFETY: the child runs only `child_c`, which makes raw system calls on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SetupError::Local(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; never returns.
        unsafe { child_c(plan, &argv, &envp, fds, evaluator) }
    }
    drop(status_w);
    let slot = sandbox_interrupt::register(pid);
    let outcome = wait_for_report(status_r.as_raw_fd(), start, timeout);
    // Whatever happened, C dies now, and with it G and the namespace.
    // SAFETY: kill takes plain integers; `pid` is our unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Out of the registry before the reap, so the signal handler never kills a reused pid.
    sandbox_interrupt::unregister(slot);
    // SAFETY: waitpid on our own child with a valid status pointer.
    unsafe {
        let mut st = 0;
        while libc::waitpid(pid, &mut st, 0) < 0 && errno() == libc::EINTR {}
    }
    let seconds = start.elapsed().as_secs_f64();
    let (ended, isolation) = outcome?;
    Ok(Run { ended, seconds, isolation, stderr_tail: read_tail(stderr.as_raw_fd(), tail_bytes) })
}

fn wait_for_report(fd: RawFd, start: Instant, timeout: Duration) -> Result<(Ended, Option<Isolation>), SetupError> {
    let mut isolation = None;
    loop {
        let Some(left) = timeout.checked_sub(start.elapsed()) else {
            return Ok((Ended::TimedOut, isolation));
        };
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(SetupError::Local(std::io::Error::last_os_error()));
        }
        if n == 0 {
            continue;
        }
        let Some([kind, a, b, _]) = read_message(fd) else {
            return Err(SetupError::Vanished);
        };
        match kind {
            MSG_READY => {
                isolation = Some(Isolation {
                    uid: a,
                    user_namespace: b & ISO_USER_NS != 0,
                    read_only_root: b & ISO_READ_ONLY != 0,
                    own_proc: b & ISO_OWN_PROC != 0,
                    private_shm: b & ISO_PRIVATE_SHM != 0,
                })
            }
            MSG_SETUP_FAILED => return Err(SetupError::Step { step: Step::from_u32(a), errno: b as i32 }),
            MSG_START_FAILED => return Err(SetupError::Start { step: Step::from_u32(a), errno: b as i32 }),
            MSG_REPORT => return Ok((Ended::Exited { wait_status: a as i32, verdict: b == 1 }, isolation)),
            _ => return Err(SetupError::Vanished),
        }
    }
}

/// One 16-byte message, or `None` at end of file.
fn read_message(fd: RawFd) -> Option<[u32; 4]> {
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most the remaining bytes of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return None;
        }
        got += n as usize;
    }
    let word = |i: usize| u32::from_ne_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]);
    Some([word(0), word(1), word(2), word(3)])
}

fn read_tail(fd: RawFd, tail_bytes: u64) -> Vec<u8> {
    // SAFETY: lseek/read on our own memfd into a buffer of the stated size.
    unsafe {
        let len = libc::lseek(fd, 0, libc::SEEK_END);
        if len <= 0 {
            return Vec::new();
        }
        let from = (len as u64).saturating_sub(tail_bytes);
        let mut buf = vec![0u8; (len as u64 - from) as usize];
        let n = libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), from as libc::off_t);
        buf.truncate(n.max(0) as usize);
        buf
    }
}

fn open_fd(path: &std::ffi::CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: a valid NUL-terminated path.
    check_fd(unsafe { libc::open(path.as_ptr(), flags) })
}

fn check_fd(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

// ---- after fork: raw system calls only --------------------------------------------------------------

#[derive(Clone, Copy)]
struct Fds {
    devnull: RawFd,
    stderr: RawFd,
    status: RawFd,
}

/// In C and G the status pipe is fd 3; the program's stdin/stdout are /dev/null and stderr the memfd.
const STATUS_FD: RawFd = 3;

unsafe fn send(kind: u32, a: u32, b: u32, c: u32) {
    let mut buf = [0u8; 16];
    for (i, w) in [kind, a, b, c].into_iter().enumerate() {
        buf[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    libc::write(STATUS_FD, buf.as_ptr().cast(), buf.len());
}

unsafe fn fail(step: Step) -> ! {
    send(MSG_SETUP_FAILED, step as u32, raw_errno() as u32, 0);
    libc::_exit(125)
}

unsafe fn raw_errno() -> i32 {
    *libc::__errno_location()
}

unsafe fn die_with_parent() -> bool {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == 0
}

/// setgroups([]), setresgid, setresuid: all of real, effective and saved, so root cannot be regained.
unsafe fn drop_to(uid: u32, gid: u32) -> bool {
    libc::setgroups(0, std::ptr::null()) == 0
        && libc::setresgid(gid, gid, gid) == 0
        && libc::setresuid(uid, uid, uid) == 0
}

unsafe fn write_file(path: &std::ffi::CStr, data: &[u8], create: bool) -> bool {
    let flags = if create { libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL } else { libc::O_WRONLY };
    let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint);
    if fd < 0 {
        return false;
    }
    let mut done = 0;
    while done < data.len() {
        let n = libc::write(fd, data[done..].as_ptr().cast(), data.len() - done);
        if n < 0 && raw_errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            libc::close(fd);
            return false;
        }
        done += n as usize;
    }
    libc::close(fd) == 0
}

unsafe fn close_from(first: RawFd) {
    if libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0) != 0 {
        for fd in first..4096 {
            libc::close(fd);
        }
    }
}

unsafe fn child_c(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: Fds,
    evaluator: libc::pid_t,
) -> ! {
    // Descriptors first, so that failures can be reported on fd 3. Copies above 10 first: the
    // originals may sit on 0..3 themselves.
    let high = [fds.devnull, fds.stderr, fds.status].map(|fd| libc::fcntl(fd, libc::F_DUPFD, 10));
    let [null, err, status] = high;
    if null < 0 || err < 0 || status < 0 || libc::dup2(status, STATUS_FD) < 0 {
        libc::_exit(125);
    }
    if libc::dup2(null, 0) < 0 || libc::dup2(null, 1) < 0 || libc::dup2(err, 2) < 0 {
        fail(Step::Descriptors);
    }
    close_from(STATUS_FD + 1);
    if !die_with_parent() {
        fail(Step::ParentDeath);
    }
    if libc::getppid() != evaluator {
        libc::_exit(125); // the evaluator is already gone
    }
    // Out of the evaluator's process group: a terminal's Ctrl-C goes to the evaluator only, whose
    // handler then kills the whole sandbox.
    libc::setpgid(0, 0);

    let namespaces =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    let user_ns = plan.user_ns;
    if user_ns {
        // Become the unprivileged user first, then own the namespaces through a user namespace that
        // maps only that user: the program gets no capability anywhere, and its process count
        // (RLIMIT_NPROC) is its own, not shared with concurrent sandboxes.
        if plan.am_root {
            if !drop_to(plan.uid, plan.gid) {
                fail(Step::DropToNobody);
            }
            // A uid change clears PDEATHSIG and dumpability (/proc/self/uid_map would be root's).
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
            if !die_with_parent() {
                fail(Step::ParentDeath);
            }
            if libc::getppid() != evaluator {
                libc::_exit(125);
            }
        }
        if libc::unshare(libc::CLONE_NEWUSER | namespaces) != 0 {
            fail(Step::Unshare);
        }
        if !write_file(c"/proc/self/setgroups", b"deny", false) {
            fail(Step::SetgroupsDeny);
        }
        if !write_file(c"/proc/self/uid_map", &plan.uid_map, false) {
            fail(Step::UidMap);
        }
        if !write_file(c"/proc/self/gid_map", &plan.gid_map, false) {
            fail(Step::GidMap);
        }
    } else if libc::unshare(namespaces) != 0 {
        fail(Step::Unshare);
    }
    let init = libc::fork();
    if init < 0 {
        fail(Step::ForkInit);
    }
    if init == 0 {
        child_g(plan, argv, envp, user_ns);
    }
    let mut st = 0;
    while libc::waitpid(init, &mut st, 0) < 0 && raw_errno() == libc::EINTR {}
    libc::_exit(0)
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

unsafe fn mount(
    source: &std::ffi::CStr,
    target: &std::ffi::CStr,
    fstype: &std::ffi::CStr,
    flags: libc::c_ulong,
    data: &[u8],
) -> bool {
    libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) == 0
}

unsafe fn child_g(plan: &Plan, argv: &[*const libc::c_char], envp: &[*const libc::c_char], user_ns: bool) -> ! {
    if !die_with_parent() {
        fail(Step::ParentDeath);
    }
    // The program may share our uid (in a user namespace): it must not be able to ptrace its init.
    libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    // Nothing we mount may propagate back to the host.
    if libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null())
        != 0
    {
        fail(Step::PrivateMounts);
    }
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let read_only = libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        c"/".as_ptr(),
        AT_RECURSIVE,
        &attr as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    ) == 0;
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
    if !mount(c"tmpfs", c"/tmp", c"tmpfs", nosuid, TMP_OPTIONS) {
        fail(Step::PrivateTmp);
    }
    let shm = mount(c"tmpfs", c"/dev/shm", c"tmpfs", nosuid, SHM_OPTIONS);
    // Read-only: /proc/self/mem must not be writable (the program could patch the harness's memory).
    let proc_ok = mount(c"proc", c"/proc", c"proc", nosuid | libc::MS_NOEXEC | libc::MS_RDONLY, b"\0");
    if !write_file(c"/tmp/harness.py", &plan.harness, true) || !write_file(c"/tmp/solution.py", &plan.solution, true) {
        fail(Step::WriteFiles);
    }
    if libc::chdir(c"/tmp".as_ptr()) != 0 {
        fail(Step::Chdir);
    }
    // Non-blocking: after the program ends, G takes only the connections already queued.
    let sock = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0);
    if sock < 0 {
        fail(Step::VerdictSocket);
    }
    let mut addr: libc::sockaddr_un = std::mem::zeroed();
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().skip(1).zip(VERDICT_NAME) {
        *dst = *src as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + VERDICT_NAME.len()) as libc::socklen_t;
    if libc::bind(sock, &addr as *const libc::sockaddr_un as *const libc::sockaddr, len) != 0
        || libc::listen(sock, 16) != 0
    {
        fail(Step::VerdictSocket);
    }
    let mut bits = 0;
    if user_ns {
        bits |= ISO_USER_NS;
    }
    if read_only {
        bits |= ISO_READ_ONLY;
    }
    if proc_ok {
        bits |= ISO_OWN_PROC;
    }
    if shm {
        bits |= ISO_PRIVATE_SHM;
    }
    send(MSG_READY, plan.uid, bits, 0);

    let mut err = [0; 2];
    if libc::pipe2(err.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
        fail(Step::ErrorPipe);
    }
    let program = libc::fork();
    if program < 0 {
        fail(Step::ForkProgram);
    }
    if program == 0 {
        libc::close(STATUS_FD);
        libc::close(sock);
        libc::close(err[0]);
        child_h(plan, argv, envp, user_ns, err[1]);
    }
    libc::close(err[1]);

    // As init, reap everything (orphans are re-parented to us) until the program itself ends.
    let mut status = 0;
    loop {
        let mut st = 0;
        let r = libc::waitpid(-1, &mut st, 0);
        if r == program {
            status = st;
            break;
        }
        if r < 0 && raw_errno() != libc::EINTR {
            break;
        }
    }
    let mut start_error = [0u8; 8];
    if libc::read(err[0], start_error.as_mut_ptr().cast(), 8) == 8 {
        let step = u32::from_ne_bytes([start_error[0], start_error[1], start_error[2], start_error[3]]);
        let errno = u32::from_ne_bytes([start_error[4], start_error[5], start_error[6], start_error[7]]);
        send(MSG_START_FAILED, step, errno, 0);
        libc::_exit(0);
    }
    // Pass iff a queued connection came from the program's own process.
    let mut verdict = 0;
    loop {
        let conn =
            libc::accept4(sock, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        if conn < 0 {
            break;
        }
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        let got = libc::getsockopt(
            conn,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        );
        if got == 0 && cred.pid == program {
            verdict = 1;
        }
        libc::close(conn);
    }
    send(MSG_REPORT, status as u32, verdict, 0);
    // Our exit kills whatever is left in the namespace.
    libc::_exit(0)
}

/// Tells G why H could not start the program, then ends H.
unsafe fn start_failed(err: RawFd, step: Step) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    buf[4..].copy_from_slice(&(raw_errno() as u32).to_ne_bytes());
    libc::write(err, buf.as_ptr().cast(), 8);
    libc::_exit(127)
}

unsafe fn child_h(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    user_ns: bool,
    err: RawFd,
) -> ! {
    if plan.am_root && !user_ns && !drop_to(plan.uid, plan.gid) {
        start_failed(err, Step::DropToNobody);
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        start_failed(err, Step::NoNewPrivs);
    }
    die_with_parent();
    let limits = plan.rlimits;
    for (resource, value) in [
        (libc::RLIMIT_AS, limits.memory),
        (libc::RLIMIT_NPROC, limits.processes),
        (libc::RLIMIT_FSIZE, limits.file_bytes),
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_CPU, limits.cpu_seconds),
    ] {
        let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
        if libc::setrlimit(resource, &lim) != 0 {
            start_failed(err, Step::Rlimits);
        }
    }
    libc::execve(plan.python.as_ptr(), argv.as_ptr(), envp.as_ptr());
    start_failed(err, Step::Exec)
}
