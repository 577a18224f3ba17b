//! The Socket reconciler: its created and deleted hooks, and its status, whose list of coupled
//! Plugs is derived from the Plugs' own status (so it has a single writer and never loses an
//! update, however many Plugs couple at once).
//!
//! Deleting a Socket never deletes Plugs: each coupled Plug sees the Socket going, runs the
//! decoupled hooks of both sides and waits for a Socket to come back; the Socket keeps its
//! finalizer until no Plug is coupled any more, then runs its deleted hooks.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource as _, ResourceExt as _};
use tracing::Instrument as _;

use super::hooks::{self, HookInputs};
use super::render::{self, Renderer};
use super::sources::Owner;
use super::{Context, Error, FORCE_DECOUPLE_ANNOTATION, requeue, write};
use crate::apparatus::HookErrorKind;
use crate::crd::conditions::{self, DesiredCondition, reasons, types};
use crate::crd::{CoupledObjectRef, LifecyclePoint, Plug, Socket, SocketStatus};
use crate::metrics::Metrics;

/// How often a steady Socket's status (its list of coupled Plugs) is rewritten at most.
const SOCKET_STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The Plugs whose status says they are coupled to `socket`, ordered by namespace and name.
fn coupled_plugs(ctx: &Context, socket: &Socket) -> Vec<CoupledObjectRef> {
    let Some(uid) = socket.uid() else {
        return Vec::new();
    };
    let mut plugs: Vec<CoupledObjectRef> = ctx
        .plugs
        .state()
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.coupled_socket.as_ref())
                .is_some_and(|c| c.uid == uid)
        })
        .map(|p| CoupledObjectRef {
            api_version: Plug::api_version(&()).into_owned(),
            kind: Plug::kind(&()).into_owned(),
            name: p.name_any(),
            namespace: p.namespace().unwrap_or_default(),
            uid: p.uid().unwrap_or_default(),
        })
        .collect();
    plugs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    plugs
}

/// Whether a Plug's status holds `uid`: coupled to it, or running its `coupled` hooks.
fn holds(plug: &Plug, uid: &str) -> bool {
    plug.status.as_ref().is_some_and(|s| {
        [s.coupled_socket.as_ref(), s.coupling_socket.as_ref()]
            .into_iter()
            .flatten()
            .any(|c| c.uid == uid)
    })
}

/// The Plugs coupled or coupling to `socket`, read from the API server rather than the cache:
/// the last check before the Socket's deleted hooks run and its finalizer goes, so that a Plug
/// whose `coupled` hooks started a moment ago is never missed.
async fn holding_plugs(ctx: &Context, socket: &Socket) -> Result<Vec<String>, Error> {
    let Some(uid) = socket.uid() else {
        return Ok(Vec::new());
    };
    let api: kube::Api<Plug> = super::scoped(&ctx.client, ctx.options.namespace.as_deref());
    let mut params = kube::api::ListParams::default();
    if let Some(selector) = &ctx.options.selector {
        params = params.labels(selector);
    }
    let plugs = api.list(&params).await.map_err(|source| Error::Api {
        action: "list",
        what: "Plugs".to_owned(),
        source: Box::new(source),
    })?;
    Ok(plugs
        .items
        .iter()
        .filter(|p| holds(p, &uid))
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "plug" } else { "plugs" }
}

async fn write_status(
    ctx: &Context,
    socket: &Socket,
    mut status: SocketStatus,
    desired: &[DesiredCondition],
) -> Result<(), Error> {
    let current = socket.status.as_ref();
    status.conditions = conditions::merge_conditions(
        current.map(|s| s.conditions.as_slice()).unwrap_or_default(),
        desired,
        socket.metadata.generation,
        &Time(Timestamp::now()),
    );
    status.observed_generation = socket.metadata.generation;
    write::status(ctx, socket, current, &status).await
}

/// Reconciles one Socket.
pub(crate) async fn reconcile(socket: Arc<Socket>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        kind = "Socket",
        namespace = socket.namespace().unwrap_or_default(),
        name = socket.name_any()
    );
    let metrics = ctx.metrics.clone();
    let result = super::wasm::pass(reconcile_inner(socket, ctx))
        .instrument(span)
        .await;
    Metrics::inc(&metrics.socket_reconciles);
    result
}

async fn reconcile_inner(socket: Arc<Socket>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !super::plugs_listed(&ctx).await {
        return Ok(requeue(std::time::Duration::from_millis(200)));
    }
    // A steady Socket woken again soon after its last reconcile can only have a new list of
    // coupled Plugs: gather the changes of a burst of couplings into one status write.
    if let Some(wait) = ctx.socket_throttle.wait(&socket, SOCKET_STATUS_INTERVAL) {
        return Ok(requeue(wait));
    }
    let Some(socket) = super::current(&ctx, socket).await? else {
        return Ok(Action::await_change());
    };
    ctx.socket_throttle.ran(&socket);
    let owner = Owner::socket(&socket);
    let plugs = coupled_plugs(&ctx, &socket);
    let mut status = socket.status.clone().unwrap_or_default();
    status.coupled_plug_count = i32::try_from(plugs.len()).unwrap_or(i32::MAX);
    status.coupled_plugs = plugs;

    if socket.meta().deletion_timestamp.is_some() {
        if !write::has_finalizer(&*socket) {
            return Ok(Action::await_change());
        }
        if !status.coupled_plugs.is_empty() {
            let names: Vec<String> = status
                .coupled_plugs
                .iter()
                .take(5)
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect();
            let more = status.coupled_plugs.len().saturating_sub(names.len());
            let message = format!(
                "deleting: waiting for {} {} to decouple: {}{}",
                status.coupled_plugs.len(),
                plural(status.coupled_plugs.len()),
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
            write_status(
                &ctx,
                &socket,
                status,
                &[
                    DesiredCondition::fails(types::READY, reasons::DELETING, message.clone()),
                    DesiredCondition::fails(types::COUPLED, reasons::DECOUPLING, message.clone()),
                    DesiredCondition::holds(types::RECONCILING, reasons::DECOUPLING, message),
                ],
            )
            .await?;
            // Look again later rather than only on a Plug event: Plugs deleted while the Plug
            // watch was down (an expired watch relists, and a relist reports no deletions)
            // wake nothing, and the Socket would wait for them forever.
            return Ok(requeue(ctx.options.retry));
        }
        // The cache may not show yet a Plug that began coupling just now: ask the API server.
        let holding = holding_plugs(&ctx, &socket).await?;
        if !holding.is_empty() {
            let message = format!(
                "deleting: waiting for {} {} to finish coupling or decoupling: {}",
                holding.len(),
                plural(holding.len()),
                holding
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            write_status(
                &ctx,
                &socket,
                status,
                &[
                    DesiredCondition::fails(types::READY, reasons::DELETING, message.clone()),
                    DesiredCondition::fails(types::COUPLED, reasons::DECOUPLING, message.clone()),
                    DesiredCondition::holds(types::RECONCILING, reasons::DECOUPLING, message),
                ],
            )
            .await?;
            // The Plug watch wakes this Socket when they change; the timer covers a cache that
            // lags behind.
            return Ok(requeue(std::time::Duration::from_secs(1)));
        }
        if status.created {
            let ran = match owner.require_opt_in(&ctx).await {
                Ok(()) => run_own_hook(&ctx, owner, &socket, LifecyclePoint::Deleted).await,
                Err(error) => Err(error),
            };
            let forced = socket
                .annotations()
                .get(FORCE_DECOUPLE_ANNOTATION)
                .is_some_and(|v| v == "true");
            let terminating = super::namespace_terminating(&ctx, owner.namespace).await;
            match ran {
                Ok(()) => {}
                Err(error @ Error::Api { .. }) => return Err(error),
                Err(error) if forced || terminating || error.namespace_terminating() => {
                    write::event(&ctx, &*socket, true, error.reason(), error.message()).await;
                }
                Err(error) => return failed(&ctx, &socket, status, &error).await,
            }
        }
        super::pods::delete_for_owner(&ctx, owner).await;
        write::remove_finalizer(&ctx, &*socket).await?;
        ctx.socket_throttle.forget(&socket);
        return Ok(Action::await_change());
    }

    if !write::has_finalizer(&*socket) {
        write::add_finalizer(&ctx, &*socket).await?;
    }
    // Nothing runs for a Socket whose ServiceAccount has not opted in.
    match owner.require_opt_in(&ctx).await {
        Ok(()) => {}
        Err(error @ Error::Api { .. }) => return Err(error),
        Err(error) => return failed(&ctx, &socket, status, &error).await,
    }
    match owner.apparatus_status(&ctx).await {
        Ok((apparatus, _)) => status.apparatus = apparatus,
        Err(error @ Error::Api { .. }) => return Err(error),
        Err(error) => return failed(&ctx, &socket, status, &error).await,
    }
    if !status.created {
        match run_own_hook(&ctx, owner, &socket, LifecyclePoint::Created).await {
            Ok(()) => status.created = true,
            Err(error @ Error::Api { .. }) => return Err(error),
            Err(error) => return failed(&ctx, &socket, status, &error).await,
        }
    }

    match super::sources::socket_self_check(&ctx, &socket).await {
        Ok(()) => {}
        Err(error @ Error::Api { .. }) => return Err(error),
        Err(error) => return failed(&ctx, &socket, status, &error).await,
    }

    let n = status.coupled_plugs.len();
    let coupled = if n == 0 {
        DesiredCondition::fails(types::COUPLED, reasons::SOCKET_EMPTY, "0 plugs coupled")
    } else {
        DesiredCondition::holds(
            types::COUPLED,
            reasons::SOCKET_COUPLED,
            format!("{n} {} coupled", plural(n)),
        )
    };
    write_status(
        &ctx,
        &socket,
        status,
        &[
            DesiredCondition::holds(types::READY, reasons::SOCKET_READY, "ready for Plugs"),
            coupled,
        ],
    )
    .await?;
    Ok(Action::await_change())
}

async fn failed(
    ctx: &Context,
    socket: &Socket,
    status: SocketStatus,
    error: &Error,
) -> Result<Action, Error> {
    let reason = error.reason();
    super::fairness::note_failure(reason);
    let message = error.message();
    let kind = error.hook_error_kind();
    // A hook that asked to be called again later is not Stalled and gets no Warning Event.
    if kind == Some(HookErrorKind::RetryLater) {
        let message = format!("{message}; plugboard calls the hook again after a backoff");
        write_status(
            ctx,
            socket,
            status,
            &[
                DesiredCondition::fails(types::READY, reason, message.clone()),
                DesiredCondition::fails(types::COUPLED, reason, message.clone()),
                DesiredCondition::holds(types::RECONCILING, reason, message),
            ],
        )
        .await?;
        return Ok(requeue(super::retry_delay(ctx)));
    }
    let previous = socket
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, types::READY));
    if previous.is_none_or(|c| c.reason != reason || c.message != message) {
        write::event(ctx, socket, true, reason, message.clone()).await;
    }
    write_status(
        ctx,
        socket,
        status,
        &[
            DesiredCondition::fails(types::READY, reason, message.clone()),
            DesiredCondition::fails(types::COUPLED, reason, message.clone()),
            DesiredCondition::holds(types::STALLED, reason, message),
        ],
    )
    .await?;
    Ok(if kind == Some(HookErrorKind::InvalidInput) {
        // Not called again until its inputs change (see `verdicts`).
        requeue(ctx.options.recheck)
    } else if error.needs_spec_change() {
        Action::await_change()
    } else {
        requeue(super::retry_delay(ctx))
    })
}

/// Runs the Socket's own hook at `point` (`created` or `deleted`): it sees the Socket only.
async fn run_own_hook(
    ctx: &Context,
    owner: Owner<'_>,
    socket: &Socket,
    point: LifecyclePoint,
) -> Result<(), Error> {
    let json = serde_json::to_value(socket).map_err(|source| Error::Encode {
        what: "the Socket",
        source,
    })?;
    let inputs = HookInputs {
        socket: Some(&json),
        ..Default::default()
    };
    let renderer = Renderer {
        context: render::owner_only(owner, &json),
        seed: None,
        limits: &ctx.options.templates,
    };
    hooks::run(ctx, owner, socket, point, inputs, &renderer).await
}

/// Backoff for failures of the operator's own API calls.
pub(crate) fn error_policy(socket: Arc<Socket>, error: &Error, ctx: Arc<Context>) -> Action {
    super::fairness::on_error(&super::object_key("Socket", &*socket), error, &ctx)
}
