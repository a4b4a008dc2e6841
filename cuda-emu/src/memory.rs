//! Device memory: every allocation is its own page-aligned run of pages (so 256-byte aligned, as
//! `cuMemAlloc` guarantees) inside one reserved address range that nothing else in the process uses,
//! followed by an inaccessible guard page. Addresses are never reused, and freed pages are made
//! inaccessible again, so a stale pointer is recognised as "freed" by every API check and faults in a
//! kernel. New memory is poisoned with 0xFF bytes (NaN as f32 and bf16), never zeroed.
//!
//! Page-locked host memory (`cuMemAllocHost`, `cuMemHostAlloc`, `cuMemHostRegister`) is tracked too: it
//! decides whether an async copy runs at stream time (page-locked) or is staged at the call (pageable).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bytes of address space reserved for device memory (never all committed).
const RESERVE: usize = 1 << 40;
/// What the device reports as its memory (and the most that may be allocated at once).
pub const TOTAL_BYTES: usize = 80 << 30;
/// Poison byte of new device memory.
pub const POISON: u8 = 0xFF;

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Why an address range is not usable device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Inside an allocation that was freed.
    Freed(usize),
    /// Starts in a live allocation but runs past its end.
    OutOfBounds { base: usize, bytes: usize },
    /// Not device memory of this context.
    Foreign,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Freed(b) => write!(f, "inside the freed allocation at {b:#x}"),
            Bad::OutOfBounds { base, bytes } => write!(f, "past the end of the {bytes}-byte allocation at {base:#x}"),
            Bad::Foreign => write!(f, "not device memory of this context"),
        }
    }
}

#[derive(Default)]
struct Heap {
    base: usize,
    next: usize,
    used: usize,
    /// base -> (requested bytes, mapped bytes)
    live: BTreeMap<usize, (usize, usize)>,
    /// base -> mapped bytes
    freed: BTreeMap<usize, usize>,
    /// page-locked host ranges: base -> bytes (and whether we allocated them)
    pinned: BTreeMap<usize, (usize, bool)>,
}

static HEAP: Mutex<Heap> = Mutex::new(Heap {
    base: 0,
    next: 0,
    used: 0,
    live: BTreeMap::new(),
    freed: BTreeMap::new(),
    pinned: BTreeMap::new(),
});

fn heap() -> std::sync::MutexGuard<'static, Heap> {
    HEAP.lock().unwrap_or_else(|e| e.into_inner())
}

/// Allocates `bytes` (> 0) of poisoned device memory; None when out of (device) memory.
pub fn alloc(bytes: usize) -> Option<usize> {
    let pg = page();
    let mut h = heap();
    if h.base == 0 {
        // SAFETY: an anonymous PROT_NONE reservation; no existing mapping is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RESERVE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        h.base = p as usize;
        h.next = h.base;
    }
    let mapped = bytes.checked_add(pg - 1)? / pg * pg;
    if h.used + mapped > TOTAL_BYTES || h.next + mapped + pg > h.base + RESERVE {
        return None;
    }
    let addr = h.next;
    // SAFETY: [addr, addr + mapped) lies inside our reservation and is not in use.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, mapped, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        return None;
    }
    // SAFETY: just made readable and writable.
    unsafe { std::ptr::write_bytes(addr as *mut u8, POISON, mapped) };
    h.next += mapped + pg; // one guard page after every allocation
    h.used += mapped;
    h.live.insert(addr, (bytes, mapped));
    Some(addr)
}

/// Frees the allocation starting at `addr`.
pub fn free(addr: usize) -> Result<(), Bad> {
    let mut h = heap();
    let Some((_, mapped)) = h.live.remove(&addr) else {
        return Err(classify(&h, addr, 1).err().unwrap_or(Bad::Foreign));
    };
    // SAFETY: the pages belong to the freed allocation; nobody may use them any more.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, mapped, libc::MADV_DONTNEED);
        libc::mprotect(addr as *mut libc::c_void, mapped, libc::PROT_NONE);
    }
    h.used -= mapped;
    h.freed.insert(addr, mapped);
    Ok(())
}

fn classify(h: &Heap, addr: usize, len: usize) -> Result<(usize, usize), Bad> {
    if let Some((&base, &(bytes, _))) = h.live.range(..=addr).next_back() {
        if addr < base + bytes.max(1) {
            return if addr.checked_add(len).is_some_and(|end| end <= base + bytes) {
                Ok((base, bytes))
            } else {
                Err(Bad::OutOfBounds { base, bytes })
            };
        }
    }
    if let Some((&base, &mapped)) = h.freed.range(..=addr).next_back() {
        if addr < base + mapped {
            return Err(Bad::Freed(base));
        }
    }
    Err(Bad::Foreign)
}

/// Checks that `[addr, addr + len)` lies inside one live allocation; returns (its base, its size).
pub fn check(addr: usize, len: usize) -> Result<(usize, usize), Bad> {
    classify(&heap(), addr, len.max(1))
}

/// Bytes currently allocated (page-rounded).
pub fn used() -> usize {
    heap().used
}

/// Frees every allocation (the context is destroyed).
pub fn free_all() {
    let bases: Vec<usize> = heap().live.keys().copied().collect();
    for b in bases {
        let _ = free(b);
    }
}

/// Registers `[addr, addr + bytes)` as page-locked host memory (`owned`: allocated by the driver).
pub fn pin(addr: usize, bytes: usize, owned: bool) {
    heap().pinned.insert(addr, (bytes, owned));
}

/// Unregisters the page-locked range starting at `addr`; returns (bytes, owned).
pub fn unpin(addr: usize) -> Option<(usize, bool)> {
    heap().pinned.remove(&addr)
}

/// True when all of `[addr, addr + len)` is page-locked host memory.
pub fn is_pinned(addr: usize, len: usize) -> bool {
    let h = heap();
    h.pinned.range(..=addr).next_back().is_some_and(|(&b, &(n, _))| addr >= b && addr.saturating_add(len) <= b + n)
}

/// The freed allocation `addr` points into, if any (addresses are never reused, so such a value is a stale
/// device pointer).
pub fn freed_base(addr: usize) -> Option<usize> {
    let h = heap();
    if h.base == 0 || addr < h.base || addr >= h.next {
        return None;
    }
    match classify(&h, addr, 1) {
        Err(Bad::Freed(b)) => Some(b),
        _ => None,
    }
}

/// What `addr` is, for a fault message: a live allocation's byte, a freed allocation's, a guard page of the
/// device range, or memory that is not the device's.
pub fn describe(addr: usize) -> String {
    let h = heap();
    if h.base != 0 && addr >= h.base && addr < h.base + RESERVE {
        return match classify(&h, addr, 1) {
            Ok((base, bytes)) => format!("inside the live {bytes}-byte allocation at {base:#x}"),
            Err(Bad::Foreign) => "in the device address range but never mapped (a guard page or unallocated)".into(),
            Err(b) => b.to_string(),
        };
    }
    "outside the device address range".into()
}
