//! The process's allocator: the system allocator plus a memory bound for code that runs untrusted
//! programs (chat templates), and an allocation counter for tests.
//!
//! Why at the allocator: minijinja bounds a template's instructions (fuel) and we bound what it writes,
//! but the strings a template builds for itself are not bounded (`{% set ns.s = ns.s ~ ns.s %}` forty
//! times asks for a terabyte within forty instructions). A failed allocation aborts a Rust process, and a C
//! host with it; nothing above the allocator can refuse the request in time. [`run_bounded`] runs a closure
//! on its own thread whose live allocations the allocator tracks: past the bound the thread is stopped
//! inside the allocation (it sleeps for good and its memory, at most the bound, is leaked) and the caller
//! gets [`Bounded::Exceeded`]. Every other thread pays one thread-local read per allocation.
//!
//! The feature `global-alloc` (default on; the C library and the Python module turn it on too) makes
//! [`GuardedAlloc`] the process's global allocator. A Rust program embedding the engine that wants its own
//! allocator turns the feature off; to keep the bound it declares
//! `#[global_allocator] static A: latentmas::alloc_guard::GuardedAlloc = latentmas::alloc_guard::GuardedAlloc;`,
//! and without that a template's render runs unbounded (said once on the log, [`is_global_allocator`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// The system allocator with the bound of [`run_bounded`] and the counter of [`count_allocations`].
pub struct GuardedAlloc;

#[cfg(feature = "global-alloc")]
#[global_allocator]
static GLOBAL: GuardedAlloc = GuardedAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The bound of the current thread (null: none). Const-initialised with no destructor, so reading it
    /// inside the allocator never allocates.
    static BOUND: Cell<*const Bound> = const { Cell::new(std::ptr::null()) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Finished,
    Panicked,
    Exceeded,
}

struct Bound {
    limit: usize,
    live: AtomicUsize,
    state: Mutex<State>,
    changed: Condvar,
}

impl Bound {
    fn set(&self, s: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
        self.changed.notify_all();
    }
}

/// How a [`run_bounded`] closure ended.
#[derive(Debug)]
pub enum Bounded<T> {
    Done(T),
    /// Its live allocations passed the bound; it was stopped there.
    Exceeded,
    /// It panicked (a bug in the code it ran).
    Panicked,
    /// No thread could be started for it.
    NoThread(std::io::Error),
}

/// Runs `f` on a thread of its own whose live heap allocations may not pass `limit` bytes.
pub fn run_bounded<T: Send + 'static>(limit: usize, f: impl FnOnce() -> T + Send + 'static) -> Bounded<T> {
    let bound = Arc::new(Bound {
        limit,
        live: AtomicUsize::new(0),
        state: Mutex::new(State::Running),
        changed: Condvar::new(),
    });
    let result: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let (b, r) = (bound.clone(), result.clone());
    let spawned = std::thread::Builder::new().name("bounded".into()).stack_size(16 << 20).spawn(move || {
        BOUND.with(|c| c.set(Arc::as_ptr(&b)));
        if !is_global_allocator() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "latentmas: GuardedAlloc is not this process's global allocator: a chat template's memory is not bounded"
                )
            });
        }
        let out = catch_unwind(AssertUnwindSafe(f));
        BOUND.with(|c| c.set(std::ptr::null()));
        match out {
            Ok(v) => {
                *r.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                b.set(State::Finished);
            }
            Err(_) => b.set(State::Panicked),
        }
    });
    if let Err(e) = spawned {
        return Bounded::NoThread(e);
    }
    let mut state = bound.state.lock().unwrap_or_else(|e| e.into_inner());
    while *state == State::Running {
        state = bound.changed.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    match *state {
        State::Finished => match result.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(v) => Bounded::Done(v),
            None => Bounded::Panicked,
        },
        State::Exceeded => Bounded::Exceeded,
        _ => Bounded::Panicked,
    }
}

/// Whether [`GuardedAlloc`] serves this process's allocations (feature `global-alloc`, or the program's
/// own `#[global_allocator]`): an allocation made here reaches its counter or not.
pub fn is_global_allocator() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        // A bound nothing can pass, on this thread for one allocation: GuardedAlloc accounts it, another
        // allocator does not.
        let probe = Bound {
            limit: usize::MAX,
            live: AtomicUsize::new(0),
            state: Mutex::new(State::Running),
            changed: Condvar::new(),
        };
        let outer = current_bound();
        BOUND.with(|c| c.set(&probe));
        let b = std::hint::black_box(Box::new(0u64));
        let seen = probe.live.load(Ordering::SeqCst) > 0;
        drop(b);
        BOUND.with(|c| c.set(outer));
        seen
    })
}

/// Allocations made (on any thread) while `f` runs. Panics when [`GuardedAlloc`] is not the global
/// allocator (the count would be zero whatever `f` does).
pub fn count_allocations(f: impl FnOnce()) -> usize {
    assert!(
        is_global_allocator(),
        "count_allocations needs GuardedAlloc as the global allocator (feature global-alloc)"
    );
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

fn current_bound() -> *const Bound {
    BOUND.try_with(|c| c.get()).unwrap_or(std::ptr::null())
}

/// Accounts `grow` more live bytes on this thread's bound; past it, stops the thread for good.
#[inline]
fn admit(grow: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
    let b = current_bound();
    // A panicking thread is not stopped: its hook may hold the process's backtrace and stderr locks, and a
    // thread stopped holding them would block every later panic.
    if b.is_null() || std::thread::panicking() {
        return;
    }
    // SAFETY: a bound is set only by run_bounded's thread, which holds an Arc of it for as long as it runs
    // (and, once stopped here, forever).
    let bound = unsafe { &*b };
    let live = bound.live.fetch_add(grow, Ordering::Relaxed).saturating_add(grow);
    if live > bound.limit {
        // Nothing below may allocate through the bound again: clear it first. Locking, notifying and
        // sleeping allocate nothing.
        BOUND.with(|c| c.set(std::ptr::null()));
        bound.set(State::Exceeded);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[inline]
fn release(shrink: usize) {
    let b = current_bound();
    if !b.is_null() {
        // SAFETY: as in `admit`.
        let bound = unsafe { &*b };
        let _ = bound.live.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(shrink)));
    }
}

// SAFETY: every call is forwarded to the system allocator with its arguments unchanged; the bookkeeping
// around it never allocates and never unwinds.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        release(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            admit(new_size - layout.size());
        } else {
            release(layout.size() - new_size);
            if COUNTING.load(Ordering::Relaxed) {
                ALLOCS.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_serves_this_process_with_the_default_features() {
        assert!(is_global_allocator());
    }

    #[test]
    fn a_closure_within_its_bound_returns_its_value() {
        match run_bounded(1 << 20, || vec![1u8; 1000].len()) {
            Bounded::Done(n) => assert_eq!(n, 1000),
            _ => panic!("should finish"),
        }
    }

    #[test]
    fn doubling_a_string_is_stopped_at_the_bound() {
        let r = run_bounded(1 << 24, || {
            let mut s = String::from("x");
            for _ in 0..60 {
                s = s.repeat(2);
            }
            s.len()
        });
        assert!(matches!(r, Bounded::Exceeded), "{r:?}");
    }

    #[test]
    fn a_panic_is_reported() {
        assert!(matches!(run_bounded(1 << 20, || panic!("bug")), Bounded::<()>::Panicked));
    }
}
