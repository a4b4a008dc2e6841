//! Host memory hints for the large read-mostly buffers (weights, the KV buffer).
//!
//! Operations: [`advise_huge_pages`].

/// Asks the kernel to back the (not yet touched) capacity of `v` with transparent huge pages, where the
/// system allows it (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise` or `always`). A decode
/// step streams every weight once: with 2 MiB pages it takes 512× fewer TLB misses and the hardware
/// prefetchers are not stopped at every 4 KiB boundary. Call it on an empty vector right after
/// `Vec::with_capacity`, before filling it. A no-op elsewhere than Linux, and harmless when refused.
pub fn advise_huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let start = v.as_mut_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<T>();
        let (a, b) = (start.div_ceil(HUGE) * HUGE, end / HUGE * HUGE);
        if b > a {
            // SAFETY: [a, b) lies inside the vector's own allocation; MADV_HUGEPAGE changes no contents
            // and no access rights, only how the kernel backs the pages.
            unsafe {
                madvise(a as *mut std::ffi::c_void, b - a, MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}
