//! The cuda device: [`CudaDevice`] implements [`Device`] with the CUDA driver (through cudarc's dynamically
//! loaded bindings: nothing is linked at build time), our kernels from the embedded fatbin, and cuBLAS
//! GemmEx for the dense GEMMs. [`CudaModel`] is [`GpuModel`] over it: the same forward, buffers and graph
//! rules the `emu` device runs and the tests check on the CPU.
//!
//! - ONE primary context per process, retained by the first [`probe`] (or open) and kept: the probe and
//!   every device share it instead of recreating it (the driver resets a primary context when its last
//!   retain is released).
//! - ONE non-blocking stream; host copies are `cuMemcpy*Async` on it; only downloads synchronise. Fresh
//!   allocations are zeroed by `cuMemsetD8Async` on that stream, so the work queued after it is ordered
//!   after the zeroing (a non-blocking stream does not wait for the legacy default stream).
//! - Kernel launches: `cuLaunchKernel` with the op's params struct as the single argument (the planner's
//!   grid, block and dynamic shared memory). With `LATENTMAS_CUDA_SYNC_CHECK=1` every launch, GEMM, copy
//!   and graph replay is followed by a stream synchronisation whose error names the kernel, its grid,
//!   block, shared memory and params.
//! - GEMMs: `cublasGemmEx`, bf16 inputs, f32 compute, bf16 or f32 output, on the stream, with a fixed
//!   cuBLAS workspace so that capture never allocates.
//! - Graphs: stream capture (thread-local mode) → `cuGraphInstantiate` → `cuGraphLaunch`. While capturing,
//!   the calls CUDA forbids there (allocation, free, synchronous copies, synchronisation) are refused
//!   before they reach the driver, and the refusal invalidates the capture, as the emu device does.
//!
//! Operations: [`probe`], [`CudaDevice::open`], [`new_cuda_model`], [`ceilings::measure`] (bench).

pub mod ceilings;
pub mod nvtx;

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, OnceLock};

use cudarc::cublas::{result as cublas, sys as cublas_sys};
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, DriverError};

use crate::backend::gpu::{describe_launch, sync_check_from_env, Device, Gemm, GpuModel};
use crate::error::{Error, Result};
use crate::kernels::{DevPtr, KernelOp};
use crate::model::qwen3::Qwen3;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    /// Device 0's name (`cuDeviceGetName`).
    pub name: String,
    /// Devices the driver reports.
    pub devices: usize,
}

/// The one-line reason for a machine without a usable driver or device.
fn no_device(why: impl std::fmt::Debug) -> String {
    format!("no CUDA driver/device found ({why:?})")
}

fn driver(what: &str) -> impl FnOnce(DriverError) -> Error + '_ {
    move |e| Error::Device(format!("CUDA {what}: {e:?}"))
}

/// Device 0's primary context and what the probe found, or the probe's one-line reason; found once per
/// process and kept (the retain is never released: the driver tears the context down at exit).
static DRIVER: OnceLock<std::result::Result<(Arc<CudaContext>, CudaInfo), String>> = OnceLock::new();

/// The process's context on device 0 (retained on first use, kept), with what the probe found.
fn driver_context() -> Result<(Arc<CudaContext>, CudaInfo)> {
    DRIVER
        .get_or_init(|| {
            // SAFETY: only tries to dlopen the driver library by its usual names; no symbol is called.
            if !unsafe { drv_sys::is_culib_present() } {
                return Err(no_device(format_args!("libcuda could not be loaded")));
            }
            let devices = CudaContext::device_count().map_err(no_device)?;
            if devices <= 0 {
                return Err(no_device(format_args!("the driver reports no device")));
            }
            let ctx = CudaContext::new(0).map_err(no_device)?;
            let name = ctx.name().map_err(no_device)?;
            Ok((ctx, CudaInfo { name, devices: devices as usize }))
        })
        .clone()
        .map_err(Error::Device)
}

/// Checks, in order: libcuda can be loaded (`is_culib_present`, BEFORE any driver call: cudarc's
/// dynamically loaded entry points panic without the library), the driver initialises and reports a device,
/// device 0's primary context can be retained (it is kept for [`CudaDevice::open`]), and this build embeds
/// the kernels' fatbin.
pub fn probe() -> Result<CudaInfo> {
    let (_, info) = driver_context()?;
    crate::kernels::fatbin()?;
    Ok(info)
}

/// The model on a GPU.
pub type CudaModel = GpuModel<CudaDevice>;

/// Opens device 0 and uploads `model` with a KV buffer of `n_slots` slots.
pub fn new_cuda_model(model: &Qwen3, n_slots: usize) -> Result<CudaModel> {
    GpuModel::new(CudaDevice::open()?, model, n_slots)
}

/// cuBLAS workspace: set once so that GEMMs inside a graph capture never allocate (32 MiB covers Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A device allocation (`cuMemAlloc`), freed on drop.
pub struct CudaBuf {
    ptr: drv_sys::CUdeviceptr,
    ctx: Arc<CudaContext>,
}

impl Drop for CudaBuf {
    fn drop(&mut self) {
        // An error here (a context already torn down at process exit) has nobody to report to.
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `ptr` came from cuMemAlloc in this context and is freed once; cuMemFree waits for
            // queued work that uses it.
            let _ = unsafe { drv::free_sync(self.ptr) };
        }
    }
}

// SAFETY: a device address and a shared context handle; the driver allows freeing from any thread once
// the context is bound, which `drop` does.
unsafe impl Send for CudaBuf {}

/// An instantiated graph.
pub struct CudaGraph {
    exec: drv_sys::CUgraphExec,
    graph: drv_sys::CUgraph,
    ctx: Arc<CudaContext>,
    /// The captured launches as `LATENTMAS_CUDA_SYNC_CHECK` names them (recorded only with the check on).
    launches: Vec<String>,
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: both handles were created by `end_capture` and are destroyed once.
            unsafe {
                let _ = drv::graph::exec_destroy(self.exec);
                let _ = drv::graph::destroy(self.graph);
            }
        }
    }
}

// SAFETY: graph handles may be launched and destroyed from any thread with the context bound.
unsafe impl Send for CudaGraph {}

/// Device 0: context, stream, the kernels' module, a cuBLAS handle.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: drv_sys::CUstream,
    module: drv_sys::CUmodule,
    functions: HashMap<&'static str, drv_sys::CUfunction>,
    blas: cublas_sys::cublasHandle_t,
    _blas_workspace: CudaBuf,
    name: String,
    capturing: bool,
    /// The first call refused while capturing: the capture is invalidated (`end_capture` fails).
    capture_violation: Option<String>,
    /// The launches recorded into the capture under way (with `sync_check` only).
    captured: Vec<String>,
    /// `LATENTMAS_CUDA_SYNC_CHECK`: synchronise and check after every launch, GEMM, copy and replay.
    sync_check: bool,
}

// SAFETY: every method takes `&mut self` (no concurrent use) and binds the context to the calling thread
// first; the driver and cuBLAS handles are usable from any thread that way.
unsafe impl Send for CudaDevice {}

impl CudaDevice {
    /// Probes (no panic without a driver), then creates the stream, loads the fatbin, and sets up cuBLAS.
    pub fn open() -> Result<Self> {
        let info = probe()?;
        // SAFETY: dlopen attempt only, as in `probe`.
        if !unsafe { cublas_sys::is_culib_present() } {
            return Err(Error::Device(
                "--device cuda: libcublas could not be loaded (install the CUDA 13 cuBLAS)".into(),
            ));
        }
        // the context the probe retained: creating another would only re-take the same primary context
        let (ctx, _) = driver_context()?;
        ctx.bind_to_thread().map_err(driver("context"))?;
        let image = crate::kernels::fatbin()?;
        // SAFETY: `image` is a complete, 16-byte aligned fatbin that lives for the whole program.
        let module =
            unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }.map_err(driver("module load"))?;
        let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking).map_err(driver("stream"))?;
        let blas = cublas::create_handle().map_err(|e| Error::Device(format!("cuBLAS init: {e:?}")))?;
        let ws = alloc_zeroed(&ctx, stream, CUBLAS_WORKSPACE_BYTES)?;
        // SAFETY: valid handle, stream and workspace (kept alive by `_blas_workspace`).
        unsafe {
            cublas::set_stream(blas, stream as cublas_sys::cudaStream_t)
                .and_then(|_| {
                    cublas_sys::cublasSetWorkspace_v2(blas, ws.ptr as *mut c_void, CUBLAS_WORKSPACE_BYTES).result()
                })
                .map_err(|e| Error::Device(format!("cuBLAS setup: {e:?}")))?;
        }
        Ok(CudaDevice {
            ctx,
            stream,
            module,
            functions: HashMap::new(),
            blas,
            _blas_workspace: ws,
            name: info.name,
            capturing: false,
            capture_violation: None,
            captured: Vec::new(),
            sync_check: sync_check_from_env(),
        })
    }

    /// The process's context on device 0 (every device and the probe share it).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Turns the per-launch synchronise-and-check on or off (`LATENTMAS_CUDA_SYNC_CHECK` sets it at open).
    pub fn set_sync_check(&mut self, on: bool) {
        self.sync_check = on;
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("context"))
    }

    /// Refuses `what` while capturing and invalidates the capture: CUDA refuses allocation, free,
    /// synchronous copies and synchronisation inside a stream capture and invalidates it; refusing here,
    /// before the driver, gives the same outcome with a message naming the call.
    fn refuse_while_capturing(&mut self, what: &str) -> Result<()> {
        if self.capturing {
            self.capture_violation.get_or_insert_with(|| what.to_string());
            return Err(Error::Device(format!(
                "{what} while capturing a graph (CUDA refuses it and invalidates the capture)"
            )));
        }
        Ok(())
    }

    /// Fails every queued call of an invalidated capture, as CUDA does.
    fn check_capture(&self) -> Result<()> {
        match &self.capture_violation {
            Some(why) if self.capturing => {
                Err(Error::Device(format!("graph capture invalidated earlier by {why} while recording")))
            }
            _ => Ok(()),
        }
    }

    /// With the sync check on (and not capturing), waits for the stream and names `what` in its error.
    fn checked(&self, what: impl FnOnce() -> String) -> Result<()> {
        if !self.sync_check || self.capturing {
            return Ok(());
        }
        // SAFETY: valid stream.
        unsafe { drv::stream::synchronize(self.stream) }
            .map_err(|e| Error::Device(format!("{} failed: {e:?} (LATENTMAS_CUDA_SYNC_CHECK)", what())))
    }

    fn function(&mut self, name: &'static str) -> Result<drv_sys::CUfunction> {
        if let Some(&f) = self.functions.get(name) {
            return Ok(f);
        }
        let c = CString::new(name).map_err(|_| Error::Device(format!("kernel name {name:?}")))?;
        // SAFETY: `module` is loaded; the name is NUL-terminated.
        let f = unsafe { drv::module::get_function(self.module, c) }
            .map_err(|e| Error::Device(format!("kernel {name} not in the fatbin: {e:?}")))?;
        self.functions.insert(name, f);
        Ok(f)
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        if self.bind().is_ok() {
            // SAFETY: handles created in `open`, destroyed once; pending work finishes first.
            unsafe {
                let _ = drv::stream::synchronize(self.stream);
                let _ = cublas::destroy_handle(self.blas);
                let _ = drv::stream::destroy(self.stream);
                let _ = drv::module::unload(self.module);
            }
        }
    }
}

/// Allocates `bytes` and queues their zeroing on `stream`: everything later queued on that stream runs
/// after the zeroing. (`cuMemsetD8` would run on the legacy default stream, which the device's
/// non-blocking stream does not wait for, and is asynchronous to the host.)
fn alloc_zeroed(ctx: &Arc<CudaContext>, stream: drv_sys::CUstream, bytes: usize) -> Result<CudaBuf> {
    // SAFETY: plain allocation and a memset of the new range on a stream of the bound context.
    unsafe {
        let ptr = drv::malloc_sync(bytes)
            .map_err(|e| Error::Device(format!("cannot allocate {bytes} bytes on the GPU: {e:?}")))?;
        let buf = CudaBuf { ptr, ctx: ctx.clone() };
        drv::memset_d8_async(ptr, 0, bytes, stream).map_err(driver("memset"))?;
        Ok(buf)
    }
}

impl Device for CudaDevice {
    type Buf = CudaBuf;
    type Graph = CudaGraph;

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn alloc(&mut self, bytes: usize) -> Result<CudaBuf> {
        self.bind()?;
        self.refuse_while_capturing("an allocation")?;
        alloc_zeroed(&self.ctx, self.stream, bytes)
    }

    fn addr(buf: &CudaBuf) -> DevPtr {
        buf.ptr as DevPtr
    }

    unsafe fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.bind()?;
        self.refuse_while_capturing("a host-to-device copy")?;
        // SAFETY: the caller vouches for the destination range; pageable `src` is staged by the driver
        // before this returns, so the caller may reuse it.
        unsafe { drv::memcpy_htod_async(dst as drv_sys::CUdeviceptr, src, self.stream) }.map_err(driver("upload"))
    }

    unsafe fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        self.refuse_while_capturing("a device-to-host copy")?;
        // SAFETY: the caller vouches for the source range; the sync makes `dst` complete before returning.
        unsafe {
            drv::memcpy_dtoh_async(dst, src as drv_sys::CUdeviceptr, self.stream).map_err(driver("download"))?;
            drv::stream::synchronize(self.stream).map_err(driver("synchronize"))
        }
    }

    unsafe fn copy(&mut self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()> {
        self.bind()?;
        self.check_capture()?;
        // SAFETY: forwarded from the caller.
        unsafe { drv::memcpy_dtod_async(dst as _, src as _, bytes, self.stream) }.map_err(driver("copy"))?;
        self.checked(|| format!("device copy of {bytes} bytes {src:#x} -> {dst:#x}"))
    }

    unsafe fn launch<P: KernelOp + Send + 'static>(&mut self, p: &P) -> Result<()> {
        self.bind()?;
        self.check_capture()?;
        let plan = p.plan()?;
        for l in &plan.launches {
            let f = self.function(l.kernel)?;
            // The kernel's one parameter is the params struct by value: kernelParams[0] points at it, and
            // the driver copies it at the call.
            let mut args = [p as *const P as *mut c_void];
            // SAFETY: `f` is the planned kernel, whose parameter is exactly `P`'s C struct; grid, block and
            // shared bytes come from its own planner; the caller vouches for the pointers inside `p`.
            unsafe {
                drv::launch_kernel(
                    f,
                    (l.grid[0], l.grid[1], l.grid[2]),
                    (l.block[0], l.block[1], l.block[2]),
                    l.shared_bytes,
                    self.stream,
                    &mut args,
                )
            }
            .map_err(|e| Error::Device(format!("launch of {}: {e:?}", describe_launch(l, p))))?;
            if self.sync_check && self.capturing {
                self.captured.push(describe_launch(l, p));
            }
            self.checked(|| format!("kernel {}", describe_launch(l, p)))?;
        }
        Ok(())
    }

    unsafe fn gemm(&mut self, g: &Gemm) -> Result<()> {
        use cublas_sys::cudaDataType as Ty;
        use cublas_sys::{cublasComputeType_t as Compute, cublasGemmAlgo_t as Algo, cublasOperation_t as Op};
        self.bind()?;
        self.check_capture()?;
        // Row-major out[n, rows] = x[n, cols] · W[rows, cols]ᵀ is, column-major, C(rows × n) =
        // op_T(W as cols × rows) · (x as cols × n): m = rows, n = n, k = cols, every leading dimension the
        // row length of its matrix.
        let (alpha, beta) = (1f32, 0f32);
        let out_ty = if g.out_f32 { Ty::CUDA_R_32F } else { Ty::CUDA_R_16BF };
        let dims = |v: usize| i32::try_from(v).map_err(|_| Error::Device(format!("GEMM dimension {v} > i32")));
        // SAFETY: the caller vouches for the three matrices; alpha/beta are host f32 (default pointer mode).
        unsafe {
            cublas::gemm_ex(
                self.blas,
                Op::CUBLAS_OP_T,
                Op::CUBLAS_OP_N,
                dims(g.rows)?,
                dims(g.n)?,
                dims(g.cols)?,
                &alpha as *const f32 as *const c_void,
                g.w as *const c_void,
                Ty::CUDA_R_16BF,
                dims(g.cols)?,
                g.x as *const c_void,
                Ty::CUDA_R_16BF,
                dims(g.cols)?,
                &beta as *const f32 as *const c_void,
                g.out as *mut c_void,
                out_ty,
                dims(g.rows)?,
                Compute::CUBLAS_COMPUTE_32F,
                Algo::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Device(format!("cublasGemmEx {}×{}×{}: {e:?}", g.rows, g.n, g.cols)))?;
        if self.sync_check && self.capturing {
            self.captured.push(format!("cublasGemmEx {g:?}"));
        }
        self.checked(|| format!("cublasGemmEx {g:?}"))
    }

    fn begin_capture(&mut self) -> Result<()> {
        self.bind()?;
        // SAFETY: valid stream; thread-local mode refuses unsafe calls made by this thread meanwhile.
        unsafe {
            drv::stream::begin_capture(self.stream, drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        }
        .map_err(driver("begin capture"))?;
        self.capturing = true;
        self.capture_violation = None;
        self.captured.clear();
        Ok(())
    }

    fn end_capture(&mut self) -> Result<CudaGraph> {
        self.bind()?;
        if !self.capturing {
            return Err(Error::Device("end_capture without begin_capture".into()));
        }
        self.capturing = false;
        let launches = std::mem::take(&mut self.captured);
        // SAFETY: the stream is capturing (begin_capture succeeded); ending it is needed in every case to
        // leave capture mode.
        let ended = unsafe { drv::stream::end_capture(self.stream) };
        if let Some(why) = self.capture_violation.take() {
            if let Ok(graph) = ended {
                if !graph.is_null() {
                    // SAFETY: destroyed once, never instantiated.
                    let _ = unsafe { drv::graph::destroy(graph) };
                }
            }
            return Err(Error::Device(format!("graph capture invalidated by {why} while recording")));
        }
        let graph = ended.map_err(driver("end capture"))?;
        // SAFETY: `graph` is a complete captured graph.
        let exec = match unsafe { drv::graph::instantiate(graph, drv_sys::CUgraphInstantiate_flags(0)) } {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: destroyed once, not used after.
                let _ = unsafe { drv::graph::destroy(graph) };
                return Err(driver("graph instantiate")(e));
            }
        };
        Ok(CudaGraph { exec, graph, ctx: self.ctx.clone(), launches })
    }

    fn capturing(&self) -> bool {
        self.capturing
    }

    fn synchronize(&mut self) -> Result<()> {
        self.bind()?;
        self.refuse_while_capturing("a synchronisation")?;
        // SAFETY: valid stream.
        unsafe { drv::stream::synchronize(self.stream) }.map_err(driver("synchronize"))
    }

    fn replay(&mut self, g: &CudaGraph) -> Result<()> {
        self.bind()?;
        self.refuse_while_capturing("a graph replay")?;
        // SAFETY: an instantiated graph of this context; `backend::gpu` replays only graphs whose buffers
        // are all still allocated at the captured addresses.
        unsafe { drv::graph::launch(g.exec, self.stream) }.map_err(driver("graph launch"))?;
        self.checked(|| match g.launches.len() {
            0 => "replay of a graph (captured with the check off: its launches were not recorded)".into(),
            n => format!("replay of a graph of {n} launches [{}]", g.launches.join("; ")),
        })
    }
}
