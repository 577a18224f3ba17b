//! The DeferredResource reconciler: creates one object after a delay and once the objects it
//! waits for exist, as the DeferredResource's ServiceAccount, and deletes it with the
//! DeferredResource (reference section 10, decisions D-14 to D-17).
//!
//! - **Delay** (`timeout`): a minimum delay after the DeferredResource's creation (its
//!   `creationTimestamp`, which has one-second precision). The reconcile requeues after exactly
//!   the remaining time; nothing polls.
//! - **`waitFor`**: each object is read as the ServiceAccount. While one is missing the
//!   DeferredResource is `Ready=False` with reason `Waiting` naming it, and looks again every
//!   [`WAIT_FOR_POLL`] (a tenant's ServiceAccount may not be able to watch those kinds, and the
//!   operator does not watch arbitrary kinds itself).
//! - **Create once**: when the waits are over, an object of that name that already exists is
//!   recorded in status and left as it is: never updated, and, when plugboard did not create it
//!   for this DeferredResource, never deleted. Otherwise the object is server-side applied with
//!   the owner labels and an ownerReference to the DeferredResource. Once the object is
//!   recorded the waits are not checked again; an object deleted by someone later is created
//!   again when the DeferredResource is next reconciled. Editing `resource` to name another
//!   object creates that one too (after re-checking `waitFor`); the first is left to the
//!   garbage collector, which deletes it with the DeferredResource.
//! - **Deletion**: the finalizer stays until the object is deleted, if this DeferredResource
//!   created it (a missing object is fine). When the ServiceAccount can no longer delete it
//!   (RBAC removed, a namespace being deleted) the finalizer is released anyway, with a Warning
//!   Event: the ownerReference lets the garbage collector delete the object, and deleting a
//!   namespace must always finish.
//! - A spec that cannot be acted on (no `resource`, no `kind`, another namespace, ...) is
//!   `Ready=False` and `Stalled` with reason `InvalidSpec` and a Warning Event, and waits for a
//!   spec change. Other failures (Forbidden, unknown kind, ...) carry the reason of
//!   [`ObjectError`] and are retried after the operator's retry delay.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource as _, ResourceExt as _};
use serde_json::{Map, Value, json};
use tracing::Instrument as _;

use super::objects::{self, ObjectError, ObjectOutcome};
use super::{Context, Error, requeue, write};
use crate::crd::conditions::{self, DesiredCondition, reasons, types};
use crate::crd::{DeferredObjectRef, DeferredResource, DeferredResourceStatus};
use crate::engine::resources::{
    MANAGED_BY, MANAGED_BY_LABEL, OWNER_ANNOTATION, OWNER_UID_LABEL, ObjectOwner, PlannedObject,
    ResourceStep,
};
use crate::metrics::Metrics;

/// How often a DeferredResource waiting for `waitFor` objects looks for them again.
pub const WAIT_FOR_POLL: Duration = Duration::from_secs(2);
/// Added to the remaining delay so the requeued reconcile finds it passed.
const DELAY_MARGIN: Duration = Duration::from_millis(100);

/// An object a DeferredResource waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WaitTarget {
    api_version: String,
    kind: String,
    name: String,
}

/// A DeferredResource's spec, checked: who acts, what to wait for, what to create.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    owner: ObjectOwner,
    waits: Vec<WaitTarget>,
    object: PlannedObject,
}

impl Plan {
    fn what(&self) -> String {
        describe(&self.object.kind, &self.object.namespace, &self.object.name)
    }

    fn is(&self, recorded: &DeferredObjectRef) -> bool {
        recorded.api_version == self.object.api_version
            && recorded.kind == self.object.kind
            && recorded.name == self.object.name
    }
}

fn describe(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}

fn owner_of(dr: &DeferredResource) -> ObjectOwner {
    ObjectOwner {
        api_version: DeferredResource::api_version(&()).into_owned(),
        kind: DeferredResource::kind(&()).into_owned(),
        name: dr.name_any(),
        namespace: dr.namespace().unwrap_or_default(),
        uid: dr.uid().unwrap_or_default(),
        service_account: dr.spec.service_account_name.clone(),
    }
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Checks the spec and builds what to act on. Every problem is listed, each naming its field.
fn plan(dr: &DeferredResource) -> Result<Plan, String> {
    let owner = owner_of(dr);
    let namespace = owner.namespace.clone();
    let mut problems = Vec::new();
    let mut waits = Vec::new();
    for (i, wait) in dr.spec.wait_for.iter().enumerate() {
        let api_version = wait.resolved_api_version();
        if api_version.is_none() {
            problems.push(format!(
                "spec.waitFor[{i}] needs apiVersion, or version (with group for a kind outside the core group)"
            ));
        }
        if wait.kind.is_empty() {
            problems.push(format!("spec.waitFor[{i}].kind is required"));
        }
        if wait.name.is_empty() {
            problems.push(format!("spec.waitFor[{i}].name is required"));
        }
        waits.push(WaitTarget {
            api_version: api_version.unwrap_or_default(),
            kind: wait.kind.clone(),
            name: wait.name.clone(),
        });
    }
    let object = match &dr.spec.resource {
        None | Some(Value::Null) => {
            problems.push("spec.resource is required: the object to create".to_owned());
            None
        }
        Some(Value::Object(map)) if map.is_empty() => {
            problems.push("spec.resource is empty: give the object to create".to_owned());
            None
        }
        Some(Value::Object(map)) => build(map, &owner, &mut problems),
        Some(_) => {
            problems.push("spec.resource must be an object".to_owned());
            None
        }
    };
    if owner.uid.is_empty() {
        problems.push("the DeferredResource has no UID yet".to_owned());
    }
    match object {
        Some(object) if problems.is_empty() => Ok(Plan {
            owner,
            waits,
            object,
        }),
        _ => Err(format!(
            "the DeferredResource {namespace}/{} cannot be acted on: {}",
            owner.name,
            problems.join("; ")
        )),
    }
}

/// The object to create: `resource` in the owner's namespace, with the owner's labels,
/// annotation and ownerReference added.
fn build(
    resource: &Map<String, Value>,
    owner: &ObjectOwner,
    problems: &mut Vec<String>,
) -> Option<PlannedObject> {
    let api_version = non_empty_str(resource.get("apiVersion"));
    let kind = non_empty_str(resource.get("kind"));
    if api_version.is_none() {
        problems.push("spec.resource.apiVersion is required".to_owned());
    }
    if kind.is_none() {
        problems.push("spec.resource.kind is required".to_owned());
    }
    let mut object = resource.clone();
    let metadata = match object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(metadata) => metadata,
        _ => {
            problems.push("spec.resource.metadata must be an object".to_owned());
            return None;
        }
    };
    let name = non_empty_str(metadata.get("name")).map(str::to_owned);
    if name.is_none() {
        problems.push(
            "spec.resource.metadata.name is required (generateName is not supported: the object is created once, by name)"
                .to_owned(),
        );
    }
    match metadata.get("namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(ns)) if ns.is_empty() || *ns == owner.namespace => {}
        Some(other) => problems.push(format!(
            "spec.resource.metadata.namespace is {other}, but the object is created in the DeferredResource's namespace {:?}; remove it or set it to that",
            owner.namespace
        )),
    }
    metadata.insert("namespace".to_owned(), json!(owner.namespace));
    let owner_text = format!("{} {}/{}", owner.kind, owner.namespace, owner.name);
    for (field, entries) in [
        (
            "labels",
            vec![
                (MANAGED_BY_LABEL, MANAGED_BY.to_owned()),
                (OWNER_UID_LABEL, owner.uid.clone()),
            ],
        ),
        ("annotations", vec![(OWNER_ANNOTATION, owner_text)]),
    ] {
        match metadata
            .entry(field)
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(map) => {
                for (key, value) in entries {
                    map.insert(key.to_owned(), Value::String(value));
                }
            }
            _ => problems.push(format!("spec.resource.metadata.{field} must be a map")),
        }
    }
    match metadata
        .entry("ownerReferences")
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(refs) => {
            let has_controller = refs
                .iter()
                .any(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
            refs.push(json!({
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": !has_controller,
            }));
        }
        _ => problems.push("spec.resource.metadata.ownerReferences must be a list".to_owned()),
    }
    Some(PlannedObject {
        api_version: api_version?.to_owned(),
        kind: kind?.to_owned(),
        name: name?,
        namespace: owner.namespace.clone(),
        object: Value::Object(object),
        origin: "spec.resource".to_owned(),
    })
}

/// How long until `timeout` seconds have passed since `created`; `None` once they have.
fn remaining(created: Option<Timestamp>, timeout: Option<i64>, now: Timestamp) -> Option<Duration> {
    let timeout = timeout.filter(|t| *t > 0)?;
    let created = created?;
    let due = Timestamp::from_second(created.as_second().saturating_add(timeout))
        .unwrap_or(Timestamp::MAX);
    let left = due.duration_since(now);
    if left.is_positive() {
        Duration::try_from(left).ok()
    } else {
        None
    }
}

/// The instant the delay ends, for messages.
fn due(created: Option<Timestamp>, timeout: i64) -> String {
    created
        .and_then(|c| Timestamp::from_second(c.as_second().saturating_add(timeout)).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// How a pass ended, as conditions and what to do next.
#[derive(Debug)]
struct Outcome {
    conditions: Vec<DesiredCondition>,
    action: Action,
    /// A Warning Event to publish when this outcome is new.
    warning: Option<(&'static str, String)>,
}

impl Outcome {
    fn ready(message: String) -> Self {
        Outcome {
            conditions: vec![DesiredCondition::holds(
                types::READY,
                reasons::RESOURCE_CREATED,
                message,
            )],
            action: Action::await_change(),
            warning: None,
        }
    }

    fn waiting(message: String, after: Duration) -> Self {
        Outcome {
            conditions: vec![
                DesiredCondition::fails(types::READY, reasons::WAITING, message.clone()),
                DesiredCondition::holds(types::RECONCILING, reasons::WAITING, message),
            ],
            action: requeue(after),
            warning: None,
        }
    }

    fn stalled(reason: &'static str, message: String, action: Action) -> Self {
        super::fairness::note_failure(reason);
        Outcome {
            conditions: vec![
                DesiredCondition::fails(types::READY, reason, message.clone()),
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
            requeue(super::retry_delay(ctx))
        };
        Outcome::stalled(error.reason(), error.message(), action)
    }
}

/// Reconciles one DeferredResource.
pub(crate) async fn reconcile(
    dr: Arc<DeferredResource>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        kind = "DeferredResource",
        namespace = dr.namespace().unwrap_or_default(),
        name = dr.name_any()
    );
    let metrics = ctx.metrics.clone();
    let result = reconcile_inner(dr, ctx).instrument(span).await;
    Metrics::inc(&metrics.deferred_reconciles);
    result
}

async fn reconcile_inner(dr: Arc<DeferredResource>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Decide on the object as it is now: our own status write may not have reached the cache.
    let Some(dr) =
        super::fresh::<DeferredResource>(&ctx, &dr.namespace().unwrap_or_default(), &dr.name_any())
            .await?
    else {
        return Ok(Action::await_change());
    };
    if dr.meta().deletion_timestamp.is_some() {
        return finalize(&ctx, &dr).await;
    }
    if !write::has_finalizer(&dr) {
        write::add_finalizer(&ctx, &dr).await?;
    }
    let mut status = dr.status.clone().unwrap_or_default();
    let outcome = match pass(&ctx, &dr, &mut status).await {
        Ok(outcome) => outcome,
        // The operator's own API calls failing is not the user's to fix: retry with backoff.
        Err(error @ Error::Api { .. }) => return Err(error),
        Err(error) => Outcome::failed(&error, &ctx),
    };
    if let Some((reason, message)) = &outcome.warning {
        let previous = dr
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::READY));
        if previous.is_none_or(|c| c.reason != *reason || c.message != *message) {
            write::event(&ctx, &dr, true, reason, message.clone()).await;
        }
    }
    status.conditions = conditions::merge_conditions(
        dr.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
        &outcome.conditions,
        dr.metadata.generation,
        &Time(Timestamp::now()),
    );
    status.observed_generation = dr.metadata.generation;
    write::status(&ctx, &dr, dr.status.as_ref(), &status).await?;
    Ok(outcome.action)
}

/// One pass: wait, then create the object unless it exists.
async fn pass(
    ctx: &Context,
    dr: &DeferredResource,
    status: &mut DeferredResourceStatus,
) -> Result<Outcome, Error> {
    let plan = match plan(dr) {
        Ok(plan) => plan,
        Err(problems) => {
            return Ok(Outcome::stalled(
                reasons::INVALID_SPEC,
                problems,
                Action::await_change(),
            ));
        }
    };
    let what = plan.what();
    let ns = plan.owner.namespace.as_str();
    let sa = plan.owner.service_account.as_str();
    // Nothing is read or created as a ServiceAccount that has not opted in.
    ctx.require_opt_in(ns, sa).await?;
    let recorded = status.resource.as_ref().is_some_and(|r| plan.is(r));
    if !recorded {
        let created = dr.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(left) = remaining(created, dr.spec.timeout, Timestamp::now()) {
            let timeout = dr.spec.timeout.unwrap_or_default();
            return Ok(Outcome::waiting(
                format!(
                    "waiting until {} ({timeout} s after the DeferredResource was created) before creating {what}",
                    due(created, timeout)
                ),
                left + DELAY_MARGIN,
            ));
        }
        for wait in &plan.waits {
            let found =
                objects::get_as(ctx, ns, sa, &wait.api_version, &wait.kind, ns, &wait.name).await?;
            if found.is_none() {
                return Ok(Outcome::waiting(
                    format!(
                        "waiting for {} ({}) to exist before creating {what}",
                        describe(&wait.kind, ns, &wait.name),
                        wait.api_version
                    ),
                    WAIT_FOR_POLL,
                ));
            }
        }
    }
    let o = &plan.object;
    let existing = objects::get_as(ctx, ns, sa, &o.api_version, &o.kind, ns, &o.name).await?;
    let (uid, created) = match existing {
        Some(obj) => (
            obj.uid().unwrap_or_default(),
            objects::owned_by(&obj, &plan.owner.uid),
        ),
        None => {
            let acted = objects::act(ctx, &plan.owner, &[ResourceStep::Apply(o.clone())]).await?;
            let uid = acted
                .objects
                .into_iter()
                .find_map(|a| match a.outcome {
                    ObjectOutcome::Applied { uid } => Some(uid),
                    _ => None,
                })
                .unwrap_or_default();
            write::event(
                ctx,
                dr,
                false,
                reasons::RESOURCE_CREATED,
                format!("created {what}"),
            )
            .await;
            (uid, true)
        }
    };
    status.resource = Some(DeferredObjectRef {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        name: o.name.clone(),
        uid,
        created,
    });
    Ok(Outcome::ready(if created {
        format!("created {what}")
    } else {
        format!(
            "{what} already existed; plugboard did not create it, so it leaves it as it is and will not delete it"
        )
    }))
}

/// The object to delete with the DeferredResource: the one recorded in status, else the one
/// its spec names (it may have been created just before a status write failed).
fn deletion_target(dr: &DeferredResource) -> Option<PlannedObject> {
    let namespace = dr.namespace().unwrap_or_default();
    if let Some(r) = dr.status.as_ref().and_then(|s| s.resource.as_ref()) {
        return Some(PlannedObject {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            namespace: namespace.clone(),
            object: json!({
                "apiVersion": r.api_version,
                "kind": r.kind,
                "metadata": {"name": r.name, "namespace": namespace},
            }),
            origin: "status.resource".to_owned(),
        });
    }
    plan(dr).ok().map(|p| p.object)
}

/// Deletes the object this DeferredResource created, then releases the finalizer.
async fn finalize(ctx: &Context, dr: &DeferredResource) -> Result<Action, Error> {
    if !write::has_finalizer(dr) {
        return Ok(Action::await_change());
    }
    if let Some(object) = deletion_target(dr) {
        let what = describe(&object.kind, &object.namespace, &object.name);
        match objects::act(ctx, &owner_of(dr), &[ResourceStep::Delete(object)]).await {
            Ok(acted) => {
                for left in acted.not_owned() {
                    tracing::info!(
                        what = %left.describe(),
                        "left in place: this DeferredResource did not create it"
                    );
                }
            }
            // Transient: keep the finalizer and retry.
            Err(error @ (ObjectError::Api { .. } | ObjectError::Discovery { .. })) => {
                return Err(error.into());
            }
            Err(ObjectError::Impersonation(error)) if !error.is_not_allowed() => {
                return Err(Error::Impersonation(error));
            }
            Err(error) => {
                let error = Error::from(error);
                write::event(
                    ctx,
                    dr,
                    true,
                    error.reason(),
                    format!(
                        "{}; releasing the finalizer anyway: if this DeferredResource created {what}, the garbage collector deletes it through its ownerReference",
                        error.message()
                    ),
                )
                .await;
            }
        }
    }
    write::remove_finalizer(ctx, dr).await?;
    Ok(Action::await_change())
}

/// Retry policy for reconciles that failed on the operator's own API calls.
pub(crate) fn error_policy(dr: Arc<DeferredResource>, error: &Error, ctx: Arc<Context>) -> Action {
    super::fairness::on_error(&super::object_key("DeferredResource", &*dr), error, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DeferredResourceSpec;

    fn dr(spec: Value) -> DeferredResource {
        let spec: DeferredResourceSpec = serde_json::from_value(spec).unwrap();
        let mut dr = DeferredResource::new("later", spec);
        dr.metadata.namespace = Some("team".into());
        dr.metadata.uid = Some("dr-uid".into());
        dr
    }

    fn config_map() -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "made", "labels": {"app": "web"}}, "data": {"k": "v"}})
    }

    #[test]
    fn plan_adds_owner_labels_annotation_and_reference_in_the_own_namespace() {
        let plan = plan(&dr(json!({"resource": config_map()}))).unwrap();
        assert_eq!(plan.owner.service_account, "default");
        let o = &plan.object;
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("v1", "ConfigMap", "made")
        );
        assert_eq!(o.namespace, "team");
        let meta = &o.object["metadata"];
        assert_eq!(meta["namespace"], "team");
        assert_eq!(meta["labels"]["app"], "web");
        assert_eq!(meta["labels"][OWNER_UID_LABEL], "dr-uid");
        assert_eq!(meta["labels"][MANAGED_BY_LABEL], "plugboard");
        assert_eq!(
            meta["annotations"][OWNER_ANNOTATION],
            "DeferredResource team/later"
        );
        assert_eq!(
            meta["ownerReferences"],
            json!([{"apiVersion": "plugboard.dev/v1alpha1", "kind": "DeferredResource",
                    "name": "later", "uid": "dr-uid", "controller": true}])
        );
        assert_eq!(o.object["data"]["k"], "v");
    }

    #[test]
    fn an_existing_controller_reference_is_kept_and_ours_is_not_a_controller() {
        let mut resource = config_map();
        resource["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
            "kind": "Deployment", "name": "web", "uid": "d", "controller": true}]);
        let plan = plan(&dr(json!({"resource": resource}))).unwrap();
        let refs = plan.object.object["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1]["controller"], false);
    }

    #[test]
    fn an_empty_spec_is_invalid_and_says_resource_is_required() {
        let message = plan(&dr(json!({}))).unwrap_err();
        assert_eq!(
            message,
            "the DeferredResource team/later cannot be acted on: spec.resource is required: the object to create"
        );
        assert!(
            plan(&dr(json!({"resource": {}})))
                .unwrap_err()
                .contains("spec.resource is empty")
        );
        assert!(plan(&dr(json!({"resource": {"kind": 3}}))).is_err());
    }

    #[test]
    fn every_missing_field_is_named() {
        let message = plan(&dr(json!({
            "resource": {"metadata": {"generateName": "x-"}},
            "waitFor": [{"kind": "ConfigMap", "name": "a"}],
        })))
        .unwrap_err();
        for field in [
            "spec.resource.apiVersion is required",
            "spec.resource.kind is required",
            "spec.resource.metadata.name is required",
            "spec.waitFor[0] needs apiVersion",
        ] {
            assert!(message.contains(field), "{field}: {message}");
        }
    }

    #[test]
    fn another_namespace_is_refused_and_the_own_is_accepted() {
        let mut resource = config_map();
        resource["metadata"]["namespace"] = json!("elsewhere");
        let message = plan(&dr(json!({"resource": resource.clone()}))).unwrap_err();
        assert!(
            message.contains("spec.resource.metadata.namespace is \"elsewhere\""),
            "{message}"
        );
        resource["metadata"]["namespace"] = json!("team");
        assert!(plan(&dr(json!({"resource": resource}))).is_ok());
    }

    #[test]
    fn wait_targets_resolve_their_api_version() {
        let plan = plan(&dr(json!({
            "resource": config_map(),
            "serviceAccountName": "maker",
            "waitFor": [
                {"apiVersion": "v1", "kind": "Secret", "name": "s"},
                {"group": "apps", "version": "v1", "kind": "Deployment", "name": "d"},
            ],
        })))
        .unwrap();
        assert_eq!(plan.owner.service_account, "maker");
        assert_eq!(
            plan.waits,
            [
                WaitTarget {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    name: "s".into()
                },
                WaitTarget {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "d".into()
                },
            ]
        );
    }

    #[test]
    fn the_delay_counts_from_creation() {
        let created = Timestamp::from_second(1_000).unwrap();
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        assert_eq!(
            remaining(Some(created), Some(5), at(1_002)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(remaining(Some(created), Some(5), at(1_005)), None);
        assert_eq!(remaining(Some(created), Some(5), at(2_000)), None);
        assert_eq!(remaining(Some(created), Some(0), at(1_000)), None);
        assert_eq!(remaining(Some(created), None, at(1_000)), None);
        assert_eq!(remaining(Some(created), Some(-3), at(1_000)), None);
        assert_eq!(due(Some(created), 5), "1970-01-01T00:16:45Z");
    }

    #[test]
    fn deletion_targets_the_recorded_object_first() {
        let mut d = dr(json!({"resource": config_map()}));
        assert_eq!(deletion_target(&d).unwrap().name, "made");
        d.status = Some(DeferredResourceStatus {
            resource: Some(DeferredObjectRef {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: "earlier".into(),
                uid: "u".into(),
                created: true,
            }),
            ..Default::default()
        });
        let target = deletion_target(&d).unwrap();
        assert_eq!(
            (target.kind.as_str(), target.name.as_str()),
            ("Secret", "earlier")
        );
        assert_eq!(target.namespace, "team");
        assert!(deletion_target(&dr(json!({}))).is_none());
    }

    #[test]
    fn failures_that_need_a_spec_change_do_not_requeue_on_a_timer() {
        let outcome = Outcome::stalled(reasons::INVALID_SPEC, "x".into(), Action::await_change());
        assert_eq!(outcome.action, Action::await_change());
        assert_eq!(outcome.conditions[1].type_, types::STALLED);
        assert!(outcome.warning.is_some());
        let waiting = Outcome::waiting("w".into(), WAIT_FOR_POLL);
        assert_eq!(waiting.action, requeue(WAIT_FOR_POLL));
        assert_eq!(waiting.conditions[0].reason, reasons::WAITING);
        assert!(waiting.warning.is_none());
    }
}
