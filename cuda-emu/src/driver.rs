//! The exported CUDA driver API (`libcuda.so`): the entry points, their argument checks and result codes.
//! Handles (contexts, streams, modules, functions, graphs, events) are opaque values from the driver's
//! tables; device pointers are addresses of this process's device-memory range (see `memory`).

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::sync::{Arc, Mutex};

use crate::abi::*;
use crate::kernel::KernelCall;
use crate::module;
use crate::state::{self, Event, Function};
use crate::stream::{HostSrc, Op, Stream};
use crate::{fault, memory};

type R = Result<(), CuResult>;

/// Runs an entry point's body: its error becomes the return code, a panic becomes CUDA_ERROR_UNKNOWN
/// (nothing unwinds into the caller).
pub fn catch(f: impl FnOnce() -> R) -> CuResult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => CUDA_ERROR_UNKNOWN,
    }
}

fn out<T>(p: *mut T, v: T) -> R {
    if p.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null output pointer supplied by the caller for exactly this value (C API contract).
    unsafe { p.write(v) };
    Ok(())
}

const DEVICE_NAME: &str = "latentmas cuda-emu (emulated sm_90, kernels run by the host emulator)";

macro_rules! export {
    ($($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block)*) => {
        $(
            $(#[$m])*
            #[no_mangle]
            pub unsafe extern "C" fn $name($($a: $t),*) -> CuResult {
                catch(|| $body)
            }
        )*
    };
}

fn device(dev: c_int) -> R {
    if dev != 0 {
        return Err(CUDA_ERROR_INVALID_DEVICE);
    }
    Ok(())
}

fn attribute(a: u32) -> Option<c_int> {
    use crate::abi::attr::*;
    Some(match a {
        MAX_THREADS_PER_BLOCK => 1024,
        MAX_BLOCK_DIM_X | MAX_BLOCK_DIM_Y => 1024,
        MAX_BLOCK_DIM_Z => 64,
        MAX_GRID_DIM_X => i32::MAX,
        MAX_GRID_DIM_Y | MAX_GRID_DIM_Z => 65535,
        MAX_SHARED_MEMORY_PER_BLOCK => 48 * 1024,
        TOTAL_CONSTANT_MEMORY => 64 * 1024,
        WARP_SIZE => 32,
        MAX_REGISTERS_PER_BLOCK | MAX_REGISTERS_PER_MULTIPROCESSOR => 65536,
        CLOCK_RATE => 1_980_000,
        MULTIPROCESSOR_COUNT => 132,
        INTEGRATED => 0,
        CAN_MAP_HOST_MEMORY | CONCURRENT_KERNELS | UNIFIED_ADDRESSING => 1,
        MEMORY_CLOCK_RATE => 2_619_000,
        GLOBAL_MEMORY_BUS_WIDTH => 5120,
        L2_CACHE_SIZE => 50 << 20,
        MAX_THREADS_PER_MULTIPROCESSOR => 2048,
        ASYNC_ENGINE_COUNT => 2,
        COMPUTE_CAPABILITY_MAJOR => (module::SM / 10) as c_int,
        COMPUTE_CAPABILITY_MINOR => (module::SM % 10) as c_int,
        MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => 233_472,
        MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => MAX_OPTIN_SHARED as c_int,
        // cuMemAllocAsync and memory pools are not emulated
        MEMORY_POOLS_SUPPORTED => 0,
        _ => return None,
    })
}

/// Most shared memory (static + dynamic) one block may have on sm_90 after opting in.
const MAX_OPTIN_SHARED: u32 = 232_448;
/// Dynamic + static shared memory a launch gets without opting in.
const DEFAULT_SHARED: u32 = 48 * 1024;

fn check_device_range(addr: usize, len: usize) -> R {
    if len == 0 {
        return Ok(());
    }
    memory::check(addr, len).map(|_| ()).map_err(|b| {
        eprintln!("cuda-emu: device range [{addr:#x}, +{len}) is {b}");
        CUDA_ERROR_INVALID_VALUE
    })
}

fn copy_htod(
    d: &state::Driver,
    stream: &Arc<Stream>,
    dst: usize,
    src: *const c_void,
    n: usize,
) -> Result<u64, CuResult> {
    check_device_range(dst, n)?;
    if n == 0 {
        return Ok(0);
    }
    if src.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let src = if memory::is_pinned(src as usize, n) {
        HostSrc::PageLocked(src as usize)
    } else {
        if stream.lock().capture.is_some() {
            capture_refuses(stream);
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        // SAFETY: the caller's source holds n bytes (C API contract); staged now, as CUDA stages pageable memory.
        HostSrc::Staged(Arc::new(unsafe { std::slice::from_raw_parts(src as *const u8, n) }.to_vec()))
    };
    d.submit(stream, Op::HtoD { dst, src, len: n })
}

fn capture_refuses(stream: &Arc<Stream>) {
    if let Some(c) = stream.lock().capture.as_mut() {
        c.invalidated = true;
    }
}

/// Queues a device-to-host copy; a pageable destination makes the call wait for it (as documented).
fn copy_dtoh(d: state::Guard, stream: Arc<Stream>, dst: *mut c_void, src: usize, n: usize, wait: bool) -> R {
    check_device_range(src, n)?;
    if n == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let pinned = memory::is_pinned(dst as usize, n);
    if !pinned && stream.lock().capture.is_some() {
        capture_refuses(&stream);
        return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    }
    let seq = d.submit(&stream, Op::DtoH { dst: dst as usize, src, len: n })?;
    drop(d);
    if (wait || !pinned) && seq > 0 {
        stream.wait_until(seq);
        if let Some(f) = fault::get() {
            return Err(f);
        }
    }
    Ok(())
}

fn memset(stream_h: Option<usize>, dst: usize, value: u32, elem: usize, count: usize) -> R {
    let d = state::lock();
    d.ready()?;
    check_device_range(dst, elem * count)?;
    if count == 0 {
        return Ok(());
    }
    let s = match stream_h {
        Some(h) => d.stream(h)?,
        None => d.legacy(),
    };
    // Even the "synchronous" memset is asynchronous with respect to the host for device memory (driver API
    // notes on memset): it is queued on the legacy stream.
    d.submit(&s, Op::Memset { dst, value, elem, count }).map(|_| ())
}

/// Waits for `streams` (after the driver lock is released), then reports the sticky error.
fn wait_all(streams: Vec<Arc<Stream>>) -> R {
    for s in &streams {
        s.kick();
    }
    for s in streams {
        s.drain();
    }
    fault::get().map_or(Ok(()), Err)
}

fn launch(
    f: usize,
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared: c_uint,
    stream: usize,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> R {
    let d = state::lock();
    d.ready()?;
    let func = d.functions.get(&f).cloned().ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    let s = d.stream(stream)?;
    let info = &func.info;
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    if block.contains(&0) || grid.contains(&0) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if block[0] > 1024 || block[1] > 1024 || block[2] > 64 || threads > 1024 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if info.max_threads.is_some_and(|m| threads > m as u64) {
        // more threads than the kernel's __launch_bounds__ were compiled for
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if grid[0] > i32::MAX as u32 || grid[1] > 65535 || grid[2] > 65535 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let max_dyn = func
        .max_dyn_shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(DEFAULT_SHARED.saturating_sub(info.static_shared));
    if shared > max_dyn {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let mut buf = vec![0u8; info.param_bytes];
    match (params.is_null(), extra.is_null()) {
        (false, false) => return Err(CUDA_ERROR_INVALID_VALUE),
        (false, true) => {
            for p in &info.params {
                // SAFETY: kernelParams has one pointer per kernel parameter, each to a value of the
                // parameter's size (cuLaunchKernel's contract); the table comes from the cubin.
                let v = unsafe { *params.add(p.ordinal as usize) };
                if v.is_null() {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                let (o, n) = (p.offset as usize, p.size as usize);
                // SAFETY: as above; the destination range lies in `buf` (offset + size ≤ param_bytes).
                unsafe { std::ptr::copy_nonoverlapping(v as *const u8, buf[o..o + n].as_mut_ptr(), n) };
            }
        }
        (true, false) => {
            let (mut ptr, mut size): (*const u8, Option<usize>) = (std::ptr::null(), None);
            let mut i = 0;
            loop {
                // SAFETY: `extra` is a key/value list ending with CU_LAUNCH_PARAM_END (the API's contract).
                let key = unsafe { *extra.add(i) } as usize;
                match key {
                    CU_LAUNCH_PARAM_END => break,
                    // SAFETY: as above, the value follows its key.
                    CU_LAUNCH_PARAM_BUFFER_POINTER => ptr = unsafe { *extra.add(i + 1) } as *const u8,
                    CU_LAUNCH_PARAM_BUFFER_SIZE => {
                        // SAFETY: the value is a pointer to a size_t.
                        size = Some(unsafe { *(*extra.add(i + 1) as *const usize) })
                    }
                    _ => return Err(CUDA_ERROR_INVALID_VALUE),
                }
                i += 2;
            }
            if ptr.is_null() || size != Some(info.param_bytes) {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            // SAFETY: the buffer holds `param_bytes` bytes (its size was just checked).
            unsafe { std::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), info.param_bytes) };
        }
        (true, true) if info.param_bytes > 0 => return Err(CUDA_ERROR_INVALID_VALUE),
        (true, true) => {}
    }
    let call = KernelCall {
        name: CString::new(info.name.clone()).map_err(|_| CUDA_ERROR_INVALID_HANDLE)?,
        grid,
        block,
        shared_bytes: shared,
        max_dyn_shared: max_dyn,
        params: buf,
    };
    d.submit(&s, Op::Kernel(Arc::new(call))).map(|_| ())
}

export! {
    fn cuInit(flags: c_uint) {
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        state::lock().initialized = true;
        Ok(())
    }

    fn cuDriverGetVersion(v: *mut c_int) {
        out(v, 13000)
    }

    fn cuDeviceGetCount(n: *mut c_int) {
        if !state::lock().initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        out(n, 1)
    }

    fn cuDeviceGet(dev: *mut c_int, ordinal: c_int) {
        if !state::lock().initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        device(ordinal)?;
        out(dev, 0)
    }

    fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) {
        device(dev)?;
        if name.is_null() || len <= 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let b = DEVICE_NAME.as_bytes();
        let n = b.len().min(len as usize - 1);
        // SAFETY: `name` holds `len` bytes (C API contract); n + 1 ≤ len.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), name as *mut u8, n);
            *name.add(n) = 0;
        }
        Ok(())
    }

    fn cuDeviceGetAttribute(v: *mut c_int, a: c_uint, dev: c_int) {
        if !state::lock().initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        device(dev)?;
        out(v, attribute(a).ok_or(CUDA_ERROR_INVALID_VALUE)?)
    }

    fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) {
        device(dev)?;
        out(bytes, memory::TOTAL_BYTES)
    }

    fn cuDeviceComputeCapability(major: *mut c_int, minor: *mut c_int, dev: c_int) {
        device(dev)?;
        out(major, (module::SM / 10) as c_int)?;
        out(minor, (module::SM % 10) as c_int)
    }

    fn cuDevicePrimaryCtxRetain(ctx: *mut usize, dev: c_int) {
        let mut d = state::lock();
        if !d.initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        device(dev)?;
        if ctx.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = d.retain_primary();
        out(ctx, h)
    }

    fn cuDevicePrimaryCtxRelease_v2(dev: c_int) {
        let mut d = state::lock();
        if !d.initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        device(dev)?;
        if d.ctx_refs == 0 {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        d.release_primary();
        Ok(())
    }

    fn cuDevicePrimaryCtxGetState(dev: c_int, flags: *mut c_uint, active: *mut c_int) {
        device(dev)?;
        let d = state::lock();
        out(flags, 0)?;
        out(active, (d.ctx != 0) as c_int)
    }

    fn cuCtxGetCurrent(ctx: *mut usize) {
        if !state::lock().initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        out(ctx, state::current())
    }

    fn cuCtxSetCurrent(ctx: usize) {
        let d = state::lock();
        if !d.initialized {
            return Err(CUDA_ERROR_NOT_INITIALIZED);
        }
        if ctx != 0 && ctx != d.ctx {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        state::set_current(ctx);
        Ok(())
    }

    fn cuCtxGetDevice(dev: *mut c_int) {
        state::lock().ready()?;
        out(dev, 0)
    }

    fn cuCtxSynchronize() {
        let d = state::lock();
        d.ready()?;
        let streams = d.sync_all()?;
        drop(d);
        wait_all(streams)
    }

    fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) {
        state::lock().ready()?;
        out(free, memory::TOTAL_BYTES - memory::used())?;
        out(total, memory::TOTAL_BYTES)
    }

    fn cuMemAlloc_v2(dptr: *mut u64, bytes: usize) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        if dptr.is_null() || bytes == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        out(dptr, memory::alloc(bytes).ok_or(CUDA_ERROR_OUT_OF_MEMORY)? as u64)
    }

    fn cuMemFree_v2(dptr: u64) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        if dptr == 0 {
            return Ok(());
        }
        if memory::check(dptr as usize, 1).map(|(b, _)| b) != Ok(dptr as usize) {
            eprintln!(
                "cuda-emu: cuMemFree({dptr:#x}): {}",
                memory::check(dptr as usize, 1).err().map_or("not the start of an allocation".into(), |b| b.to_string())
            );
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // freeing synchronises: queued work may still use the memory
        let streams = d.sync_all()?;
        drop(d);
        let r = wait_all(streams);
        memory::free(dptr as usize).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        r
    }

    fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        if pp.is_null() || bytes == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let mut p = std::ptr::null_mut();
        // SAFETY: posix_memalign writes an owned allocation of `bytes` to `p`.
        if unsafe { libc::posix_memalign(&mut p, 4096, bytes) } != 0 {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        memory::pin(p as usize, bytes, true);
        out(pp, p)
    }

    fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, _flags: c_uint) {
        // SAFETY: forwarded.
        let r = unsafe { cuMemAllocHost_v2(pp, bytes) };
        if r == CUDA_SUCCESS { Ok(()) } else { Err(r) }
    }

    fn cuMemFreeHost(p: *mut c_void) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        let streams = d.sync_all()?;
        drop(d);
        wait_all(streams)?;
        match memory::unpin(p as usize) {
            Some((_, true)) => {
                // SAFETY: allocated by cuMemAllocHost_v2 with posix_memalign, freed once.
                unsafe { libc::free(p) };
                Ok(())
            }
            Some((n, false)) => {
                memory::pin(p as usize, n, false);
                Err(CUDA_ERROR_INVALID_VALUE)
            }
            None => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    fn cuMemHostRegister_v2(p: *mut c_void, bytes: usize, _flags: c_uint) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        if p.is_null() || bytes == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        memory::pin(p as usize, bytes, false);
        Ok(())
    }

    fn cuMemHostUnregister(p: *mut c_void) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        match memory::unpin(p as usize) {
            Some((_, false)) => Ok(()),
            Some((n, true)) => {
                memory::pin(p as usize, n, true);
                Err(CUDA_ERROR_INVALID_VALUE)
            }
            None => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    fn cuMemcpyHtoDAsync_v2(dst: u64, src: *const c_void, n: usize, stream: usize) {
        let d = state::lock();
        d.ready()?;
        let s = d.stream(stream)?;
        copy_htod(&d, &s, dst as usize, src, n).map(|_| ())
    }

    fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: u64, n: usize, stream: usize) {
        let d = state::lock();
        d.ready()?;
        let s = d.stream(stream)?;
        copy_dtoh(d, s, dst, src as usize, n, false)
    }

    fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, stream: usize) {
        let d = state::lock();
        d.ready()?;
        let s = d.stream(stream)?;
        check_device_range(src as usize, n)?;
        check_device_range(dst as usize, n)?;
        if n == 0 {
            return Ok(());
        }
        d.submit(&s, Op::DtoD { dst: dst as usize, src: src as usize, len: n }).map(|_| ())
    }

    fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, n: usize) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        let s = d.legacy();
        let seq = copy_htod(&d, &s, dst as usize, src, n)?;
        drop(d);
        if seq > 0 {
            s.wait_until(seq);
        }
        fault::get().map_or(Ok(()), Err)
    }

    fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        let s = d.legacy();
        copy_dtoh(d, s, dst, src as usize, n, true)
    }

    fn cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) {
        let d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        check_device_range(src as usize, n)?;
        check_device_range(dst as usize, n)?;
        if n == 0 {
            return Ok(());
        }
        let s = d.legacy();
        d.submit(&s, Op::DtoD { dst: dst as usize, src: src as usize, len: n }).map(|_| ())
    }

    fn cuMemsetD8_v2(dst: u64, v: u8, n: usize) {
        memset(None, dst as usize, v as u32, 1, n)
    }

    fn cuMemsetD32_v2(dst: u64, v: c_uint, n: usize) {
        memset(None, dst as usize, v, 4, n)
    }

    fn cuMemsetD8Async(dst: u64, v: u8, n: usize, stream: usize) {
        memset(Some(stream), dst as usize, v as u32, 1, n)
    }

    fn cuMemsetD32Async(dst: u64, v: c_uint, n: usize, stream: usize) {
        memset(Some(stream), dst as usize, v, 4, n)
    }

    fn cuModuleLoadData(m: *mut usize, image: *const c_void) {
        let mut d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        if m.is_null() || image.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller passes a complete image (cuModuleLoadData's contract).
        let len = unsafe { module::image_len(image as *const u8) }.ok_or(CUDA_ERROR_INVALID_IMAGE)?;
        // SAFETY: the image spans `len` bytes by its own headers.
        let bytes = unsafe { std::slice::from_raw_parts(image as *const u8, len) };
        let kernels = module::parse(bytes).map_err(|why| {
            eprintln!("cuda-emu: cuModuleLoadData: {why}");
            if why.starts_with("no sm_90") { CUDA_ERROR_NO_BINARY_FOR_GPU } else { CUDA_ERROR_INVALID_IMAGE }
        })?;
        let mh = d.handle();
        let mut fs = Vec::new();
        for (_, info) in kernels {
            let fh = d.handle();
            d.functions.insert(fh, Arc::new(Function { info, max_dyn_shared: Mutex::new(None) }));
            fs.push(fh);
        }
        d.modules.insert(mh, fs);
        out(m, mh)
    }

    fn cuModuleGetFunction(f: *mut usize, m: usize, name: *const c_char) {
        let d = state::lock();
        d.ready()?;
        if f.is_null() || name.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let fs = d.modules.get(&m).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        // SAFETY: NUL-terminated name (C API contract).
        let want = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
        let h = fs.iter().copied().find(|h| d.functions[h].info.name == want).ok_or(CUDA_ERROR_NOT_FOUND)?;
        out(f, h)
    }

    fn cuModuleUnload(m: usize) {
        let mut d = state::lock();
        d.ready()?;
        d.unsafe_call()?;
        let fs = d.modules.remove(&m).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        for f in fs {
            d.functions.remove(&f);
        }
        Ok(())
    }

    fn cuFuncGetAttribute(v: *mut c_int, a: c_uint, f: usize) {
        let d = state::lock();
        d.ready()?;
        let func = d.functions.get(&f).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let info = &func.info;
        let dyn_max = func.max_dyn_shared.lock().unwrap_or_else(|e| e.into_inner())
            .unwrap_or(DEFAULT_SHARED.saturating_sub(info.static_shared));
        out(v, match a {
            CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK => info.max_threads.unwrap_or(1024) as c_int,
            CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES => info.static_shared as c_int,
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => dyn_max as c_int,
            _ => return Err(CUDA_ERROR_NOT_SUPPORTED),
        })
    }

    fn cuFuncSetAttribute(f: usize, a: c_uint, v: c_int) {
        let d = state::lock();
        d.ready()?;
        let func = d.functions.get(&f).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        match a {
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                if v < 0 || v as u32 + func.info.static_shared > MAX_OPTIN_SHARED {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                *func.max_dyn_shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(v as u32);
                Ok(())
            }
            _ => Err(CUDA_ERROR_NOT_SUPPORTED),
        }
    }

    fn cuLaunchKernel(
        f: usize,
        gx: c_uint,
        gy: c_uint,
        gz: c_uint,
        bx: c_uint,
        by: c_uint,
        bz: c_uint,
        shared: c_uint,
        stream: usize,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) {
        launch(f, [gx, gy, gz], [bx, by, bz], shared, stream, params, extra)
    }

    fn cuStreamCreate(s: *mut usize, flags: c_uint) {
        let mut d = state::lock();
        d.ready()?;
        if s.is_null() || flags & !CU_STREAM_NON_BLOCKING != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = d.handle();
        d.streams.insert(h, Stream::spawn(h, false, flags & CU_STREAM_NON_BLOCKING != 0));
        out(s, h)
    }

    fn cuStreamDestroy_v2(s: usize) {
        let mut d = state::lock();
        d.ready()?;
        let st = d.streams.remove(&s).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        // the worker finishes what was queued, then exits (cuStreamDestroy returns at once)
        st.retire();
        Ok(())
    }

    fn cuStreamSynchronize(s: usize) {
        let d = state::lock();
        d.ready()?;
        let st = d.stream(s)?;
        if st.lock().capture.is_some() {
            capture_refuses(&st);
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        drop(d);
        wait_all(vec![st])
    }

    fn cuStreamQuery(s: usize) {
        let d = state::lock();
        d.ready()?;
        let st = d.stream(s)?;
        if st.lock().capture.is_some() {
            capture_refuses(&st);
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        st.kick();
        if st.idle() { Ok(()) } else { Err(CUDA_ERROR_NOT_READY) }
    }

    fn cuStreamBeginCapture_v2(s: usize, mode: c_uint) {
        let d = state::lock();
        d.ready()?;
        let st = d.stream(s)?;
        d.begin_capture(&st, mode)
    }

    fn cuStreamEndCapture(s: usize, graph: *mut usize) {
        let mut d = state::lock();
        d.ready()?;
        if graph.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let st = d.stream(s)?;
        let cap = {
            let mut q = st.lock();
            let Some(c) = q.capture.as_ref() else { return Err(CUDA_ERROR_ILLEGAL_STATE) };
            if c.mode != CU_STREAM_CAPTURE_MODE_RELAXED && c.thread != std::thread::current().id() {
                return Err(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
            }
            q.capture.take().expect("capture")
        };
        if cap.invalidated {
            out(graph, 0)?;
            return Err(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        let h = d.handle();
        d.graphs.insert(h, Arc::new(cap.nodes));
        out(graph, h)
    }

    fn cuStreamIsCapturing(s: usize, status: *mut c_uint) {
        let d = state::lock();
        d.ready()?;
        let st = d.stream(s)?;
        let v = match st.lock().capture.as_ref() {
            None => CU_STREAM_CAPTURE_STATUS_NONE,
            Some(c) if c.invalidated => CU_STREAM_CAPTURE_STATUS_INVALIDATED,
            Some(_) => CU_STREAM_CAPTURE_STATUS_ACTIVE,
        };
        out(status, v)
    }

    fn cuStreamWaitEvent(s: usize, e: usize, _flags: c_uint) {
        let d = state::lock();
        d.ready()?;
        let st = d.stream(s)?;
        let ev = d.events.get(&e).cloned().ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let at = ev.at.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match at {
            Some((stream, upto)) if !Arc::ptr_eq(&stream, &st) => d.submit(&st, Op::Wait { stream, upto }).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn cuEventCreate(e: *mut usize, _flags: c_uint) {
        let mut d = state::lock();
        d.ready()?;
        if e.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = d.handle();
        d.events.insert(h, Arc::new(Event { at: Mutex::new(None), time: Arc::new(Mutex::new(None)) }));
        out(e, h)
    }

    fn cuEventRecord(e: usize, s: usize) {
        let d = state::lock();
        d.ready()?;
        let st = d.stream(s)?;
        let ev = d.events.get(&e).cloned().ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        *ev.time.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let seq = d.submit(&st, Op::Record(ev.time.clone()))?;
        *ev.at.lock().unwrap_or_else(|e| e.into_inner()) = (seq > 0).then(|| (st.clone(), seq));
        Ok(())
    }

    fn cuEventSynchronize(e: usize) {
        let d = state::lock();
        d.ready()?;
        let ev = d.events.get(&e).cloned().ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        drop(d);
        let at = ev.at.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((s, upto)) = at {
            s.wait_until(upto);
        }
        fault::get().map_or(Ok(()), Err)
    }

    fn cuEventQuery(e: usize) {
        let d = state::lock();
        d.ready()?;
        let ev = d.events.get(&e).cloned().ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let at = ev.at.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match at {
            Some((s, _)) => {
                s.kick();
                if ev.time.lock().unwrap_or_else(|e| e.into_inner()).is_some() { Ok(()) } else { Err(CUDA_ERROR_NOT_READY) }
            }
            None => Ok(()),
        }
    }

    fn cuEventElapsedTime(ms: *mut f32, start: usize, end: usize) {
        let d = state::lock();
        d.ready()?;
        let t = |h: usize| -> Result<std::time::Instant, CuResult> {
            let ev = d.events.get(&h).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            let at = ev.time.lock().unwrap_or_else(|e| e.into_inner());
            at.ok_or(CUDA_ERROR_NOT_READY)
        };
        let (a, b) = (t(start)?, t(end)?);
        out(ms, if b >= a { (b - a).as_secs_f32() * 1e3 } else { -((a - b).as_secs_f32() * 1e3) })
    }

    fn cuEventElapsedTime_v2(ms: *mut f32, start: usize, end: usize) {
        // SAFETY: forwarded.
        let r = unsafe { cuEventElapsedTime(ms, start, end) };
        if r == CUDA_SUCCESS { Ok(()) } else { Err(r) }
    }

    fn cuEventDestroy_v2(e: usize) {
        let mut d = state::lock();
        d.ready()?;
        d.events.remove(&e).map(|_| ()).ok_or(CUDA_ERROR_INVALID_HANDLE)
    }

    fn cuGraphInstantiateWithFlags(exec: *mut usize, graph: usize, _flags: u64) {
        let mut d = state::lock();
        d.ready()?;
        if exec.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let g = d.graphs.get(&graph).cloned().ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let h = d.handle();
        d.execs.insert(h, g);
        out(exec, h)
    }

    fn cuGraphLaunch(exec: usize, s: usize) {
        let d = state::lock();
        d.ready()?;
        let g = d.execs.get(&exec).cloned().ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let st = d.stream(s)?;
        d.submit(&st, Op::Graph(g)).map(|_| ())
    }

    fn cuGraphExecDestroy(exec: usize) {
        let mut d = state::lock();
        d.ready()?;
        d.execs.remove(&exec).map(|_| ()).ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    fn cuGraphDestroy(graph: usize) {
        let mut d = state::lock();
        d.ready()?;
        d.graphs.remove(&graph).map(|_| ()).ok_or(CUDA_ERROR_INVALID_VALUE)
    }
}

/// `cuGetErrorName` / `cuGetErrorString`: static strings; unknown codes are CUDA_ERROR_INVALID_VALUE with
/// a NULL string.
fn error_text(code: c_uint, s: *mut *const c_char, name: bool) -> R {
    if s.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    match ERRORS.iter().find(|e| e.0 == code) {
        Some(e) => out(s, if name { e.1 } else { e.2 }.as_ptr() as *const c_char),
        None => {
            out(s, std::ptr::null())?;
            Err(CUDA_ERROR_INVALID_VALUE)
        }
    }
}

export! {
    fn cuGetErrorName(code: c_uint, s: *mut *const c_char) {
        error_text(code, s, true)
    }
    fn cuGetErrorString(code: c_uint, s: *mut *const c_char) {
        error_text(code, s, false)
    }
}
