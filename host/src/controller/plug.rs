//! The Plug reconciler: runs a coupling's lifecycle from the Plug's side.
//!
//! One pass does as much as it can: created hooks, decoupling from a Socket it should no longer
//! be coupled to, admission, configs, coupled or updated hooks (both sides, Plug first), and
//! results. Status is written after each step whose hooks ran, so a crash repeats at most that
//! step's hooks (at-least-once), and once more at the end if anything changed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Resource as _, ResourceExt as _};
use serde_json::Value;
use tracing::Instrument as _;

use super::hooks::{self, HookInputs};
use super::sources::{self, Owner, Parties};
use super::{Context, Error, FORCE_DECOUPLE_ANNOTATION, requeue, socket_key, write};
use crate::crd::conditions::{self, DesiredCondition, reasons, types};
use crate::crd::{CoupledObjectRef, LifecyclePoint, Plug, PlugStatus, ResultRef, Socket};
use crate::engine::Values;
use crate::engine::admission::{self, Admission, PlugNamespace};
use crate::engine::checksum::{self, CouplingInputs};
use crate::metrics::Metrics;

/// How a pass ended, as conditions and what to do next.
struct Outcome {
    conditions: Vec<DesiredCondition>,
    action: Action,
    /// A Warning Event to publish when this outcome is new.
    warning: Option<(&'static str, String)>,
}

impl Outcome {
    fn ready(message: String) -> Self {
        Outcome {
            conditions: vec![
                DesiredCondition::holds(types::READY, reasons::COUPLING_SUCCEEDED, message.clone()),
                DesiredCondition::holds(types::COUPLED, reasons::COUPLING_SUCCEEDED, message),
            ],
            action: Action::await_change(),
            warning: None,
        }
    }

    /// Waiting for something a watch reports (no timer).
    fn waiting(reason: &'static str, message: String) -> Self {
        Outcome {
            conditions: vec![
                DesiredCondition::fails(types::READY, reason, message.clone()),
                DesiredCondition::fails(types::COUPLED, reason, message),
            ],
            action: Action::await_change(),
            warning: None,
        }
    }

    /// Waiting for something only a timer notices (a result appearing in a Secret).
    fn pending(reason: &'static str, message: String, after: std::time::Duration) -> Self {
        Outcome {
            conditions: vec![
                DesiredCondition::fails(types::READY, reason, message.clone()),
                DesiredCondition::fails(types::COUPLED, reason, message.clone()),
                DesiredCondition::holds(types::RECONCILING, reason, message),
            ],
            action: requeue(after),
            warning: None,
        }
    }

    /// Stuck until the user acts; says what to fix.
    fn stalled(reason: &'static str, message: String, action: Action) -> Self {
        Outcome {
            conditions: vec![
                DesiredCondition::fails(types::READY, reason, message.clone()),
                DesiredCondition::fails(types::COUPLED, reason, message.clone()),
                DesiredCondition::holds(types::STALLED, reason, message.clone()),
            ],
            action,
            warning: Some((reason, message)),
        }
    }

    fn failed(error: &Error, ctx: &Context) -> Self {
        let action = if error.needs_spec_change() {
            Action::await_change()
        } else {
            requeue(ctx.options.retry)
        };
        Outcome::stalled(error.reason(), error.message(), action)
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn coupled_ref(socket: &Socket) -> CoupledObjectRef {
    CoupledObjectRef {
        api_version: Socket::api_version(&()).into_owned(),
        kind: Socket::kind(&()).into_owned(),
        name: socket.name_any(),
        namespace: socket.namespace().unwrap_or_default(),
        uid: socket.uid().unwrap_or_default(),
    }
}

fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|source| Error::Encode { what, source })
}

/// The Plug status as last written (or read), so a write happens only on change.
struct StatusWriter<'a> {
    plug: &'a Plug,
    written: Option<PlugStatus>,
}

impl StatusWriter<'_> {
    async fn write(
        &mut self,
        ctx: &Context,
        status: &mut PlugStatus,
        desired: &[DesiredCondition],
    ) -> Result<(), Error> {
        let current = self
            .written
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        status.conditions =
            conditions::merge_conditions(current, desired, self.plug.metadata.generation, &now());
        status.observed_generation = self.plug.metadata.generation;
        write::status(ctx, self.plug, self.written.as_ref(), status).await?;
        self.written = Some(status.clone());
        Ok(())
    }
}

/// Reconciles one Plug.
pub(crate) async fn reconcile(plug: Arc<Plug>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        kind = "Plug",
        namespace = plug.namespace().unwrap_or_default(),
        name = plug.name_any()
    );
    let metrics = ctx.metrics.clone();
    let result = reconcile_inner(plug, ctx).instrument(span).await;
    Metrics::inc(&metrics.plug_reconciles);
    result
}

async fn reconcile_inner(plug: Arc<Plug>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Decide on the object as it is now, not as a cache last saw it: hooks must not run twice
    // because our own previous status write has not reached the cache yet.
    let Some(plug) = super::fresh::<Plug>(
        &ctx,
        &plug.namespace().unwrap_or_default(),
        &plug.name_any(),
    )
    .await?
    else {
        return Ok(Action::await_change());
    };
    let plug = Arc::new(plug);
    if plug.meta().deletion_timestamp.is_some() {
        return delete(&plug, &ctx).await;
    }
    if !write::has_finalizer(&*plug) {
        write::add_finalizer(&ctx, &*plug).await?;
    }
    let mut writer = StatusWriter {
        plug: &plug,
        written: plug.status.clone(),
    };
    let mut status = plug.status.clone().unwrap_or_default();
    let outcome = match couple(&plug, &ctx, &mut writer, &mut status).await {
        Ok(outcome) => outcome,
        // The operator's own API calls failing is not the user's to fix: retry with backoff.
        Err(error @ Error::Api { .. }) => return Err(error),
        Err(error) => Outcome::failed(&error, &ctx),
    };
    finish(&ctx, &plug, &mut writer, &mut status, outcome).await
}

async fn finish(
    ctx: &Context,
    plug: &Plug,
    writer: &mut StatusWriter<'_>,
    status: &mut PlugStatus,
    outcome: Outcome,
) -> Result<Action, Error> {
    if let Some((reason, message)) = &outcome.warning {
        let previous = writer
            .written
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::READY));
        let is_new = previous.is_none_or(|c| c.reason != *reason || c.message != *message);
        if is_new {
            write::event(ctx, plug, true, reason, message.clone()).await;
        }
    }
    writer.write(ctx, status, &outcome.conditions).await?;
    Ok(outcome.action)
}

/// Whether the Socket can take Plugs: present, not being deleted, its created hooks done.
fn socket_state(socket: Option<&Socket>, key: &str) -> Result<(), Outcome> {
    match socket {
        None => Err(Outcome::waiting(
            reasons::SOCKET_NOT_CREATED,
            format!("waiting for Socket {key} to be created"),
        )),
        Some(s) if s.meta().deletion_timestamp.is_some() => Err(Outcome::waiting(
            reasons::SOCKET_NOT_CREATED,
            format!("Socket {key} is being deleted; waiting for it to be created again"),
        )),
        Some(s) if !s.status.as_ref().is_some_and(|st| st.created) => Err(Outcome::waiting(
            reasons::SOCKET_NOT_CREATED,
            format!("waiting for Socket {key} to finish its created hooks"),
        )),
        Some(_) => Ok(()),
    }
}

async fn namespace_labels(
    ctx: &Context,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get(name)
        .await
        .map_err(|source| Error::Api {
            action: "read",
            what: format!("Namespace {name}"),
            source: Box::new(source),
        })?;
    Ok(ns.metadata.labels.unwrap_or_default())
}

async fn couple(
    plug: &Plug,
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    status: &mut PlugStatus,
) -> Result<Outcome, Error> {
    let plug_owner = Owner::plug(plug);
    plug_owner.unsupported()?;
    status.apparatus = plug_owner.apparatus_status(ctx).await?;
    let plug_json = to_json("the Plug", plug)?;

    if !status.created {
        let inputs = HookInputs {
            plug: Some(&plug_json),
            ..Default::default()
        };
        hooks::run(ctx, plug_owner, plug, LifecyclePoint::Created, inputs).await?;
        status.created = true;
        let message = "created hooks ran".to_owned();
        writer
            .write(
                ctx,
                status,
                &[
                    DesiredCondition::fails(types::READY, reasons::PLUG_CREATED, message.clone()),
                    DesiredCondition::fails(types::COUPLED, reasons::PLUG_CREATED, message),
                ],
            )
            .await?;
    }

    let key = socket_key(plug);
    let key_text = format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or_default(),
        key.name
    );
    let socket =
        super::fresh::<Socket>(ctx, key.namespace.as_deref().unwrap_or_default(), &key.name)
            .await?
            .map(Arc::new);
    let usable = socket_state(socket.as_deref(), &key_text);

    let admission = match (&usable, socket.as_deref()) {
        (Ok(()), Some(socket)) => {
            let plug_ns = plug.namespace().unwrap_or_default();
            let labels = namespace_labels(ctx, &plug_ns).await?;
            Some(
                admission::admit(
                    &socket.namespace().unwrap_or_default(),
                    socket.spec.validation.as_ref(),
                    PlugNamespace {
                        name: &plug_ns,
                        labels: &labels,
                    },
                )
                .map_err(Error::Policy)?,
            )
        }
        _ => None,
    };

    // Decouple from a Socket this Plug should no longer be coupled to: the reference changed,
    // the Socket went away or was re-created, or its policy no longer admits the Plug.
    if let Some(coupled) = status.coupled_socket.clone() {
        let still = usable.is_ok()
            && socket
                .as_deref()
                .is_some_and(|s| s.uid().as_deref() == Some(coupled.uid.as_str()))
            && admission == Some(Admission::Admitted);
        if !still {
            let old = super::fresh::<Socket>(ctx, &coupled.namespace, &coupled.name)
                .await?
                .filter(|s| s.uid().as_deref() == Some(coupled.uid.as_str()));
            decouple(ctx, plug, &plug_json, old.as_ref(), status)
                .await
                .map_err(|e| decouple_error(e, &coupled))?;
            writer
                .write(
                    ctx,
                    status,
                    &[
                        DesiredCondition::fails(
                            types::READY,
                            reasons::COUPLING_IN_PROCESS,
                            format!(
                                "decoupled from Socket {}/{}",
                                coupled.namespace, coupled.name
                            ),
                        ),
                        DesiredCondition::fails(
                            types::COUPLED,
                            reasons::COUPLING_IN_PROCESS,
                            format!(
                                "decoupled from Socket {}/{}",
                                coupled.namespace, coupled.name
                            ),
                        ),
                    ],
                )
                .await?;
        }
    }

    if let Err(waiting) = usable {
        return Ok(waiting);
    }
    let Some(socket) = socket else {
        return Ok(Outcome::waiting(
            reasons::SOCKET_NOT_CREATED,
            format!("waiting for Socket {key_text} to be created"),
        ));
    };
    if let Some(Admission::Refused(message)) = admission {
        return Ok(Outcome::stalled(
            reasons::COUPLING_REFUSED,
            message,
            Action::await_change(),
        ));
    }
    let socket_owner = Owner::socket(&socket);
    socket_owner.unsupported()?;
    let socket_json = to_json("the Socket", &*socket)?;
    let parties = Parties {
        plug,
        socket: &socket,
        plug_json: &plug_json,
        socket_json: &socket_json,
    };
    let (plug_config, socket_config) = sources::configs(ctx, parties).await?;
    let sum = checksum::checksum(&CouplingInputs {
        plug_spec: &plug.spec.side,
        socket_spec: &socket.spec.side,
        socket_extra: serde_json::json!({
            "interface": socket.spec.interface,
            "validation": socket.spec.validation,
            "limit": socket.spec.limit,
        }),
        plug_config: &plug_config,
        socket_config: &socket_config,
    });
    let inputs = HookInputs {
        plug: Some(&plug_json),
        socket: Some(&socket_json),
        plug_config: Some(&plug_config),
        socket_config: Some(&socket_config),
    };

    // Coupled the first time; updated whenever the inputs' checksum changed since.
    let step = if status.coupled_socket.is_none() {
        Some((
            LifecyclePoint::Coupled,
            reasons::COUPLING_IN_PROCESS,
            format!("coupled to Socket {key_text}; computing results"),
        ))
    } else if status.coupling_checksum.as_deref() != Some(sum.as_str()) {
        Some((
            LifecyclePoint::Updated,
            reasons::UPDATING_IN_PROCESS,
            format!("coupling to Socket {key_text} updated; computing results"),
        ))
    } else {
        None
    };
    if let Some((point, reason, message)) = step {
        hooks::run(ctx, plug_owner, plug, point, inputs).await?;
        hooks::run(ctx, socket_owner, &*socket, point, inputs).await?;
        status.coupled_socket = Some(coupled_ref(&socket));
        status.coupling_checksum = Some(sum);
        let coupled = DesiredCondition {
            type_: types::COUPLED,
            // An update happens to a coupling that holds; a first coupling is not done yet.
            status: point == LifecyclePoint::Updated,
            reason,
            message: message.clone(),
        };
        writer
            .write(
                ctx,
                status,
                &[
                    DesiredCondition::fails(types::READY, reason, message),
                    coupled,
                ],
            )
            .await?;
    }

    let (plug_result, socket_result) = match sources::results(ctx, parties).await? {
        Ok(results) => results,
        Err(missing) => {
            return Ok(Outcome::pending(
                reasons::RESULT_PENDING,
                format!("coupled to Socket {key_text}; waiting for results: {missing}"),
                ctx.options.result_poll,
            ));
        }
    };
    store_results(ctx, plug, status, &plug_result, &socket_result).await?;
    Ok(Outcome::ready(format!("coupled to Socket {key_text}")))
}

async fn store_results(
    ctx: &Context,
    plug: &Plug,
    status: &mut PlugStatus,
    plug_result: &Values,
    socket_result: &Values,
) -> Result<(), Error> {
    for (side, values) in [("plug", plug_result), ("socket", socket_result)] {
        if let Some(key) = values.keys().find(|k| !sources::valid_secret_key(k)) {
            return Err(Error::ResultKey {
                side,
                key: key.clone(),
            });
        }
    }
    let name = sources::result_secret_name(plug);
    let sum = sources::results_checksum(plug_result, socket_result);
    let current = status.result.as_ref();
    if current.is_none_or(|r| r.secret_name != name || r.checksum.as_deref() != Some(sum.as_str()))
    {
        write::result_secret(ctx, plug, &name, plug_result, socket_result).await?;
    }
    status.result = Some(ResultRef {
        secret_name: name,
        checksum: Some(sum),
    });
    Ok(())
}

fn forced(plug: &Plug) -> bool {
    plug.annotations()
        .get(FORCE_DECOUPLE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Runs the decoupled hooks (Plug side, then Socket side when the Socket still exists), drops
/// the results and clears the coupling from `status`. With the force annotation, failures are
/// reported as Warning Events and passed over.
async fn decouple(
    ctx: &Context,
    plug: &Plug,
    plug_json: &Value,
    socket: Option<&Socket>,
    status: &mut PlugStatus,
) -> Result<(), Error> {
    let force = forced(plug);
    let plug_owner = Owner::plug(plug);
    let pass = |result: Result<(), Error>| async {
        match result {
            Err(error) if force => {
                write::event(
                    ctx,
                    plug,
                    true,
                    reasons::DECOUPLE_FAILED,
                    format!(
                        "{FORCE_DECOUPLE_ANNOTATION} is set, decoupling anyway: {}",
                        error.message()
                    ),
                )
                .await;
                Ok(())
            }
            other => other,
        }
    };
    match socket {
        Some(socket) => {
            let socket_json = to_json("the Socket", socket)?;
            let parties = Parties {
                plug,
                socket,
                plug_json,
                socket_json: &socket_json,
            };
            let configs = match sources::configs(ctx, parties).await {
                Ok(configs) => configs,
                Err(error) if force => {
                    pass(Err(error)).await?;
                    (Values::new(), Values::new())
                }
                Err(error) => return Err(error),
            };
            let inputs = HookInputs {
                plug: Some(plug_json),
                socket: Some(&socket_json),
                plug_config: Some(&configs.0),
                socket_config: Some(&configs.1),
            };
            pass(hooks::run(ctx, plug_owner, plug, LifecyclePoint::Decoupled, inputs).await)
                .await?;
            pass(
                hooks::run(
                    ctx,
                    Owner::socket(socket),
                    socket,
                    LifecyclePoint::Decoupled,
                    inputs,
                )
                .await,
            )
            .await?;
        }
        None => {
            // The Socket is gone for good (its finalizer was removed by hand): only the Plug's
            // side can still be told.
            let empty = Values::new();
            let inputs = HookInputs {
                plug: Some(plug_json),
                socket: None,
                plug_config: Some(&empty),
                socket_config: Some(&empty),
            };
            pass(hooks::run(ctx, plug_owner, plug, LifecyclePoint::Decoupled, inputs).await)
                .await?;
        }
    }
    write::delete_result_secret(
        ctx,
        &plug.namespace().unwrap_or_default(),
        &sources::result_secret_name(plug),
    )
    .await?;
    status.coupled_socket = None;
    status.coupling_checksum = None;
    status.result = None;
    Ok(())
}

fn decouple_error(error: Error, coupled: &CoupledObjectRef) -> Error {
    match error {
        Error::Api { .. } => error,
        other => Error::Decouple {
            socket: format!("{}/{}", coupled.namespace, coupled.name),
            source: Box::new(other),
        },
    }
}

/// Deletion: decouple if coupled, run the deleted hooks, release the finalizer.
async fn delete(plug: &Plug, ctx: &Context) -> Result<Action, Error> {
    if !write::has_finalizer(plug) {
        return Ok(Action::await_change());
    }
    let mut status = plug.status.clone().unwrap_or_default();
    let mut writer = StatusWriter {
        plug,
        written: plug.status.clone(),
    };
    let plug_json = to_json("the Plug", plug)?;
    let result = async {
        if let Some(coupled) = status.coupled_socket.clone() {
            let socket = super::fresh::<Socket>(ctx, &coupled.namespace, &coupled.name)
                .await?
                .filter(|s| s.uid().as_deref() == Some(coupled.uid.as_str()));
            decouple(ctx, plug, &plug_json, socket.as_ref(), &mut status)
                .await
                .map_err(|e| decouple_error(e, &coupled))?;
        }
        if status.created {
            let inputs = HookInputs {
                plug: Some(&plug_json),
                ..Default::default()
            };
            let ran = hooks::run(
                ctx,
                Owner::plug(plug),
                plug,
                LifecyclePoint::Deleted,
                inputs,
            )
            .await;
            match ran {
                Err(error) if forced(plug) => {
                    write::event(ctx, plug, true, reasons::DECOUPLE_FAILED, error.message()).await;
                }
                other => other?,
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            write::remove_finalizer(ctx, plug).await?;
            Ok(Action::await_change())
        }
        Err(error @ Error::Api { .. }) => Err(error),
        Err(error) => {
            let outcome =
                Outcome::stalled(error.reason(), error.message(), requeue(ctx.options.retry));
            finish(ctx, plug, &mut writer, &mut status, outcome).await
        }
    }
}

/// Backoff for failures of the operator's own API calls.
pub(crate) fn error_policy(_plug: Arc<Plug>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error.message(), "plug reconcile failed; retrying");
    requeue(ctx.options.retry.min(std::time::Duration::from_secs(5)))
}
