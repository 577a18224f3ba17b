//! One memory budget for the whole operator, from which every memory-related default derives
//! so that the worst case fits.
//!
//! plugboard runs code and reads data chosen by tenants; what each of those may hold at once is
//! bounded, and the bounds are shares of one budget (`--memory-budget-mib`; the chart sets it
//! from the pod's memory limit):
//!
//! | share | of the budget | bounds |
//! | --- | --- | --- |
//! | WebAssembly calls | 1/2 | `concurrent calls × per-call memory cap` (calls beyond the limit wait, bounded) |
//! | compiling components | 1/8 | `compile concurrency (1) × largest component × 4` (compilation's working set) |
//! | compiled components kept | 1/8 | least recently used evicted past this many bytes (and 64 components) |
//! | bodies read whole | 1/16 | `concurrent calls × host.send body` + manifests + apparatus answers |
//! | warm call memory | what the above leave of 13/16, ≤ 2 MiB a slot | `2 × concurrent calls × kept resident`: pages idle memory slots keep between calls so the next call takes no page faults |
//! | everything else | the rest (≥ 3/16) | the operator itself: watch caches, clients, the async runtime |
//!
//! The per-call cap is a quarter of the calls' share, between 16 MiB and 512 MiB, and as many
//! calls run at once as fit the share (1 to 16). A budget of 1 GiB gives 4 calls of at most
//! 128 MiB each, components up to 32 MiB, 128 MiB of compiled components.

/// One mebibyte.
const MIB: u64 = 1 << 20;
/// What compiling a component may hold, as a multiple of its size.
pub const COMPILE_FACTOR: u64 = 4;
/// The smallest budget accepted.
pub const MIN_BUDGET: u64 = 64 * MIB;
/// The most a WebAssembly memory slot keeps resident between calls: a Rust component's stack,
/// data and first heap pages.
pub const MAX_KEPT_RESIDENT: u64 = 2 * MIB;
/// Idle memory slots that may keep pages resident, per concurrent call.
pub const WARM_SLOTS_PER_CALL: u64 = 2;

/// The limits derived from one memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// The whole budget, in bytes.
    pub total: u64,
    /// WebAssembly hook calls running at once.
    pub concurrent_calls: usize,
    /// The largest memory cap a spec may ask for, in bytes.
    pub max_call_memory: u64,
    /// The memory cap of a call whose spec sets none, in bytes.
    pub default_call_memory: u64,
    /// Components compiled at once.
    pub compile_concurrency: usize,
    /// The largest component accepted (downloaded and compiled), in bytes.
    pub max_component_bytes: u64,
    /// Compiled components kept loaded at most.
    pub loaded_components: usize,
    /// Bytes of compiled code kept loaded at most.
    pub loaded_bytes: u64,
    /// The largest OCI manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// The largest answer of an HTTP apparatus or of a `host.send` request, in bytes.
    pub max_body_bytes: usize,
    /// Bytes at the start of each WebAssembly memory slot kept resident between calls; at
    /// most `2 × concurrent_calls` idle slots hold them (0 on budgets too small to spare it).
    pub kept_resident: u64,
}

impl MemoryBudget {
    /// The limits for a budget of `total` bytes (at least [`MIN_BUDGET`]).
    pub fn derive(total: u64) -> Self {
        let total = total.max(MIN_BUDGET);
        let calls = total / 2;
        let max_call_memory = (calls / 4).clamp(16 * MIB, 512 * MIB);
        let concurrent_calls = usize::try_from(calls / max_call_memory)
            .unwrap_or(16)
            .clamp(1, 16);
        let compile = total / 8;
        let max_component_bytes = (compile / COMPILE_FACTOR).clamp(MIB, 64 * MIB);
        let bodies = total / 16;
        // Each call may hold one body, plus one manifest and one apparatus answer per call.
        let max_body_bytes =
            usize::try_from((bodies / (3 * concurrent_calls as u64)).min(MIB)).unwrap_or(1 << 20);
        let mut budget = Self {
            total,
            concurrent_calls,
            max_call_memory,
            default_call_memory: max_call_memory.min(64 * MIB),
            compile_concurrency: 1,
            max_component_bytes,
            loaded_components: 64,
            loaded_bytes: total / 8,
            max_manifest_bytes: (max_body_bytes as u64).min(4 * MIB),
            max_body_bytes,
            kept_resident: 0,
        };
        // Warm memory gets what the other shares leave of 13/16, page-aligned.
        let spare = (total / 16 * 13).saturating_sub(budget.worst_case());
        let slots = WARM_SLOTS_PER_CALL * concurrent_calls as u64;
        budget.kept_resident = (spare / slots).min(MAX_KEPT_RESIDENT) & !0xfff;
        budget
    }

    /// The worst case of everything the budget bounds held at once, in bytes: it never
    /// exceeds the budget less what the operator itself needs.
    pub fn worst_case(&self) -> u64 {
        let calls = self.concurrent_calls as u64;
        calls * self.max_call_memory
            + self.compile_concurrency as u64 * self.max_component_bytes * COMPILE_FACTOR
            + self.loaded_bytes
            + calls * (2 * self.max_body_bytes as u64 + self.max_manifest_bytes)
            + WARM_SLOTS_PER_CALL * calls * self.kept_resident
    }
}

impl Default for MemoryBudget {
    /// The budget of 1 GiB.
    fn default() -> Self {
        Self::derive(1024 * MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_case_fits_every_budget() {
        for mib in [
            1, 64, 100, 128, 256, 512, 1000, 1024, 2048, 4096, 16384, 65536,
        ] {
            let b = MemoryBudget::derive(mib * MIB);
            assert!(
                b.worst_case() <= b.total * 13 / 16,
                "{mib} MiB: worst case {} MiB",
                b.worst_case() / MIB
            );
            assert!(
                b.concurrent_calls >= 1 && b.max_call_memory >= 16 * MIB,
                "{b:?}"
            );
            assert!(b.default_call_memory <= b.max_call_memory);
            assert!(b.kept_resident <= MAX_KEPT_RESIDENT && b.kept_resident.is_multiple_of(4096));
        }
    }

    #[test]
    fn a_gibibyte_gives_four_calls_of_128_mib() {
        let b = MemoryBudget::default();
        assert_eq!(b.concurrent_calls, 4);
        assert_eq!(b.max_call_memory, 128 * MIB);
        assert_eq!(b.default_call_memory, 64 * MIB);
        assert_eq!(b.max_component_bytes, 32 * MIB);
        assert_eq!(b.loaded_bytes, 128 * MIB);
        assert_eq!(
            b.kept_resident, MAX_KEPT_RESIDENT,
            "a gibibyte keeps warm memory"
        );
        let small = MemoryBudget::derive(256 * MIB);
        assert_eq!(
            (small.concurrent_calls, small.max_call_memory),
            (4, 32 * MIB)
        );
    }
}
