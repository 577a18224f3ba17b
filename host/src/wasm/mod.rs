//! The WebAssembly apparatus runtime: runs a component's hooks in-process, sandboxed.
//!
//! One [`wasmtime::Engine`] per process (pooling allocator, epoch interruption); each component
//! is compiled once (and its compiled form cached on disk by digest and engine, so restarts do
//! not recompile); every hook call gets a fresh instance in a fresh store with a wall-clock
//! deadline, a memory cap and a WASI context that grants nothing — no preopened directories, no
//! environment, no sockets. Guest stdout/stderr and `host.log` go to tracing, bounded. Outbound
//! HTTP goes only through `host.send`, only to the spec's `allowedHosts` (an entry without a
//! port allows only the scheme's default port) and only where the operator's egress policy
//! permits, judged on the resolved address at connect time; redirects are never followed.
//! Calls run behind a semaphore (the memory budget's call slots) on the caller's task, with
//! wasmtime's async support: a running guest yields at every epoch tick, so a slow component
//! holds an async runtime thread for at most one tick at a time and cannot stall other
//! reconciles (see [`call`]). Every failure — trap, deadline, memory cap, output flood, guest
//! error, incompatible component — is a typed [`WasmError`], never a crash of the operator.
//!
//! What a call costs is only what isolation needs: a store, a WASI context and an instance of
//! the component pre-linked once per compiled component (`InstancePre`). The pooling allocator
//! keeps each memory slot's first pages resident between calls and resets only the pages a
//! call dirtied (`PAGEMAP_SCAN` where Linux has it), so the next instance takes no page faults;
//! [`WasmRuntime::call_steps`] says where the time goes.

mod cache;
mod call;
pub mod inspect;
mod limits;
mod loaded;
mod secrets;
mod state;
mod steps;

pub use cache::{CacheDir, CacheKey, PrivacyError, private_dir, private_dir_or_fresh};
pub use limits::{CallLimits, LimitsError};
pub use secrets::SecretValues;
pub use steps::CallSteps;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::apparatus::{ConfigRequest, HookErrorKind, HookRequest, Side};
use crate::budget::MemoryBudget;
use crate::egress::{EgressDenied, EgressPolicy};
use crate::engine::Values;
use call::{Invocation, Outcome, Shared};
use loaded::{CompileGate, LoadedSet};
use secrets::scrub_error;
use state::CallState;
use steps::{Step, StepCounters};

/// Bindings generated from `wit/0.1.0` — the only place they are generated. Hooks are called
/// with wasmtime's async support and `host.send` awaits its request.
mod bindings {
    wasmtime::component::bindgen!({
        world: "apparatus",
        path: "../wit/0.1.0",
        imports: { "plugboard:apparatus/host.send": async },
        exports: { default: async },
    });
}

use bindings::plugboard::apparatus::types as wit;

/// The WIT package versions this host runs.
pub const SUPPORTED_WORLDS: &[&str] = &["plugboard:apparatus/hooks@0.1.0"];

/// How often the epoch advances: deadlines are checked, and running guests yield, at each tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each table slot kept resident between calls (tables are small: function
/// references of a component's shims and indirect calls).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Operator-wide settings and bounds of the runtime.
#[derive(Debug, Clone)]
pub struct WasmOptions {
    /// Deadline of a hook call when the spec sets none.
    pub default_timeout: Duration,
    /// The longest deadline a spec may ask for.
    pub max_timeout: Duration,
    /// Memory cap of a call when the spec sets none, in bytes.
    pub default_memory: u64,
    /// The largest memory cap a spec may ask for, in bytes.
    pub max_memory: u64,
    /// Hook calls running at once (each on a blocking thread). Further calls wait for a slot,
    /// at most `queue_timeout`, instead of allocating: `max_concurrent_calls × max_memory` is
    /// the most linear memory guests hold together.
    pub max_concurrent_calls: usize,
    /// How long a call waits for one of the `max_concurrent_calls` slots before it fails with
    /// [`WasmError::Busy`] (and is retried later).
    pub queue_timeout: Duration,
    /// The largest component compiled, in bytes; a larger one is [`WasmError::TooLarge`].
    pub max_component_bytes: u64,
    /// Components compiled at once (compiling holds several times the component's size).
    pub compile_concurrency: usize,
    /// Compiled components kept loaded at most; the least recently used is evicted first.
    pub max_loaded: usize,
    /// Bytes of compiled code kept loaded at most; the least recently used is evicted first.
    pub max_loaded_bytes: u64,
    /// Bytes of guest stdout, stderr and `host.log` kept per call.
    pub output_budget: usize,
    /// Timeout of one `host.send` request.
    pub http_timeout: Duration,
    /// Largest `host.send` response body, in bytes.
    pub http_max_body: usize,
    /// Where compiled components are cached (nothing is cached when unset). Created `0700`;
    /// a folder owned by another user or writable by others is replaced by a fresh private
    /// one, with a warning.
    pub cache_dir: Option<PathBuf>,
    /// The key that authenticates cached compiled components; keep it outside `cache_dir`.
    /// With [`CacheKey::Ephemeral`] (the default) a new runtime recompiles what an earlier
    /// one cached.
    pub cache_key: CacheKey,
    /// Bytes at the start of each linear memory slot kept resident between calls (only the
    /// pages a call dirtied are reset), so the next call's instance takes no page faults
    /// there; at most `2 × max_concurrent_calls` slots hold them. 0 gives every page back.
    pub keep_resident: u64,
}

impl Default for WasmOptions {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(2),
            max_timeout: Duration::from_secs(30),
            default_memory: 64 << 20,
            max_memory: 512 << 20,
            max_concurrent_calls: 4,
            queue_timeout: Duration::from_secs(30),
            max_component_bytes: 64 << 20,
            compile_concurrency: 1,
            max_loaded: 64,
            max_loaded_bytes: 256 << 20,
            output_budget: 64 << 10,
            http_timeout: Duration::from_secs(10),
            http_max_body: 1 << 20,
            cache_dir: None,
            cache_key: CacheKey::Ephemeral,
            keep_resident: 2 << 20,
        }
    }
}

impl WasmOptions {
    /// The defaults derived from `budget` (see [`crate::budget`]): slots, caps, component size,
    /// compile concurrency, the bound of loaded components and of `host.send` answers.
    pub fn from_budget(budget: &MemoryBudget) -> Self {
        Self {
            default_memory: budget.default_call_memory,
            max_memory: budget.max_call_memory,
            max_concurrent_calls: budget.concurrent_calls,
            max_component_bytes: budget.max_component_bytes,
            compile_concurrency: budget.compile_concurrency,
            max_loaded: budget.loaded_components,
            max_loaded_bytes: budget.loaded_bytes,
            http_max_body: budget.max_body_bytes,
            keep_resident: budget.kept_resident,
            ..Self::default()
        }
    }
}

/// Why a component could not be loaded or a hook call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The runtime could not be set up.
    #[error("failed to set up the WebAssembly runtime: {0}")]
    Setup(String),
    /// The bytes are not a valid component for this host.
    #[error("the component cannot be compiled: {0}")]
    Compile(String),
    /// The component implements another version of the contract.
    #[error("the component does not implement {}; it exports {found}. Rebuild it against plugboard-sdk for one of the supported versions", SUPPORTED_WORLDS.join(", "))]
    IncompatibleVersion {
        /// What the component exports.
        found: String,
    },
    /// The call ran past its deadline and was stopped.
    #[error("the {hook} hook ran past its {} ms deadline and was stopped", after.as_millis())]
    Timeout {
        /// The hook.
        hook: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The component tried to use more memory than its cap.
    #[error("the {hook} hook tried to use more than its memory cap of {} MiB and was stopped", limit >> 20)]
    OutOfMemory {
        /// The hook.
        hook: &'static str,
        /// The cap in bytes.
        limit: u64,
    },
    /// The component wrote more output than the budget allows.
    #[error("the {hook} hook wrote more than {budget} bytes of output and was stopped")]
    OutputFlood {
        /// The hook.
        hook: &'static str,
        /// The budget in bytes.
        budget: usize,
    },
    /// The component trapped (a panic, `unreachable`, a bad memory access).
    #[error("the {hook} hook trapped: {message}")]
    Trap {
        /// The hook.
        hook: &'static str,
        /// What happened, with the guest's last log line when it explains the panic.
        message: String,
    },
    /// The hook returned an error.
    #[error("the {hook} hook failed ({kind}): {message}")]
    Guest {
        /// The hook.
        hook: &'static str,
        /// Which `hook-error` the component returned: what plugboard does next.
        kind: HookErrorKind,
        /// The component's message.
        message: String,
    },
    /// The hook failed after the operator's egress policy refused a request it sent.
    #[error("the {hook} hook failed after a request it sent was refused ({kind}: {message})")]
    EgressDenied {
        /// The hook.
        hook: &'static str,
        /// Which `hook-error` the component returned after the refusal.
        kind: HookErrorKind,
        /// The component's message.
        message: String,
        /// The refused request.
        #[source]
        source: EgressDenied,
    },
    /// A limit in the spec cannot be used.
    #[error("invalid spec.apparatus.wasm.limits")]
    Limits(#[source] LimitsError),
    /// The component is larger than the operator compiles.
    #[error(
        "the component is {} bytes, more than the operator's limit of {limit} bytes",
        size
    )]
    TooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Every call slot stayed taken while the call waited.
    #[error("the {hook} hook waited {} ms for one of the operator's WebAssembly call slots; retrying later", waited.as_millis())]
    Busy {
        /// The hook.
        hook: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// The compiled-component cache failed.
    #[error("failed to use the compiled component cache at {}", path.display())]
    Cache {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl WasmError {
    /// The kind of sandbox stop this is (`trap`, `timeout`, `memory`, `output`), for the
    /// `plugboard_guest_traps_total` metric; `None` for errors that are not the guest's doing.
    pub fn trap_kind(&self) -> Option<&'static str> {
        match self {
            WasmError::Trap { .. } => Some("trap"),
            WasmError::Timeout { .. } => Some("timeout"),
            WasmError::OutOfMemory { .. } => Some("memory"),
            WasmError::OutputFlood { .. } => Some("output"),
            _ => None,
        }
    }

    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            WasmError::Setup(_) | WasmError::Cache { .. } => "WasmRuntimeError",
            WasmError::Compile(_) => "InvalidComponent",
            WasmError::IncompatibleVersion { .. } => "IncompatibleComponent",
            WasmError::Timeout { .. } => "HookTimeout",
            WasmError::OutOfMemory { .. } => "HookOutOfMemory",
            WasmError::OutputFlood { .. } => "HookOutputFlood",
            WasmError::Trap { .. } => "HookTrapped",
            WasmError::Guest { kind, .. } => kind.reason(),
            WasmError::Limits(_) => "InvalidLimits",
            WasmError::TooLarge { .. } => "ComponentTooLarge",
            WasmError::Busy { .. } => "WasmBusy",
            WasmError::EgressDenied { .. } => crate::crd::conditions::reasons::EGRESS_DENIED,
        }
    }
}

/// Who a call is for and what it may reach.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// `Plug ns/name` or `Socket ns/name`, for logs.
    pub owner: String,
    /// Hosts (`host` or `host:port`) `host.send` may reach.
    pub allowed_hosts: Vec<String>,
}

/// A compiled component, ready to instantiate.
pub struct Loaded {
    pre: bindings::ApparatusPre<CallState>,
    /// The digest it was loaded under.
    pub digest: String,
    /// Whether the compiled form came from the on-disk cache (no compilation).
    pub from_cache: bool,
    /// How long loading took.
    pub load_time: Duration,
    /// Bytes of compiled code it holds.
    pub code_bytes: u64,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("digest", &self.digest)
            .field("from_cache", &self.from_cache)
            .finish_non_exhaustive()
    }
}

/// Keeps the epoch clock running while the runtime lives (calls borrow the runtime, so every
/// call in flight still reaches its deadline and ends).
struct Ticking(#[allow(dead_code, reason = "held for its lifetime only")] Arc<()>);

/// The runtime: one per operator process.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    loaded: Mutex<LoadedSet>,
    compiling: CompileGate,
    cache: Option<cache::ArtifactCache>,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    secrets: Arc<SecretValues>,
    options: WasmOptions,
    _ticking: Ticking,
    steps: StepCounters,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn setup(e: impl std::fmt::Display) -> WasmError {
    WasmError::Setup(e.to_string())
}

impl WasmRuntime {
    /// Builds the engine, the linker and the epoch ticker. `host.send` reaches only what
    /// `egress` permits.
    pub fn new(options: WasmOptions, egress: EgressPolicy) -> Result<Self, WasmError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let calls = u32::try_from(options.max_concurrent_calls.max(1)).unwrap_or(64);
        let instances = calls * 2 + 4;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component built with wit-component has a handful of core instances,
        // memories and tables (main module, adapter, shims); leave room for several.
        pool.total_component_instances(instances)
            .total_core_instances(instances * 16)
            // Below 128 slots the pool is one shard, so the warm-slot bound below holds for
            // the whole pool.
            .total_memories((instances * 4).min(127))
            .total_tables(instances * 8)
            // One fiber stack per instantiation or call in flight.
            .total_stacks(instances)
            .max_memory_size(usize::try_from(options.max_memory).unwrap_or(usize::MAX))
            // A finished call's memory is reset by rewriting the pages it dirtied (found with
            // PAGEMAP_SCAN where the kernel has it) up to `keep_resident`, instead of being
            // unmapped: the next instance in the slot takes no page faults. Slots are reused
            // for the same component first; new slots are taken only while fewer than `calls`
            // idle ones are warm, so at most `2 × calls` slots ever hold resident pages.
            .linear_memory_keep_resident(usize::try_from(options.keep_resident).unwrap_or(0))
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto)
            .max_unused_warm_slots(calls);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(setup)?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
        bindings::Apparatus::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )
        .map_err(setup)?;

        let ticking = Ticking(Arc::new(()));
        let alive = Arc::downgrade(&ticking.0);
        let ticker_engine = engine.clone();
        std::thread::Builder::new()
            .name("plugboard-wasm-epoch".into())
            .spawn(move || {
                // The epoch clock: deadlines are counted in ticks of this loop.
                while alive.strong_count() > 0 {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(setup)?;

        let cache = match &options.cache_dir {
            Some(dir) => cache::ArtifactCache::open(dir, &options.cache_key)?,
            None => None,
        };

        Ok(Self {
            shared: Arc::new(Shared {
                engine: engine.clone(),
                http: std::sync::OnceLock::new(),
                egress,
                output_budget: options.output_budget,
                http_timeout: options.http_timeout,
                http_max_body: options.http_max_body,
            }),
            engine,
            linker,
            loaded: Mutex::new(LoadedSet::default()),
            compiling: CompileGate::new(options.compile_concurrency),
            cache,
            permits: Arc::new(Semaphore::new(options.max_concurrent_calls.max(1))),
            secrets: Arc::new(SecretValues::default()),
            options,
            _ticking: ticking,
            steps: StepCounters::default(),
        })
    }

    /// The time hook calls spent in each step so far, summed over the calls.
    pub fn call_steps(&self) -> CallSteps {
        self.steps.read()
    }

    /// The runtime's options.
    pub fn options(&self) -> &WasmOptions {
        &self.options
    }

    /// The values read from Secrets, which guest text never carries into errors: whoever
    /// reads a Secret for a coupling remembers its values here.
    pub fn secret_values(&self) -> &SecretValues {
        &self.secrets
    }

    /// Whether the component with `digest` is already loaded in this runtime.
    pub fn is_loaded(&self, digest: &str) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .contains_key(digest)
    }

    /// How many components are loaded and the bytes of compiled code they hold.
    pub fn loaded_usage(&self) -> (usize, u64) {
        let set = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (set.map.len(), set.bytes)
    }

    fn cached_load(&self, digest: &str) -> Option<Arc<Loaded>> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
    }

    /// Loads the component at `path` (whose content has `digest`), compiling it unless a
    /// compiled form for this engine is cached; then it stays loaded for later calls, until
    /// it is the least recently used past [`WasmOptions::max_loaded`] or
    /// [`WasmOptions::max_loaded_bytes`]. A component larger than
    /// [`WasmOptions::max_component_bytes`] is refused; compiling waits for one of
    /// [`WasmOptions::compile_concurrency`] slots. Blocks: call it on a blocking thread.
    pub fn load(&self, digest: &str, path: &Path) -> Result<Arc<Loaded>, WasmError> {
        if let Some(loaded) = self.cached_load(digest) {
            return Ok(loaded);
        }
        let size = std::fs::metadata(path)
            .map_err(|source| WasmError::Cache {
                path: path.to_owned(),
                source,
            })?
            .len();
        if size > self.options.max_component_bytes {
            return Err(WasmError::TooLarge {
                size,
                limit: self.options.max_component_bytes,
            });
        }
        let _slot = self.compiling.enter();
        // Another caller may have loaded it while this one waited.
        if let Some(loaded) = self.cached_load(digest) {
            return Ok(loaded);
        }
        let started = Instant::now();
        let (component, from_cache) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, digest, path)?,
            None => {
                let bytes = std::fs::read(path).map_err(|source| WasmError::Cache {
                    path: path.to_owned(),
                    source,
                })?;
                (
                    Component::new(&self.engine, &bytes)
                        .map_err(|e| WasmError::Compile(format!("{e:#}")))?,
                    false,
                )
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| self.incompatible(&component, e))?;
        let pre = bindings::ApparatusPre::new(pre).map_err(|e| self.incompatible(&component, e))?;
        let image = component.image_range();
        let code_bytes = (image.end as usize).saturating_sub(image.start as usize) as u64;
        let loaded = Arc::new(Loaded {
            pre,
            digest: digest.to_owned(),
            from_cache,
            load_time: started.elapsed(),
            code_bytes,
        });
        tracing::info!(
            digest,
            from_cache,
            ms = loaded.load_time.as_millis() as u64,
            "loaded WebAssembly component"
        );
        let evicted = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                loaded.clone(),
                self.options.max_loaded.max(1),
                self.options.max_loaded_bytes,
            );
        for digest in evicted {
            tracing::info!(%digest, "evicted a compiled WebAssembly component (least recently used)");
        }
        Ok(loaded)
    }

    fn incompatible(&self, component: &Component, error: wasmtime::Error) -> WasmError {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if exports
            .iter()
            .any(|e| SUPPORTED_WORLDS.contains(&e.as_str()))
        {
            // It exports the right interface, so something else is wrong (an import we do
            // not provide, say): report that.
            return WasmError::Compile(format!("{error:#}"));
        }
        WasmError::IncompatibleVersion {
            found: if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            },
        }
    }

    /// Runs the `config` hook.
    pub async fn config(
        &self,
        loaded: Arc<Loaded>,
        request: &ConfigRequest<'_>,
        limits: CallLimits,
        context: CallContext,
    ) -> Result<Values, WasmError> {
        let started = Instant::now();
        // Only the inputs that came from Secrets are scrubbed from guest text.
        let secrets = self.secrets.among(
            [
                Some(request.plug_data),
                Some(request.socket_data),
                request.vars,
            ]
            .into_iter()
            .flatten()
            .flat_map(|values| values.values()),
        );
        let input = wit::ConfigInput {
            side: side(request.side),
            plug: request.plug.to_string(),
            socket: request.socket.to_string(),
            plug_data: pairs(request.plug_data),
            socket_data: pairs(request.socket_data),
            vars: request.vars.map(pairs),
        };
        let invocation = Invocation::Config(input);
        match self
            .call(
                loaded, "config", limits, context, secrets, started, invocation,
            )
            .await?
        {
            Outcome::Config(out) => Ok(out.into_iter().collect()),
            Outcome::Hook => Ok(Values::new()),
        }
    }

    /// Runs a lifecycle hook.
    pub async fn hook(
        &self,
        loaded: Arc<Loaded>,
        request: &HookRequest<'_>,
        limits: CallLimits,
        context: CallContext,
    ) -> Result<(), WasmError> {
        let started = Instant::now();
        let secrets = self.secrets.among(
            [request.plug_config, request.socket_config]
                .into_iter()
                .flatten()
                .flat_map(|values| values.values()),
        );
        let input = wit::Coupling {
            side: side(request.side),
            plug: request.plug.map(ToString::to_string),
            socket: request.socket.map(ToString::to_string),
            plug_config: request.plug_config.map(pairs).unwrap_or_default(),
            socket_config: request.socket_config.map(pairs).unwrap_or_default(),
        };
        let point = request.point;
        let invocation = Invocation::Hook(point, input);
        self.call(
            loaded,
            point.as_str(),
            limits,
            context,
            secrets,
            started,
            invocation,
        )
        .await
        .map(|_| ())
    }

    /// Runs `invocation` in a fresh instance once a call slot is free; `started` is when the
    /// caller began encoding its input.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call's whole context, passed once"
    )]
    async fn call(
        &self,
        loaded: Arc<Loaded>,
        hook: &'static str,
        limits: CallLimits,
        context: CallContext,
        secrets: Vec<String>,
        started: Instant,
        invocation: Invocation,
    ) -> Result<Outcome, WasmError> {
        let waited = self.steps.lap(Step::Encode, started);
        let permit = tokio::time::timeout(
            self.options.queue_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| WasmError::Busy {
            hook,
            waited: waited.elapsed(),
        })?
        .map_err(setup)?;
        let ready = self.steps.lap(Step::Queue, waited);
        let result = call::run(
            &self.shared,
            &loaded,
            hook,
            limits,
            context,
            &secrets,
            permit,
            &self.steps,
            ready,
            invocation,
        )
        .await;
        self.steps.count();
        result.map_err(|error| scrub_error(error, &secrets))
    }
}

fn side(side: Side) -> wit::Side {
    match side {
        Side::Plug => wit::Side::Plug,
        Side::Socket => wit::Side::Socket,
    }
}

fn pairs(values: &Values) -> Vec<(String, String)> {
    values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
