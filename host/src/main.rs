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
    /// Show the couplings of the current kubeconfig's cluster: each Socket, the Plugs naming
    /// it, whether they are Ready and why, the last hook that ran, and their age.
    Status(plugboard::status::Args),
    /// A local playground: start a control plane and an OCI registry (built from Go modules on
    /// first use), build and push the example plugins, serve an HTTP apparatus, apply the
    /// samples (a WebAssembly component, an HTTP endpoint and an apparatus pod, and templated
    /// resources), run the operator, and show the couplings becoming Ready. Ctrl-C stops
    /// everything and removes what it made.
    #[cfg(feature = "dev")]
    Dev(plugboard::dev::Args),
    /// Publish, inspect, pull and sign WebAssembly components in OCI registries.
    Plugin(cli::plugin::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `plugboard dev` prints its own progress; the operator's log would drown it.
    cli::logs::init(&match &cli.command {
        Command::Run(args) => args.log_options(),
        #[cfg(feature = "dev")]
        Command::Dev(_) => cli::logs::LogOptions {
            level: "warn".to_owned(),
            ..Default::default()
        },
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
        Command::Status(args) => Ok(tokio::runtime::Runtime::new()
            .context("failed to start the async runtime")?
            .block_on(plugboard::status::run(args))?),
        #[cfg(feature = "dev")]
        Command::Dev(args) => Ok(tokio::runtime::Runtime::new()
            .context("failed to start the async runtime")?
            .block_on(plugboard::dev::run(args))?),
        Command::Plugin(args) => tokio::runtime::Runtime::new()
            .context("failed to start the async runtime")?
            .block_on(cli::plugin::run(args)),
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
