//! A count of the parallel regions (fork-joins on the rayon pool) the cpu ops open. Each region wakes the
//! pool's threads and waits for the slowest of them: microseconds each on a busy 2-core machine, against a
//! decode step of tens of milliseconds that opens one or more per projection. The count lets tests pin how
//! many a decode step opens, so a change that adds one is seen.
//!
//! The counter is per thread: it counts the regions that the calling thread opened, so tests running in
//! parallel in one process never see each other's regions. A region opened from inside another region's
//! task counts on the thread that ran the task (the cpu ops never nest them).

use std::cell::Cell;

thread_local! {
    static REGIONS: Cell<u64> = const { Cell::new(0) };
}

/// Records that the calling thread is about to open one parallel region. Called right before every
/// `par_iter`/`broadcast` of the cpu ops that really splits work over the pool.
#[inline]
pub(crate) fn enter() {
    REGIONS.with(|r| r.set(r.get() + 1));
}

/// Parallel regions the calling thread has opened so far (monotonic; take differences).
pub fn parallel_regions() -> u64 {
    REGIONS.with(|r| r.get())
}
