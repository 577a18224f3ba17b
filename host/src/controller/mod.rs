//! The operator: Plug, Socket and DeferredResource controllers sharing one [`Context`].
//!
//! Each object's status has exactly one writer: the Plug controller writes Plug status (and
//! runs the coupling hooks of both sides, once per Plug), the Socket controller writes Socket
//! status and derives its list of coupled Plugs from the Plugs' status. So a hundred Plugs
//! coupling at once never race on the Socket's status. Changes to a Socket wake exactly the
//! Plugs that reference it or are coupled to it; changes to a Plug wake its Socket.

mod cache;
mod debug;
mod deferred;
mod error;
mod fairness;
mod guard;
mod hooks;
mod memory;
pub mod objects;
mod optin;
mod plan;
mod plug;
mod pods;
mod recorder;
mod render;
mod result;
mod seed;
mod shared;
mod signatures;
mod socket;
mod sources;
mod spam;
mod vars;
mod verdicts;
mod wasm;
mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Config, ResourceExt as _};
use tokio::task::JoinHandle;

use crate::apparatus::http::{HttpApparatus, HttpOptions};
use crate::crd::{DeferredResource, Plug, Socket};
use crate::egress::{EgressOptions, EgressPolicy};
use crate::engine::template::TemplateLimits;
use crate::metrics::Metrics;
use crate::oci::{ComponentStore, StoreOptions};
use crate::wasm::{WasmOptions, WasmRuntime};

pub use error::Error;
pub use objects::ObjectError;
pub use optin::{IMPERSONATION_ALLOWED, IMPERSONATION_LABEL, ImpersonationError};
pub use plan::{PlanReport, plan};
pub use pods::{PodError, PodOptions};

/// Finalizer that keeps a Plug or Socket until its decouple and delete hooks have run, and a
/// DeferredResource until the object it created is deleted.
pub const FINALIZER: &str = "plugboard.dev/finalizer";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "plugboard";
/// Annotation on a Plug that lets its decouple proceed past failing hooks or config.
pub const FORCE_DECOUPLE_ANNOTATION: &str = "plugboard.dev/force-decouple";

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (all namespaces when unset).
    pub namespace: Option<String>,
    /// Manage only Plugs, Sockets and DeferredResources whose labels match this selector (for
    /// sharding).
    pub selector: Option<String>,
    /// Reconciles running at once in the Socket and DeferredResource controllers.
    pub concurrency: u16,
    /// Reconciles running at once in the Plug controller: more than the others, since a Plug
    /// reconcile mostly waits on apparatuses (see [`Options::hook_calls_per_socket`]).
    pub plug_concurrency: u16,
    /// Hook and `config` calls of one Socket's couplings in flight at once, so a hanging
    /// apparatus holds only this many Plug workers.
    pub hook_calls_per_socket: usize,
    /// How long a call waits for one of its Socket's slots before the reconcile is retried
    /// (with backoff) instead.
    pub hook_slot_wait: Duration,
    /// How long one reconcile may run; one still running is dropped and retried with backoff.
    pub reconcile_deadline: Duration,
    /// HTTP apparatus client settings.
    pub http: HttpOptions,
    /// Name reported in Events (`reportingInstance`).
    pub instance: String,
    /// Delay before a coupling waiting for a required result looks again.
    pub result_poll: Duration,
    /// The longest delay before retrying after a failure (a missing Secret, an apparatus down,
    /// an API error): the delay starts at `retry_min` and doubles with each consecutive failure
    /// of the object, with jitter, up to this.
    pub retry: Duration,
    /// The first delay after a failure.
    pub retry_min: Duration,
    /// The largest OCI manifest read, in bytes.
    pub max_manifest_bytes: u64,
    /// The operator's memory budget, from which [`Options::with_budget`] derived the bounds
    /// (recorded for logs; the bounds themselves are the fields they set).
    pub memory_budget: Option<crate::budget::MemoryBudget>,
    /// Timeouts of the operator's requests to the API server (`connect`, `read`); watches use
    /// a client without a read timeout (kube-runtime's watcher has an idle timeout of its own).
    pub api_timeouts: (Duration, Duration),
    /// Folder for downloaded components and their compiled forms. Created `0700`; one owned by
    /// another user or writable by others is replaced by a fresh private folder, with a
    /// warning. Default [`default_cache_dir`].
    pub cache_dir: PathBuf,
    /// The key file that authenticates compiled components in `cache_dir` (created `0600`
    /// when missing, in a private folder; keep it outside `cache_dir`). `None`: a key for this
    /// process only, so a restart recompiles. Default [`default_cache_key_file`].
    pub cache_key_file: Option<PathBuf>,
    /// Registries (`host:port`) that may be spoken to over plain HTTP instead of HTTPS.
    pub plain_http_registries: Vec<String>,
    /// WebAssembly runtime settings and bounds.
    pub wasm: WasmOptions,
    /// How often a coupled Plug is computed again so that changes no watch reports (source
    /// Secrets and ConfigMaps, var targets, apparatus `config` replies) fire `updated`. Spread
    /// by ±10%.
    pub recheck: Duration,
    /// Bounds on rendering one template.
    pub templates: TemplateLimits,
    /// Apparatus pods: how long to wait for readiness, how to reach them, how often idle ones
    /// are looked for.
    pub pods: PodOptions,
    /// Where HTTP apparatus endpoints, WebAssembly `host.send` and registry pulls (registry,
    /// token service, redirects) may connect, besides the built-in denials (loopback, link-local, the API server; see [`crate::egress`]).
    pub egress: EgressOptions,
    /// Send every Plug's hooks and `config` calls to this HTTP endpoint instead of the
    /// apparatus in its spec (the reference's `DEBUG_PLUG_ENDPOINT`; for local development).
    pub debug_plug_endpoint: Option<String>,
    /// The same for Sockets (`DEBUG_SOCKET_ENDPOINT`).
    pub debug_socket_endpoint: Option<String>,
    /// How often the operator repeats its warning while a debug endpoint is set.
    pub debug_warning_every: Duration,
    /// Which component signatures are trusted and whether they are required (see
    /// [`crate::signature`]).
    pub signatures: crate::signature::SignatureOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            selector: None,
            concurrency: 16,
            plug_concurrency: 16,
            hook_calls_per_socket: 4,
            hook_slot_wait: Duration::from_secs(10),
            reconcile_deadline: Duration::from_secs(300),
            http: HttpOptions::default(),
            instance: "plugboard".to_owned(),
            result_poll: Duration::from_secs(5),
            retry: Duration::from_secs(15),
            retry_min: Duration::from_secs(1),
            max_manifest_bytes: 4 << 20,
            memory_budget: None,
            api_timeouts: (Duration::from_secs(10), Duration::from_secs(60)),
            cache_dir: default_cache_dir(),
            cache_key_file: default_cache_key_file(),
            plain_http_registries: Vec::new(),
            wasm: WasmOptions::default(),
            recheck: Duration::from_secs(120),
            templates: TemplateLimits::default(),
            pods: PodOptions::default(),
            egress: EgressOptions::default(),
            debug_plug_endpoint: None,
            debug_socket_endpoint: None,
            debug_warning_every: Duration::from_secs(60),
            signatures: Default::default(),
        }
    }
}

impl Options {
    /// These options with every memory bound derived from `budget` (see [`crate::budget`]):
    /// WebAssembly call slots and caps, component size, compile concurrency, the compiled
    /// components kept, manifest and answer sizes.
    pub fn with_budget(mut self, budget: crate::budget::MemoryBudget) -> Self {
        self.wasm = WasmOptions {
            cache_dir: self.wasm.cache_dir.clone(),
            cache_key: self.wasm.cache_key.clone(),
            default_timeout: self.wasm.default_timeout,
            max_timeout: self.wasm.max_timeout,
            ..WasmOptions::from_budget(&budget)
        };
        self.http.max_response_bytes = budget.max_body_bytes;
        self.max_manifest_bytes = budget.max_manifest_bytes;
        self.memory_budget = Some(budget);
        self
    }
}

fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// `$XDG_CACHE_HOME/plugboard`, else `$HOME/.cache/plugboard`, else (with neither set)
/// `plugboard-cache` in the temp directory — which [`Context`] warns about, and replaces with a
/// fresh private folder when someone else made it first.
pub fn default_cache_dir() -> PathBuf {
    env_dir("XDG_CACHE_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("plugboard"))
        .unwrap_or_else(temp_cache_dir)
}

/// The last resort of [`default_cache_dir`].
fn temp_cache_dir() -> PathBuf {
    std::env::temp_dir().join("plugboard-cache")
}

/// `$XDG_STATE_HOME/plugboard/cache.key`, else `$HOME/.local/state/plugboard/cache.key`; `None`
/// (a key per process) with neither set.
pub fn default_cache_key_file() -> Option<PathBuf> {
    env_dir("XDG_STATE_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("plugboard").join("cache.key"))
}

/// What every reconcile shares.
pub struct Context {
    pub(crate) client: Client,
    base_config: Config,
    impersonated: tokio::sync::Mutex<HashMap<(String, String), Client>>,
    /// Kinds found by discovery, for acting on arbitrary objects.
    pub(crate) kinds: objects::KindCache,
    pub(crate) recorder: recorder::EventRecorder,
    pub(crate) http: HttpApparatus,
    /// Apparatus pods in use, by owner.
    pub(crate) pods: pods::PodManager,
    pub(crate) wasm: Arc<WasmRuntime>,
    pub(crate) oci: ComponentStore,
    pub(crate) plugs: Store<Plug>,
    pub(crate) options: Options,
    pub(crate) metrics: Arc<Metrics>,
    /// Password seed keys by Socket UID (see `seed`).
    pub(crate) seeds: tokio::sync::Mutex<HashMap<String, [u8; 32]>>,
    /// Set when this context only plans (`plugboard plan`): nothing is called or written.
    pub(crate) plan: Option<plan::PlanMode>,
    /// The ServiceAccounts that opted in to impersonation, from the operator's watch (none
    /// when planning: every check then asks the API server).
    pub(crate) opt_ins: Option<optin::OptIns>,
    /// The component cache folder (a fresh one is deleted with the context).
    _cache_dir: crate::wasm::CacheDir,
    /// Consecutive failures per object, for backoff.
    pub(crate) retries: fairness::Retries,
    /// Hook call slots per Socket.
    pub(crate) hook_slots: fairness::HookSlots,
    /// Hook calls that answered invalid input, not repeated with the same inputs.
    pub(crate) invalid_inputs: verdicts::InvalidInputs,
    /// Component digests whose signatures verified.
    pub(crate) verified: crate::signature::VerifiedDigests,
    /// Our latest write to each object, so a reconcile knows whether its cached copy is
    /// current (see `cache`).
    pub(crate) own_writes: cache::OwnWrites,
    /// When each steady Socket last reconciled (see `cache`).
    pub(crate) socket_throttle: cache::Throttle,
    /// Each Socket version's JSON, shared by the reconciles using it (see `shared`).
    pub(crate) socket_json: shared::SocketJson,
    /// The Sockets, from the operator's watch (none when planning: reads go to the API server).
    pub(crate) sockets: Option<Store<Socket>>,
    /// Namespaces' metadata, from the operator's watch when it watches every namespace (else
    /// reads go to the API server).
    pub(crate) namespaces: Option<Store<PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Impersonated clients kept at most; the map is cleared when it grows past this.
const MAX_IMPERSONATED_CLIENTS: usize = 512;

impl Context {
    /// Everything reconciles share: clients, apparatus runtimes, caches. The egress policy
    /// also refuses the API server that `config` points at.
    pub(crate) async fn new(
        client: Client,
        config: Config,
        options: Options,
        metrics: Arc<Metrics>,
        plugs: Store<Plug>,
    ) -> Result<Self, Error> {
        let reporter = Reporter {
            controller: "plugboard".into(),
            instance: Some(options.instance.clone()),
        };
        let egress = EgressPolicy::new(options.egress.clone())
            .with_api_server(&config.cluster_url.to_string())
            .await;
        let http = HttpApparatus::new(options.http.clone(), egress.clone())
            .map_err(|e| Error::HttpSetup(e.to_string()))?;
        if options.cache_dir == temp_cache_dir() {
            tracing::warn!(
                path = %options.cache_dir.display(),
                "the component cache is in the temp directory (neither XDG_CACHE_HOME nor HOME is set); give --cache-dir a folder of its own"
            );
        }
        // A private folder (or a fresh one in its place): compiled components are native code.
        let cache_dir = crate::wasm::private_dir_or_fresh(&options.cache_dir).ok_or_else(|| {
            Error::HttpSetup(format!(
                "no private folder for the component cache at {} or in the temp directory",
                options.cache_dir.display()
            ))
        })?;
        let mut store_options = StoreOptions::new(cache_dir.path().join("oci"));
        store_options.plain_http_hosts = options.plain_http_registries.clone();
        store_options.max_layer_bytes = options.wasm.max_component_bytes;
        store_options.max_manifest_bytes = options.max_manifest_bytes;
        // Registries are chosen by tenants: pulls connect only where the policy permits.
        store_options.egress = egress.clone();
        let oci =
            ComponentStore::open(store_options).map_err(|e| Error::HttpSetup(e.to_string()))?;
        let wasm = Arc::new(
            WasmRuntime::new(
                WasmOptions {
                    cache_dir: Some(cache_dir.path().join("compiled")),
                    cache_key: options.cache_key_file.clone().map_or(
                        crate::wasm::CacheKey::Ephemeral,
                        crate::wasm::CacheKey::File,
                    ),
                    ..options.wasm.clone()
                },
                egress,
            )
            .map_err(|e| Error::HttpSetup(e.to_string()))?,
        );
        Ok(Context {
            recorder: recorder::EventRecorder::new(client.clone(), reporter),
            client,
            base_config: config,
            impersonated: tokio::sync::Mutex::new(HashMap::new()),
            kinds: objects::KindCache::default(),
            http,
            pods: pods::PodManager::default(),
            wasm,
            oci,
            plugs,
            options,
            metrics,
            seeds: tokio::sync::Mutex::new(HashMap::new()),
            plan: None,
            opt_ins: None,
            _cache_dir: cache_dir,
            retries: fairness::Retries::default(),
            hook_slots: fairness::HookSlots::default(),
            invalid_inputs: verdicts::InvalidInputs::default(),
            verified: Default::default(),
            own_writes: cache::OwnWrites::default(),
            socket_throttle: cache::Throttle::default(),
            socket_json: shared::SocketJson::default(),
            sockets: None,
            namespaces: None,
        })
    }

    /// A client acting as ServiceAccount `namespace/name` (impersonation), so everything done
    /// on a side's behalf is limited to what that ServiceAccount may do.
    pub(crate) async fn client_as(&self, namespace: &str, name: &str) -> Result<Client, Error> {
        self.impersonate(namespace, name)
            .await
            .map_err(Error::Impersonation)
    }

    /// Fails unless ServiceAccount `namespace/name` opted in to being acted as (see
    /// [`optin`]). Reconciles call it before running any hook; [`Context::impersonate`] calls it
    /// on every use as well.
    pub(crate) async fn require_opt_in(&self, namespace: &str, name: &str) -> Result<(), Error> {
        self.check_opt_in(namespace, name)
            .await
            .map_err(Error::Impersonation)
    }

    async fn check_opt_in(&self, namespace: &str, name: &str) -> Result<(), ImpersonationError> {
        optin::check(
            self.opt_ins.as_ref(),
            &self.client,
            namespace,
            name,
            self.plan.is_some(),
        )
        .await
    }

    /// [`Context::client_as`] with the bare error. The only place a client acting as a
    /// ServiceAccount is made, and it checks the ServiceAccount's opt-in on every call (a
    /// cached client never outlives a revoked opt-in).
    pub(crate) async fn impersonate(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, ImpersonationError> {
        self.check_opt_in(namespace, name).await?;
        let key = (namespace.to_owned(), name.to_owned());
        let mut clients = self.impersonated.lock().await;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut config = self.base_config.clone();
        if self.plan.as_ref().is_none_or(|p| p.impersonate) {
            config.auth_info.impersonate =
                Some(format!("system:serviceaccount:{namespace}:{name}"));
        }
        let client = Client::try_from(config).map_err(|source| ImpersonationError::Client {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        })?;
        if clients.len() >= MAX_IMPERSONATED_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Socket a Plug names.
pub(crate) fn socket_key(plug: &Plug) -> ObjectRef<Socket> {
    let namespace = plug
        .spec
        .socket
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| plug.namespace().unwrap_or_default());
    ObjectRef::new(&plug.spec.socket.name).within(&namespace)
}

/// Whether namespace `name` is being deleted (or is already gone). Hooks of objects deleted
/// with their namespace that fail are then passed over with a Warning: what they need (the
/// ServiceAccount, its RoleBindings, Secrets, apparatus pods) is going too, and the namespace's
/// deletion must finish.
pub(crate) async fn namespace_terminating(ctx: &Context, name: &str) -> bool {
    match Api::<k8s_openapi::api::core::v1::Namespace>::all(ctx.client.clone())
        .get_opt(name)
        .await
    {
        Ok(Some(ns)) => ns.metadata.deletion_timestamp.is_some(),
        Ok(None) => true,
        Err(error) => {
            tracing::debug!(%error, namespace = name, "cannot tell whether the namespace is being deleted");
            false
        }
    }
}

/// Reads an object fresh from the API server (not from a cache), `None` when it does not exist.
pub(crate) async fn fresh<K>(ctx: &Context, namespace: &str, name: &str) -> Result<Option<K>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Api {
            action: "read",
            what: format!("{} {namespace}/{name}", K::kind(&())),
            source: Box::new(source),
        })
}

/// The object a reconcile was handed if it shows every write the operator made to it, else
/// the object read fresh from the API server (`None` when it no longer exists): hooks must not
/// run twice because our own last write has not reached the cache yet.
pub(crate) async fn current<K>(ctx: &Context, cached: Arc<K>) -> Result<Option<Arc<K>>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if ctx.own_writes.is_current(cached.meta()) {
        return Ok(Some(cached));
    }
    let namespace = cached.namespace().unwrap_or_default();
    Ok(fresh::<K>(ctx, &namespace, &cached.name_any())
        .await?
        .map(Arc::new))
}

/// The Socket `namespace/name` from the operator's watch, or read from the API server when
/// there is no watch (planning) or it has not seen it.
pub(crate) async fn socket(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<Socket>>, Error> {
    if let Some(store) = &ctx.sockets
        && let Some(socket) = store.get(&ObjectRef::new(name).within(namespace))
    {
        return Ok(Some(socket));
    }
    Ok(fresh::<Socket>(ctx, namespace, name).await?.map(Arc::new))
}

/// Whether the Plug cache has listed every Plug once, so none is judged missing merely because
/// it has not been seen yet (after a restart, say). Never waits: a reconcile that blocked here
/// would hold a concurrency slot, and a full set of blocked slots stops the very watch that
/// fills the cache.
pub(crate) async fn plugs_listed(ctx: &Context) -> bool {
    tokio::time::timeout(Duration::ZERO, ctx.plugs.wait_until_ready())
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Runs the operator until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    options: Options,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let namespace = options.namespace.clone();
    let mut wc = watcher::Config::default();
    if let Some(selector) = &options.selector {
        wc = wc.labels(selector);
    }
    let controller_config = controller::Config::default().concurrency(options.concurrency);

    // Every watch of the three kinds reads each object on its own: one that cannot be read is
    // reported and left out, and the others keep reconciling (see `guard`).
    let invalid_recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "plugboard".into(),
            instance: Some(options.instance.clone()),
        },
    );
    let plug_controller = guard::controller(
        scoped(&client, namespace.as_deref()),
        wc.clone(),
        invalid_recorder.clone(),
        guard::placeholder_plug,
        controller::Config::default().concurrency(options.plug_concurrency),
        Some(cache::plug_trigger),
    );
    let socket_controller = guard::controller(
        scoped(&client, namespace.as_deref()),
        wc.clone(),
        invalid_recorder.clone(),
        guard::placeholder::<Socket>,
        controller_config.clone(),
        Some(cache::socket_trigger),
    );
    // DeferredResources stand alone: nothing else wakes them, only their own changes and the
    // timers their reconciles set.
    let deferred_controller = guard::controller(
        scoped(&client, namespace.as_deref()),
        wc.clone(),
        invalid_recorder.clone(),
        guard::placeholder::<DeferredResource>,
        controller_config,
        None,
    );

    // Each controller reads the other kind from a store fed by the very watch that wakes it,
    // so a reconcile woken by a change always sees that change.
    let (sockets, socket_writer) = reflector::store::<Socket>();
    let socket_events = reflector::reflector(
        socket_writer,
        guard::watch(
            scoped(&client, namespace.as_deref()),
            wc.clone(),
            invalid_recorder.clone(),
            guard::placeholder::<Socket>,
        ),
    )
    .touched_objects();
    let (plugs, plug_writer) = reflector::store::<Plug>();
    let plug_events = reflector::reflector(
        plug_writer,
        guard::watch(
            scoped(&client, namespace.as_deref()),
            wc.clone(),
            invalid_recorder.clone(),
            guard::placeholder_plug,
        ),
    )
    .touched_objects();

    // A Socket change that matters to Plugs (spec, deletion, created hooks done) wakes the
    // Plugs that name it or are coupled to it; its status churn does not.
    // Mappers that wake Plugs look them up in the Plug controller's own store: it is fed by the
    // watch that triggers Plug reconciles, so a Plug that has reconciled is always in it.
    let plug_primary = plug_controller.store();
    let plugs_for_mapper = plug_primary.clone();
    let sockets_in_store = sockets.clone();
    let socket_seen = Mutex::new(HashMap::<String, SocketFingerprint>::new());
    let plug_controller = plug_controller.watches_stream(socket_events, move |socket: Socket| {
        let uid = socket.uid().unwrap_or_default();
        let gone = sockets_in_store.get(&ObjectRef::from(&socket)).is_none();
        let fingerprint = SocketFingerprint::of(&socket);
        {
            let mut seen = socket_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if gone {
                seen.remove(&uid);
            } else {
                if seen.get(&uid) == Some(&fingerprint) {
                    return Vec::new();
                }
                prune(&mut seen, 4096);
                seen.insert(uid.clone(), fingerprint);
            }
        }
        let key = ObjectRef::<Socket>::from(&socket);
        plugs_for_mapper
            .state()
            .into_iter()
            .filter(|p| {
                socket_key(p) == key
                    || p.status.as_ref().is_some_and(|s| {
                        [s.coupled_socket.as_ref(), s.coupling_socket.as_ref()]
                            .into_iter()
                            .flatten()
                            .any(|c| c.uid == uid)
                    })
            })
            .map(|p| ObjectRef::from(&*p))
            .collect::<Vec<_>>()
    });
    // A Namespace label change can change who may couple: wake the Plugs in it. The Plug
    // reconciles read the labels from this watch's cache (metadata only).
    let (namespaces, namespace_writer) =
        reflector::store::<PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>();
    let plug_controller = if namespace.is_none() {
        let plugs_in_ns = plug_primary.clone();
        let namespace_events = reflector::reflector(
            namespace_writer,
            watcher(
                Api::<PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>::all(
                    client.clone(),
                ),
                guard::watch_config(watcher::Config::default()),
            )
            .backoff(guard::WatchBackoff::default())
            .modify(cache::trim),
        )
        .touched_objects()
        .predicate_filter(cache::namespace_trigger, Default::default());
        plug_controller.watches_stream(
            namespace_events,
            move |ns: PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>| {
                let name = ns.name_any();
                plugs_in_ns
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace().as_deref() == Some(name.as_str()))
                    .map(|p| ObjectRef::from(&*p))
                    .collect::<Vec<_>>()
            },
        )
    } else {
        plug_controller
    };
    // A Plug change that matters to Sockets (which Socket it names or is coupled to, its
    // deletion) wakes those Sockets, including the one it just left.
    let plugs_in_store = plugs.clone();
    let plug_seen = Mutex::new(HashMap::<String, PlugFingerprint>::new());
    let socket_controller = socket_controller.watches_stream(plug_events, move |plug: Plug| {
        let uid = plug.uid().unwrap_or_default();
        // The reflector has applied the event already: a Plug missing from the store is gone.
        let gone = plugs_in_store.get(&ObjectRef::from(&plug)).is_none();
        let fingerprint = PlugFingerprint::of(&plug);
        let mut seen = plug_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = if gone {
            seen.remove(&uid)
        } else {
            if seen.get(&uid) == Some(&fingerprint) {
                return Vec::new();
            }
            prune(&mut seen, 65536);
            seen.insert(uid, fingerprint.clone())
        };
        let mut keys = fingerprint.sockets();
        for key in previous.map(|p| p.sockets()).unwrap_or_default() {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    });

    // Apparatus pods, for idle cleanup: one watch of the pods plugboard labels.
    let (pods_store, pods_writer) = reflector::store::<k8s_openapi::api::core::v1::Pod>();
    let pod_events = reflector::reflector(
        pods_writer,
        watcher(
            scoped::<k8s_openapi::api::core::v1::Pod>(&client, namespace.as_deref()),
            guard::watch_config(
                watcher::Config::default().labels(crate::apparatus::pod::OWNER_UID_LABEL),
            ),
        )
        .backoff(guard::WatchBackoff::default()),
    );
    let plugs_for_reaper = plugs.clone();
    // The ServiceAccounts that opted in to impersonation (metadata only, selected by label):
    // read by every impersonation check, and a change wakes whatever acts as that
    // ServiceAccount, so an opt-in takes effect at once and a revoked one at the next reconcile.
    // The reflector updates the cache before it passes an event on, so the reconciles it wakes
    // see the change. One watch feeds all three controllers through channels.
    let (opt_ins, opt_in_writer) = reflector::store::<PartialObjectMeta<ServiceAccount>>();
    let opt_in_events = reflector::reflector(
        opt_in_writer,
        watcher(
            scoped::<PartialObjectMeta<ServiceAccount>>(&client, namespace.as_deref()),
            guard::watch_config(watcher::Config::default().labels(&optin::selector())),
        )
        .backoff(guard::WatchBackoff::default()),
    )
    .touched_objects();
    let (plug_sa_tx, plug_sa_rx) = futures::channel::mpsc::channel(256);
    let (socket_sa_tx, socket_sa_rx) = futures::channel::mpsc::channel(256);
    let (deferred_sa_tx, deferred_sa_rx) = futures::channel::mpsc::channel(256);
    let fan_out = async move {
        let mut senders = [plug_sa_tx, socket_sa_tx, deferred_sa_tx];
        let mut events = std::pin::pin!(opt_in_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(sa) => {
                    for tx in &mut senders {
                        // A controller that stopped has dropped its receiver: nothing to wake.
                        let _ = futures::SinkExt::send(tx, sa.clone()).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the ServiceAccount watch failed; retrying");
                }
            }
        }
    };
    let plug_controller = plug_controller.watches_stream(
        plug_sa_rx.map(Ok::<_, watcher::Error>),
        using_service_account(plug_primary.clone(), |p: &Plug| {
            p.spec.side.service_account_name.as_str()
        }),
    );
    let socket_primary = socket_controller.store();
    let socket_primary_ready = socket_primary.clone();
    let socket_controller = socket_controller.watches_stream(
        socket_sa_rx.map(Ok::<_, watcher::Error>),
        using_service_account(socket_primary, |s: &Socket| {
            s.spec.side.service_account_name.as_str()
        }),
    );
    let deferred_primary = deferred_controller.store();
    let deferred_primary_ready = deferred_primary.clone();
    let deferred_controller = deferred_controller.watches_stream(
        deferred_sa_rx.map(Ok::<_, watcher::Error>),
        using_service_account(deferred_primary, |d: &DeferredResource| {
            d.spec.service_account_name.as_str()
        }),
    );

    // Requests (not watches) get read and connect timeouts: a stalled API server connection
    // fails the request, and the reconcile is retried, instead of holding a worker forever.
    // Watches keep the client without a read timeout: they read for minutes, and kube-runtime's
    // watcher has an idle timeout of its own.
    let config = with_api_timeouts(config, options.api_timeouts);
    let client = Client::try_from(config.clone()).map_err(|e| Error::HttpSetup(e.to_string()))?;
    let metrics_of_run = metrics.clone();
    let _debug_warning = debug::warn_while_running(&options);
    let watches_namespaces = options.namespace.is_none();
    let mut ctx = Context::new(client, config, options, metrics, plugs).await?;
    ctx.opt_ins = Some(opt_ins);
    ctx.sockets = Some(sockets.clone());
    if watches_namespaces {
        ctx.namespaces = Some(namespaces);
    }
    let ctx = Arc::new(ctx);
    // `/metrics` computes couplings by state and running apparatus pods from these caches.
    ctx.metrics
        .set_sources(Some(plug_primary.clone()), Some(pods_store.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // Either a `true` or a dropped sender means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let plug_run = plug_controller
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            |plug, ctx| {
                let key = object_key("Plug", &*plug);
                Box::pin(fairness::attempt(
                    key,
                    ctx.clone(),
                    plug::reconcile(plug, ctx),
                ))
            },
            plug::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "plug reconcile did not complete");
            }
        });
    let socket_run = socket_controller
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            |socket, ctx| {
                let key = object_key("Socket", &*socket);
                Box::pin(fairness::attempt(
                    key,
                    ctx.clone(),
                    socket::reconcile(socket, ctx),
                ))
            },
            socket::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "socket reconcile did not complete");
            }
        });
    let fan_out = {
        let stop = stopped(stop_rx.clone());
        async move {
            tokio::select! {
                () = fan_out => {}
                () = stop => {}
            }
        }
    };
    let pod_watch_stop = stopped(stop_rx.clone());
    let pod_watch = async move {
        let events = pod_events.for_each(|event| async move {
            if let Err(error) = event {
                tracing::warn!(%error, "watching apparatus pods failed; idle pods are not cleaned up until it recovers");
            }
        });
        tokio::select! {
            () = events => {}
            () = pod_watch_stop => {}
        }
    };
    let reaper = pods::reap(
        ctx.clone(),
        pods_store,
        plugs_for_reaper,
        sockets,
        stopped(stop_rx.clone()),
    );
    let memory_pass = {
        let stop = stopped(stop_rx.clone());
        let pass = memory::run(ctx.clone());
        async move {
            tokio::select! {
                () = pass => {}
                () = stop => {}
            }
        }
    };
    let deferred_run = deferred_controller
        .graceful_shutdown_on(stopped(stop_rx))
        .run(
            |deferred, ctx| {
                let key = object_key("DeferredResource", &*deferred);
                Box::pin(fairness::attempt(
                    key,
                    ctx.clone(),
                    deferred::reconcile(deferred, ctx),
                ))
            },
            deferred::error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "deferred resource reconcile did not complete");
            }
        });
    // `/readyz` turns ready once every controller's watch has listed its objects once.
    let synced = {
        let metrics = metrics_of_run.clone();
        let stop = stopped(stop_tx.subscribe());
        async move {
            let all_listed = async {
                plug_primary.wait_until_ready().await.is_ok()
                    && socket_primary_ready.wait_until_ready().await.is_ok()
                    && deferred_primary_ready.wait_until_ready().await.is_ok()
            };
            tokio::select! {
                listed = all_listed => if listed {
                    metrics.set_synced(true);
                    tracing::info!("caches synced");
                },
                () = stop => {}
            }
        }
    };
    let trigger = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(
        plug_run,
        socket_run,
        deferred_run,
        fan_out,
        pod_watch,
        reaper,
        synced,
        memory_pass,
        trigger
    );
    metrics_of_run.set_synced(false);
    metrics_of_run.set_sources(None, None);
    Ok(())
}

/// A running operator inside this process (used by `plugboard run` and by tests). Dropping it
/// stops it.
#[derive(Debug)]
pub struct Operator {
    task: JoinHandle<Result<(), Error>>,
    metrics: Arc<Metrics>,
}

impl Operator {
    /// Starts the operator on the current runtime.
    pub fn spawn(client: Client, config: Config, options: Options) -> Self {
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(run(
            client,
            config,
            options,
            metrics.clone(),
            std::future::pending(),
        ));
        Self { task, metrics }
    }

    /// The operator's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops the operator and waits for it to end.
    pub async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What Plugs care about in a Socket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SocketFingerprint {
    generation: Option<i64>,
    deleting: bool,
    created: bool,
    /// The Socket's `Ready` status and reason: a Socket that reports a fault of its own, or
    /// stops reporting it, changes what its Plugs say.
    ready: Option<(String, String)>,
}

impl SocketFingerprint {
    fn of(socket: &Socket) -> Self {
        Self {
            generation: socket.metadata.generation,
            deleting: socket.metadata.deletion_timestamp.is_some(),
            created: socket.status.as_ref().is_some_and(|s| s.created),
            ready: socket.status.as_ref().and_then(|s| {
                crate::crd::conditions::find(&s.conditions, crate::crd::conditions::types::READY)
                    .map(|c| (c.status.clone(), c.reason.clone()))
            }),
        }
    }
}

/// What Sockets care about in a Plug.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlugFingerprint {
    named: ObjectRef<Socket>,
    coupled: Option<(ObjectRef<Socket>, String)>,
    /// The Socket whose `coupled` hooks are running: its deletion waits for them.
    coupling: Option<(ObjectRef<Socket>, String)>,
    deleting: bool,
}

impl PlugFingerprint {
    fn of(plug: &Plug) -> Self {
        Self {
            named: socket_key(plug),
            coupled: plug
                .status
                .as_ref()
                .and_then(|s| s.coupled_socket.as_ref())
                .map(|c| (ObjectRef::new(&c.name).within(&c.namespace), c.uid.clone())),
            coupling: plug
                .status
                .as_ref()
                .and_then(|s| s.coupling_socket.as_ref())
                .map(|c| (ObjectRef::new(&c.name).within(&c.namespace), c.uid.clone())),
            deleting: plug.metadata.deletion_timestamp.is_some(),
        }
    }

    fn sockets(&self) -> Vec<ObjectRef<Socket>> {
        let mut keys = vec![self.named.clone()];
        for (key, _) in [&self.coupled, &self.coupling].into_iter().flatten() {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }
}

/// A mapper from an opted-in ServiceAccount (or one that just stopped being one) to the objects
/// in `store` that act as it.
fn using_service_account<K>(
    store: Store<K>,
    service_account: fn(&K) -> &str,
) -> impl Fn(PartialObjectMeta<ServiceAccount>) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    move |sa| {
        let namespace = sa.namespace();
        let name = sa.name_any();
        store
            .state()
            .into_iter()
            .filter(|o| o.namespace() == namespace && service_account(o) == name)
            .map(|o| ObjectRef::from(&*o))
            .collect()
    }
}

/// Keeps a fingerprint map bounded; forgetting entries only costs a spurious wake-up.
fn prune<V>(map: &mut HashMap<String, V>, max: usize) {
    if map.len() >= max {
        map.clear();
    }
}

/// `config` with the operator's request timeouts: `(connect, read)`. The read timeout counts
/// from when a request is written, not from when its pooled connection went idle.
fn with_api_timeouts(mut config: Config, (connect, read): (Duration, Duration)) -> Config {
    config.connect_timeout = Some(connect);
    config.read_timeout = Some(read);
    config.reset_reader_on_write = true;
    config
}

/// `Kind/namespace/name`: the key of an object's failure count.
pub(crate) fn object_key<K: kube::Resource>(kind: &str, obj: &K) -> String {
    format!(
        "{kind}/{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// The delay before looking again after a failure written to status: backoff per object.
pub(crate) fn retry_delay(ctx: &Context) -> Duration {
    fairness::retry_delay(ctx)
}

/// Requeue after `d`, for waits on things no watch reports.
pub(crate) fn requeue(d: Duration) -> Action {
    Action::requeue(d)
}
