//! What happens when the process is told to stop (SIGINT, SIGTERM, SIGHUP): registered cleanups run, then
//! the process dies of the signal as it would have without us (same exit status for the shell).
//!
//! Public operations:
//! - [`install`]: start the one thread that waits for those signals (the CLI calls it first thing;
//!   idempotent). Without it signals keep their default action and only `Drop` cleans up.
//! - [`on_interrupt`]: register a cleanup; it runs once if a signal arrives while the returned [`Hook`]
//!   lives, and is unregistered when the hook is dropped.
//! - [`TempPath`]: a file that must not outlive its writer: removed on drop unless
//!   [`TempPath::persist`]ed, and removed on a signal.
//!
//! Cleanups run on the signal thread, not inside a signal handler, so they may lock, allocate and call
//! any function; they must be quick and must not wait for the thread that was interrupted.
//!
//! Other handlers of the same signals (the code sandbox's, which kills live sandboxes) act only while
//! [`install`] has not run: see [`others_end_the_process`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

type Cleanup = Box<dyn Fn() + Send + 'static>;

fn hooks() -> &'static Mutex<BTreeMap<u64, Cleanup>> {
    static HOOKS: OnceLock<Mutex<BTreeMap<u64, Cleanup>>> = OnceLock::new();
    HOOKS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The signals that mean "stop now".
const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// True while no signal thread is installed: a handler that must not leave the signal's default action
/// undone (registering any handler replaces it) runs the default itself while this holds. Once
/// [`install`] ran it is false, and such a handler does nothing, so that the process neither ends nor
/// changes course before the signal thread has run the cleanups (the thread ends the process afterwards).
/// Read at signal time, so the order in which the handlers were installed does not matter.
pub(crate) fn others_end_the_process() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(true))).clone()
}

/// Starts the signal thread once. Errors only when the signal handlers cannot be registered.
pub fn install() -> std::io::Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        // Before our handler exists: a signal in between still gets its default action from the others.
        let others = others_end_the_process();
        let mut signals = signal_hook::iterator::Signals::new(SIGNALS).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("latentmas-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    run_cleanups();
                    // Die of the signal itself, so callers see the usual status (130 for SIGINT in a shell).
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                    std::process::exit(128 + sig);
                }
            })
            .map(|_| others.store(false, Ordering::SeqCst))
            .map_err(|e| e.to_string())
    });
    r.clone().map_err(std::io::Error::other)
}

/// Runs every registered cleanup (once each: they are taken out of the registry).
fn run_cleanups() {
    let taken = std::mem::take(&mut *hooks().lock().unwrap_or_else(|p| p.into_inner()));
    for (_, f) in taken {
        f();
    }
}

/// A registered cleanup; dropping it unregisters the cleanup without running it.
#[must_use = "the cleanup is unregistered when the hook is dropped"]
pub struct Hook(u64);

impl Drop for Hook {
    fn drop(&mut self) {
        hooks().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// Registers `f` to run if the process is interrupted while the returned hook lives.
pub fn on_interrupt(f: impl Fn() + Send + 'static) -> Hook {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    hooks().lock().unwrap_or_else(|p| p.into_inner()).insert(id, Box::new(f));
    Hook(id)
}

/// A temporary file path owned by its writer: removed on drop or interrupt unless persisted.
pub struct TempPath {
    path: PathBuf,
    hook: Option<Hook>,
}

impl TempPath {
    /// Takes charge of `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        let p = path.clone();
        let hook = on_interrupt(move || {
            let _ = std::fs::remove_file(&p);
        });
        TempPath { path, hook: Some(hook) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed into place (or is otherwise kept): stop cleaning it up.
    pub fn persist(mut self) {
        self.hook.take();
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.hook.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Held by every unit test that registers a cleanup (a temp file, a hook): the test above runs all of
    /// them, and would remove another test's temp file under its feet.
    pub(crate) static CLEANUPS: Mutex<()> = Mutex::new(());
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    // One test: `run_cleanups` takes every registered cleanup, so parallel tests would see each other's; the
    // other unit tests that register temp files hold [`CLEANUPS`] too.
    #[test]
    fn temp_paths_and_cleanups() {
        let _only_registrant = CLEANUPS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("latentmas-interrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        for p in [&a, &b, &c] {
            std::fs::write(p, "x").expect("write");
        }
        drop(TempPath::new(a.clone()));
        TempPath::new(b.clone()).persist();
        assert!(!a.exists() && b.exists(), "dropped temp removed, persisted kept");

        let n = Arc::new(AtomicUsize::new(0));
        let counter = |k| {
            let n = n.clone();
            move || {
                n.fetch_add(k, Ordering::SeqCst);
            }
        };
        let kept = on_interrupt(counter(1));
        drop(on_interrupt(counter(100)));
        let pending = TempPath::new(c.clone());
        run_cleanups();
        run_cleanups();
        assert_eq!(n.load(Ordering::SeqCst), 1, "a live hook runs once, a dropped one never");
        assert!(!c.exists(), "an interrupt removes a pending temp file");
        drop((kept, pending));
        std::fs::remove_dir_all(&dir).ok();
    }
}
