//! `plugboard status`: the couplings of any cluster and their conditions, read with the
//! current kubeconfig: each Socket, the Plugs naming it, whether they are Ready and why, the
//! last hook that ran and their age. Read-only.

mod table;

pub use table::{Entry, LastHook, Report, SocketGroup, age, all_ready, build, clean, render};

use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::crd::{Plug, Socket};

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// One namespace.
    Namespace(String),
}

/// How to print the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A table.
    #[default]
    Table,
    /// JSON (`{"sockets": [...]}`).
    Json,
}

/// Arguments of `plugboard status`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The namespace to show (default: the current kubeconfig context's).
    #[arg(short = 'n', long, env = "PLUGBOARD_STATUS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Show every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, env = "PLUGBOARD_STATUS_OUTPUT")]
    pub output: Format,
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No kubeconfig or in-cluster configuration.
    #[error("failed to find a kubeconfig or in-cluster configuration")]
    Config(#[source] kube::config::InferConfigError),
    /// A client could not be built.
    #[error("failed to create a Kubernetes client")]
    Client(#[source] kube::Error),
    /// Listing Plugs or Sockets failed.
    #[error("failed to list {what}")]
    List {
        /// What was listed.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The report could not be serialised.
    #[error("failed to write the report as JSON")]
    Json(#[source] serde_json::Error),
}

/// Reads the report from the cluster. The hook Events are best effort: without the right to
/// list Events the LAST HOOK column stays empty (logged), the rest is shown.
pub async fn collect(client: &Client, scope: &Scope) -> Result<Report, Error> {
    let (sockets, plugs, events): (Api<Socket>, Api<Plug>, Api<Event>) = match scope {
        Scope::All => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
        Scope::Namespace(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
    };
    let mut socket_list = sockets
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            what: "Sockets",
            source,
        })?
        .items;
    let plug_list = plugs
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            what: "Plugs",
            source,
        })?
        .items;
    // Sockets in other namespaces that Plugs here name.
    if let Scope::Namespace(ns) = scope {
        let mut others: Vec<(String, String)> = plug_list
            .iter()
            .filter_map(|p| {
                let other = p.spec.socket.namespace.as_ref().filter(|o| *o != ns)?;
                Some((other.clone(), p.spec.socket.name.clone()))
            })
            .collect();
        others.sort();
        others.dedup();
        for (other, name) in others {
            match Api::<Socket>::namespaced(client.clone(), &other)
                .get_opt(&name)
                .await
            {
                Ok(Some(socket)) => socket_list.push(socket),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, namespace = other, name, "cannot read a Socket named by a Plug")
                }
            }
        }
    }
    let events = match events
        .list(&ListParams::default().fields("type=Normal"))
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "cannot list Events: the last hooks are not shown");
            Vec::new()
        }
    };
    Ok(build(&socket_list, &plug_list, &events))
}

/// `plugboard status`: prints the report for the current kubeconfig's cluster.
pub async fn run(args: Args) -> Result<(), Error> {
    let config = kube::Config::infer().await.map_err(Error::Config)?;
    let scope = if args.all_namespaces {
        Scope::All
    } else {
        Scope::Namespace(
            args.namespace
                .unwrap_or_else(|| config.default_namespace.clone()),
        )
    };
    let client = Client::try_from(config).map_err(Error::Client)?;
    let report = collect(&client, &scope).await?;
    let text = match args.output {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&report).map_err(Error::Json)?;
            text.push('\n');
            text
        }
        Format::Table => render(
            &report,
            scope == Scope::All,
            k8s_openapi::jiff::Timestamp::now(),
        ),
    };
    print!("{text}");
    Ok(())
}
