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
    Run(Box<cli::run::RunArgs>),
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli::logs::init(&match &cli.command {
        Command::Run(args) => args.log_options(),
        _ => cli::logs::LogOptions::default(),
    });
    match cli.command {
        Command::Run(args) => cli::run::main(*args),
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
    }
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
