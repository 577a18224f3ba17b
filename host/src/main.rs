//! The `plugboard` command.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod cli;

#[derive(Debug, Parser)]
#[command(
    name = "plugboard",
    version,
    about = "Couples applications through Plug and Socket resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Show what the operator would do for a Plug, without doing it: the lifecycle step, the
    /// merged configs (values from Secrets masked), the rendered resources and what would be
    /// applied, deleted or recreated, and the hooks that would be called. Read-only, against
    /// the cluster of the current kubeconfig, as the Plug's and Socket's ServiceAccounts when
    /// you may impersonate them.
    Plan(PlanArgs),
    /// Start a local Kubernetes control plane (built from Go modules on first use), install the
    /// CRDs, run the operator against it, couple a sample Socket and Plug, and show them.
    #[cfg(feature = "dev")]
    Dev(dev::Args),
    /// Publish, inspect, pull and sign WebAssembly components in OCI registries.
    Plugin(cli::plugin::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => tokio::runtime::Runtime::new()
            .context("failed to start the async runtime")?
            .block_on(run(*args)),
        Command::Plan(args) => tokio::runtime::Runtime::new()
            .context("failed to start the async runtime")?
            .block_on(plan(args)),
        Command::Crds => {
            let yaml = plugboard::crd::crds_yaml()?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("failed to write CRDs to stdout")?;
            Ok(())
        }
        #[cfg(feature = "dev")]
        Command::Dev(args) => tokio::runtime::Runtime::new()
            .context("failed to start the async runtime")?
            .block_on(dev::run(args)),
        Command::Plugin(args) => tokio::runtime::Runtime::new()
            .context("failed to start the async runtime")?
            .block_on(cli::plugin::run(args)),
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Manage only Plugs, Sockets and DeferredResources matching this label selector (to shard
    /// across instances).
    #[arg(long, env = "PLUGBOARD_SELECTOR")]
    selector: Option<String>,
    /// Reconciles running at once in the Socket and DeferredResource controllers.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 4)]
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
    #[arg(long, default_value_t = 30)]
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
    #[arg(long, default_value_t = 2000)]
    wasm_timeout_ms: u64,
    /// The longest deadline a spec may set, in milliseconds.
    #[arg(long, default_value_t = 30000)]
    wasm_max_timeout_ms: u64,
    /// Memory cap of a WebAssembly hook call when its spec sets none, in MiB (default: from
    /// --memory-budget-mib, at most 64).
    #[arg(long)]
    wasm_memory_mib: Option<u64>,
    /// The largest memory cap a spec may set, in MiB (default: from --memory-budget-mib).
    /// Raising it above the derived value lets the worst case exceed the budget.
    #[arg(long)]
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
    #[command(flatten)]
    signatures: cli::signatures::SignatureArgs,
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// A YAML file holding the Plug (other documents in it are ignored).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Namespace of the Plug when its metadata names none.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

async fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("failed to read {}", args.file.display()))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("{} is not YAML", args.file.display()))?;
    let doc = docs
        .into_iter()
        .find(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Plug"))
        .with_context(|| format!("{} holds no Plug", args.file.display()))?;
    let mut plug: plugboard::crd::Plug =
        serde_json::from_value(doc).context("the Plug in the file is not valid")?;
    let config = kube::Config::infer()
        .await
        .context("failed to find a kubeconfig or in-cluster configuration")?;
    if plug.metadata.namespace.is_none() {
        plug.metadata.namespace = Some(
            args.namespace
                .unwrap_or_else(|| config.default_namespace.clone()),
        );
    }
    let client = kube::Client::try_from(config.clone()).context("failed to create a client")?;
    let report = plugboard::controller::plan(client, config, Default::default(), plug)
        .await
        .map_err(|e| anyhow::anyhow!(e.message()))?;
    print!("{report}");
    Ok(())
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

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let egress_allow = egress_rules(&args.egress_allow).context("--egress-allow")?;
    let egress_deny = egress_rules(&args.egress_deny).context("--egress-deny")?;
    let signatures = args.signatures.options()?;
    let config = kube::Config::infer()
        .await
        .context("failed to find a kubeconfig or in-cluster configuration")?;
    let client = kube::Client::try_from(config.clone()).context("failed to create a client")?;
    let budget = plugboard::budget::MemoryBudget::derive(args.memory_budget_mib << 20);
    let mut options = plugboard::controller::Options {
        namespace: args.namespace.filter(|n| !n.is_empty()),
        selector: args.selector.filter(|s| !s.is_empty()),
        concurrency: args.concurrency.max(1),
        plug_concurrency: args.plug_concurrency.max(1),
        hook_calls_per_socket: usize::try_from(args.hook_calls_per_socket).unwrap_or(4),
        retry: std::time::Duration::from_secs(args.retry_max_seconds),
        reconcile_deadline: std::time::Duration::from_secs(args.reconcile_deadline_seconds),
        instance: args.instance,
        ..Default::default()
    }
    .with_budget(budget);
    options.http.request_timeout = std::time::Duration::from_secs(args.http_timeout.max(1));
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
    options.recheck = std::time::Duration::from_secs(args.recheck_seconds);
    options.pods.ready_timeout = std::time::Duration::from_secs(args.apparatus_ready_timeout);
    options.pods.via_api_server = args.apparatus_via_api_server;
    options.wasm.default_timeout = std::time::Duration::from_millis(args.wasm_timeout_ms.max(1));
    options.wasm.max_timeout = std::time::Duration::from_millis(args.wasm_max_timeout_ms.max(1));
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
    options.signatures = signatures;
    tracing::info!(?options, "starting plugboard");
    let metrics = std::sync::Arc::new(plugboard::metrics::Metrics::default());
    let shutdown = async {
        // Ctrl-C or SIGTERM (what Kubernetes sends) both stop the controllers gracefully.
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
    };
    plugboard::controller::run(client, config, options, metrics, shutdown).await?;
    tracing::info!("plugboard stopped");
    Ok(())
}

#[cfg(feature = "dev")]
mod dev {
    //! `plugboard dev`: a local playground on a real control plane.

    use super::*;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ObjectMeta, Patch, PatchParams};
    use kube::{Api, Client};
    use plugboard::crd::{Plug, Socket, conditions};
    use plugboard_controlplane::{ControlPlane, ControlPlaneOptions, install_crds};

    const SAMPLE_SOCKET: &str = include_str!("../samples/socket.yaml");
    const SAMPLE_PLUG: &str = include_str!("../samples/plug.yaml");
    const SAMPLE_RBAC: &str = include_str!("../samples/rbac.yaml");
    const NAMESPACE: &str = "plugboard-demo";

    #[derive(Debug, clap::Args)]
    pub(super) struct Args {
        /// Folder for the control plane's state, logs and kubeconfig (kept after exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Stop after showing the samples instead of serving until Ctrl-C.
        #[arg(long)]
        exit: bool,
    }

    pub(super) async fn run(args: Args) -> anyhow::Result<()> {
        eprintln!(
            "starting a local control plane (kube-apiserver, etcd, kube-controller-manager)…"
        );
        let keep_dir = args.dir.is_some();
        let cp = ControlPlane::start(ControlPlaneOptions {
            dir: args.dir,
            keep_dir,
        })
        .await
        .context("failed to start the local control plane")?;
        eprintln!(
            "control plane ready at {} in {:.1} s",
            cp.server(),
            cp.startup_time().as_secs_f64()
        );
        let client = cp.client().await?;
        install_crds(&client, plugboard::crd::crds())
            .await
            .context("failed to install the CRDs")?;

        let params = PatchParams::apply("plugboard-dev").force();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(NAMESPACE.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .patch(NAMESPACE, &params, &Patch::Apply(&ns))
            .await
            .context("failed to create the demo namespace")?;

        // The samples' ServiceAccount may create what their templates make...
        let mut rbac = SAMPLE_RBAC.split("\n---\n");
        let role: k8s_openapi::api::rbac::v1::Role =
            serde_saphyr::from_str(rbac.next().unwrap_or_default())
                .context("sample Role is not valid")?;
        let binding: k8s_openapi::api::rbac::v1::RoleBinding =
            serde_saphyr::from_str(rbac.next().unwrap_or_default())
                .context("sample RoleBinding is not valid")?;
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), NAMESPACE)
            .patch("plugboard-samples", &params, &Patch::Apply(&role))
            .await
            .context("failed to create the sample Role")?;
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), NAMESPACE)
            .patch("plugboard-samples", &params, &Patch::Apply(&binding))
            .await
            .context("failed to create the sample RoleBinding")?;
        // ... and opts in to plugboard acting as it.
        let account: k8s_openapi::api::core::v1::ServiceAccount =
            serde_saphyr::from_str(rbac.next().unwrap_or_default())
                .context("sample ServiceAccount is not valid")?;
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), NAMESPACE)
            .patch("default", &params, &Patch::Apply(&account))
            .await
            .context("failed to opt in the sample ServiceAccount")?;

        let socket: Socket =
            serde_saphyr::from_str(SAMPLE_SOCKET).context("sample Socket is not valid")?;
        let plug: Plug = serde_saphyr::from_str(SAMPLE_PLUG).context("sample Plug is not valid")?;
        let sockets: Api<Socket> = Api::namespaced(client.clone(), NAMESPACE);
        let plugs: Api<Plug> = Api::namespaced(client.clone(), NAMESPACE);
        sockets
            .patch("postgres", &params, &Patch::Apply(&socket))
            .await
            .context("failed to create the sample Socket")?;
        plugs
            .patch("app", &params, &Patch::Apply(&plug))
            .await
            .context("failed to create the sample Plug")?;

        let config = cp.config().await?;
        // The playground is local: its apparatuses, if you add any, listen on loopback, which
        // the default egress policy refuses. `dev` allows loopback (only there).
        eprintln!(
            "egress policy: loopback allowed for this local playground (plugboard run refuses it \
             unless --egress-allow 127.0.0.0/8 is given)"
        );
        let mut options = plugboard::controller::Options {
            egress: plugboard::egress::EgressOptions::default().allowing_loopback(),
            ..Default::default()
        };
        // The operator runs outside the (local) cluster: apparatus pods are reached through
        // the API server.
        options.pods.via_api_server = true;
        let operator = plugboard::controller::Operator::spawn(client.clone(), config, options);
        eprintln!("operator running; waiting for the sample Plug to couple…");
        let ready =
            kube::runtime::wait::await_condition(plugs.clone(), "app", |p: Option<&Plug>| {
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| conditions::find(&s.conditions, conditions::types::READY))
                    .is_some_and(|c| c.status == "True")
            });
        match tokio::time::timeout(std::time::Duration::from_secs(60), ready).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("could not watch the sample Plug: {e}"),
            Err(_) => {
                eprintln!("the sample Plug did not couple within 60 s; its conditions say why:")
            }
        }
        show(&client).await?;
        if args.exit {
            operator.stop().await;
            return Ok(());
        }
        println!();
        println!("kubeconfig: {}", cp.kubeconfig_path().display());
        println!(
            "try:        kubectl --kubeconfig {} get plugboard -A",
            cp.kubeconfig_path().display()
        );
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c()
            .await
            .context("failed to wait for Ctrl-C")?;
        operator.stop().await;
        Ok(())
    }

    async fn show(client: &Client) -> anyhow::Result<()> {
        let sockets: Api<Socket> = Api::namespaced(client.clone(), NAMESPACE);
        let plugs: Api<Plug> = Api::namespaced(client.clone(), NAMESPACE);
        println!(
            "{:<16} {:<12} {:<6} {:<8} REASON",
            "NAMESPACE", "SOCKET", "PLUGS", "READY"
        );
        for s in sockets.list(&Default::default()).await? {
            let status = s.status.clone().unwrap_or_default();
            let ready = conditions::find(&status.conditions, conditions::types::READY)
                .map_or("-", |c| c.status.as_str());
            let reason = conditions::find(&status.conditions, conditions::types::COUPLED)
                .map_or("-", |c| c.reason.as_str());
            println!(
                "{:<16} {:<12} {:<6} {:<8} {}",
                NAMESPACE,
                s.metadata.name.as_deref().unwrap_or_default(),
                status.coupled_plug_count,
                ready,
                reason
            );
        }
        println!();
        println!(
            "{:<16} {:<12} {:<12} {:<8} REASON",
            "NAMESPACE", "PLUG", "SOCKET", "READY"
        );
        for p in plugs.list(&Default::default()).await? {
            let status = p.status.clone().unwrap_or_default();
            let ready = conditions::find(&status.conditions, conditions::types::READY)
                .map_or("-", |c| c.status.as_str());
            let reason = conditions::find(&status.conditions, conditions::types::COUPLED)
                .map_or("-", |c| c.reason.as_str());
            println!(
                "{:<16} {:<12} {:<12} {:<8} {}",
                NAMESPACE,
                p.metadata.name.as_deref().unwrap_or_default(),
                p.spec.socket.name,
                ready,
                reason
            );
        }
        println!();
        let socket = sockets.get("postgres").await?;
        println!("--- Socket postgres as stored (with defaults applied by the API server)");
        print!("{}", serde_saphyr::to_string(&socket.spec)?);
        Ok(())
    }
}
