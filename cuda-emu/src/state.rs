//! The driver's state: initialisation, device 0's primary context (reference counted; handles of a
//! destroyed context are recognised as stale), each thread's current context, the handle tables, and the
//! rules that tie streams together — the legacy stream's implicit synchronisation with blocking streams,
//! and what stream capture forbids.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::*;
use crate::module::KernelInfo;
use crate::stream::{Capture, Op, Stream};
use crate::{blas, fault, memory};

pub struct Function {
    pub info: KernelInfo,
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` once set, else None (48 KiB − static).
    pub max_dyn_shared: Mutex<Option<u32>>,
}

pub struct Event {
    /// (stream, sequence number) of the last record; None before any.
    pub at: Mutex<Option<(Arc<Stream>, u64)>>,
    pub time: Arc<Mutex<Option<std::time::Instant>>>,
}

#[derive(Default)]
pub struct Driver {
    pub initialized: bool,
    /// Handle of the live primary context (0 when none) and its reference count.
    pub ctx: usize,
    pub ctx_refs: u32,
    pub legacy: Option<Arc<Stream>>,
    pub streams: HashMap<usize, Arc<Stream>>,
    pub modules: HashMap<usize, Vec<usize>>,
    pub functions: HashMap<usize, Arc<Function>>,
    pub graphs: HashMap<usize, Arc<Vec<Op>>>,
    pub execs: HashMap<usize, Arc<Vec<Op>>>,
    pub events: HashMap<usize, Arc<Event>>,
    pub blas: HashMap<usize, blas::Handle>,
    next: usize,
}

static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

pub struct Guard(MutexGuard<'static, Option<Driver>>);

impl std::ops::Deref for Guard {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        self.0.as_ref().expect("driver state")
    }
}
impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Driver {
        self.0.as_mut().expect("driver state")
    }
}

pub fn lock() -> Guard {
    let mut g = DRIVER.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        *g = Some(Driver { next: 0x5eed_0000, ..Default::default() });
    }
    Guard(g)
}

pub fn current() -> usize {
    CURRENT.with(|c| c.get())
}
pub fn set_current(ctx: usize) {
    CURRENT.with(|c| c.set(ctx));
}

impl Driver {
    /// A fresh handle value (never 0, never a special stream handle).
    pub fn handle(&mut self) -> usize {
        self.next += 0x10;
        self.next
    }

    /// Checks that the driver is initialised and the calling thread has the live context current; then the
    /// sticky error, if any.
    pub fn ready(&self) -> Result<(), CuResult> {
        if !self.initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        let c = current();
        if c == 0 || c != self.ctx {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        if let Some(f) = fault::get() {
            return Err(f);
        }
        Ok(())
    }

    pub fn legacy(&self) -> Arc<Stream> {
        self.legacy.clone().expect("a live context has its legacy stream")
    }

    /// The stream a handle names (0 and CU_STREAM_LEGACY: the legacy stream; per-thread default streams are
    /// not emulated).
    pub fn stream(&self, h: usize) -> Result<Arc<Stream>, CuResult> {
        match h {
            0 | CU_STREAM_LEGACY => Ok(self.legacy()),
            CU_STREAM_PER_THREAD => Err(CUDA_ERROR_NOT_SUPPORTED),
            _ => self.streams.get(&h).cloned().ok_or(CUDA_ERROR_INVALID_HANDLE),
        }
    }

    fn all_streams(&self) -> Vec<Arc<Stream>> {
        let mut v: Vec<Arc<Stream>> = self.streams.values().cloned().collect();
        v.extend(self.legacy.clone());
        v
    }

    /// A call CUDA calls "potentially unsafe" during capture (allocation, free, synchronisation, ...):
    /// refused with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, invalidating the captures that forbid it, when
    /// this thread captures in global or thread-local mode or any thread captures in global mode.
    pub fn unsafe_call(&self) -> Result<(), CuResult> {
        let me = std::thread::current().id();
        let mut refused = false;
        for s in self.all_streams() {
            let mut q = s.lock();
            if let Some(c) = q.capture.as_mut() {
                let forbids = match c.mode {
                    CU_STREAM_CAPTURE_MODE_GLOBAL => true,
                    CU_STREAM_CAPTURE_MODE_THREAD_LOCAL => c.thread == me,
                    _ => false,
                };
                if forbids {
                    c.invalidated = true;
                    refused = true;
                }
            }
        }
        if refused {
            Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
        } else {
            Ok(())
        }
    }

    /// Queues `op` on `stream` (or records it into the stream's capture), with the legacy stream's
    /// implicit ordering: work on the legacy stream waits for all earlier work of the blocking streams,
    /// and work on a blocking stream waits for earlier legacy-stream work. Non-blocking streams are not
    /// ordered with the legacy stream at all.
    pub fn submit(&self, stream: &Arc<Stream>, op: Op) -> Result<u64, CuResult> {
        if stream.legacy {
            // using the legacy stream while a blocking stream captures would join it to the capture
            let mut implicit = false;
            for s in self.streams.values().filter(|s| !s.non_blocking) {
                if let Some(c) = s.lock().capture.as_mut() {
                    c.invalidated = true;
                    implicit = true;
                }
            }
            if implicit {
                return Err(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT);
            }
            let waits: Vec<Op> = self
                .streams
                .values()
                .filter(|s| !s.non_blocking)
                .map(|s| (s.clone(), s.lock().enqueued))
                .filter(|(_, n)| *n > 0)
                .map(|(stream, upto)| Op::Wait { stream, upto })
                .collect();
            let mut q = stream.lock();
            for w in waits {
                stream.push_locked(&mut q, w);
            }
            return Ok(stream.push_locked(&mut q, op));
        }
        let mut q = stream.lock();
        if let Some(c) = q.capture.as_mut() {
            if c.invalidated {
                return Err(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
            }
            if !op.capturable() {
                c.invalidated = true;
                return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
            }
            c.nodes.push(op);
            return Ok(0);
        }
        if !stream.non_blocking {
            let legacy = self.legacy();
            let upto = legacy.lock().enqueued;
            if upto > 0 {
                stream.push_locked(&mut q, Op::Wait { stream: legacy, upto });
            }
        }
        Ok(stream.push_locked(&mut q, op))
    }

    /// Starts a capture on `stream`.
    pub fn begin_capture(&self, stream: &Arc<Stream>, mode: u32) -> Result<(), CuResult> {
        if stream.legacy {
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        if mode > CU_STREAM_CAPTURE_MODE_RELAXED {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let mut q = stream.lock();
        if q.capture.is_some() {
            return Err(CUDA_ERROR_ILLEGAL_STATE);
        }
        q.capture = Some(Capture { mode, thread: std::thread::current().id(), nodes: Vec::new(), invalidated: false });
        Ok(())
    }

    /// The streams a context-wide synchronisation (cuCtxSynchronize, and the implicit one of cuMemFree)
    /// waits for: all of them. Refused as an unsafe call when this thread's capture rules forbid it; work
    /// recorded into another thread's capture is not queued, so nothing waits for it.
    pub fn sync_all(&self) -> Result<Vec<Arc<Stream>>, CuResult> {
        self.unsafe_call()?;
        Ok(self.all_streams())
    }

    /// Creates the primary context, or adds a reference to it.
    pub fn retain_primary(&mut self) -> usize {
        if self.ctx == 0 {
            self.ctx = self.handle();
            self.ctx_refs = 0;
            let id = self.handle();
            self.legacy = Some(Stream::spawn(id, true, false));
            fault::clear();
        }
        self.ctx_refs += 1;
        self.ctx
    }

    /// Drops a reference; the last one destroys the context with everything in it.
    pub fn release_primary(&mut self) {
        if self.ctx_refs == 0 {
            return;
        }
        self.ctx_refs -= 1;
        if self.ctx_refs > 0 {
            return;
        }
        for s in self.all_streams() {
            s.retire();
            s.drain();
        }
        self.streams.clear();
        self.legacy = None;
        self.modules.clear();
        self.functions.clear();
        self.graphs.clear();
        self.execs.clear();
        self.events.clear();
        self.blas.clear();
        memory::free_all();
        self.ctx = 0;
    }
}
