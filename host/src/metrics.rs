//! Operator metrics: the `plugboard_*` Prometheus families served on `/metrics` (see
//! [`crate::health`]), and the plain counters tests and benchmarks read through
//! [`Metrics::snapshot`] to measure the cost of a coupling.
//!
//! Every family is documented in the README's metrics table; label values come from a fixed
//! vocabulary (kinds, condition reasons, lifecycle points, verbs), never from object names, so
//! the number of series stays bounded however many objects there are.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::crd::{Plug, conditions};

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Counters of reconciles, API writes and hook calls, and the Prometheus families.
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
    /// Normal Events not published: their object had too many (see the README's Events).
    pub events_suppressed: AtomicU64,
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
    families: Families,
    /// Whether the controllers' watches have listed everything once.
    synced: AtomicBool,
    /// Caches read when metrics are scraped (set by the running controllers).
    sources: Mutex<Sources>,
}

#[derive(Debug, Default)]
struct Sources {
    plugs: Option<Store<Plug>>,
    pods: Option<Store<Pod>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    apparatus: String,
    hook: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    verb: String,
    resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn hook_histogram() -> Histogram {
    // 5 ms to about 82 s: WebAssembly hooks take milliseconds, HTTP and pod hooks up to the
    // 30 s apparatus timeout.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn compile_histogram() -> Histogram {
    // 10 ms to about 82 s: compiling a component with Cranelift.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// The Prometheus families and the registry that encodes them.
#[derive(Debug)]
struct Families {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    couplings: Family<StateLabels, Gauge>,
    hook_duration: HistogramFamily<HookLabels>,
    api_writes: Family<WriteLabels, Counter>,
    events_suppressed: Counter,
    component_pulls: Family<ResultLabels, Counter>,
    component_compiles: Counter,
    component_cache_hits: Counter,
    component_compile: Histogram,
    guest_traps: Family<KindLabels, Counter>,
    apparatus_pods_running: Gauge,
    leader: Gauge,
    heap: Family<StateLabels, Gauge>,
    heap_releases: Counter,
}

impl Default for Families {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("plugboard");
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles completed, by kind (Plug, Socket, DeferredResource)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and condition reason",
            reconcile_errors.clone(),
        );
        let couplings = Family::<StateLabels, Gauge>::default();
        registry.register(
            "couplings",
            "Plugs by coupling state (the reason of their Coupled condition)",
            couplings.clone(),
        );
        let hook_duration: HistogramFamily<HookLabels> =
            Family::new_with_constructor(hook_histogram);
        registry.register_with_unit(
            "hook_duration",
            "Apparatus calls, by apparatus kind (http, pod, wasm) and hook (lifecycle point or config)",
            Unit::Seconds,
            hook_duration.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes to the API server, by verb and resource",
            api_writes.clone(),
        );
        let events_suppressed = Counter::default();
        registry.register(
            "events_suppressed",
            "Normal Events not published because their object had too many (25 at once, then one per 5 minutes)",
            events_suppressed.clone(),
        );
        let component_pulls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "component_pulls",
            "WebAssembly component fetches by image reference, by result (ok, error)",
            component_pulls.clone(),
        );
        let component_compiles = Counter::default();
        registry.register(
            "component_compiles",
            "WebAssembly components compiled (not in the compiled cache)",
            component_compiles.clone(),
        );
        let component_cache_hits = Counter::default();
        registry.register(
            "component_cache_hits",
            "WebAssembly components loaded from the compiled cache",
            component_cache_hits.clone(),
        );
        let component_compile = compile_histogram();
        registry.register_with_unit(
            "component_compile",
            "Time to compile a WebAssembly component",
            Unit::Seconds,
            component_compile.clone(),
        );
        let guest_traps = Family::<KindLabels, Counter>::default();
        registry.register(
            "guest_traps",
            "WebAssembly calls stopped by the sandbox, by kind (trap, timeout, memory, output)",
            guest_traps.clone(),
        );
        let apparatus_pods_running = Gauge::default();
        registry.register(
            "apparatus_pods_running",
            "Apparatus pods in the Running phase",
            apparatus_pods_running.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process runs the controllers (leads, or leader election is off)",
            leader.clone(),
        );
        let heap = Family::<StateLabels, Gauge>::default();
        registry.register_with_unit(
            "heap",
            "The allocator's heap: in_use (live allocations) and free (freed, kept by the allocator for reuse); glibc only",
            Unit::Bytes,
            heap.clone(),
        );
        let heap_releases = Counter::default();
        registry.register(
            "heap_releases",
            "Times the operator's memory pass gave the allocator's free pages back to the system",
            heap_releases.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            couplings,
            hook_duration,
            api_writes,
            events_suppressed,
            component_pulls,
            component_compiles,
            component_cache_hits,
            component_compile,
            guest_traps,
            apparatus_pods_running,
            leader,
            heap,
            heap_releases,
        }
    }
}

/// What ran a hook, for [`Metrics::hook_called`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApparatusKind {
    /// An HTTP endpoint named in the spec.
    Http,
    /// An apparatus pod plugboard runs.
    Pod,
    /// A WebAssembly component.
    Wasm,
}

impl ApparatusKind {
    /// The `apparatus` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ApparatusKind::Http => "http",
            ApparatusKind::Pod => "pod",
            ApparatusKind::Wasm => "wasm",
        }
    }
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
    /// Normal Events suppressed.
    pub events_suppressed: u64,
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
            events_suppressed: get(&self.events_suppressed),
            apparatus_calls: get(&self.apparatus_calls),
            apparatus_pods_created: get(&self.apparatus_pods_created),
            apparatus_pods_deleted: get(&self.apparatus_pods_deleted),
            wasm_compiles: get(&self.wasm_compiles),
            wasm_cache_loads: get(&self.wasm_cache_loads),
        }
    }

    /// One reconcile of `kind` completed; `error` is the reason it failed with, if it did.
    pub fn reconciled(&self, kind: &str, error: Option<&str>) {
        self.families
            .reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
        if let Some(reason) = error {
            self.families
                .reconcile_errors
                .get_or_create(&ErrorLabels {
                    kind: kind.into(),
                    reason: reason.into(),
                })
                .inc();
        }
    }

    /// An apparatus call for `hook` (a lifecycle point or `config`) took `elapsed`.
    pub fn hook_called(&self, apparatus: ApparatusKind, hook: &str, elapsed: Duration) {
        self.families
            .hook_duration
            .get_or_create(&HookLabels {
                apparatus: apparatus.as_str().into(),
                hook: hook.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One write (`verb`: create, apply, patch, update, delete) of `resource` (its plural,
    /// `/status` for the status subresource).
    pub fn api_write(&self, verb: &str, resource: &str) {
        self.families
            .api_writes
            .get_or_create(&WriteLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    /// A Normal Event was not published: its object had too many.
    pub fn event_suppressed(&self) {
        Self::inc(&self.events_suppressed);
        self.families.events_suppressed.inc();
    }

    /// A component was fetched by its image reference (`ok`) or could not be (`!ok`).
    pub fn component_pulled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.families
            .component_pulls
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// A component was loaded: from the compiled cache, or compiled in `elapsed`.
    pub fn component_loaded(&self, from_cache: bool, elapsed: Duration) {
        if from_cache {
            Self::inc(&self.wasm_cache_loads);
            self.families.component_cache_hits.inc();
        } else {
            Self::inc(&self.wasm_compiles);
            self.families.component_compiles.inc();
            self.families
                .component_compile
                .observe(elapsed.as_secs_f64());
        }
    }

    /// The sandbox stopped a WebAssembly call (`kind`: trap, timeout, memory, output).
    pub fn guest_trapped(&self, kind: &str) {
        self.families
            .guest_traps
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Whether this process runs the controllers.
    pub fn set_leader(&self, leader: bool) {
        self.families.leader.set(i64::from(leader));
    }

    /// Counts a release of free heap pages to the system.
    pub fn heap_released(&self) {
        self.families.heap_releases.inc();
    }

    /// Whether the controllers' watches have listed everything once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Records whether the controllers' watches have listed everything once.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    /// The caches the gauges are computed from when scraped.
    pub fn set_sources(&self, plugs: Option<Store<Plug>>, pods: Option<Store<Pod>>) {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sources.plugs = plugs;
        sources.pods = pods;
    }

    /// The metrics in the Prometheus text format, gauges computed from the caches now.
    pub fn encode(&self) -> String {
        self.refresh();
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(
            &mut text,
            &self.families.registry,
        );
        text
    }

    fn refresh(&self) {
        let (plugs, pods) = {
            let sources = self
                .sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (sources.plugs.clone(), sources.pods.clone())
        };
        self.families.couplings.clear();
        if let Some(plugs) = plugs {
            for plug in plugs.state() {
                let state = coupling_state(&plug);
                self.families
                    .couplings
                    .get_or_create(&StateLabels { state })
                    .inc();
            }
        }
        let running = pods.map_or(0, |pods| {
            pods.state()
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count()
        });
        self.families
            .apparatus_pods_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        if let Some(heap) = crate::heap::stats() {
            for (state, bytes) in [("in_use", heap.in_use), ("free", heap.free)] {
                self.families
                    .heap
                    .get_or_create(&StateLabels {
                        state: state.to_owned(),
                    })
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
    }
}

/// A Plug's coupling state: the reason of its `Coupled` condition (the lifecycle phase or what
/// stops it), `Pending` before the operator has written one.
fn coupling_state(plug: &Plug) -> String {
    plug.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::types::COUPLED))
        .map(|c| c.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "Pending".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_encoded_with_the_plugboard_prefix() {
        let metrics = Metrics::default();
        metrics.reconciled("Plug", None);
        metrics.reconciled("Plug", Some("ApparatusFailed"));
        metrics.hook_called(ApparatusKind::Wasm, "coupled", Duration::from_millis(3));
        metrics.api_write("apply", "plugs/status");
        metrics.component_pulled(true);
        metrics.component_loaded(false, Duration::from_millis(40));
        metrics.component_loaded(true, Duration::ZERO);
        metrics.guest_trapped("timeout");
        metrics.event_suppressed();
        metrics.set_leader(true);
        metrics.heap_released();
        let text = metrics.encode();
        for line in [
            "plugboard_reconciles_total{kind=\"Plug\"} 2",
            "plugboard_reconcile_errors_total{kind=\"Plug\",reason=\"ApparatusFailed\"} 1",
            "plugboard_hook_duration_seconds_count{apparatus=\"wasm\",hook=\"coupled\"} 1",
            "plugboard_api_writes_total{verb=\"apply\",resource=\"plugs/status\"} 1",
            "plugboard_component_pulls_total{result=\"ok\"} 1",
            "plugboard_component_compiles_total 1",
            "plugboard_component_cache_hits_total 1",
            "plugboard_component_compile_seconds_count 1",
            "plugboard_guest_traps_total{kind=\"timeout\"} 1",
            "plugboard_events_suppressed_total 1",
            "plugboard_apparatus_pods_running 0",
            "plugboard_leader 1",
            "plugboard_heap_releases_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                text.contains("plugboard_heap_bytes{state=\"in_use\"} "),
                "{text}"
            );
            assert!(
                text.contains("plugboard_heap_bytes{state=\"free\"} "),
                "{text}"
            );
        }
        assert_eq!(metrics.snapshot().wasm_compiles, 1);
        assert_eq!(metrics.snapshot().wasm_cache_loads, 1);
    }
}
