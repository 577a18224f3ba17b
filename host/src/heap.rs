//! What the memory allocator holds: the live heap against the memory it keeps after frees.
//!
//! Resident memory alone does not tell live data from allocator retention: glibc's `malloc`
//! keeps freed memory in its arenas for reuse, so a process can stay large after what it held
//! is gone. [`stats`] reads the allocator's own figures (glibc's `mallinfo2`, summed over every
//! arena), served on `/metrics` as `plugboard_heap_bytes{state="in_use"|"free"}`.
//!
//! On other C libraries (musl) there are no such figures and [`stats`] gives `None`.

/// The heap as the allocator sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in live allocations (including those served by `mmap` directly).
    pub in_use: u64,
    /// Bytes free in the allocator's arenas: freed, kept for reuse, and resident unless
    /// returned to the system.
    pub free: u64,
}

/// The allocator's figures now, when it has any (glibc).
pub fn stats() -> Option<HeapStats> {
    imp::stats()
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
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::HeapStats;

    pub(super) fn stats() -> Option<HeapStats> {
        None
    }
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
}
