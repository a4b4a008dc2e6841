//! Streams: each one a worker thread that runs its operations strictly in order. Work runs LAZILY, only
//! once something needs it (a synchronisation of the stream, its context or an event, a stream query, a
//! later operation of another stream that must wait for it, the stream's destruction). That is one of the
//! schedules a GPU may pick, the one that exposes every missing synchronisation: nothing the host did not
//! wait for has happened yet. Ordering between streams is explicit: `Op::Wait` (added by the driver for the
//! legacy stream's implicit synchronisation and by `cuStreamWaitEvent`).
//!
//! A failed operation (a kernel the emulator stopped, an access outside live device memory) sets the
//! context's sticky error, as a GPU fault does: later work is skipped and every later call reports it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Instant;

use crate::abi::*;
use crate::{blas, fault, kernel, memory};

/// Host memory an HtoD copy reads: staged at the call (pageable source) or read when the copy runs.
#[derive(Clone)]
pub enum HostSrc {
    Staged(Arc<Vec<u8>>),
    PageLocked(usize),
}

/// One operation of a stream or a graph.
#[derive(Clone)]
pub enum Op {
    Kernel(Arc<kernel::KernelCall>),
    HtoD {
        dst: usize,
        src: HostSrc,
        len: usize,
    },
    DtoH {
        dst: usize,
        src: usize,
        len: usize,
    },
    DtoD {
        dst: usize,
        src: usize,
        len: usize,
    },
    Memset {
        dst: usize,
        value: u32,
        elem: usize,
        count: usize,
    },
    Gemm(Arc<blas::GemmCall>),
    /// A graph's nodes, in capture order.
    Graph(Arc<Vec<Op>>),
    /// Waits until `stream` has run its first `upto` operations.
    Wait {
        stream: Arc<Stream>,
        upto: u64,
    },
    /// An event's timestamp.
    Record(Arc<Mutex<Option<Instant>>>),
}

fn device_range(what: &str, addr: usize, len: usize) -> Result<(), (CuResult, String)> {
    memory::check(addr, len)
        .map(|_| ())
        .map_err(|b| (CUDA_ERROR_ILLEGAL_ADDRESS, format!("{what}: device range [{addr:#x}, +{len}) is {b}")))
}

impl Op {
    /// Runs the operation (on a stream worker).
    pub fn run(&self) -> Result<(), (CuResult, String)> {
        match self {
            Op::Kernel(k) => k.run(),
            Op::HtoD { dst, src, len } => {
                device_range("host-to-device copy", *dst, *len)?;
                let s = match src {
                    HostSrc::Staged(v) => v.as_ptr(),
                    HostSrc::PageLocked(p) => *p as *const u8,
                };
                // SAFETY: the destination is live device memory (checked); the source is the staged copy
                // or page-locked memory the caller keeps valid until the copy has run (CUDA's contract).
                unsafe { std::ptr::copy(s, *dst as *mut u8, *len) };
                Ok(())
            }
            Op::DtoH { dst, src, len } => {
                device_range("device-to-host copy", *src, *len)?;
                // SAFETY: the source is live device memory (checked); the caller keeps the host
                // destination valid until the copy has run (CUDA's contract).
                unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *len) };
                Ok(())
            }
            Op::DtoD { dst, src, len } => {
                device_range("device-to-device copy (source)", *src, *len)?;
                device_range("device-to-device copy (destination)", *dst, *len)?;
                // SAFETY: both ranges are live device memory (checked).
                unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *len) };
                Ok(())
            }
            Op::Memset { dst, value, elem, count } => {
                device_range("memset", *dst, elem * count)?;
                let bytes = value.to_le_bytes();
                // SAFETY: the range is live device memory (checked).
                let d = unsafe { std::slice::from_raw_parts_mut(*dst as *mut u8, elem * count) };
                for c in d.chunks_exact_mut(*elem) {
                    c.copy_from_slice(&bytes[..*elem]);
                }
                Ok(())
            }
            Op::Gemm(g) => g.run(),
            Op::Graph(nodes) => {
                for n in nodes.iter() {
                    n.run()?;
                }
                Ok(())
            }
            Op::Wait { stream, upto } => {
                stream.wait_until(*upto);
                Ok(())
            }
            Op::Record(t) => {
                *t.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                Ok(())
            }
        }
    }

    /// May this operation be part of a graph?
    pub fn capturable(&self) -> bool {
        !matches!(self, Op::Wait { .. })
    }
}

/// A capture in progress on a stream.
pub struct Capture {
    pub mode: u32,
    pub thread: ThreadId,
    pub nodes: Vec<Op>,
    pub invalidated: bool,
}

#[derive(Default)]
pub struct Queue {
    tasks: VecDeque<(u64, Op)>,
    /// Operations queued so far (sequence number of the last one).
    pub enqueued: u64,
    /// Operations finished.
    done: u64,
    /// Run operations up to this sequence number.
    flush: u64,
    quit: bool,
    pub capture: Option<Capture>,
}

pub struct Stream {
    pub id: usize,
    pub legacy: bool,
    pub non_blocking: bool,
    q: Mutex<Queue>,
    cv: Condvar,
}

impl Stream {
    /// A new stream and its worker.
    pub fn spawn(id: usize, legacy: bool, non_blocking: bool) -> Arc<Stream> {
        let s = Arc::new(Stream { id, legacy, non_blocking, q: Mutex::new(Queue::default()), cv: Condvar::new() });
        let w = s.clone();
        std::thread::Builder::new()
            .name(format!("cuda-emu stream {id:#x}"))
            .spawn(move || w.work())
            .expect("spawn a stream worker");
        s
    }

    pub fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `op`; returns its sequence number.
    pub fn push_locked(&self, q: &mut Queue, op: Op) -> u64 {
        q.enqueued += 1;
        q.tasks.push_back((q.enqueued, op));
        q.enqueued
    }

    fn work(&self) {
        loop {
            let (seq, op) = {
                let mut q = self.lock();
                loop {
                    if let Some(&(seq, _)) = q.tasks.front() {
                        if seq <= q.flush {
                            break;
                        }
                    } else if q.quit {
                        return;
                    }
                    q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                q.tasks.pop_front().expect("front task")
            };
            if fault::get().is_none() {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.run()))
                    .unwrap_or_else(|_| Err((CUDA_ERROR_UNKNOWN, "the emulator panicked".into())));
                if let Err((code, msg)) = r {
                    fault::set(code, &format!("stream {:#x}: {msg}", self.id));
                }
            }
            drop(op);
            let mut q = self.lock();
            q.done = seq;
            self.cv.notify_all();
        }
    }

    /// Starts the work queued so far without waiting for it.
    pub fn kick(&self) {
        let mut q = self.lock();
        q.flush = q.flush.max(q.enqueued);
        self.cv.notify_all();
    }

    /// Runs and waits for the first `upto` operations.
    pub fn wait_until(&self, upto: u64) {
        let mut q = self.lock();
        if q.flush < upto {
            q.flush = upto;
            self.cv.notify_all();
        }
        while q.done < upto {
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs and waits for everything queued so far.
    pub fn drain(&self) {
        let n = self.lock().enqueued;
        self.wait_until(n);
    }

    /// True when everything queued so far has run.
    pub fn idle(&self) -> bool {
        let q = self.lock();
        q.done == q.enqueued
    }

    /// Lets the worker finish what is queued and exit.
    pub fn retire(&self) {
        let mut q = self.lock();
        q.flush = q.enqueued;
        q.quit = true;
        self.cv.notify_all();
    }
}
