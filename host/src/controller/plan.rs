//! `plugboard plan`: what a reconcile of a Plug would do, made visible and done by nothing.
//!
//! It loads what a reconcile loads (the Plug's current status if it exists, its Socket, the
//! sources and vars, read as the owners' ServiceAccounts when the caller may impersonate
//! them), asks the same pure lifecycle decisions, renders the same configs and resources, and
//! prints them. It calls no apparatus (so values an apparatus `config` hook would add are not
//! shown), writes nothing, and masks every value read from a Secret and every generated
//! password.

use std::fmt::Write as _;

use kube::{Client, Config, ResourceExt as _};

use super::render::{self, Renderer, Seed};
use super::sources::{self, Owner, Parties};
use super::{Context, Error, Options, plug as plugs};
use crate::apparatus::Side;
use crate::crd::{LifecyclePoint, Plug, SideSpec, Socket};
use crate::engine::Values;
use crate::engine::lifecycle::{self, Observed, Wait};
use crate::engine::resources::{ResourceStep, coupling_id};

/// How a planning context behaves.
#[derive(Debug, Clone)]
pub(crate) struct PlanMode {
    /// Act as the owners' ServiceAccounts (the caller may impersonate them).
    pub(crate) impersonate: bool,
}

/// What `plugboard plan` prints.
#[derive(Debug, Clone, Default)]
pub struct PlanReport {
    text: String,
}

impl std::fmt::Display for PlanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

const MASK: &str = "******";

/// Plans a reconcile of `plug` (as read from a file) against the cluster of `client`.
pub async fn plan(
    client: Client,
    config: Config,
    options: Options,
    plug: Plug,
) -> Result<PlanReport, Error> {
    let (store, _writer) = kube::runtime::reflector::store::<Plug>();
    let mut ctx = Context::new(
        client.clone(),
        config.clone(),
        options.clone(),
        Default::default(),
        store.clone(),
    )
    .await?;
    ctx.plan = Some(PlanMode { impersonate: true });
    match plan_with(&ctx, plug.clone()).await {
        Err(error) if error.message().contains("impersonate") => {
            let mut ctx = Context::new(client, config, options, Default::default(), store).await?;
            ctx.plan = Some(PlanMode { impersonate: false });
            let mut report = plan_with(&ctx, plug).await?;
            report.text.insert_str(
                0,
                "note: you may not impersonate the owners' ServiceAccounts, so this plan reads \
                 as you; the operator reads and writes as those ServiceAccounts\n\n",
            );
            Ok(report)
        }
        other => other,
    }
}

fn apparatus_text(spec: &SideSpec) -> String {
    match &spec.apparatus {
        None => "no apparatus".to_owned(),
        Some(a) => match (&a.wasm, &a.endpoint, &a.containers) {
            (Some(w), _, _) => format!("WebAssembly component {}", w.image),
            (None, _, Some(_)) => "apparatus pod".to_owned(),
            (None, Some(e), None) => format!("HTTP apparatus {e}"),
            (None, None, None) => "HTTP apparatus".to_owned(),
        },
    }
}

/// Values never printed: those read from the Secrets the two sides name.
async fn secret_values(ctx: &Context, owners: &[Owner<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for owner in owners {
        let spec = owner.spec;
        for (name, field) in [
            (&spec.config_secret_name, "spec.configSecretName"),
            (&spec.data_secret_name, "spec.dataSecretName"),
            (&spec.result_secret_name, "spec.resultSecretName"),
        ] {
            if let Some(name) = name.as_ref().filter(|n| !n.is_empty())
                && let Ok(values) = sources::read_secret(ctx, *owner, name, field).await
            {
                out.extend(values.into_values().filter(|v| v.len() >= 3));
            }
        }
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out
}

struct Printer {
    text: String,
    secrets: Vec<String>,
}

impl Printer {
    fn line(&mut self, line: impl AsRef<str>) {
        let mut line = line.as_ref().to_owned();
        for secret in &self.secrets {
            line = line.replace(secret.as_str(), MASK);
        }
        self.text.push_str(&line);
        self.text.push('\n');
    }

    fn values(&mut self, title: &str, values: &Values) {
        if values.is_empty() {
            self.line(format!("  {title}: (empty)"));
            return;
        }
        self.line(format!("  {title}:"));
        for (k, v) in values {
            self.line(format!("    {k}: {v}"));
        }
    }

    fn steps(&mut self, who: &str, steps: &[ResourceStep]) {
        for step in steps {
            let (verb, o) = match step {
                ResourceStep::Apply(o) => ("apply", o),
                ResourceStep::Delete(o) => ("delete", o),
                ResourceStep::Recreate(o) => ("recreate", o),
            };
            self.line(format!(
                "  {who}: {verb} {} {} {}/{} ({})",
                o.api_version, o.kind, o.namespace, o.name, o.origin
            ));
            if !matches!(step, ResourceStep::Delete(_)) {
                let mut object = o.object.clone();
                mask_secret_data(&mut object);
                let yaml = serde_saphyr::to_string(&object).unwrap_or_default();
                for l in yaml.lines() {
                    self.line(format!("      {l}"));
                }
            }
        }
    }
}

/// Masks the values of a rendered Secret's `data` and `stringData`.
fn mask_secret_data(object: &mut serde_json::Value) {
    if object.get("kind").and_then(|k| k.as_str()) != Some("Secret") {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(map) = object.get_mut(field).and_then(|d| d.as_object_mut()) {
            for value in map.values_mut() {
                *value = serde_json::Value::String(MASK.to_owned());
            }
        }
    }
}

async fn plan_with(ctx: &Context, mut plug: Plug) -> Result<PlanReport, Error> {
    let namespace = plug.namespace().unwrap_or_else(|| "default".to_owned());
    plug.metadata.namespace = Some(namespace.clone());
    let name = plug.name_any();
    let existing = super::fresh::<Plug>(ctx, &namespace, &name).await?;
    let status = existing
        .as_ref()
        .and_then(|p| p.status.clone())
        .unwrap_or_default();
    if let Some(existing) = &existing {
        plug.metadata.uid = existing.metadata.uid.clone();
        plug.metadata.generation = existing.metadata.generation;
    }
    let key = super::socket_key(&plug);
    let socket_ns = key.namespace.clone().unwrap_or_default();
    let socket = super::fresh::<Socket>(ctx, &socket_ns, &key.name).await?;
    let plug_owner = Owner::plug(&plug);
    let mut owners = vec![plug_owner];
    if let Some(s) = &socket {
        owners.push(Owner::socket(s));
    }
    let mut p = Printer {
        text: String::new(),
        secrets: secret_values(ctx, &owners).await,
    };
    p.line(format!(
        "Plug {namespace}/{name} ({}) → Socket {socket_ns}/{}",
        if existing.is_some() { "exists" } else { "new" },
        key.name
    ));
    let state = plugs::socket_state(ctx, &plug, socket.as_ref()).await?;
    let before = lifecycle::before_configs(&Observed {
        created: status.created,
        coupled_to: status.coupled_socket.as_ref().map(|c| c.uid.clone()),
        socket: state,
        // A plan says what a pass would do once the Socket is set up.
        fresh: false,
    });
    let plug_json = plugs::to_json("the Plug", &plug)?;
    if before.run_created {
        p.line(format!(
            "step: created — the Plug's hook ({}) would be called",
            apparatus_text(plug_owner.spec)
        ));
        let renderer = Renderer {
            context: render::owner_only(plug_owner, &plug_json),
            seed: None,
            limits: &ctx.options.templates,
        };
        let steps = renderer.lifecycle_steps(plug_owner, LifecyclePoint::Created)?;
        p.steps("plug", &steps);
    }
    if before.decouple
        && let Some(coupled) = &status.coupled_socket
    {
        p.line(format!(
            "step: decoupled from Socket {}/{} — the decoupled hooks of both sides would be called and their resources removed",
            coupled.namespace, coupled.name
        ));
    }
    if let Some(wait) = before.wait {
        let why = match wait {
            Wait::SocketMissing { deleting } => {
                if deleting {
                    "the Socket is being deleted".to_owned()
                } else {
                    "the Socket does not exist".to_owned()
                }
            }
            Wait::SocketNotReady { fault: None } => {
                "the Socket has not run its created hooks".to_owned()
            }
            Wait::SocketNotReady {
                fault: Some((reason, message)),
            } => format!("the Socket is not ready ({reason}): {message}"),
            Wait::Refused(message) => format!("refused: {message}"),
        };
        p.line(format!("then: wait — {why}"));
        return Ok(PlanReport { text: p.text });
    }
    let Some(socket) = socket else {
        return Ok(PlanReport { text: p.text });
    };
    let socket_owner = Owner::socket(&socket);
    let socket_json = std::sync::Arc::new(plugs::socket_json(&socket)?);
    let parties = Parties {
        plug: &plug,
        socket: &socket,
        plug_json: &plug_json,
        socket_json: &socket_json,
    };
    let seed = plugs::seed_for(ctx, &plug, &socket).await?.map(|s| Seed {
        coupling: coupling_id(
            plug.uid().as_deref().unwrap_or("new"),
            socket.uid().as_deref().unwrap_or_default(),
        ),
        ..s
    });
    let computed = sources::configs(ctx, parties, seed.as_ref()).await?;
    for side in [Side::Plug, Side::Socket] {
        let spec = match side {
            Side::Plug => &plug.spec.side,
            Side::Socket => &socket.spec.side,
        };
        if spec.apparatus.is_some() {
            p.line(format!(
                "note: the {} apparatus's config hook is not called by a plan; its values are not shown",
                side.as_str()
            ));
        }
    }
    p.line("configs (values from Secrets masked):");
    p.values("plug", &computed.plug_config);
    p.values("socket", &computed.socket_config);
    let sum = plugs::inputs_checksum(&plug, &socket, &computed);
    let point = lifecycle::coupling_hook(
        status.coupled_socket.is_some(),
        status.coupling_checksum.as_deref(),
        &sum,
    );
    match point {
        Some(point) => {
            p.line(format!(
                "step: {} — hooks that would be called: plug ({}), then socket ({})",
                point.as_str(),
                apparatus_text(&plug.spec.side),
                apparatus_text(&socket.spec.side)
            ));
            for side in lifecycle::hook_sides(point) {
                let renderer =
                    plugs::coupling_renderer(ctx, parties, &computed, *side, seed.as_ref());
                let owner = match side {
                    Side::Plug => plug_owner,
                    Side::Socket => socket_owner,
                };
                let steps = renderer.lifecycle_steps(owner, point)?;
                p.steps(side.as_str(), &steps);
            }
        }
        None => p.line("step: none — the coupling's inputs have not changed; no hook would run"),
    }
    match sources::results(ctx, parties, &computed, seed.as_ref()).await {
        Ok(Ok((plug_result, socket_result))) => {
            p.line("results (values from Secrets masked):");
            p.values("plug", &plug_result);
            p.values("socket", &socket_result);
            for side in lifecycle::RESULT_RESOURCE_SIDES {
                let mut renderer =
                    plugs::coupling_renderer(ctx, parties, &computed, side, seed.as_ref());
                renderer.context.plug_result = Some(plug_result.clone());
                renderer.context.socket_result = Some(socket_result.clone());
                let owner = match side {
                    Side::Plug => plug_owner,
                    Side::Socket => socket_owner,
                };
                let steps = renderer.result_steps(owner)?;
                p.steps(side.as_str(), &steps);
            }
        }
        Ok(Err(missing)) => p.line(format!("then: wait for results — {missing}")),
        Err(error) => p.line(format!(
            "then: results cannot be computed yet — {}",
            error.message()
        )),
    }
    let mut text = p.text;
    if seed.is_some() {
        let _ = writeln!(
            text,
            "note: values of the `password` filter are masked in a plan"
        );
    }
    Ok(PlanReport { text })
}
