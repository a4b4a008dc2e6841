//! Test helpers: the driver initialised with the primary context current on the calling thread, and
//! device memory read and written directly (device addresses are this process's own mapping).

use crate::abi::*;
use crate::driver::*;

/// Panics with the call's name unless it returned CUDA_SUCCESS.
#[track_caller]
pub fn ok(r: CuResult) {
    assert_eq!(r, CUDA_SUCCESS, "CUDA call failed");
}

/// Tests run one at a time: a free or a context synchronisation in one would run another's queued work,
/// which the tests of laziness check is still pending.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Initialises the driver and makes the primary context current (never released: tests share it); holds
/// the test lock until dropped.
pub fn context() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: valid out-pointers.
    unsafe {
        ok(cuInit(0));
        let mut ctx = 0usize;
        ok(cuDevicePrimaryCtxRetain(&mut ctx, 0));
        ok(cuCtxSetCurrent(ctx));
    }
    guard
}

pub fn alloc(bytes: usize) -> u64 {
    let mut p = 0u64;
    // SAFETY: valid out-pointer.
    ok(unsafe { cuMemAlloc_v2(&mut p, bytes) });
    p
}

pub fn stream(flags: u32) -> usize {
    let mut s = 0usize;
    // SAFETY: valid out-pointer.
    ok(unsafe { cuStreamCreate(&mut s, flags) });
    s
}

/// Reads device memory directly, bypassing every stream (what the host would see without a sync).
pub fn peek<T: Copy>(p: u64, n: usize) -> Vec<T> {
    // SAFETY: tests pass live allocations of at least n elements.
    unsafe { std::slice::from_raw_parts(p as *const T, n) }.to_vec()
}

pub fn poke<T: Copy>(p: u64, v: &[T]) {
    // SAFETY: tests pass live allocations of at least v.len() elements.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p as *mut T, v.len()) };
}
