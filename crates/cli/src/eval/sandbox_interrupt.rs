//! Ctrl-C / SIGTERM while code is being scored: every live sandbox is killed before the evaluator ends.
//!
//! Each sandbox's top process (see `code_sandbox`) already dies with the evaluator thread that started
//! it (PDEATHSIG) and takes its namespace with it; this covers the case where the evaluator survives the
//! signal for a while (another handler flushing output files): the sandboxes must not keep running.
//! The registry is a fixed array of atomics so the signal handler touches no lock and no allocation.
//! After the kill the signal's default action runs (the evaluator ends as it would have without us).
//!
//! When [`crate::interrupt`]'s signal thread is installed (the CLI) this handler stands aside: that thread
//! runs the registered cleanups (pending output files) and then ends the process, and the sandboxes die
//! with it (PDEATHSIG). Killing them here would let the evaluator thread see an item end early and go on
//! (score it, start the next one) while the cleanups run; ending the process here would race the cleanups.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

/// More slots than sandboxes that run at once (one per scoring thread); when all are taken a sandbox
/// still dies with the evaluator, just not before it.
const SLOTS: usize = 256;
static LIVE: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// Records a sandbox's top pid; returns its slot for [`unregister`].
pub fn register(pid: libc::pid_t) -> Option<usize> {
    LIVE.iter().position(|slot| slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

pub fn unregister(slot: Option<usize>) {
    if let Some(i) = slot {
        LIVE[i].store(0, Ordering::SeqCst);
    }
}

/// Installs the SIGINT/SIGTERM/SIGHUP handling once per process.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let ours = crate::interrupt::others_end_the_process();
            let ours_too = ours.clone();
            // SAFETY: the action only reads atomics and calls kill(2), both async-signal-safe.
            let killed = unsafe {
                signal_hook::low_level::register(signal, move || {
                    if ours.load(Ordering::SeqCst) {
                        kill_live()
                    }
                })
            };
            let ended = signal_hook::flag::register_conditional_default(signal, ours_too);
            if let Err(e) = killed.and(ended) {
                tracing::warn!("cannot install the signal {signal} handler that kills running sandboxes: {e}");
            }
        }
    });
}

fn kill_live() {
    for slot in &LIVE {
        let pid = slot.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill takes plain integers; a registered pid is an unreaped child of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
