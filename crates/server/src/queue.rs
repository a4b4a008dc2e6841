//! The bounded queue between the HTTP side and the engine's worker thread, the jobs it carries, and the
//! cancellation a departed client triggers.
//!
//! A job's [`Control`] is shared by the request (which cancels it when dropped: a client that went away)
//! and the worker (which hands it the engine's abort flag while the job runs). Both sides take the same
//! lock to set or clear the flag, so a late cancel can never stop the next job.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::Usage;
use crate::error::ApiError;
use crate::request::Work;

/// What the worker tells a request.
#[derive(Debug)]
pub enum Event {
    /// A token of the answer, as soon as it is picked (streamed requests only).
    Token(u32),
    /// The answer: its whole text, why it ended (`stop` / `length`), the token counts, and a multi-agent
    /// run's report.
    Done {
        text: String,
        finish: &'static str,
        usage: Usage,
        report: Option<Value>,
    },
    Failed(ApiError),
}

/// One queued request.
pub struct Job {
    pub work: Work,
    /// Whether to send [`Event::Token`]s.
    pub stream: bool,
    pub events: UnboundedSender<Event>,
    pub control: Arc<Control>,
}

/// Cancellation shared by a job's request and the worker.
#[derive(Default)]
pub struct Control {
    /// Guards the engine flag while the job runs (None while it waits or after it ended).
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    cancelled: bool,
    abort: Option<Arc<AtomicBool>>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client is gone: a waiting job is skipped, a running one stops at the engine's next check.
    pub fn cancel(&self) {
        let mut r = self.lock();
        r.cancelled = true;
        if let Some(flag) = &r.abort {
            flag.store(true, Ordering::SeqCst);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// The worker starts a job that stops by itself when [`Control::is_cancelled`] (a chat batch checks
    /// every step); false when the client already left.
    pub fn start_detached(&self) -> bool {
        !self.lock().cancelled
    }

    /// The worker starts the job with the engine's abort flag; false (and the job is not to run) when the
    /// client already left.
    pub fn start(&self, flag: &Arc<AtomicBool>) -> bool {
        let mut r = self.lock();
        if r.cancelled {
            return false;
        }
        flag.store(false, Ordering::SeqCst);
        r.abort = Some(flag.clone());
        true
    }

    /// The job ended: the flag is cleared under the lock, after any cancel that raced with the end.
    pub fn finish(&self) {
        let mut r = self.lock();
        if let Some(flag) = r.abort.take() {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

/// Cancels its job when dropped: held by the response (the stream's state, or the handler waiting for
/// the answer), which the server drops when the client disconnects.
pub struct CancelOnDrop(pub Arc<Control>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `waiting` requests already wait (the `--max-queue` limit).
    Full { waiting: usize },
    /// The worker is gone; the reason.
    Closed(String),
}

/// Counts the worker keeps, for `GET /health`.
#[derive(Default)]
pub struct Stats {
    pub completed: AtomicU64,
    /// Jobs stopped mid-run because their client left.
    pub aborted: AtomicU64,
    /// Jobs whose client left before they started.
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    /// Requests that were decoded in a batch with others.
    pub batched: AtomicU64,
}

struct State {
    waiting: VecDeque<Job>,
    /// A job is running.
    busy: bool,
    closed: Option<String>,
}

/// Jobs waiting for the worker: at most `capacity` wait (the one running is not counted); an idle worker
/// takes a job even when the capacity is 0.
pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    pub stats: Stats,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Queue {
            state: Mutex::new(State { waiting: VecDeque::new(), busy: false, closed: None }),
            ready: Condvar::new(),
            capacity,
            stats: Stats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `job`, or drops it and says why not.
    pub fn push(&self, job: Job) -> Result<(), Refused> {
        let mut st = self.lock();
        if let Some(why) = &st.closed {
            return Err(Refused::Closed(why.clone()));
        }
        let idle = !st.busy && st.waiting.is_empty();
        if st.waiting.len() >= self.capacity && !idle {
            return Err(Refused::Full { waiting: st.waiting.len() });
        }
        st.waiting.push_back(job);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job (the worker is busy from now until [`Queue::done`]); None once closed.
    pub fn pop(&self) -> Option<Job> {
        let mut st = self.lock();
        loop {
            if st.closed.is_some() {
                return None;
            }
            if let Some(job) = st.waiting.pop_front() {
                st.busy = true;
                return Some(job);
            }
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes up to `max` waiting plain-chat jobs (in queue order) whose KV needs fit together in `room`
    /// slots, to run in the batch of the job just popped; the others keep their places.
    pub fn take_chats(&self, max: usize, mut room: usize) -> Vec<Job> {
        let mut st = self.lock();
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(st.waiting.len());
        while let Some(job) = st.waiting.pop_front() {
            match &job.work {
                Work::Chat { prompt_ids, max_new, .. } if taken.len() < max && prompt_ids.len() + max_new <= room => {
                    room -= prompt_ids.len() + max_new;
                    taken.push(job);
                }
                _ => kept.push_back(job),
            }
        }
        st.waiting = kept;
        taken
    }

    /// The running job ended.
    pub fn done(&self) {
        self.lock().busy = false;
    }

    /// No job is accepted from now on; the waiting ones are handed back to be answered.
    pub fn close(&self, why: &str) -> Vec<Job> {
        let mut st = self.lock();
        st.closed.get_or_insert_with(|| why.to_string());
        self.ready.notify_all();
        st.waiting.drain(..).collect()
    }

    /// (waiting, running, closed reason).
    pub fn snapshot(&self) -> (usize, bool, Option<String>) {
        let st = self.lock();
        (st.waiting.len(), st.busy, st.closed.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::sample::SamplingParams;

    fn job() -> (Job, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let work = Work::Chat { prompt_ids: vec![1], sampling: SamplingParams::greedy(), max_new: 1 };
        (Job { work, stream: false, events: tx, control: Arc::new(Control::default()) }, rx)
    }

    #[test]
    fn capacity_counts_waiting_jobs_and_an_idle_worker_takes_one_at_zero() {
        let q = Queue::new(0);
        assert!(q.push(job().0).is_ok(), "an idle worker takes a job even with no queue");
        assert!(matches!(q.push(job().0), Err(Refused::Full { waiting: 1 })));
        let _running = q.pop().unwrap();
        assert!(matches!(q.push(job().0), Err(Refused::Full { waiting: 0 })), "busy, and no room to wait");
        q.done();
        let q = Queue::new(1);
        assert!(q.push(job().0).is_ok());
        let _running = q.pop().unwrap();
        assert!(q.push(job().0).is_ok());
        assert!(matches!(q.push(job().0), Err(Refused::Full { waiting: 1 })));
        assert_eq!(q.close("stopping").len(), 1);
        assert!(matches!(q.push(job().0), Err(Refused::Closed(_))));
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_cancel_reaches_the_running_job_only() {
        let flag = Arc::new(AtomicBool::new(false));
        let c = Control::default();
        assert!(c.start(&flag));
        c.cancel();
        assert!(flag.load(Ordering::SeqCst), "a running job's cancel raises the engine flag");
        c.finish();
        assert!(!flag.load(Ordering::SeqCst), "the end of the job clears it");
        c.cancel();
        assert!(!flag.load(Ordering::SeqCst), "a cancel after the end touches nothing");
        let late = Control::default();
        late.cancel();
        assert!(!late.start(&flag), "a job whose client left before it started does not run");
    }
}
