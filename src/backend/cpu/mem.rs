//! Host memory hints for the large read-mostly buffers (weights, the KV buffer).
//!
//! Operations: [`advise_huge_pages`], [`zeroed_vec`] (a large buffer whose pages cost nothing until touched),
//! [`resident_bytes`].

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

/// A vector of `len` zeros from the allocator's zeroed allocation, or `None` when it cannot be had. A large
/// request gets fresh anonymous pages from the kernel that are zero by definition: nothing is written, and a
/// page becomes resident only when first touched. (Filling a `Vec` with zeros instead writes every page up
/// front: a 4096-token KV buffer of the 0.6B shape, 939 MB, would be resident before the first prefill.)
pub fn zeroed_vec<T: bytemuck::Zeroable>(len: usize) -> Option<Vec<T>> {
    if len == 0 || std::mem::size_of::<T>() == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(len).ok()?;
    // SAFETY: the layout has a non-zero size; all-zero bytes are a valid `T` (`Zeroable`); the pointer comes
    // from the global allocator with exactly the layout `Vec<T>` frees with (capacity `len`, `align_of::<T>`).
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        if ptr.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(ptr, len, len))
    }
}

/// This process's resident set in bytes (Linux: `/proc/self/statm`), or `None` where it cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_vec_is_zero_and_not_resident_until_touched() {
        const LEN: usize = 1 << 28; // 1 GiB of f32
        let before = resident_bytes();
        let mut v: Vec<f32> = zeroed_vec(LEN).expect("1 GiB of address space");
        assert_eq!(v.len(), LEN);
        let after = resident_bytes();
        if let (Some(b), Some(a)) = (before, after) {
            // other tests of this binary allocate concurrently: allow them 256 MiB
            assert!(a.saturating_sub(b) < 256 << 20, "{} MiB became resident", a.saturating_sub(b) >> 20);
        }
        assert!(v[..4096].iter().chain(&v[LEN - 4096..]).all(|&x| x == 0.0));
        v[LEN / 2] = 1.0;
        assert_eq!(v[LEN / 2], 1.0);
        assert!(zeroed_vec::<f32>(0).unwrap().is_empty());
        assert!(zeroed_vec::<f32>(usize::MAX).is_none(), "an impossible size is refused, not an abort");
    }
}
