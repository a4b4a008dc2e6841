//! NVTX ranges (Nsight Systems timelines): `let _r = nvtx::range("prefill");` marks everything until the
//! guard drops. The engine opens one per phase (prefill / latent / decode) and the LatentMAS runner one per
//! agent. Costs a function-pointer call when no profiler is attached; a no-op in a build without the NVTX
//! headers ([`available`] is false then). See crates/kernels/nvtx_shim.c and docs/PROFILING.md.
//!
//! Why not cudarc's `nvtx` feature (cudarc 0.19): it loads the NVTX v2 shared library `libnvToolsExt.so` at
//! the first range and panics when it is missing, and it panics on a name holding a NUL byte. CUDA 12
//! deprecated that library and the CUDA 13 toolkit wheels ship only the header-only NVTX v3 (`nvtx3/`), so
//! on the machines we build for every range would panic; the shim needs no library at run time.

use std::ffi::{c_char, CString};

extern "C" {
    fn lmas_nvtx_available() -> i32;
    fn lmas_nvtx_push(name: *const c_char);
    fn lmas_nvtx_pop();
}

/// True when this build has NVTX (the headers were found at build time).
pub fn available() -> bool {
    // SAFETY: a pure C function without arguments.
    unsafe { lmas_nvtx_available() != 0 }
}

/// An open range; it ends when dropped.
#[must_use = "the range ends when this guard is dropped"]
pub struct Range(());

/// Opens a range named `name` (NUL bytes are dropped from the name).
pub fn range(name: &str) -> Range {
    let c = CString::new(name.replace('\0', "")).unwrap_or_default();
    // SAFETY: `c` is NUL-terminated and outlives the call (NVTX copies the message).
    unsafe { lmas_nvtx_push(c.as_ptr()) };
    Range(())
}

impl Drop for Range {
    fn drop(&mut self) {
        // SAFETY: pops the range this guard pushed (guards drop in reverse order of creation).
        unsafe { lmas_nvtx_pop() };
    }
}
