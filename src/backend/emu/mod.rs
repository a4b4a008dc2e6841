//! The `emu` device: the cuda backend's exact op sequence, memory layout and graph discipline, run on the
//! CPU. [`EmuModel`] is [`GpuModel`] (the forward every kernel-running device shares) over [`HostDevice`]:
//!
//! - buffers are host allocations (256-byte aligned, zeroed) whose addresses are the kernels' [`DevPtr`]s;
//! - a kernel op runs its real `crates/kernels/cuda/<op>.cu` through the host emulator ([`emu::emulate`]);
//! - a GEMM is a CPU GEMM with bf16 inputs, f32 accumulation and bf16 (or f32) output, in place of cuBLAS;
//! - a graph is the list of queued operations recorded between `begin_capture` and `end_capture` (nothing
//!   runs while recording, as on a GPU), replayed with the params and addresses it was recorded with;
//! - CUDA's capture rules hold while recording: allocating, freeing a buffer, host copies, synchronising
//!   and replaying are refused, and the refusal invalidates the capture (every later queued operation
//!   fails and `end_capture` returns the first violation instead of a graph), as CUDA invalidates a
//!   stream capture on such a call;
//! - a failing launch names its kernel, grid, block, dynamic shared memory and params (every launch runs
//!   to completion inside the call, so a fault is always attributed; see `LATENTMAS_CUDA_SYNC_CHECK` for
//!   the cuda device).
//!
//! Operations: [`HostDevice::new`], [`new_emu_model`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use half::bf16;
use rayon::prelude::*;

use crate::backend::gpu::{describe_launch, Device, Gemm, GpuModel};
use crate::error::{Error, Result};
use crate::kernels::{emu, DevPtr, KernelOp};
use crate::model::qwen3::Qwen3;

/// The model on the emu device.
pub type EmuModel = GpuModel<HostDevice>;

/// Uploads `model` to a fresh [`HostDevice`] with a KV buffer of `n_slots` slots.
pub fn new_emu_model(model: &Qwen3, n_slots: usize) -> Result<EmuModel> {
    GpuModel::new(HostDevice::new(), model, n_slots)
}

/// 256 bytes, 256-byte aligned: the allocation unit of host "device" buffers (cudaMalloc aligns to 256).
#[repr(C, align(256))]
#[derive(Clone, Copy)]
struct Block([u8; 256]);

/// Whether a graph is being recorded, and the first call that broke the capture rules meanwhile; shared
/// with the buffers, because freeing one (dropping it) while recording also breaks them.
#[derive(Default)]
struct CaptureState {
    recording: AtomicBool,
    violation: Mutex<Option<String>>,
}

impl CaptureState {
    fn invalidate(&self, what: &str) {
        let mut v = self.violation.lock().unwrap_or_else(|e| e.into_inner());
        v.get_or_insert_with(|| what.to_string());
    }
    fn violation(&self) -> Option<String> {
        self.violation.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A zeroed host allocation standing in for device memory.
pub struct HostBuf {
    blocks: Vec<Block>,
    capture: Arc<CaptureState>,
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        if self.capture.recording.load(Ordering::Relaxed) {
            // cuMemFree inside a capture fails and invalidates it; a drop cannot fail, so only the capture
            // is invalidated (the memory is still released)
            self.capture.invalidate("a buffer freed");
        }
    }
}

/// One queued operation of a recorded graph.
enum Cmd {
    Launch(Box<dyn Fn(emu::Options) -> Result<()> + Send>),
    Gemm(Gemm),
    Copy { dst: DevPtr, src: DevPtr, bytes: usize },
}

/// A recorded op sequence.
pub struct HostGraph(Vec<Cmd>);

/// The CPU standing in for a GPU.
#[derive(Default)]
pub struct HostDevice {
    /// Emulator options of every launch (fibers by default).
    pub opts: emu::Options,
    recording: Option<Vec<Cmd>>,
    capture: Arc<CaptureState>,
}

impl HostDevice {
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses `what` while recording, invalidating the capture (CUDA refuses allocation, free,
    /// synchronous copies and synchronisation inside a stream capture and invalidates it).
    fn refuse_while_recording(&self, what: &str) -> Result<()> {
        if self.recording.is_some() {
            self.capture.invalidate(what);
            return Err(Error::Device(format!(
                "{what} while capturing a graph (CUDA refuses it and invalidates the capture)"
            )));
        }
        Ok(())
    }

    /// Fails once the capture being recorded was invalidated (CUDA then fails every captured call with
    /// CUDA_ERROR_STREAM_CAPTURE_INVALIDATED).
    fn check_capture(&self) -> Result<()> {
        match self.capture.violation() {
            Some(why) if self.recording.is_some() => {
                Err(Error::Device(format!("graph capture invalidated earlier by {why} while recording")))
            }
            _ => Ok(()),
        }
    }

    /// # Safety
    /// `cmd`'s pointers satisfy the [`Device`] contract.
    unsafe fn run(&self, cmd: &Cmd) -> Result<()> {
        match cmd {
            Cmd::Launch(f) => f(self.opts),
            // SAFETY: forwarded from the caller.
            Cmd::Gemm(g) => unsafe { host_gemm(g) },
            Cmd::Copy { dst, src, bytes } => {
                // SAFETY: forwarded from the caller (live, non-overlapping ranges).
                unsafe { std::ptr::copy_nonoverlapping(*src as *const u8, *dst as *mut u8, *bytes) };
                Ok(())
            }
        }
    }

    /// Runs `cmd` now, or records it while capturing.
    ///
    /// # Safety
    /// As [`HostDevice::run`].
    unsafe fn queue(&mut self, cmd: Cmd) -> Result<()> {
        self.check_capture()?;
        match self.recording.as_mut() {
            Some(rec) => {
                rec.push(cmd);
                Ok(())
            }
            // SAFETY: forwarded from the caller.
            None => unsafe { self.run(&cmd) },
        }
    }
}

/// Emulates `p`; a failure names the failing launch's kernel, grid, block, shared memory and params.
///
/// # Safety
/// As [`emu::emulate`].
unsafe fn emulate_attributed<P: KernelOp>(p: &P, opts: emu::Options) -> Result<()> {
    // SAFETY: forwarded from the caller.
    unsafe { emu::emulate(p, opts) }.map_err(|e| {
        let plan = p.plan().ok();
        let launch = plan.as_ref().and_then(|plan| {
            // the emulator's message starts with the kernel it was running
            plan.launches.iter().find(|l| e.message.starts_with(l.kernel)).or(plan.launches.first())
        });
        match launch {
            Some(l) => Error::Device(format!("kernel emulation: {}: {e}", describe_launch(l, p))),
            None => Error::from(e),
        }
    })
}

/// `out[t, j] = Σ_k x[t, k] · w[j, k]` in f32 from bf16 inputs (the cuBLAS GemmEx stand-in).
///
/// # Safety
/// `g`'s pointers address `n × cols` and `rows × cols` bf16 and `n × rows` outputs of live host memory.
unsafe fn host_gemm(g: &Gemm) -> Result<()> {
    let (n, rows, k) = (g.n, g.rows, g.cols);
    // SAFETY: the caller vouches for the extents.
    let (x, w) = unsafe {
        (
            std::slice::from_raw_parts(g.x as *const bf16, n * k),
            std::slice::from_raw_parts(g.w as *const bf16, rows * k),
        )
    };
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let mut t = vec![0f32; rows * n];
    t.par_chunks_mut(n.max(1)).zip(w.par_chunks_exact(k.max(1))).for_each(|(o, wr)| {
        let wf: Vec<f32> = wr.iter().map(|v| v.to_f32()).collect();
        for (ti, ov) in o.iter_mut().enumerate() {
            *ov = xf[ti * k..(ti + 1) * k].iter().zip(&wf).map(|(a, b)| a * b).sum();
        }
    });
    // transpose [rows, n] → [n, rows] into the output type
    if g.out_f32 {
        // SAFETY: the caller vouches for `n × rows` f32 at `out`.
        let out = unsafe { std::slice::from_raw_parts_mut(g.out as *mut f32, n * rows) };
        for j in 0..rows {
            for ti in 0..n {
                out[ti * rows + j] = t[j * n + ti];
            }
        }
    } else {
        // SAFETY: the caller vouches for `n × rows` bf16 at `out`.
        let out = unsafe { std::slice::from_raw_parts_mut(g.out as *mut bf16, n * rows) };
        for j in 0..rows {
            for ti in 0..n {
                out[ti * rows + j] = bf16::from_f32(t[j * n + ti]);
            }
        }
    }
    Ok(())
}

impl Device for HostDevice {
    type Buf = HostBuf;
    type Graph = HostGraph;

    fn describe(&self) -> String {
        "emu (kernels run by the host emulator, CPU GEMM)".into()
    }

    fn alloc(&mut self, bytes: usize) -> Result<HostBuf> {
        self.refuse_while_recording("an allocation")?;
        let n = bytes.div_ceil(256).max(1);
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| Error::Device(format!("emu: cannot allocate {bytes} bytes")))?;
        v.resize(n, Block([0; 256]));
        Ok(HostBuf { blocks: v, capture: self.capture.clone() })
    }

    fn addr(buf: &HostBuf) -> DevPtr {
        buf.blocks.as_ptr() as DevPtr
    }

    unsafe fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.refuse_while_recording("a host-to-device copy")?;
        // SAFETY: the caller vouches that dst..dst+len lies in a live buffer (not overlapping host `src`).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    unsafe fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.refuse_while_recording("a device-to-host copy")?;
        // SAFETY: the caller vouches that src..src+len lies in a live buffer.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    unsafe fn copy(&mut self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.queue(Cmd::Copy { dst, src, bytes }) }
    }

    unsafe fn launch<P: KernelOp + Send + 'static>(&mut self, p: &P) -> Result<()> {
        // validate now, as a GPU launch fails at the launch call, not at replay
        p.plan()?;
        self.check_capture()?;
        let Some(rec) = self.recording.as_mut() else {
            // SAFETY: the caller vouches for every pointer in `p`.
            return unsafe { emulate_attributed(p, self.opts) };
        };
        let p = *p;
        // SAFETY: the caller vouches for every pointer in `p` until the replay, which the graph rules of
        // `backend::gpu` guarantee by dropping graphs whose buffers moved.
        let run = move |opts| unsafe { emulate_attributed(&p, opts) };
        rec.push(Cmd::Launch(Box::new(run)));
        Ok(())
    }

    unsafe fn gemm(&mut self, g: &Gemm) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.queue(Cmd::Gemm(*g)) }
    }

    fn begin_capture(&mut self) -> Result<()> {
        if self.recording.is_some() {
            return Err(Error::Device("begin_capture while already capturing".into()));
        }
        *self.capture.violation.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.recording = Some(Vec::new());
        self.capture.recording.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn end_capture(&mut self) -> Result<HostGraph> {
        let rec = self.recording.take().ok_or_else(|| Error::Device("end_capture without begin_capture".into()))?;
        self.capture.recording.store(false, Ordering::Relaxed);
        match self.capture.violation.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // CUDA's cuStreamEndCapture returns no graph for an invalidated capture
            Some(why) => Err(Error::Device(format!("graph capture invalidated by {why} while recording"))),
            None => Ok(HostGraph(rec)),
        }
    }

    fn capturing(&self) -> bool {
        self.recording.is_some()
    }

    fn synchronize(&mut self) -> Result<()> {
        // everything ran when it was queued
        self.refuse_while_recording("a synchronisation")
    }

    fn replay(&mut self, graph: &HostGraph) -> Result<()> {
        self.refuse_while_recording("a graph replay")?;
        for cmd in &graph.0 {
            // SAFETY: every recorded command was valid when queued, and `backend::gpu` replays a graph only
            // while none of the buffers it references has moved or been freed.
            unsafe { self.run(cmd)? };
        }
        Ok(())
    }
}
