//! Every write the operator makes: status (server-side apply, only when it changed), finalizers
//! (JSON patch guarded by a test of the current list), and Events. Result Secrets are in
//! [`super::result`].

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Context, Error, FIELD_MANAGER, FINALIZER};
use crate::metrics::Metrics;

fn api<K>(ctx: &Context, obj: &K) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{} {}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Whether the object carries our finalizer.
pub(crate) fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

async fn set_finalizers<K>(ctx: &Context, obj: &K, finalizers: Vec<String>) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let current = obj.finalizers();
    // `test` makes the patch fail instead of clobbering a concurrent finalizer change.
    let ops = if obj.meta().finalizers.is_none() {
        json!([{ "op": "add", "path": "/metadata/finalizers", "value": finalizers }])
    } else {
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": current },
            { "op": "replace", "path": "/metadata/finalizers", "value": finalizers },
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|source| Error::Encode {
        what: "finalizer patch",
        source,
    })?;
    let written = api(ctx, obj)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(|source| Error::Api {
            action: "update the finalizers of",
            what: describe(obj),
            source: Box::new(source),
        })?;
    ctx.own_writes.record(written.meta());
    Metrics::inc(&ctx.metrics.finalizer_writes);
    ctx.metrics.api_write("patch", &K::plural(&()));
    Ok(())
}

/// Adds our finalizer.
pub(crate) async fn add_finalizer<K>(ctx: &Context, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    set_finalizers(ctx, obj, finalizers).await
}

/// Removes our finalizer, letting the object go.
pub(crate) async fn remove_finalizer<K>(ctx: &Context, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let finalizers = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let result = match set_finalizers(ctx, obj, finalizers).await {
        // Already gone: nothing left to release.
        Err(Error::Api { source, .. }) if matches!(&*source, kube::Error::Api(status) if status.is_not_found()) => {
            Ok(())
        }
        other => other,
    };
    if result.is_ok() {
        // Whatever we wrote to it no longer matters once it can go.
        ctx.own_writes.forget(obj.meta());
    }
    result
}

/// Server-side applies `status` unless it equals `current`.
pub(crate) async fn status<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let written = api(ctx, obj)
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Api {
            action: "write the status of",
            what: describe(obj),
            source: Box::new(source),
        })?;
    ctx.own_writes.record(written.meta());
    Metrics::inc(&ctx.metrics.status_writes);
    ctx.metrics
        .api_write("apply", &format!("{}/status", K::plural(&())));
    Ok(())
}

/// Publishes an Event on `obj`. Events are best effort: a failure is logged, never fatal.
pub(crate) async fn event<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    let mut reference = obj.object_ref(&());
    if !warning {
        // Normal Events have one note per reason and object: without the resource version,
        // repeats fold into one Event with a count (a series), as Kubernetes aggregates them.
        reference.resource_version = None;
    }
    match ctx.recorder.publish(&event, &reference).await {
        Ok(super::recorder::Sent::Suppressed) => {
            ctx.metrics.event_suppressed();
            tracing::debug!(
                reason,
                "Normal Event suppressed: too many about this object"
            );
        }
        Ok(sent) => {
            Metrics::inc(&ctx.metrics.events);
            let verb = if sent == super::recorder::Sent::Repeated {
                "patch"
            } else {
                "create"
            };
            ctx.metrics.api_write(verb, "events");
        }
        Err(error) => tracing::warn!(%error, reason, "failed to publish an Event"),
    }
}

/// Removes annotation `key` from `obj` if it still has `value` (a JSON patch with a `test` op, so
/// a value someone changed in the meantime is left alone). Returns whether it was removed.
pub(crate) async fn remove_annotation<K>(
    ctx: &Context,
    obj: &K,
    key: &str,
    value: &str,
) -> Result<bool, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    // RFC 6901: `~` and `/` in a key are escaped as `~0` and `~1`.
    let path = format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    );
    let ops = json!([
        { "op": "test", "path": path, "value": value },
        { "op": "remove", "path": path },
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|source| Error::Encode {
        what: "annotation patch",
        source,
    })?;
    match api(ctx, obj)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(written) => {
            ctx.own_writes.record(written.meta());
            ctx.metrics.api_write("patch", &K::plural(&()));
            Ok(true)
        }
        // Gone, or the annotation changed or went away meanwhile (the `test` failed): leave it.
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 422 => Ok(false),
        Err(source) => Err(Error::Api {
            action: "remove an annotation of",
            what: describe(obj),
            source: Box::new(source),
        }),
    }
}
