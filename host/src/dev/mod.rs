//! `plugboard dev`: a local playground on a real control plane, needing nothing but Rust and Go.
//!
//! It starts a control plane and a loopback OCI registry (both built from their Go modules on
//! first use, then cached), builds the plugins of this source tree into WebAssembly components
//! (cached by a hash of their sources) and pushes them, serves an HTTP apparatus on loopback,
//! plays the kubelet for apparatus pods, applies the samples of `host/samples/` — a Socket and
//! Plug per way of running hooks (WebAssembly component, HTTP endpoint, apparatus pod) and one
//! with templated resources — runs the operator, and shows the couplings becoming Ready, then
//! the `plugboard status` table. Everything it started stops, and every folder it made goes,
//! on Ctrl-C (or when the process ends in any other way: the processes are supervised through
//! a pipe from this one).

mod apparatus;
pub mod kubelet;
mod samples;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use plugboard_controlplane::registry::{Registry, RegistryError};
use plugboard_controlplane::{ControlPlane, ControlPlaneOptions, install_crds, plugins};

pub use apparatus::DevApparatus;
pub use samples::SAMPLES;

use crate::controller::{Operator, Options};
use crate::crd::{Plug, Socket, conditions};
use crate::status;
use kubelet::FakeKubelet;

/// The namespace the samples are applied in.
pub const NAMESPACE: &str = "plugboard-demo";

/// Arguments of `plugboard dev`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// Folder for the control plane's state, logs and kubeconfig, kept after exit (default: a
    /// temporary folder, removed on exit).
    #[arg(long, env = "PLUGBOARD_DEV_DIR")]
    pub dir: Option<PathBuf>,
    /// Exit once every sample is Ready (status 0), or when --ready-timeout passes first
    /// (status 1), instead of serving until Ctrl-C.
    #[arg(long, alias = "exit", env = "PLUGBOARD_DEV_EXIT_WHEN_READY")]
    pub exit_when_ready: bool,
    /// How long to wait for the samples to become Ready, in seconds (builds on a first run
    /// are not counted).
    #[arg(long, env = "PLUGBOARD_DEV_READY_TIMEOUT", default_value_t = 120)]
    pub ready_timeout: u64,
}

/// Why the playground could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane could not be built or started.
    #[error("failed to start the local control plane")]
    ControlPlane(#[source] plugboard_controlplane::Error),
    /// The registry could not be built or started.
    #[error("failed to start the local registry")]
    Registry(#[source] RegistryError),
    /// The plugins could not be built.
    #[error("failed to build the plugins into WebAssembly components")]
    Plugins(#[source] plugins::Error),
    /// A component could not be read or pushed.
    #[error("failed to push {image}")]
    Push {
        /// The reference pushed to.
        image: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The loopback HTTP apparatus could not be started.
    #[error("failed to start the loopback HTTP apparatus")]
    Apparatus(#[source] std::io::Error),
    /// A sample file is not valid.
    #[error("sample {file}: {problem}")]
    Sample {
        /// The file in `host/samples/`.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// A Kubernetes API call failed.
    #[error("failed to {context}")]
    Kube {
        /// What the call was for.
        context: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading the status table failed.
    #[error("failed to read the couplings' status")]
    Status(#[source] status::Error),
    /// Not every sample became Ready in time.
    #[error("not every sample was Ready after {seconds} s: {waiting}")]
    NotReady {
        /// How long was waited.
        seconds: u64,
        /// The samples not Ready, with their reasons.
        waiting: String,
    },
    /// A build task could not be joined.
    #[error("a build task failed")]
    Join(#[source] tokio::task::JoinError),
}

fn kube_error(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}

/// Progress lines on stderr, each stamped with the time since the start.
#[derive(Debug, Clone, Copy)]
struct Progress {
    started: Instant,
}

impl Progress {
    fn step(&self, what: &str, detail: impl Display) {
        eprintln!(
            "[{:>6.1} s] {what:<14} {detail}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// A running playground. Dropping it stops everything it started (the operator first).
pub struct Session {
    // Fields drop in this order: the operator stops before what it talks to.
    operator: Option<Operator>,
    kubelet: Option<FakeKubelet>,
    apparatus: DevApparatus,
    registry: Registry,
    control_plane: ControlPlane,
    client: Client,
    applied: Vec<(String, String)>,
    images: Vec<(String, String)>,
    progress: Progress,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("control_plane", &self.control_plane)
            .field("registry", &self.registry)
            .field("apparatus", &self.apparatus)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts the control plane, the registry, the apparatus and the operator, and applies
    /// the samples; returns without waiting for them to couple ([`Session::wait_ready`]).
    pub async fn start(args: &Args) -> Result<Session, Error> {
        let progress = Progress {
            started: Instant::now(),
        };
        progress.step(
            "starting",
            "control plane, registry and plugin build (the first run builds them from Go \
             modules and Rust sources: several minutes; later runs reuse the cache)",
        );
        let control_plane = async {
            let cp = ControlPlane::start(ControlPlaneOptions {
                dir: args.dir.clone(),
                keep_dir: args.dir.is_some(),
            })
            .await
            .map_err(Error::ControlPlane)?;
            progress.step(
                "control plane",
                format_args!(
                    "{} ready in {:.1} s (etcd, kube-apiserver, kube-controller-manager {})",
                    cp.server(),
                    cp.startup_time().as_secs_f64(),
                    plugboard_controlplane::KUBERNETES_VERSION
                ),
            );
            Ok::<_, Error>(cp)
        };
        let registry = async {
            let registry = Registry::start().await.map_err(Error::Registry)?;
            progress.step(
                "registry",
                format_args!(
                    "{} ready (CNCF distribution {})",
                    registry.host(),
                    plugboard_controlplane::registry::REGISTRY_TOOL.version
                ),
            );
            Ok::<_, Error>(registry)
        };
        let components = async {
            let components = tokio::task::spawn_blocking(plugins::build)
                .await
                .map_err(Error::Join)?
                .map_err(Error::Plugins)?;
            progress.step(
                "plugins",
                format_args!(
                    "{} built ({})",
                    components.names().join(", "),
                    components.toolchain()
                ),
            );
            Ok::<_, Error>(components)
        };
        let (control_plane, registry, components) =
            tokio::try_join!(control_plane, registry, components)?;

        let client = control_plane.client().await.map_err(Error::ControlPlane)?;
        install_crds(&client, crate::crd::crds())
            .await
            .map_err(Error::ControlPlane)?;
        let params = PatchParams::apply("plugboard-dev").force();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(NAMESPACE.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .patch(NAMESPACE, &params, &Patch::Apply(&namespace))
            .await
            .map_err(kube_error("create the namespace"))?;

        let mut images = Vec::new();
        for name in components.names() {
            let image = registry.image(&format!("plugboard/{name}:dev"));
            let push_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Push {
                image: image.clone(),
                source,
            };
            let path = components.path(name).map_err(|e| push_error(e.into()))?;
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| push_error(e.into()))?;
            let digest = crate::oci::push_component(
                &image,
                &bytes,
                &crate::oci::RegistryAuth::Anonymous,
                &registry.plain_http_hosts(),
            )
            .await
            .map_err(|e| push_error(e.into()))?;
            progress.step(
                "pushed",
                format_args!("{image} ({} KiB, {digest})", bytes.len() / 1024),
            );
            images.push((image, digest));
        }

        let apparatus = DevApparatus::start().await.map_err(Error::Apparatus)?;
        let kubelet = FakeKubelet::start(client.clone(), NAMESPACE);
        progress.step(
            "apparatus",
            format_args!(
                "HTTP apparatus at {}; apparatus pods in {NAMESPACE} are marked running at \
                 127.0.0.1 (no kubelet here: this process plays it)",
                apparatus.url()
            ),
        );

        let vars = samples::Vars::from([
            ("REGISTRY", registry.host().to_owned()),
            ("APPARATUS_URL", apparatus.url()),
            ("APPARATUS_PORT", apparatus.port().to_string()),
        ]);
        let applied = samples::apply_all(&client, NAMESPACE, &vars).await?;
        progress.step(
            "samples",
            format_args!(
                "applied {} objects from host/samples/ ({}) in namespace {NAMESPACE}",
                applied.len(),
                SAMPLES.map(|(file, _)| file).join(", ")
            ),
        );

        let config = control_plane.config().await.map_err(Error::ControlPlane)?;
        let mut options = Options {
            // The playground's apparatus and registry listen on loopback, which the default
            // egress policy refuses; `dev` allows loopback (only here).
            egress: crate::egress::EgressOptions::default().allowing_loopback(),
            plain_http_registries: registry.plain_http_hosts(),
            retry: Duration::from_secs(5),
            ..Default::default()
        };
        // Apparatus pods are reported at 127.0.0.1 and called there (the API server refuses
        // to proxy to loopback pod IPs).
        options.pods.via_api_server = false;
        let operator = Operator::spawn(client.clone(), config, options);
        progress.step(
            "operator",
            "running (egress to loopback allowed for this playground only; the registry is \
             spoken to over plain HTTP)",
        );
        Ok(Session {
            operator: Some(operator),
            kubelet: Some(kubelet),
            apparatus,
            registry,
            control_plane,
            client,
            applied,
            images,
            progress,
        })
    }

    /// An admin client of the playground's control plane.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        self.control_plane.kubeconfig_path()
    }

    /// The control plane's folder (state, logs, kubeconfig).
    pub fn control_plane_dir(&self) -> &Path {
        self.control_plane.dir()
    }

    /// `127.0.0.1:PORT` of the registry.
    pub fn registry_host(&self) -> &str {
        self.registry.host()
    }

    /// The URL of the loopback HTTP apparatus.
    pub fn apparatus_url(&self) -> String {
        self.apparatus.url()
    }

    /// The paths the loopback HTTP apparatus was called at so far (hooks of the HTTP endpoint
    /// and apparatus pod samples).
    pub fn apparatus_calls(&self) -> Vec<String> {
        self.apparatus.calls()
    }

    /// `(kind, name)` of every object applied from the samples.
    pub fn applied(&self) -> &[(String, String)] {
        &self.applied
    }

    /// `(reference, digest)` of every component pushed.
    pub fn images(&self) -> &[(String, String)] {
        &self.images
    }

    /// Waits until every sample Plug is Ready and every sample Socket is Ready with its Plug
    /// coupled (each sample Socket has one), printing a line as each gets there (or reports
    /// why it has not yet), then returns the status report of the namespace.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<status::Report, Error> {
        let mut pending: BTreeMap<(String, String), String> = self
            .applied
            .iter()
            .filter(|(kind, _)| kind == "Plug" || kind == "Socket")
            .map(|(kind, name)| {
                (
                    (kind.clone(), name.clone()),
                    "not reconciled yet".to_owned(),
                )
            })
            .collect();
        let waiting_since = Instant::now();
        let plugs = watcher(
            Api::<Plug>::namespaced(self.client.clone(), NAMESPACE),
            watcher::Config::default(),
        )
        .applied_objects()
        .map(|p| {
            p.map(|p| {
                (
                    "Plug",
                    p.name_any(),
                    p.status.unwrap_or_default().conditions,
                )
            })
        });
        let sockets = watcher(
            Api::<Socket>::namespaced(self.client.clone(), NAMESPACE),
            watcher::Config::default(),
        )
        .applied_objects()
        .map(|s| {
            s.map(|s| {
                (
                    "Socket",
                    s.name_any(),
                    s.status.unwrap_or_default().conditions,
                )
            })
        });
        let mut events = std::pin::pin!(futures::stream::select(plugs, sockets));
        let deadline = tokio::time::Instant::now() + timeout;
        while !pending.is_empty() {
            let next = match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(next)) => next,
                Ok(None) | Err(_) => break,
            };
            let (kind, name, conds) = match next {
                Ok(object) => object,
                // The watcher retries by itself; say why nothing moves meanwhile.
                Err(error) => {
                    tracing::debug!(%error, "watching the samples");
                    continue;
                }
            };
            let key = (kind.to_owned(), name);
            let Some(last) = pending.get(&key) else {
                continue;
            };
            let ready = conditions::find(&conds, conditions::types::READY);
            let coupled = conditions::find(&conds, conditions::types::COUPLED);
            let seen = ready.map_or_else(
                || "not reconciled yet".to_owned(),
                |c| format!("{} {}", c.reason, status::clean(&c.message)),
            );
            let socket_coupled = kind != "Socket"
                || coupled.is_some_and(|c| c.reason == conditions::reasons::SOCKET_COUPLED);
            if ready.is_some_and(|c| c.status == "True") && socket_coupled {
                self.progress.step(
                    "ready",
                    format_args!(
                        "{kind} {} ({}) after {:.1} s",
                        key.1,
                        coupled.or(ready).map_or("", |c| c.reason.as_str()),
                        waiting_since.elapsed().as_secs_f64()
                    ),
                );
                pending.remove(&key);
            } else if *last != seen {
                self.progress
                    .step("waiting", format_args!("{kind} {}: {seen}", key.1));
                pending.insert(key, seen);
            }
        }
        let report = status::collect(&self.client, &status::Scope::Namespace(NAMESPACE.into()))
            .await
            .map_err(Error::Status)?;
        if pending.is_empty() {
            Ok(report)
        } else {
            let waiting = pending
                .iter()
                .map(|((kind, name), seen)| format!("{kind} {name} ({seen})"))
                .collect::<Vec<_>>()
                .join(", ");
            print!(
                "{}",
                status::render(&report, false, k8s_openapi::jiff::Timestamp::now())
            );
            Err(Error::NotReady {
                seconds: timeout.as_secs(),
                waiting,
            })
        }
    }

    /// Stops the operator, then everything else; the temporary folders are removed.
    pub async fn stop(mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop().await;
        }
        // Its watch would complain once the API server is gone.
        drop(self.kubelet.take());
        self.apparatus.stop().await;
        self.registry.stop();
        self.control_plane.stop();
    }
}

/// `plugboard dev`: sets the playground up, waits for the samples, prints the summary, and
/// serves until Ctrl-C (or exits, with `--exit-when-ready`). Ctrl-C at any point stops and
/// removes everything started so far.
pub async fn run(args: Args) -> Result<(), Error> {
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let session = tokio::select! {
        session = Session::start(&args) => session?,
        _ = &mut interrupted => {
            eprintln!("interrupted: stopped what was started");
            return Ok(());
        }
    };
    let timeout = Duration::from_secs(args.ready_timeout.max(1));
    let ready = tokio::select! {
        ready = session.wait_ready(timeout) => ready,
        _ = &mut interrupted => {
            session.stop().await;
            eprintln!("interrupted: stopped the operator, the registry and the control plane");
            return Ok(());
        }
    };
    let report = match ready {
        Ok(report) => report,
        Err(e) => {
            if args.exit_when_ready {
                session.stop().await;
                return Err(e);
            }
            eprintln!("{e}; serving anyway, `plugboard status` shows what changes");
            status::collect(&session.client, &status::Scope::Namespace(NAMESPACE.into()))
                .await
                .map_err(Error::Status)?
        }
    };
    println!();
    print!(
        "{}",
        status::render(&report, false, k8s_openapi::jiff::Timestamp::now())
    );
    println!();
    let kubeconfig = session.kubeconfig_path().display().to_string();
    println!("kubeconfig: {kubeconfig}");
    println!("try:        KUBECONFIG={kubeconfig} cargo run -p plugboard -- status -n {NAMESPACE}");
    println!("            kubectl --kubeconfig {kubeconfig} get plugboard -A");
    for (image, digest) in session.images() {
        println!("component:  {image} ({digest})");
    }
    if args.exit_when_ready {
        session.stop().await;
        return Ok(());
    }
    println!("serving until Ctrl-C");
    // An error listening for Ctrl-C leaves nothing to wait for: stop now.
    let _ = interrupted.await;
    session.stop().await;
    match &args.dir {
        Some(dir) => eprintln!(
            "stopped the operator, the registry and the control plane; {} is kept",
            dir.display()
        ),
        None => eprintln!(
            "stopped the operator, the registry and the control plane; their folders are removed"
        ),
    }
    Ok(())
}
