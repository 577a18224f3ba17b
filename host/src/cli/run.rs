//! `plugboard run`: the operator process. Its flags (each also read from an environment
//! variable), the health and metrics server, leader election and graceful shutdown around the
//! controllers of [`plugboard::controller`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use plugboard::health::{Health, Role};
use plugboard::leader::{Election, Timing};

use super::logs::{LogFormat, LogOptions};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Manage only Plugs, Sockets and DeferredResources matching this label selector (to shard
    /// across instances).
    #[arg(long, env = "PLUGBOARD_SELECTOR")]
    selector: Option<String>,
    /// Reconciles running at once in the Socket and DeferredResource controllers.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    concurrency: u16,
    /// Reconciles running at once in the Plug controller (I/O-bound: they wait on apparatuses).
    #[arg(long, env = "PLUGBOARD_PLUG_CONCURRENCY", default_value_t = 16)]
    plug_concurrency: u16,
    /// Hook and config calls of one Socket's couplings in flight at once: a hanging apparatus
    /// holds at most this many Plug workers. A call waits up to 10 s for a slot, then its
    /// reconcile is retried with backoff.
    #[arg(long, env = "PLUGBOARD_HOOK_CALLS_PER_SOCKET", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    hook_calls_per_socket: u64,
    /// The longest delay between retries of a failing object, in seconds. Delays start at 1 s
    /// and double with each consecutive failure of the object, with jitter.
    #[arg(long, env = "PLUGBOARD_RETRY_MAX_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    retry_max_seconds: u64,
    /// How long one reconcile may run, in seconds; one still running is dropped and retried.
    #[arg(long, env = "PLUGBOARD_RECONCILE_DEADLINE_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86400))]
    reconcile_deadline_seconds: u64,
    /// The operator's memory budget in MiB (the chart sets it from the pod's memory limit).
    /// Every memory bound derives from it so that the worst case fits: WebAssembly calls get
    /// half — `concurrent calls × per-call cap`, the cap a quarter of that half (16 to 512
    /// MiB), calls beyond the limit wait for a slot; compiling gets an eighth — one component
    /// at a time, up to an eighth / 4 in size (1 to 64 MiB); compiled components kept get an
    /// eighth (least recently used evicted); bodies read whole (host.send and apparatus
    /// answers, manifests) a sixteenth; the rest is the operator's own. 1024 gives 4 calls
    /// of at most 128 MiB and components up to 32 MiB.
    #[arg(long, env = "PLUGBOARD_MEMORY_BUDGET_MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    memory_budget_mib: u64,
    /// Overall timeout of one HTTP apparatus call, in seconds.
    #[arg(long, env = "PLUGBOARD_HTTP_TIMEOUT", default_value_t = 30)]
    http_timeout: u64,
    /// Folder for downloaded WebAssembly components and their compiled forms (default
    /// `$XDG_CACHE_HOME/plugboard`, else `$HOME/.cache/plugboard`). Created mode 700; one owned
    /// by another user or writable by others is replaced by a fresh private folder.
    #[arg(long, env = "PLUGBOARD_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Key file that authenticates the compiled components in the cache, created mode 600 when
    /// missing; keep it outside --cache-dir (default `$XDG_STATE_HOME/plugboard/cache.key`, else
    /// `$HOME/.local/state/plugboard/cache.key`). Without one, every start recompiles.
    #[arg(long, env = "PLUGBOARD_CACHE_KEY_FILE")]
    cache_key_file: Option<PathBuf>,
    /// A registry (`host:port`) that may be spoken to over plain HTTP; repeatable. Every other
    /// registry is spoken to over HTTPS only.
    #[arg(
        long = "plain-http-registry",
        env = "PLUGBOARD_PLAIN_HTTP_REGISTRIES",
        value_delimiter = ','
    )]
    plain_http_registries: Vec<String>,
    /// Deadline of a WebAssembly hook call when its spec sets none, in milliseconds.
    #[arg(long, env = "PLUGBOARD_WASM_TIMEOUT_MS", default_value_t = 2000)]
    wasm_timeout_ms: u64,
    /// The longest deadline a spec may set, in milliseconds.
    #[arg(long, env = "PLUGBOARD_WASM_MAX_TIMEOUT_MS", default_value_t = 30000)]
    wasm_max_timeout_ms: u64,
    /// Memory cap of a WebAssembly hook call when its spec sets none, in MiB (default: from
    /// --memory-budget-mib, at most 64).
    #[arg(long, env = "PLUGBOARD_WASM_MEMORY_MIB")]
    wasm_memory_mib: Option<u64>,
    /// The largest memory cap a spec may set, in MiB (default: from --memory-budget-mib).
    /// Raising it above the derived value lets the worst case exceed the budget.
    #[arg(long, env = "PLUGBOARD_WASM_MAX_MEMORY_MIB")]
    wasm_max_memory_mib: Option<u64>,
    /// Name reported in Events (defaults to the pod name).
    #[arg(long, env = "POD_NAME", default_value = "plugboard")]
    instance: String,
    /// How often a coupled Plug is computed again, in seconds, so that changes no watch reports
    /// (its Secret and ConfigMap sources, var targets, apparatus `config` replies) fire
    /// `updated`. Spread by ±10%.
    #[arg(long, env = "PLUGBOARD_RECHECK_SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    recheck_seconds: u64,
    /// How long a hook or config call waits for a new or starting apparatus pod to become
    /// ready, in seconds, before the owner shows `ApparatusNotReady`.
    #[arg(long, env = "PLUGBOARD_APPARATUS_READY_TIMEOUT", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    apparatus_ready_timeout: u64,
    /// Reach apparatus pods through the API server's pod proxy instead of at their pod IP: for
    /// plugboard running outside the cluster. Needs `create` on `pods/proxy`.
    #[arg(long, env = "PLUGBOARD_APPARATUS_VIA_API_SERVER")]
    apparatus_via_api_server: bool,
    /// Where HTTP apparatus endpoints and WebAssembly `host.send` may connect even though the
    /// built-in policy refuses it: CIDRs (`127.0.0.0/8` for a loopback apparatus) or, with
    /// --egress-deny-unlisted, host names (`api.example.com`, `*.example.com`). Comma-separated,
    /// repeatable. Host names never lift the refusal of an address.
    #[arg(
        long = "egress-allow",
        env = "PLUGBOARD_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    egress_allow: Vec<String>,
    /// Where they may never connect, winning over every allow: CIDRs or host names, e.g.
    /// `10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7` to refuse private ranges (allowed
    /// by default, since in-cluster apparatus Services live there).
    #[arg(
        long = "egress-deny",
        env = "PLUGBOARD_EGRESS_DENY",
        value_delimiter = ','
    )]
    egress_deny: Vec<String>,
    /// Refuse every address that --egress-allow does not list (allow-list mode). Loopback,
    /// link-local, metadata and the API server are refused by default either way.
    #[arg(long, env = "PLUGBOARD_EGRESS_DENY_UNLISTED")]
    egress_deny_unlisted: bool,
    /// Local development: send every Plug's hooks and `config` calls to this HTTP endpoint
    /// (for example `plugboard-sdk`'s HTTP mode on your machine) instead of the apparatus in
    /// its spec. Plugs without an apparatus are not called. The operator warns loudly while it
    /// is set; never use it in production. The environment variable is the reference's name.
    #[arg(long, env = "DEBUG_PLUG_ENDPOINT")]
    debug_plug_endpoint: Option<String>,
    /// The same for Sockets.
    #[arg(long, env = "DEBUG_SOCKET_ENDPOINT")]
    debug_socket_endpoint: Option<String>,
    #[command(flatten)]
    signatures: super::signatures::SignatureArgs,
    /// Run the controllers only while holding a `coordination.k8s.io/v1` Lease, so several
    /// replicas are safe: the others stand by and take over within --leader-elect-lease-seconds
    /// when the leader dies, at once when it shuts down. A leader that cannot renew within the
    /// renew deadline stops its controllers and exits 1 (its restart stands by). Needs get,
    /// create and update on leases in --leader-elect-namespace.
    #[arg(long, env = "PLUGBOARD_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "PLUGBOARD_LEADER_ELECT_NAMESPACE")]
    leader_elect_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "PLUGBOARD_LEADER_ELECT_LEASE",
        default_value = "plugboard"
    )]
    leader_elect_lease: String,
    /// How long the lease lasts without renewal, in seconds; a standby takes over after this.
    /// The leader renews every 2/15 of it and stops reconciling when it has not renewed for
    /// 2/3 of it (15 → renew deadline 10, retry 2, as client-go), before anyone may take over.
    #[arg(long, env = "PLUGBOARD_LEADER_ELECT_LEASE_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=3600))]
    leader_elect_lease_seconds: u64,
    /// This replica's identity in the Lease, unique per replica (default: $POD_NAME, else the
    /// host name and process id).
    #[arg(long, env = "PLUGBOARD_LEADER_ELECT_IDENTITY")]
    leader_elect_identity: Option<String>,
    /// Address of the health and metrics server (`/healthz`, `/readyz`, `/metrics`), or `off`.
    #[arg(long, env = "PLUGBOARD_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: String,
    /// On SIGTERM or SIGINT, how long reconciles in flight may take to finish (hooks are cut at
    /// their own deadlines anyway) before they are cut, in seconds; then the lease is released
    /// and the process exits 0. The pod's terminationGracePeriodSeconds must exceed it.
    #[arg(long, env = "PLUGBOARD_SHUTDOWN_GRACE_SECONDS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace_seconds: u64,
    /// How log lines look: `human` or `json` (one object per line).
    #[arg(long, env = "PLUGBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// The log level (`error`, `warn`, `info`, `debug`, `trace`); RUST_LOG, when set, wins.
    #[arg(long, env = "PLUGBOARD_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

impl RunArgs {
    /// The log settings these flags ask for.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            format: self.log_format,
            level: self.log_level.clone(),
        }
    }
}

/// The non-empty entries of an egress flag (an empty environment variable means none).
fn egress_rules(entries: &[String]) -> anyhow::Result<Vec<plugboard::egress::EgressRule>> {
    entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| e.parse().map_err(anyhow::Error::from))
        .collect()
}

/// `plugboard run`: the operator on a runtime of its own, until SIGTERM or SIGINT.
pub fn main(args: RunArgs) -> anyhow::Result<()> {
    // Before the runtime starts its threads: the allocator's arenas are set up per thread.
    plugboard::heap::configure();
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let result = runtime.block_on(run(args));
    // A WebAssembly call cut at the end of the grace period runs on a thread of its own until
    // its deadline: it must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let egress_allow = egress_rules(&args.egress_allow).context("--egress-allow")?;
    let egress_deny = egress_rules(&args.egress_deny).context("--egress-deny")?;
    let config = kube::Config::infer()
        .await
        .context("failed to find a kubeconfig or in-cluster configuration")?;
    let client = kube::Client::try_from(config.clone()).context("failed to create a client")?;
    let client_for_controllers = client.clone();
    let budget = plugboard::budget::MemoryBudget::derive(args.memory_budget_mib << 20);
    let mut options = plugboard::controller::Options {
        namespace: args.namespace.filter(|n| !n.is_empty()),
        selector: args.selector.filter(|s| !s.is_empty()),
        concurrency: args.concurrency.max(1),
        plug_concurrency: args.plug_concurrency.max(1),
        hook_calls_per_socket: usize::try_from(args.hook_calls_per_socket).unwrap_or(4),
        retry: Duration::from_secs(args.retry_max_seconds),
        reconcile_deadline: Duration::from_secs(args.reconcile_deadline_seconds),
        instance: args.instance,
        ..Default::default()
    }
    .with_budget(budget);
    options.http.request_timeout = Duration::from_secs(args.http_timeout.max(1));
    if let Some(dir) = args.cache_dir {
        options.cache_dir = dir;
    }
    if let Some(file) = args.cache_key_file {
        options.cache_key_file = Some(file);
    }
    if options.cache_key_file.is_none() {
        tracing::warn!(
            "no --cache-key-file and neither XDG_STATE_HOME nor HOME is set: compiled components are authenticated with a key for this process only, so every start recompiles them"
        );
    }
    options.plain_http_registries = args.plain_http_registries;
    options.recheck = Duration::from_secs(args.recheck_seconds);
    options.pods.ready_timeout = Duration::from_secs(args.apparatus_ready_timeout);
    options.pods.via_api_server = args.apparatus_via_api_server;
    options.wasm.default_timeout = Duration::from_millis(args.wasm_timeout_ms.max(1));
    options.wasm.max_timeout = Duration::from_millis(args.wasm_max_timeout_ms.max(1));
    if let Some(mib) = args.wasm_max_memory_mib {
        options.wasm.max_memory = mib.max(1) << 20;
    }
    if let Some(mib) = args.wasm_memory_mib {
        options.wasm.default_memory = mib.max(1) << 20;
    }
    options.wasm.default_memory = options.wasm.default_memory.min(options.wasm.max_memory);
    if options.wasm.max_memory > budget.max_call_memory {
        tracing::warn!(
            budget_mib = args.memory_budget_mib,
            "--wasm-max-memory-mib is above what --memory-budget-mib allows per call; the worst case no longer fits the budget"
        );
    }
    options.egress.allow = egress_allow;
    options.egress.deny = egress_deny;
    options.egress.deny_unlisted = args.egress_deny_unlisted;
    options.signatures = args.signatures.options()?;
    options.debug_plug_endpoint = args.debug_plug_endpoint.filter(|e| !e.trim().is_empty());
    options.debug_socket_endpoint = args.debug_socket_endpoint.filter(|e| !e.trim().is_empty());
    tracing::info!(?options, "starting plugboard");
    let metrics = Arc::new(plugboard::metrics::Metrics::default());
    let role = if args.leader_elect {
        Role::Standby
    } else {
        Role::Single
    };
    let health = Arc::new(Health::new(metrics.clone(), role));
    let (health_stop, health_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = health_addr(&args.health_addr)? {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on --health-addr {addr}"))?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /healthz, /readyz and /metrics");
        tokio::spawn(plugboard::health::serve(listener, health.clone(), async {
            let _ = health_stopped.await;
        }));
    }
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    let start: plugboard::leader::StartControllers = Box::new(move |stop| {
        tokio::spawn(plugboard::controller::run(
            client_for_controllers,
            config,
            options,
            metrics,
            stop,
        ))
    });
    let result = if args.leader_elect {
        let election = Election {
            namespace: args
                .leader_elect_namespace
                .filter(|n| !n.is_empty())
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|n| !n.is_empty())
                })
                .unwrap_or_else(|| "default".to_owned()),
            name: args.leader_elect_lease,
            identity: args
                .leader_elect_identity
                .filter(|i| !i.is_empty())
                .unwrap_or_else(default_identity),
            timing: Timing::from_lease_seconds(args.leader_elect_lease_seconds),
        };
        plugboard::leader::run(client, election, health, grace, start, shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    } else {
        run_single(start, grace).await
    };
    let _ = health_stop.send(());
    result?;
    tracing::info!("plugboard stopped");
    Ok(())
}

/// Without leader election: the controllers run until a signal, then get the grace period.
async fn run_single(
    start: plugboard::leader::StartControllers,
    grace: Duration,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = Box::pin(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    let mut controllers = start(Box::new(stopped));
    let finished = tokio::select! {
        finished = &mut controllers => finished,
        () = shutdown_signal() => {
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down: letting reconciles in flight finish");
            let _ = stop_tx.send(true);
            match tokio::time::timeout(grace, &mut controllers).await {
                Ok(finished) => finished,
                Err(_) => {
                    tracing::warn!(grace_seconds = grace.as_secs(), "reconciles still in flight after the grace period were cut");
                    controllers.abort();
                    let _ = controllers.await;
                    return Ok(());
                }
            }
        }
    };
    finished.context("the controllers' task failed")??;
    Ok(())
}

/// `--health-addr`: an address, or `off` (also empty) for no server.
fn health_addr(value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("--health-addr {value:?} is neither host:port nor `off`"))
}

/// `$POD_NAME`, else the host name and this process's id.
fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "plugboard".to_owned());
    format!("{host}_{}", std::process::id())
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops plugboard");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_addr_is_an_address_or_off() {
        assert_eq!(health_addr("off").ok(), Some(None));
        assert_eq!(health_addr("").ok(), Some(None));
        assert_eq!(
            health_addr("127.0.0.1:9090").ok().flatten(),
            "127.0.0.1:9090".parse().ok()
        );
        assert!(health_addr("localhost").is_err());
    }
}
