//! The device-side Qwen3 forward, written ONCE for every kernel-running device: `cuda` (a real GPU through
//! cudarc + cuBLAS) and `emu` (the same kernels run by the host emulator, a CPU GEMM for cuBLAS).
//!
//! [`GpuModel`]`<D>` owns everything a CUDA program would: bf16 weights uploaded once, ONE bf16 KV buffer
//! `[layer][K|V][slot][kv_head][head_dim]`, grow-only activation buffers, the per-call input tables, the
//! decode workspace, the latent projection's `W_aᵀ`, and the CUDA-graph cache. It talks to the device only
//! through the small [`Device`] trait below (allocate, copy, launch a kernel op, run a GEMM, capture and
//! replay a graph), so the emu device executes the cuda backend's exact op sequence, memory layout, kernel
//! params and graph discipline (uploads outside capture, stable pointers, params baked at capture time).
//!
//! Operations: [`GpuModel::new`], [`GpuModel::forward`], [`GpuModel::set_alignment`],
//! [`GpuModel::latent_project`], [`GpuModel::kv_layer_f32`], [`GpuModel::set_graphs`].

mod graphs;
pub mod microbench;
mod model;

pub use graphs::GraphStats;
pub use model::GpuModel;

use crate::error::{Error, Result};
use crate::kernels::{DevPtr, KernelOp, Launch};

/// The environment switch that makes a device synchronise and check after every launch (and GEMM, copy
/// and graph replay), so that a fault is reported by the launch that caused it, naming the kernel, its
/// grid, block, dynamic shared memory and params. Off unless set to something other than `0`, `false`,
/// `no`, `off` or nothing. Slow (one host round trip per launch): for finding a fault, not for serving.
pub const SYNC_CHECK_ENV: &str = "LATENTMAS_CUDA_SYNC_CHECK";

/// Whether [`SYNC_CHECK_ENV`] is on in this process's environment.
pub fn sync_check_from_env() -> bool {
    switch_on(std::env::var(SYNC_CHECK_ENV).ok().as_deref())
}

/// The reading of an on/off environment switch: unset, empty, `0`, `false`, `no`, `off` (any case) are off.
pub fn switch_on(value: Option<&str>) -> bool {
    let v = value.unwrap_or("").trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "false" | "no" | "off")
}

/// One planned launch and its params, as fault messages name them: `kernel (grid [x, y, z], block
/// [x, y, z], N B dynamic shared memory, params Struct { field: value, .. })`.
pub fn describe_launch<P: std::fmt::Debug>(l: &Launch, p: &P) -> String {
    format!(
        "{} (grid {:?}, block {:?}, {} B dynamic shared memory, params {:?})",
        l.kernel, l.grid, l.block, l.shared_bytes, p
    )
}

/// `out[n, rows] = x[n, cols] · w[rows, cols]ᵀ`: bf16 row-major inputs (`w` in PyTorch's `[out, in]`
/// layout), f32 accumulation, bf16 output (f32 when `out_f32`), all row-major and dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
    pub x: DevPtr,
    pub w: DevPtr,
    pub out: DevPtr,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub out_f32: bool,
}

/// What [`GpuModel`] needs from a device. All work is queued in order on ONE stream; only `download`
/// waits for it.
///
/// # Safety (of the unsafe methods)
/// Every [`DevPtr`] passed (directly, inside a kernel params struct, or inside a [`Gemm`]) must address
/// memory of this device's buffers that is valid for every access the operation makes, and no buffer
/// written by an operation may be freed before the stream has executed it.
pub trait Device {
    /// An owned, zero-initialised device allocation (freed on drop).
    type Buf;
    /// A captured op sequence that can be replayed.
    type Graph;

    /// A short description for logs and errors ("NVIDIA H100 80GB HBM3", "emu").
    fn describe(&self) -> String;
    /// Allocates `bytes` (≥ 1) zeroed bytes, 256-byte aligned.
    fn alloc(&mut self, bytes: usize) -> Result<Self::Buf>;
    /// The device address of `buf`'s first byte.
    fn addr(buf: &Self::Buf) -> DevPtr;
    /// Host → device; `src` may be reused as soon as this returns. Not allowed while capturing.
    ///
    /// # Safety
    /// See the trait: `dst .. dst + src.len()` lies inside one live buffer.
    unsafe fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<()>;
    /// Device → host after all queued work (blocks). Not allowed while capturing.
    ///
    /// # Safety
    /// See the trait: `src .. src + dst.len()` lies inside one live buffer.
    unsafe fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<()>;
    /// Device → device, queued on the stream (capturable).
    ///
    /// # Safety
    /// See the trait; the ranges lie in live buffers and do not overlap.
    unsafe fn copy(&mut self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()>;
    /// Queues the launches of `p.plan()` with `p` as every kernel's single argument.
    ///
    /// # Safety
    /// See the trait: every pointer in `p` covers the op's full extent at these params.
    unsafe fn launch<P: KernelOp + Send + 'static>(&mut self, p: &P) -> Result<()>;
    /// Queues a GEMM (cuBLAS on cuda).
    ///
    /// # Safety
    /// See the trait: `x` holds `n × cols`, `w` `rows × cols` bf16, `out` `n × rows` of the output type.
    unsafe fn gemm(&mut self, g: &Gemm) -> Result<()>;
    /// From now on queued work is recorded into a graph instead of run.
    fn begin_capture(&mut self) -> Result<()>;
    /// Ends the recording started by `begin_capture`. Fails (and returns no graph) when a call made while
    /// recording broke CUDA's capture rules: such a call fails itself and invalidates the capture, as
    /// CUDA invalidates it.
    fn end_capture(&mut self) -> Result<Self::Graph>;
    /// True between `begin_capture` and `end_capture`. While capturing, `alloc`, freeing a buffer,
    /// `upload`, `download`, `synchronize` and `replay` are refused (CUDA refuses allocation, free,
    /// synchronous copies and synchronisation inside a stream capture).
    fn capturing(&self) -> bool;
    /// Queues one replay of `graph` (every op with the pointers and params it was captured with).
    fn replay(&mut self, graph: &Self::Graph) -> Result<()>;
    /// Waits until everything queued has run (benchmarks).
    fn synchronize(&mut self) -> Result<()>;
}

/// A device allocation and its size.
pub struct DevBuf<B> {
    /// Owns the allocation (freed when dropped); only its address is used.
    _raw: B,
    bytes: usize,
    addr: DevPtr,
}

impl<B> DevBuf<B> {
    pub fn alloc<D: Device<Buf = B>>(dev: &mut D, bytes: usize) -> Result<Self> {
        let raw = dev.alloc(bytes.max(1))?;
        let addr = D::addr(&raw);
        Ok(DevBuf { _raw: raw, bytes, addr })
    }
    pub fn addr(&self) -> DevPtr {
        self.addr
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// The address `offset` bytes in; fails (never reaches a kernel) when `offset + len` does not fit.
    pub fn at(&self, offset: usize, len: usize) -> Result<DevPtr> {
        if offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(Error::Device(format!(
                "device buffer access [{offset}, +{len}) outside its {} bytes",
                self.bytes
            )));
        }
        Ok(self.addr + offset as DevPtr)
    }
    /// Uploads `data` at byte `offset`, bounds-checked.
    pub fn upload<D: Device<Buf = B>, T: bytemuck::Pod>(&self, dev: &mut D, offset: usize, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let dst = self.at(offset, bytes.len())?;
        // SAFETY: `at` checked that the range lies inside this live buffer.
        unsafe { dev.upload(dst, bytes) }
    }
    /// Downloads `out.len()` elements from byte `offset`, bounds-checked.
    pub fn download<D: Device<Buf = B>, T: bytemuck::Pod>(
        &self,
        dev: &mut D,
        offset: usize,
        out: &mut [T],
    ) -> Result<()> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        let src = self.at(offset, bytes.len())?;
        // SAFETY: `at` checked that the range lies inside this live buffer.
        unsafe { dev.download(src, bytes) }
    }
}

/// A grow-only device buffer with a logical length in elements (an activation, a table, a workspace).
/// Growing reallocates, which moves it: [`GpuModel`] drops its captured graphs when that happens.
pub struct Grow<B> {
    buf: Option<DevBuf<B>>,
    /// Logical length in elements of `elem` bytes.
    pub len: usize,
}

impl<B> Default for Grow<B> {
    fn default() -> Self {
        Grow { buf: None, len: 0 }
    }
}

impl<B> Grow<B> {
    /// True when `fit(len, elem)` would have to reallocate.
    pub fn would_grow(&self, len: usize, elem: usize) -> bool {
        let need = len.saturating_mul(elem).max(1);
        self.buf.as_ref().is_none_or(|b| b.bytes() < need)
    }

    /// Makes room for `len` elements of `elem` bytes; returns true when the buffer moved.
    ///
    /// While `dev` is capturing a graph, growing is refused (the buffer and its length are left as they
    /// were): it would free and allocate, which CUDA refuses inside a capture. Graph capture sizes every
    /// buffer before it starts (`graphs.rs`).
    pub fn fit<D: Device<Buf = B>>(&mut self, dev: &mut D, len: usize, elem: usize) -> Result<bool> {
        if !self.would_grow(len, elem) {
            self.len = len;
            return Ok(false);
        }
        let need = len
            .checked_mul(elem)
            .ok_or_else(|| Error::Device(format!("device buffer of {len} × {elem} bytes overflows")))?
            .max(1);
        if dev.capturing() {
            return Err(Error::Device(format!(
                "a device buffer of {} bytes would have to grow to {need} bytes while capturing a graph \
                 (CUDA refuses allocation and free inside a capture)",
                self.buf.as_ref().map_or(0, |b| b.bytes())
            )));
        }
        self.len = len;
        // grow by half again, so a slowly growing length (decode workspace) reallocates rarely
        let bytes = need.max(self.buf.as_ref().map_or(0, |b| b.bytes() + b.bytes() / 2));
        self.buf = None; // free first: the old contents are never needed
        self.buf = Some(DevBuf::alloc(dev, bytes)?);
        Ok(true)
    }
    /// The buffer (after a `fit`).
    pub fn get(&self) -> Result<&DevBuf<B>> {
        self.buf.as_ref().ok_or_else(|| Error::Device("device buffer used before it was sized".into()))
    }
    pub fn addr(&self) -> Result<DevPtr> {
        Ok(self.get()?.addr())
    }
}
