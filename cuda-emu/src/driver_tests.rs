//! The driver's documented behaviour, case by case: memory, stream ordering, async copies, capture rules.

use std::ffi::c_void;

use crate::abi::*;
use crate::driver::*;
use crate::memory::POISON;
use crate::testing::*;

#[test]
fn allocations_are_aligned_poisoned_distinct_and_checked_after_free() {
    let _serial = context();
    let a = alloc(1000);
    let b = alloc(3);
    assert_eq!((a % 256, b % 256), (0, 0));
    assert!(peek::<u8>(a, 1000).iter().all(|&x| x == POISON), "new memory is poisoned, not zeroed");
    assert!(b >= a + 1000);
    // SAFETY: valid arguments; a is freed once, then used again on purpose.
    unsafe {
        ok(cuMemFree_v2(a));
        assert_eq!(cuMemFree_v2(a), CUDA_ERROR_INVALID_VALUE, "double free");
        let host = [0u8; 8];
        assert_eq!(cuMemcpyHtoD_v2(a, host.as_ptr() as *const c_void, 8), CUDA_ERROR_INVALID_VALUE, "use after free");
        assert_eq!(cuMemcpyHtoD_v2(b, host.as_ptr() as *const c_void, 8), CUDA_ERROR_INVALID_VALUE, "past the end");
        assert_eq!(cuMemcpyHtoD_v2(0x1000, host.as_ptr() as *const c_void, 1), CUDA_ERROR_INVALID_VALUE, "foreign");
        let c = alloc(1000);
        assert_ne!(c, a, "addresses are never reused");
        ok(cuMemFree_v2(b));
        ok(cuMemFree_v2(c));
    }
}

/// A memset on the legacy stream is asynchronous, and a non-blocking stream does not wait for it; a
/// blocking stream does.
#[test]
fn non_blocking_streams_do_not_wait_for_the_legacy_stream() {
    let _serial = context();
    for (flags, waits) in [(CU_STREAM_NON_BLOCKING, false), (0, true)] {
        let (src, dst) = (alloc(64), alloc(64));
        let s = stream(flags);
        // SAFETY: live buffers and stream.
        unsafe {
            ok(cuMemsetD8_v2(src, 0, 64));
            assert_eq!(peek::<u8>(src, 1)[0], POISON, "the host sees nothing before a synchronisation");
            ok(cuMemcpyDtoDAsync_v2(dst, src, 64, s));
            ok(cuStreamSynchronize(s));
            let want = if waits { 0 } else { POISON };
            assert!(peek::<u8>(dst, 64).iter().all(|&x| x == want), "flags {flags}: {:?}", peek::<u8>(dst, 4));
            ok(cuCtxSynchronize());
            assert!(peek::<u8>(src, 64).iter().all(|&x| x == 0));
            ok(cuStreamDestroy_v2(s));
            ok(cuMemFree_v2(src));
            ok(cuMemFree_v2(dst));
        }
    }
}

/// Async host-to-device copies: a pageable source is staged at the call (the caller may reuse it at
/// once); a page-locked one is read when the copy runs.
#[test]
fn async_copies_stage_pageable_memory_and_read_page_locked_memory_late() {
    let _serial = context();
    let d = alloc(4);
    let s = stream(CU_STREAM_NON_BLOCKING);
    // SAFETY: live buffers; the page-locked buffer is freed after the synchronisation.
    unsafe {
        let mut pageable = [1u8; 4];
        ok(cuMemcpyHtoDAsync_v2(d, pageable.as_ptr() as *const c_void, 4, s));
        pageable.fill(9);
        ok(cuStreamSynchronize(s));
        assert_eq!(peek::<u8>(d, 4), vec![1; 4]);
        let mut pinned: *mut c_void = std::ptr::null_mut();
        ok(cuMemAllocHost_v2(&mut pinned, 4));
        std::ptr::write_bytes(pinned as *mut u8, 2, 4);
        ok(cuMemcpyHtoDAsync_v2(d, pinned, 4, s));
        *(pinned as *mut u8) = 7;
        ok(cuStreamSynchronize(s));
        assert_eq!(peek::<u8>(d, 4), vec![7, 2, 2, 2]);
        // device to pageable host memory returns only once the copy is done
        let mut back = [0u8; 4];
        ok(cuMemcpyDtoHAsync_v2(back.as_mut_ptr() as *mut c_void, d, 4, s));
        assert_eq!(back, [7, 2, 2, 2]);
        ok(cuMemFreeHost(pinned));
        ok(cuStreamDestroy_v2(s));
        ok(cuMemFree_v2(d));
    }
}

/// Thread-local capture: allocation and synchronisation of the capturing stream are refused with
/// CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidate the capture, whose end then reports it and gives no
/// graph.
#[test]
fn capture_refuses_unsafe_calls_and_is_invalidated() {
    let _serial = context();
    let s = stream(CU_STREAM_NON_BLOCKING);
    // SAFETY: live stream; out-pointers valid.
    unsafe {
        for refused in 0..2 {
            ok(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
            let r = if refused == 0 {
                let mut p = 0u64;
                cuMemAlloc_v2(&mut p, 16)
            } else {
                cuStreamSynchronize(s)
            };
            assert_eq!(r, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
            let mut st = 0u32;
            ok(cuStreamIsCapturing(s, &mut st));
            assert_eq!(st, CU_STREAM_CAPTURE_STATUS_INVALIDATED);
            let d = alloc_outside_capture_fails_here();
            assert_eq!(d, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "still capturing: still refused");
            let mut g = 1usize;
            assert_eq!(cuStreamEndCapture(s, &mut g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
            assert_eq!(g, 0);
        }
        // relaxed mode allows allocation
        ok(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_RELAXED));
        let p = alloc(16);
        let mut g = 0usize;
        ok(cuStreamEndCapture(s, &mut g));
        ok(cuGraphDestroy(g));
        ok(cuMemFree_v2(p));
        ok(cuStreamDestroy_v2(s));
    }
}

fn alloc_outside_capture_fails_here() -> CuResult {
    let mut p = 0u64;
    // SAFETY: valid out-pointer.
    unsafe { cuMemAlloc_v2(&mut p, 16) }
}

/// Captured work does not run at capture time; every launch of the instantiated graph replays it.
#[test]
fn graphs_replay_captured_work() {
    let _serial = context();
    let (a, b) = (alloc(16), alloc(16));
    let s = stream(CU_STREAM_NON_BLOCKING);
    // SAFETY: live buffers and stream; out-pointers valid.
    unsafe {
        ok(cuMemsetD32Async(a, 5, 4, s));
        ok(cuStreamSynchronize(s));
        ok(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
        ok(cuMemcpyDtoDAsync_v2(b, a, 16, s));
        ok(cuMemsetD32Async(a, 6, 4, s));
        let host = [0u32; 4];
        assert_eq!(
            cuMemcpyHtoDAsync_v2(a, host.as_ptr() as *const c_void, 16, s),
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
            "a pageable copy cannot be captured"
        );
        let mut g = 0usize;
        assert_eq!(cuStreamEndCapture(s, &mut g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        ok(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
        ok(cuMemcpyDtoDAsync_v2(b, a, 16, s));
        ok(cuMemsetD32Async(a, 6, 4, s));
        ok(cuStreamEndCapture(s, &mut g));
        assert_eq!(peek::<u32>(b, 4), vec![u32::from_le_bytes([POISON; 4]); 4], "nothing ran while capturing");
        let mut exec = 0usize;
        ok(cuGraphInstantiateWithFlags(&mut exec, g, 0));
        ok(cuGraphLaunch(exec, s));
        ok(cuStreamSynchronize(s));
        assert_eq!((peek::<u32>(b, 4), peek::<u32>(a, 4)), (vec![5; 4], vec![6; 4]));
        ok(cuGraphLaunch(exec, s));
        ok(cuStreamSynchronize(s));
        assert_eq!(peek::<u32>(b, 4), vec![6; 4], "the second replay copies the updated value");
        ok(cuGraphExecDestroy(exec));
        ok(cuGraphDestroy(g));
        assert_eq!(cuGraphLaunch(exec, s), CUDA_ERROR_INVALID_VALUE);
        ok(cuStreamDestroy_v2(s));
        ok(cuMemFree_v2(a));
        ok(cuMemFree_v2(b));
    }
}

#[test]
fn error_names_and_strings() {
    let mut s: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: valid out-pointer; the strings are static.
    unsafe {
        ok(cuGetErrorName(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, &mut s));
        assert_eq!(std::ffi::CStr::from_ptr(s).to_str().unwrap(), "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED");
        assert_eq!(cuGetErrorString(123_456, &mut s), CUDA_ERROR_INVALID_VALUE);
        assert!(s.is_null());
    }
}

/// A kernel parameter that points into freed memory is reported as the GPU reports an illegal address:
/// a sticky fault at the next synchronisation. (Checked on the parameter bytes directly: no module needed.)
#[test]
fn stale_device_pointers_in_kernel_parameters_are_reported() {
    let _serial = context();
    let p = alloc(64);
    // SAFETY: freed once.
    ok(unsafe { cuMemFree_v2(p) });
    let call = crate::kernel::KernelCall {
        name: c"latentmas_rmsnorm".to_owned(),
        grid: [1; 3],
        block: [32, 1, 1],
        shared_bytes: 0,
        max_dyn_shared: 48 * 1024,
        params: [(p + 8).to_le_bytes(), [0; 8]].concat(),
    };
    let (code, msg) = call.run().unwrap_err();
    assert_eq!(code, CUDA_ERROR_ILLEGAL_ADDRESS);
    assert!(msg.contains("latentmas_rmsnorm") && msg.contains("freed"), "{msg}");
}

/// `latentmas_swiglu` (one 32-thread block, the 8-wide path) reading `gate_up` and writing `out`: thread 0
/// reads `gate_up[0..8]` first, then `gate_up[inter..inter + 8]`.
fn swiglu_call(gate_up: u64, out: u64, inter: u32) -> crate::kernel::KernelCall {
    crate::kernel::KernelCall {
        name: c"latentmas_swiglu".to_owned(),
        grid: [1; 3],
        block: [32, 1, 1],
        shared_bytes: 0,
        max_dyn_shared: 48 * 1024,
        // LmasSwigluParams { gate_up, out, n: 1, inter }
        params: [&gate_up.to_le_bytes()[..], &out.to_le_bytes(), &1u32.to_le_bytes(), &inter.to_le_bytes()].concat(),
    }
}

/// A kernel that touches an address no allocation backs ends its launch with CUDA_ERROR_ILLEGAL_ADDRESS,
/// naming the kernel and the address, instead of killing the process; the next launch runs normally.
#[test]
fn kernel_faults_on_unmapped_and_freed_memory_are_illegal_address_errors() {
    let _serial = context();
    let page = 4096u64;
    // [a, a + page) live, then its guard page, then the next allocation (freed below)
    let a = alloc(page as usize);
    let c = alloc(page as usize);
    let out = alloc(page as usize);
    assert_eq!(c, a + 2 * page, "allocations are laid out back to back with one guard page");
    ok(unsafe { cuMemFree_v2(c) });
    let guard = a + page;
    let (code, msg) = swiglu_call(guard, out, 8).run().unwrap_err();
    assert_eq!(code, CUDA_ERROR_ILLEGAL_ADDRESS, "{msg}");
    assert!(
        msg.contains("latentmas_swiglu") && msg.contains(&format!("{guard:#x}")) && msg.contains("never mapped"),
        "{msg}"
    );
    // gate_up[inter] with inter = page bf16s lies 2 pages on: inside the freed allocation
    let (code, msg) = swiglu_call(a, out, page as u32).run().unwrap_err();
    assert_eq!(code, CUDA_ERROR_ILLEGAL_ADDRESS, "{msg}");
    assert!(msg.contains("latentmas_swiglu") && msg.contains(&format!("{c:#x}")) && msg.contains("freed"), "{msg}");
    // a write to the guard page
    let (code, msg) = swiglu_call(a, guard, 8).run().unwrap_err();
    assert_eq!(code, CUDA_ERROR_ILLEGAL_ADDRESS, "{msg}");
    assert!(msg.contains("write to"), "{msg}");
    // the process, and the emulator, carry on
    swiglu_call(a, out, 8).run().expect("a correct launch after the faults");
    // SAFETY: live allocations, freed once.
    unsafe {
        ok(cuMemFree_v2(a));
        ok(cuMemFree_v2(out));
    }
}

/// Through a stream the fault is sticky, as on a GPU: the synchronisation reports it, and so does every
/// later call of the context; a new context starts clean.
#[test]
fn kernel_faults_are_sticky_for_the_context() {
    let serial = context();
    let a = alloc(4096);
    let s = stream(CU_STREAM_NON_BLOCKING);
    let call = swiglu_call(a + 4096, a, 8);
    {
        let d = crate::state::lock();
        let st = d.stream(s).expect("stream");
        d.submit(&st, crate::stream::Op::Kernel(std::sync::Arc::new(call))).expect("queued");
    }
    // SAFETY: live stream; out-pointer valid.
    unsafe {
        assert_eq!(cuStreamSynchronize(s), CUDA_ERROR_ILLEGAL_ADDRESS);
        let mut p = 0u64;
        assert_eq!(cuMemAlloc_v2(&mut p, 16), CUDA_ERROR_ILLEGAL_ADDRESS, "sticky");
        assert_eq!(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS, "sticky");
        // destroy the primary context (every test's reference), so that the next test gets a fresh one
        while cuDevicePrimaryCtxRelease_v2(0) == CUDA_SUCCESS {}
    }
    drop(serial);
    let _serial = context();
    let p = alloc(16);
    ok(unsafe { cuMemFree_v2(p) });
}
