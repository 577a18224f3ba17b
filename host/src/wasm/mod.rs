//! The WebAssembly apparatus runtime: runs a component's hooks in-process, sandboxed.
//!
//! One [`wasmtime::Engine`] per process (pooling allocator, epoch interruption); each component
//! is compiled once (and its compiled form cached on disk by digest and engine, so restarts do
//! not recompile); every hook call gets a fresh instance in a fresh store with a wall-clock
//! deadline, a memory cap and a WASI context that grants nothing — no preopened directories, no
//! environment, no sockets. Guest stdout/stderr and `host.log` go to tracing, bounded. Outbound
//! HTTP goes only through `host.send`, only to the spec's `allowedHosts` (an entry without a
//! port allows only the scheme's default port) and only where the operator's egress policy
//! permits, judged on the resolved address at connect time; redirects are never followed. Calls run on
//! blocking threads behind a semaphore, so a slow component cannot stall the async reactor or
//! other reconciles. Every failure — trap, deadline, memory cap, output flood, guest error,
//! incompatible component — is a typed [`WasmError`], never a crash of the operator.

mod cache;
mod limits;
mod state;
mod steps;

pub use cache::{CacheDir, CacheKey, PrivacyError, private_dir, private_dir_or_fresh};
pub use limits::{CallLimits, LimitsError};
pub use steps::CallSteps;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::apparatus::{ConfigRequest, HookRequest, Side};
use crate::budget::MemoryBudget;
use crate::crd::LifecyclePoint;
use crate::egress::{EgressDenied, EgressPolicy};
use crate::engine::Values;
use state::CallState;
use steps::{Step, StepCounters};

/// Bindings generated from `wit/0.1.0` — the only place they are generated.
mod bindings {
    wasmtime::component::bindgen!({
        world: "apparatus",
        path: "../wit/0.1.0",
    });
}

use bindings::plugboard::apparatus::types as wit;

/// The WIT package versions this host runs.
pub const SUPPORTED_WORLDS: &[&str] = &["plugboard:apparatus/hooks@0.1.0"];

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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
        /// `invalid input`, `retry later` or `failed`.
        kind: &'static str,
        /// The component's message.
        message: String,
    },
    /// The hook failed after the operator's egress policy refused a request it sent.
    #[error("the {hook} hook failed after a request it sent was refused ({kind}: {message})")]
    EgressDenied {
        /// The hook.
        hook: &'static str,
        /// `invalid input`, `retry later`, `failed` or `trapped`.
        kind: &'static str,
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
            WasmError::Guest { .. } => "HookFailed",
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

/// Keeps the epoch clock running. The runtime holds one, and so does every call in flight:
/// the clock stops only when the runtime is gone *and* no call is running, so a call that is
/// still running when the operator shuts down still reaches its deadline and ends.
#[derive(Clone)]
struct Ticking(#[allow(dead_code, reason = "held for its lifetime only")] Arc<()>);

/// The runtime: one per operator process.
pub struct WasmRuntime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    loaded: Mutex<LoadedSet>,
    compiling: CompileGate,
    cache: Option<cache::ArtifactCache>,
    permits: Arc<Semaphore>,
    http: reqwest::Client,
    egress: EgressPolicy,
    secrets: Arc<SecretValues>,
    options: WasmOptions,
    ticking: Ticking,
    steps: Arc<StepCounters>,
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
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component built with wit-component has a handful of core instances,
        // memories and tables (main module, adapter, shims); leave room for several.
        pool.total_component_instances(calls * 2 + 4)
            .total_core_instances((calls * 2 + 4) * 16)
            .total_memories((calls * 2 + 4) * 4)
            .total_tables((calls * 2 + 4) * 8)
            .max_memory_size(usize::try_from(options.max_memory).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(setup)?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(setup)?;
        bindings::Apparatus::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )
        .map_err(setup)?;

        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::apparatus::http::tls_config())
            .timeout(options.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(egress.resolver())
            .build()
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
            engine,
            linker: Arc::new(linker),
            loaded: Mutex::new(LoadedSet::default()),
            compiling: CompileGate::new(options.compile_concurrency),
            cache,
            permits: Arc::new(Semaphore::new(options.max_concurrent_calls.max(1))),
            http,
            egress,
            secrets: Arc::new(SecretValues::default()),
            options,
            ticking,
            steps: Arc::default(),
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
        let inputs: Vec<String> = [
            Some(request.plug_data),
            Some(request.socket_data),
            request.vars,
        ]
        .into_iter()
        .flatten()
        .flat_map(|values| values.values().cloned())
        .collect();
        let input = wit::ConfigInput {
            side: side(request.side),
            plug: request.plug.to_string(),
            socket: request.socket.to_string(),
            plug_data: pairs(request.plug_data),
            socket_data: pairs(request.socket_data),
            vars: request.vars.map(pairs),
        };
        let out = self
            .call(
                loaded,
                "config",
                limits,
                context,
                inputs,
                started,
                move |store, apparatus| {
                    apparatus
                        .plugboard_apparatus_hooks()
                        .call_config(store, &input)
                },
            )
            .await?;
        Ok(out.into_iter().collect())
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
        let empty = Values::new();
        let inputs: Vec<String> = [request.plug_config, request.socket_config]
            .into_iter()
            .flatten()
            .flat_map(|values| values.values().cloned())
            .collect();
        let input = wit::Coupling {
            side: side(request.side),
            plug: request.plug.map(ToString::to_string),
            socket: request.socket.map(ToString::to_string),
            plug_config: pairs(request.plug_config.unwrap_or(&empty)),
            socket_config: pairs(request.socket_config.unwrap_or(&empty)),
        };
        let point = request.point;
        self.call(
            loaded,
            point.as_str(),
            limits,
            context,
            inputs,
            started,
            move |store, apparatus| {
                let hooks = apparatus.plugboard_apparatus_hooks();
                match point {
                    LifecyclePoint::Created => hooks.call_created(store, &input),
                    LifecyclePoint::Coupled => hooks.call_coupled(store, &input),
                    LifecyclePoint::Updated => hooks.call_updated(store, &input),
                    LifecyclePoint::Decoupled => hooks.call_decoupled(store, &input),
                    LifecyclePoint::Deleted => hooks.call_deleted(store, &input),
                }
            },
        )
        .await
    }

    async fn call<R, F>(
        &self,
        loaded: Arc<Loaded>,
        hook: &'static str,
        limits: CallLimits,
        context: CallContext,
        inputs: Vec<String>,
        started: Instant,
        f: F,
    ) -> Result<R, WasmError>
    where
        R: Send + 'static,
        F: FnOnce(
                &mut Store<CallState>,
                &bindings::Apparatus,
            ) -> wasmtime::Result<Result<R, wit::HookError>>
            + Send
            + 'static,
    {
        // Only the inputs that came from Secrets are scrubbed from guest text.
        let inputs: Vec<String> = inputs
            .into_iter()
            .filter(|v| self.secrets.contains(v))
            .collect();
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
        let dispatched = self.steps.lap(Step::Queue, waited);
        let steps = self.steps.clone();
        let engine = self.engine.clone();
        let http = self.http.clone();
        let egress = self.egress.clone();
        let options = self.options.clone();
        let handle = tokio::runtime::Handle::current();
        let ticking = self.ticking.clone();
        let (result, returned) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _ticking = ticking;
            let running = steps.lap(Step::Dispatch, dispatched);
            let result = run(
                &engine, &loaded, hook, limits, context, &options, http, egress, &inputs, handle,
                &steps, running, f,
            );
            (
                result.map_err(|error| scrub_error(error, &inputs)),
                Instant::now(),
            )
        })
        .await
        .map_err(|e| WasmError::Trap {
            hook,
            message: format!("the call's thread failed: {e}"),
        })?;
        self.steps.lap(Step::Resume, returned);
        self.steps.count();
        result
    }
}

/// The loaded components, least recently used evicted first past a count and a byte bound.
#[derive(Default)]
struct LoadedSet {
    map: HashMap<String, (Arc<Loaded>, u64)>,
    bytes: u64,
    clock: u64,
}

impl LoadedSet {
    fn get(&mut self, digest: &str) -> Option<Arc<Loaded>> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(digest).map(|(loaded, used)| {
            *used = clock;
            loaded.clone()
        })
    }

    /// Adds `loaded` and evicts the least recently used past the bounds; returns the digests
    /// evicted. (Calls in flight keep what they use until they end.)
    fn insert(&mut self, loaded: Arc<Loaded>, max_count: usize, max_bytes: u64) -> Vec<String> {
        self.clock += 1;
        self.bytes += loaded.code_bytes;
        if let Some((old, _)) = self.map.insert(loaded.digest.clone(), (loaded, self.clock)) {
            self.bytes = self.bytes.saturating_sub(old.code_bytes);
        }
        let mut evicted = Vec::new();
        while self.map.len() > max_count || (self.bytes > max_bytes && !self.map.is_empty()) {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(digest, _)| digest.clone())
            else {
                break;
            };
            if let Some((old, _)) = self.map.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(old.code_bytes);
            }
            evicted.push(oldest);
        }
        evicted
    }
}

/// A counting semaphore for blocking threads: compilations running at once.
struct CompileGate {
    running: Mutex<usize>,
    freed: std::sync::Condvar,
    max: usize,
}

/// One compile slot, given back when dropped.
struct CompileSlot<'a>(&'a CompileGate);

impl CompileGate {
    fn new(max: usize) -> Self {
        Self {
            running: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            max: max.max(1),
        }
    }

    fn enter(&self) -> CompileSlot<'_> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *running >= self.max {
            running = self
                .freed
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        CompileSlot(self)
    }
}

impl Drop for CompileSlot<'_> {
    fn drop(&mut self) {
        let mut running = self
            .0
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running = running.saturating_sub(1);
        self.0.freed.notify_one();
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

#[allow(
    clippy::too_many_arguments,
    reason = "one call's whole context, passed once"
)]
fn run<R, F>(
    engine: &Engine,
    loaded: &Loaded,
    hook: &'static str,
    limits: CallLimits,
    context: CallContext,
    options: &WasmOptions,
    http: reqwest::Client,
    egress: EgressPolicy,
    secrets: &[String],
    handle: tokio::runtime::Handle,
    steps: &StepCounters,
    running: Instant,
    f: F,
) -> Result<R, WasmError>
where
    F: FnOnce(
        &mut Store<CallState>,
        &bindings::Apparatus,
    ) -> wasmtime::Result<Result<R, wit::HookError>>,
{
    let (state, output) = CallState::new(
        &context,
        &limits,
        options,
        http,
        egress,
        secrets.to_vec(),
        handle,
    );
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    let ticks = (limits.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    store.epoch_deadline_trap();

    let started = steps.lap(Step::Setup, running);
    let result = match loaded.pre.instantiate(&mut store) {
        Ok(apparatus) => {
            let instantiated = steps.lap(Step::Instantiate, started);
            let result = f(&mut store, &apparatus);
            steps.lap(Step::Call, instantiated);
            result
        }
        Err(error) => {
            steps.lap(Step::Instantiate, started);
            Err(error)
        }
    };
    let ending = Instant::now();
    let elapsed = ending.saturating_duration_since(started);
    let denied_memory = store.data().limiter.denied;
    let last_log = store.data().last_log.clone();
    let egress_denied = store.data().egress_denied.clone();
    drop(store);
    output.flush(&context.owner, hook, secrets);
    steps.lap(Step::Teardown, ending);
    tracing::debug!(
        owner = %context.owner,
        hook,
        us = elapsed.as_micros() as u64,
        "WebAssembly hook call"
    );
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            let (kind, message) = match error {
                wit::HookError::InvalidInput(m) => ("invalid input", m),
                wit::HookError::RetryLater(m) => ("retry later", m),
                wit::HookError::Failed(m) => ("failed", m),
            };
            if let Some(source) = egress_denied {
                return Err(WasmError::EgressDenied {
                    hook,
                    kind,
                    message: truncate(message, 1024),
                    source,
                });
            }
            Err(WasmError::Guest {
                hook,
                kind,
                message: truncate(message, 1024),
            })
        }
        Err(error) => Err(classify(
            error,
            hook,
            &limits,
            denied_memory,
            output.overflowed(),
            options.output_budget,
            last_log,
        )),
    }
}

fn classify(
    error: wasmtime::Error,
    hook: &'static str,
    limits: &CallLimits,
    denied_memory: bool,
    flooded: bool,
    budget: usize,
    last_log: Option<String>,
) -> WasmError {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return WasmError::Timeout {
            hook,
            after: limits.timeout,
        };
    }
    if denied_memory {
        return WasmError::OutOfMemory {
            hook,
            limit: limits.memory,
        };
    }
    if flooded {
        return WasmError::OutputFlood { hook, budget };
    }
    let mut message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    if let Some(line) = last_log {
        message.push_str(&format!(" (last log line: {line})"));
    }
    WasmError::Trap {
        hook,
        message: truncate(message, 1024),
    }
}

/// Values shorter than this are not scrubbed from guest text: they are too common to mean
/// anything (and scrubbing them would garble every message).
const SCRUB_MIN_LEN: usize = 4;

/// How many Secret values [`SecretValues`] keeps; the oldest are forgotten first (and
/// remembered again the next time their Secret is read for a coupling).
const SECRET_VALUES_KEPT: usize = 16_384;

/// Values read from Secrets, remembered so that guest text that repeats them is scrubbed
/// before it reaches status and Events. Bounded; only values of at least four bytes.
#[derive(Debug, Default)]
pub struct SecretValues {
    inner: Mutex<(
        std::collections::HashSet<String>,
        std::collections::VecDeque<String>,
    )>,
}

impl SecretValues {
    /// Remembers `values` (those of at least four bytes).
    pub fn remember<'a>(&self, values: impl IntoIterator<Item = &'a String>) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *guard;
        for value in values {
            if value.len() < SCRUB_MIN_LEN || set.contains(value) {
                continue;
            }
            if order.len() >= SECRET_VALUES_KEPT
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
            set.insert(value.clone());
            order.push_back(value.clone());
        }
    }

    /// Whether `value` was read from a Secret.
    pub fn contains(&self, value: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .contains(value)
    }
}

/// `error` with every value the hook received that came from a Secret (`inputs` holds only
/// those) replaced by `[redacted]` in the text the guest supplied, so a component cannot read
/// Secret values back through status and Events.
fn scrub_error(error: WasmError, inputs: &[String]) -> WasmError {
    match error {
        WasmError::Guest {
            hook,
            kind,
            message,
        } => WasmError::Guest {
            hook,
            kind,
            message: scrub(&message, inputs),
        },
        WasmError::Trap { hook, message } => WasmError::Trap {
            hook,
            message: scrub(&message, inputs),
        },
        WasmError::EgressDenied {
            hook,
            kind,
            message,
            source,
        } => WasmError::EgressDenied {
            hook,
            kind,
            message: scrub(&message, inputs),
            source,
        },
        other => other,
    }
}

/// `text` with each of `values` (longest first, of at least [`SCRUB_MIN_LEN`] bytes) replaced
/// by `[redacted]`.
pub(crate) fn scrub(text: &str, values: &[String]) -> String {
    let mut values: Vec<&str> = values
        .iter()
        .map(String::as_str)
        .filter(|v| v.len() >= SCRUB_MIN_LEN)
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for value in values {
        if out.contains(value) {
            out = out.replace(value, "[redacted]");
        }
    }
    out
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_remembered_bounded() {
        let values = SecretValues::default();
        values.remember(&["s3cr3t-password".to_owned(), "abc".to_owned()]);
        assert!(values.contains("s3cr3t-password"));
        assert!(!values.contains("abc"), "short values are not kept");
        let many: Vec<String> = (0..SECRET_VALUES_KEPT + 1)
            .map(|i| format!("value-{i}"))
            .collect();
        values.remember(&many);
        assert!(
            !values.contains("s3cr3t-password"),
            "the oldest is forgotten"
        );
        assert!(values.contains(&format!("value-{SECRET_VALUES_KEPT}")));
    }

    #[test]
    fn guest_text_never_carries_input_values() {
        let inputs = vec![
            "s3cr3t-password".to_owned(),
            "s3cr3t".to_owned(),
            "eu".to_owned(),
        ];
        assert_eq!(
            scrub("bad password s3cr3t-password (s3cr3t) in eu", &inputs),
            "bad password [redacted] ([redacted]) in eu"
        );
        let error = scrub_error(
            WasmError::Guest {
                hook: "config",
                kind: "failed",
                message: "got s3cr3t-password".into(),
            },
            &inputs,
        );
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }
}
