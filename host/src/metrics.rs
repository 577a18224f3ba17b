//! Operator counters. Each write the operator makes to the API server is counted by kind, so the
//! cost of a coupling can be measured (and later exported as `plugboard_*` Prometheus metrics).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of reconciles, API writes and hook calls.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Plug reconciles completed (successfully or not).
    pub plug_reconciles: AtomicU64,
    /// Socket reconciles completed (successfully or not).
    pub socket_reconciles: AtomicU64,
    /// DeferredResource reconciles completed (successfully or not).
    pub deferred_reconciles: AtomicU64,
    /// Status writes (Plug, Socket and DeferredResource).
    pub status_writes: AtomicU64,
    /// Finalizer additions and removals.
    pub finalizer_writes: AtomicU64,
    /// Result Secret writes and deletions.
    pub secret_writes: AtomicU64,
    /// Events published.
    pub events: AtomicU64,
    /// Apparatus calls made (hooks and config).
    pub apparatus_calls: AtomicU64,
    /// Apparatus pods created.
    pub apparatus_pods_created: AtomicU64,
    /// Apparatus pods deleted (idle, replaced, or their owner deleted).
    pub apparatus_pods_deleted: AtomicU64,
    /// WebAssembly components compiled (not found in the compiled cache).
    pub wasm_compiles: AtomicU64,
    /// WebAssembly components loaded from the compiled cache.
    pub wasm_cache_loads: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Plug reconciles run.
    pub plug_reconciles: u64,
    /// Socket reconciles run.
    pub socket_reconciles: u64,
    /// DeferredResource reconciles run.
    pub deferred_reconciles: u64,
    /// Status writes.
    pub status_writes: u64,
    /// Finalizer writes.
    pub finalizer_writes: u64,
    /// Result Secret writes.
    pub secret_writes: u64,
    /// Events published.
    pub events: u64,
    /// Apparatus calls.
    pub apparatus_calls: u64,
    /// Apparatus pods created.
    pub apparatus_pods_created: u64,
    /// Apparatus pods deleted.
    pub apparatus_pods_deleted: u64,
    /// Components compiled.
    pub wasm_compiles: u64,
    /// Components loaded from the compiled cache.
    pub wasm_cache_loads: u64,
}

impl Snapshot {
    /// Writes to the API server, Events excluded.
    pub fn object_writes(&self) -> u64 {
        self.status_writes + self.finalizer_writes + self.secret_writes
    }
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            plug_reconciles: get(&self.plug_reconciles),
            socket_reconciles: get(&self.socket_reconciles),
            deferred_reconciles: get(&self.deferred_reconciles),
            status_writes: get(&self.status_writes),
            finalizer_writes: get(&self.finalizer_writes),
            secret_writes: get(&self.secret_writes),
            events: get(&self.events),
            apparatus_calls: get(&self.apparatus_calls),
            apparatus_pods_created: get(&self.apparatus_pods_created),
            apparatus_pods_deleted: get(&self.apparatus_pods_deleted),
            wasm_compiles: get(&self.wasm_compiles),
            wasm_cache_loads: get(&self.wasm_cache_loads),
        }
    }
}
