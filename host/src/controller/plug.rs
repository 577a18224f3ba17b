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
use super::render::{self, Renderer, Seed};
use super::sources::{self, Computed, Owner, Parties};
use super::{Context, Error, FORCE_DECOUPLE_ANNOTATION, requeue, socket_key, write};
use crate::apparatus::{HookErrorKind, Side};
use crate::crd::conditions::{self, DesiredCondition, reasons, types};
use crate::crd::{CoupledObjectRef, LifecyclePoint, Plug, PlugStatus, ResultRef, Socket};
use crate::engine::Values;
use crate::engine::admission::{self, PlugNamespace};
use crate::engine::checksum::{self, CouplingInputs};
use crate::engine::lifecycle::{self, Observed, SocketState, Wait};
use crate::engine::resources::coupling_id;
use crate::engine::template::TemplateContext;
use crate::metrics::Metrics;

/// How a pass ended, as conditions and what to do next.
struct Outcome {
    conditions: Vec<DesiredCondition>,
    action: Action,
    /// A Warning Event to publish when this outcome is new.
    warning: Option<(&'static str, String)>,
    /// Nothing to write: the pass did nothing (see [`Outcome::settling`]).
    quiet: bool,
}

impl Outcome {
    /// A fresh Plug lets its Socket be set up; looked at again when the Socket changes, or
    /// after `after` at the latest.
    fn settling(after: std::time::Duration) -> Self {
        Outcome {
            conditions: Vec::new(),
            action: requeue(after),
            warning: None,
            quiet: true,
        }
    }

    fn ready(message: String) -> Self {
        Outcome {
            conditions: vec![
                DesiredCondition::holds(types::READY, reasons::COUPLING_SUCCEEDED, message.clone()),
                DesiredCondition::holds(types::COUPLED, reasons::COUPLING_SUCCEEDED, message),
            ],
            action: Action::await_change(),
            warning: None,
            quiet: false,
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
            quiet: false,
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
            quiet: false,
        }
    }

    /// Stuck until the user acts; says what to fix.
    fn stalled(reason: &'static str, message: String, action: Action) -> Self {
        super::fairness::note_failure(reason);
        Outcome {
            conditions: vec![
                DesiredCondition::fails(types::READY, reason, message.clone()),
                DesiredCondition::fails(types::COUPLED, reason, message.clone()),
                DesiredCondition::holds(types::STALLED, reason, message.clone()),
            ],
            action,
            warning: Some((reason, message)),
            quiet: false,
        }
    }

    /// A hook asked to be called again later: not Stalled, no Warning Event; retried with
    /// backoff.
    fn retrying(reason: &'static str, message: String, action: Action) -> Self {
        let message = format!("{message}; plugboard calls the hook again after a backoff");
        Outcome {
            conditions: vec![
                DesiredCondition::fails(types::READY, reason, message.clone()),
                DesiredCondition::fails(types::COUPLED, reason, message.clone()),
                DesiredCondition::holds(types::RECONCILING, reason, message),
            ],
            action,
            warning: None,
            quiet: false,
        }
    }

    fn failed(error: &Error, ctx: &Context) -> Self {
        match error.hook_error_kind() {
            Some(HookErrorKind::RetryLater) => {
                return Outcome::retrying(
                    error.reason(),
                    error.message(),
                    requeue(super::retry_delay(ctx)),
                );
            }
            // Not called again until its inputs change (see `verdicts`); looked at again on
            // the re-check timer, so changes no watch reports are noticed.
            Some(HookErrorKind::InvalidInput) => {
                return Outcome::stalled(
                    error.reason(),
                    error.message(),
                    requeue(recheck_delay(ctx)),
                );
            }
            Some(HookErrorKind::Failed) | None => {}
        }
        let action = if error.needs_spec_change() {
            Action::await_change()
        } else if matches!(error, Error::ConfigFlapping) {
            // Looking again sooner would only call the flapping hook more often.
            requeue(recheck_delay(ctx))
        } else {
            requeue(super::retry_delay(ctx))
        };
        Outcome::stalled(error.reason(), error.message(), action)
    }
}

/// How much of `window` (see [`lifecycle::settle_window`]) a Plug with no status yet has left,
/// by its creation time; `None` for a Plug that has a status, is older, or whose creation time
/// is ahead of this clock (so a skewed clock never holds a Plug back longer).
fn settle_left(plug: &Plug, window: std::time::Duration) -> Option<std::time::Duration> {
    if plug.status.is_some() {
        return None;
    }
    let created = plug.metadata.creation_timestamp.as_ref()?.0;
    let age = std::time::Duration::try_from(Timestamp::now().duration_since(created)).ok()?;
    window.checked_sub(age).filter(|left| !left.is_zero())
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

pub(crate) fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|source| Error::Encode { what, source })
}

/// The Plug status as last written (or read), so a write happens only on change.
struct StatusWriter<'a> {
    plug: &'a Plug,
    written: Option<PlugStatus>,
    /// Hooks ran since the last write: their record is owed to status (written with the pass's
    /// next step, or by [`StatusWriter::flush`] when the pass fails first).
    unsaved: bool,
}

impl StatusWriter<'_> {
    /// Records hooks that ran in a pass that then failed on an API call, so the retry does
    /// not run them again; the conditions stay as they were. Best effort: when this fails too,
    /// the retry runs them again (at least once).
    async fn flush(&mut self, ctx: &Context, status: &mut PlugStatus) {
        if !self.unsaved {
            return;
        }
        status.conditions = self
            .written
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        match write::status(ctx, self.plug, self.written.as_ref(), status).await {
            Ok(()) => {
                self.written = Some(status.clone());
                self.unsaved = false;
            }
            Err(error) => tracing::warn!(%error, "could not record the hooks that ran"),
        }
    }

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
        self.unsaved = false;
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
    let result = super::wasm::pass(reconcile_inner(plug, ctx))
        .instrument(span)
        .await;
    Metrics::inc(&metrics.plug_reconciles);
    result
}

async fn reconcile_inner(plug: Arc<Plug>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Decide on the object as it is now, not as a cache last saw it: hooks must not run twice
    // because our own previous status write has not reached the cache yet.
    let Some(plug) = super::current(&ctx, plug).await? else {
        return Ok(Action::await_change());
    };
    if plug.meta().deletion_timestamp.is_some() {
        return delete(&plug, &ctx).await;
    }
    if !write::has_finalizer(&*plug) {
        write::add_finalizer(&ctx, &*plug).await?;
    }
    let mut writer = StatusWriter {
        plug: &plug,
        written: plug.status.clone(),
        unsaved: false,
    };
    let mut status = plug.status.clone().unwrap_or_default();
    let outcome = match couple(&plug, &ctx, &mut writer, &mut status).await {
        Ok(outcome) => outcome,
        // The operator's own API calls failing is not the user's to fix: retry with backoff.
        Err(error @ Error::Api { .. }) => {
            writer.flush(&ctx, &mut status).await;
            return Err(error);
        }
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
    if !outcome.quiet || writer.unsaved {
        writer.write(ctx, status, &outcome.conditions).await?;
    }
    Ok(outcome.action)
}

mod inputs;
mod teardown;

pub(crate) use inputs::{coupling_renderer, inputs_checksum, seed_for, socket_json, socket_state};
use inputs::{recheck_delay, wait_outcome};
use teardown::{clear_force, decouple, decouple_error, delete, forced};

async fn couple(
    plug: &Plug,
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    status: &mut PlugStatus,
) -> Result<Outcome, Error> {
    let plug_owner = Owner::plug(plug);
    // Before anything runs: nothing is done for a side whose ServiceAccount has not opted in.
    // A coupling that holds stays as it is (undoing it would mean acting as that
    // ServiceAccount); status says why until the opt-in is back or the Plug goes.
    plug_owner.require_opt_in(ctx).await?;
    // A registry that cannot be reached keeps the digest recorded before (see `wasm`): a
    // healthy coupling stays Ready, and the note is shown only when hooks run.
    let (apparatus, stale) = plug_owner.apparatus_status(ctx).await?;
    status.apparatus = apparatus;
    let plug_json = to_json("the Plug", plug)?;

    // Load: the Socket and whether it admits this Plug.
    let key = socket_key(plug);
    let key_text = format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or_default(),
        key.name
    );
    // From the watch: whatever it has not shown yet wakes this Plug when it does, and the
    // intent recorded before the `coupled` hooks reads the Socket afresh (`record_intent`).
    let socket =
        super::socket(ctx, key.namespace.as_deref().unwrap_or_default(), &key.name).await?;
    let state = socket_state(ctx, plug, socket.as_deref()).await?;
    let settle_left = settle_left(plug, lifecycle::settle_window(&state));
    // Plan: what comes before configs.
    let before = lifecycle::before_configs(&Observed {
        created: status.created,
        // A coupling whose `coupled` hooks were cut short (the operator stopped) counts as
        // coupled when it must be undone: they may have done part of their work.
        coupled_to: status
            .coupled_socket
            .as_ref()
            .or(status.coupling_socket.as_ref())
            .map(|c| c.uid.clone()),
        socket: state,
        fresh: settle_left.is_some(),
    });
    if let Some(left) = settle_left.filter(|_| before.settle) {
        tracing::debug!(?left, "waiting for the Socket to be set up");
        return Ok(Outcome::settling(left));
    }

    if before.run_created {
        let inputs = HookInputs {
            plug: Some(&plug_json),
            ..Default::default()
        };
        let renderer = Renderer {
            context: render::owner_only(plug_owner, &plug_json),
            seed: None,
            limits: &ctx.options.templates,
        };
        hooks::run(
            ctx,
            plug_owner,
            plug,
            LifecyclePoint::Created,
            inputs,
            &renderer,
        )
        .await?;
        status.created = true;
        // Written with the pass's next step: the intent before the `coupled` hooks, or the
        // outcome (one status write instead of two).
        writer.unsaved = true;
    }

    // Decouple from a Socket this Plug should no longer be coupled to: the reference changed,
    // the Socket went away or was re-created, or its policy no longer admits the Plug.
    if before.decouple
        && let Some(coupled) = status
            .coupled_socket
            .clone()
            .or_else(|| status.coupling_socket.clone())
    {
        let old = super::socket(ctx, &coupled.namespace, &coupled.name)
            .await?
            .filter(|s| s.uid().as_deref() == Some(coupled.uid.as_str()));
        decouple(ctx, plug, &plug_json, old.as_deref(), status)
            .await
            .map_err(|e| decouple_error(e, &coupled))?;
        let message = format!(
            "decoupled from Socket {}/{}",
            coupled.namespace, coupled.name
        );
        writer
            .write(
                ctx,
                status,
                &[
                    DesiredCondition::fails(
                        types::READY,
                        reasons::COUPLING_IN_PROCESS,
                        message.clone(),
                    ),
                    DesiredCondition::fails(types::COUPLED, reasons::COUPLING_IN_PROCESS, message),
                ],
            )
            .await?;
        // The force was for this decouple only: left in place, it would silently pass over
        // the failures of every later one too.
        if forced(plug) {
            clear_force(ctx, plug).await?;
        }
    }

    if let Some(wait) = before.wait {
        return Ok(wait_outcome(wait, &key_text));
    }
    let Some(socket) = socket else {
        return Ok(wait_outcome(
            Wait::SocketMissing { deleting: false },
            &key_text,
        ));
    };
    let socket_owner = Owner::socket(&socket);
    socket_owner.require_opt_in(ctx).await?;
    let socket_json = ctx.socket_json.get(&socket)?;
    let parties = Parties {
        plug,
        socket: &socket,
        plug_json: &plug_json,
        socket_json: &socket_json,
    };
    let seed = seed_for(ctx, plug, &socket).await?;
    let computed = match sources::configs(ctx, parties, seed.as_ref()).await {
        Ok(computed) => computed,
        Err(error @ Error::VarTargetMissing { .. }) => {
            return Ok(Outcome::pending(
                reasons::VAR_PENDING,
                error.message(),
                ctx.options.result_poll,
            ));
        }
        Err(error) => return Err(error),
    };
    let sum = inputs_checksum(plug, &socket, &computed);
    let point = lifecycle::coupling_hook(
        status.coupled_socket.is_some(),
        status.coupling_checksum.as_deref(),
        &sum,
    );
    let mut hooks_ran = false;
    let mut hook_note = None;
    if let Some(point) = point {
        if point == LifecyclePoint::Updated {
            // An update must come from a real change: the same spec computed again must give
            // the same inputs, or a config hook (or source) flaps and would fire `updated` on
            // every re-check.
            let again = sources::configs(ctx, parties, seed.as_ref()).await?;
            if inputs_checksum(plug, &socket, &again) != sum {
                return Err(Error::ConfigFlapping);
            }
        }
        // The intent makes the Socket's deletion wait for hooks that are running; with no
        // apparatus and no resources on either side nothing runs but the Events.
        let idle = |side: &crate::crd::SideSpec| {
            side.apparatus.is_none()
                && side.resources.is_empty()
                && side.result_resources.is_empty()
        };
        let something_runs = !(idle(&plug.spec.side) && idle(&socket.spec.side));
        if point == LifecyclePoint::Coupled
            && something_runs
            && let Some(wait) = record_intent(ctx, writer, status, &socket, &key_text).await?
        {
            return Ok(wait);
        }
        let inputs = HookInputs {
            plug: Some(&plug_json),
            socket: Some(&socket_json),
            plug_config: Some(&computed.plug_config),
            socket_config: Some(&computed.socket_config),
        };
        for side in lifecycle::hook_sides(point) {
            let renderer = coupling_renderer(ctx, parties, &computed, *side, seed.as_ref());
            let ran = match side {
                Side::Plug => hooks::run(ctx, plug_owner, plug, point, inputs, &renderer).await,
                Side::Socket => {
                    hooks::run(ctx, socket_owner, &*socket, point, inputs, &renderer).await
                }
            };
            if let Err(error) = ran {
                // A coupling whose hooks failed does not hold the Socket; a retry records
                // the intent again.
                status.coupling_socket = None;
                return Err(error);
            }
        }
        hooks_ran = true;
        status.coupling_socket = None;
        status.coupled_socket = Some(coupled_ref(&socket));
        status.coupling_checksum = Some(sum);
        // Written with the outcome below, once results are in (or by `flush` if an API call
        // fails first): one status write for the step instead of two.
        writer.unsaved = true;
        hook_note = stale.map(|note| format!(" (the image could not be resolved: {note})"));
    }

    let (plug_result, socket_result) =
        match sources::results(ctx, parties, &computed, seed.as_ref()).await {
            Ok(Ok(results)) => results,
            Ok(Err(missing)) => {
                return Ok(Outcome::pending(
                    reasons::RESULT_PENDING,
                    format!("coupled to Socket {key_text}; waiting for results: {missing}"),
                    ctx.options.result_poll,
                ));
            }
            Err(error @ Error::VarTargetMissing { .. }) => {
                return Ok(Outcome::pending(
                    reasons::RESULT_PENDING,
                    format!(
                        "coupled to Socket {key_text}; waiting for results: {}",
                        error.message()
                    ),
                    ctx.options.result_poll,
                ));
            }
            Err(error) => return Err(error),
        };
    // Result resources are applied after every coupling step and whenever the results
    // change (reference 4.2.R: the Socket's first, then the Plug's).
    let results_sum = sources::results_checksum(&plug_result, &socket_result);
    // Statuses written before `resultsChecksum` existed have it in the result reference.
    let applied = status
        .results_checksum
        .as_deref()
        .or_else(|| status.result.as_ref().and_then(|r| r.checksum.as_deref()));
    let results_changed = applied != Some(results_sum.as_str());
    if hooks_ran || results_changed {
        for side in lifecycle::RESULT_RESOURCE_SIDES {
            let mut renderer = coupling_renderer(ctx, parties, &computed, side, seed.as_ref());
            renderer.context.plug_result = Some(plug_result.clone());
            renderer.context.socket_result = Some(socket_result.clone());
            match side {
                Side::Plug => hooks::result_resources(ctx, plug_owner, plug, &renderer).await?,
                Side::Socket => {
                    hooks::result_resources(ctx, socket_owner, &*socket, &renderer).await?;
                }
            }
        }
    }
    store_results(ctx, plug, status, &plug_result, &socket_result).await?;
    status.results_checksum = Some(results_sum);
    let mut ready = Outcome::ready(format!(
        "coupled to Socket {key_text}{}",
        hook_note.unwrap_or_default()
    ));
    ready.action = requeue(recheck_delay(ctx));
    Ok(ready)
}

/// Records in status that the `coupled` hooks of a coupling to `socket` are about to run, so
/// that the Socket's deletion waits for this Plug, then reads the Socket again: a deletion that
/// began before the record was written did not see it, and nothing may run then. Returns the
/// outcome to end with when the Socket is going.
async fn record_intent(
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    status: &mut PlugStatus,
    socket: &Socket,
    key_text: &str,
) -> Result<Option<Outcome>, Error> {
    let intent = coupled_ref(socket);
    if status.coupling_socket.as_ref() != Some(&intent) {
        status.coupling_socket = Some(intent.clone());
        let message = format!("coupling to Socket {key_text}: running the coupled hooks");
        writer
            .write(
                ctx,
                status,
                &[
                    DesiredCondition::fails(
                        types::READY,
                        reasons::COUPLING_IN_PROCESS,
                        message.clone(),
                    ),
                    DesiredCondition::fails(types::COUPLED, reasons::COUPLING_IN_PROCESS, message),
                ],
            )
            .await?;
    }
    let again = super::fresh::<Socket>(ctx, &intent.namespace, &intent.name).await?;
    let going = again.is_none_or(|s| {
        s.uid().as_deref() != Some(intent.uid.as_str()) || s.meta().deletion_timestamp.is_some()
    });
    if going {
        status.coupling_socket = None;
        return Ok(Some(wait_outcome(
            Wait::SocketMissing { deleting: true },
            key_text,
        )));
    }
    Ok(None)
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
    if plug_result.is_empty() && socket_result.is_empty() {
        // No results, no Secret: one written before, when there were, goes (only if the Plug
        // owns it, and only that very Secret, as when decoupling).
        if let Some(previous) = &status.result {
            super::result::delete(
                ctx,
                &plug.namespace().unwrap_or_default(),
                &previous.secret_name,
                &plug.uid().unwrap_or_default(),
            )
            .await?;
        }
        status.result = None;
        return Ok(());
    }
    let sum = sources::results_checksum(plug_result, socket_result);
    let current = status.result.as_ref();
    if current.is_none_or(|r| r.secret_name != name || r.checksum.as_deref() != Some(sum.as_str()))
    {
        super::result::write(ctx, plug, &name, plug_result, socket_result).await?;
    }
    status.result = Some(ResultRef {
        secret_name: name,
        checksum: Some(sum),
    });
    Ok(())
}

/// Backoff for failures of the operator's own API calls.
pub(crate) fn error_policy(plug: Arc<Plug>, error: &Error, ctx: Arc<Context>) -> Action {
    super::fairness::on_error(&super::object_key("Plug", &*plug), error, &ctx)
}
