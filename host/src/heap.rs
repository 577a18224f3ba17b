//! What the memory allocator holds, and giving freed memory back to the system.
//!
//! Resident memory alone does not tell live data from allocator retention: glibc's `malloc`
//! keeps freed memory in its arenas for reuse, so a process can stay large after what it held
//! is gone. [`stats`] reads the allocator's own figures (glibc's `mallinfo2`, summed over every
//! arena), served on `/metrics` as `plugboard_heap_bytes{state="in_use"|"free"}`.
//!
//! Profiling the operator through a thousand couplings and their deletion showed more freed
//! heap kept than live heap: glibc returns only the top of an arena to the system, and freed
//! chunks below live ones (watch events, API responses, hook bodies of finished reconciles)
//! stay resident. So the operator process
//! - limits glibc to [`ARENA_MAX`] arenas ([`configure`]; the default is 8 per core, and the
//!   async runtime has a worker thread per core plus blocking threads, each of which may get
//!   an arena of its own that keeps its own freed memory), and
//! - gives freed pages back ([`release`], glibc's `malloc_trim`) when more than
//!   [`RELEASE_ABOVE`] bytes are free, from the controllers' periodic memory pass.
//!
//! On other C libraries (musl) there are no such figures or settings: [`stats`] gives `None`
//! and the others do nothing.

/// The heap as the allocator sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in live allocations (including those served by `mmap` directly).
    pub in_use: u64,
    /// Bytes free in the allocator's arenas: freed, kept for reuse, and resident unless
    /// returned to the system.
    pub free: u64,
}

/// Arenas glibc may create. Two serve the runtime's threads with little lock contention
/// (allocations are short and the operator's work is I/O bound) and keep freed memory in two
/// places instead of up to 8 per core.
pub const ARENA_MAX: i32 = 2;

/// Free heap worth giving back to the system, in bytes.
pub const RELEASE_ABOVE: u64 = 1 << 20;

/// The allocator's figures now, when it has any (glibc).
pub fn stats() -> Option<HeapStats> {
    imp::stats()
}

/// Sets the allocator up for a long-running process ([`ARENA_MAX`] arenas). Call it first in
/// `main`, before any thread starts.
pub fn configure() {
    imp::configure();
}

/// Gives the allocator's free pages back to the system when more than [`RELEASE_ABOVE`] bytes
/// are free. Returns whether it tried. It walks every arena under its lock: a few milliseconds
/// for a heap of tens of MiB, so call it periodically, not per request.
pub fn release() -> bool {
    match stats() {
        Some(heap) if heap.free > RELEASE_ABOVE => {
            imp::trim();
            true
        }
        _ => false,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::HeapStats;

    pub(super) fn stats() -> Option<HeapStats> {
        #[allow(
            unsafe_code,
            reason = "mallinfo2 only reads glibc's counters (under its arena locks); it has no preconditions"
        )]
        let info = unsafe { libc::mallinfo2() };
        let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Some(HeapStats {
            in_use: bytes(info.uordblks).saturating_add(bytes(info.hblkhd)),
            free: bytes(info.fordblks),
        })
    }

    pub(super) fn configure() {
        #[allow(
            unsafe_code,
            reason = "mallopt only changes a glibc setting; M_ARENA_MAX takes any positive count"
        )]
        let done = unsafe { libc::mallopt(libc::M_ARENA_MAX, super::ARENA_MAX) };
        if done == 0 {
            tracing::debug!("glibc refused M_ARENA_MAX");
        }
    }

    pub(super) fn trim() {
        #[allow(
            unsafe_code,
            reason = "malloc_trim only returns free pages of glibc's arenas to the system; it has no preconditions"
        )]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::HeapStats;

    pub(super) fn stats() -> Option<HeapStats> {
        None
    }

    pub(super) fn configure() {}

    pub(super) fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn live_allocations_show_in_use() {
        // Large enough that other tests freeing memory meanwhile cannot hide it.
        let before = stats().unwrap_or_default();
        let block = vec![0u8; 256 << 20];
        let during = stats().unwrap_or_default();
        assert!(
            during.in_use >= before.in_use + (128 << 20),
            "{before:?} → {during:?}"
        );
        drop(std::hint::black_box(block));
    }

    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_is_given_back() {
        // 64 MiB in small blocks (below the mmap threshold, so in an arena), then all freed but
        // the last: the freed ones sit below a live block, so free() cannot return them from
        // the top of the arena and they stay resident until released.
        let mut blocks: Vec<Vec<u8>> = (0..16384).map(|_| vec![1u8; 4096]).collect();
        let last = blocks.pop();
        drop(blocks);
        assert!(stats().unwrap_or_default().free > RELEASE_ABOVE);
        let before = rss_bytes();
        assert!(release());
        let after = rss_bytes();
        assert!(
            after + (32 << 20) < before,
            "RSS {before} → {after} after release"
        );
        drop(std::hint::black_box(last));
    }
}
