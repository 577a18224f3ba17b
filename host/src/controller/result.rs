//! A Plug's result Secret, `<plug>-plugboard-result`, written and deleted by the operator as
//! itself, but only when the Plug owns it.
//!
//! The name is predictable, so someone may have created a Secret of that name first (by
//! mistake, or to have the operator overwrite or delete it). The operator may create, patch and
//! delete Secrets but not read them, so it learns an existing Secret's owners from a dry-run of an
//! empty merge patch (which changes nothing, and unlike an apply never creates: a missing Secret
//! is a 404, also in a namespace being deleted), and then writes or deletes only with a precondition
//! on what it saw (its `resourceVersion` or `uid`), so a Secret swapped in between is never
//! touched either. A Secret the Plug does not own is left intact: writing the results fails
//! with [`Error::ResultSecretNotOwned`] (a condition and a Warning Event saying what to do),
//! and decoupling leaves it in place.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt as _};
use serde_json::json;

use super::{Context, Error, FIELD_MANAGER};
use crate::engine::Values;
use crate::metrics::Metrics;

/// What a dry-run empty merge patch says about the Secret `name`: its owners and versions (a
/// 404 when it does not exist).
async fn look(api: &Api<Secret>, name: &str) -> Result<Secret, kube::Error> {
    api.patch(
        name,
        &PatchParams::default().dry_run(),
        &Patch::Merge(json!({})),
    )
    .await
}

fn owned_by(secret: &Secret, uid: &str) -> bool {
    !uid.is_empty()
        && secret
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|refs| refs.iter().any(|r| r.uid == uid))
}

/// Writes the result Secret owned by `owner`: keys `plug.<key>` and `socket.<key>`. Creates it,
/// or updates it when `owner` owns it; refuses a Secret of that name `owner` does not own.
pub(crate) async fn write<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    owner: &K,
    name: &str,
    plug: &Values,
    socket: &Values,
) -> Result<(), Error> {
    let namespace = owner.namespace().unwrap_or_default();
    let uid = owner.uid().unwrap_or_default();
    let owner_name = owner.name_any();
    let api_error = |action: &'static str| {
        let what = format!("{namespace}/{name}");
        move |source: kube::Error| Error::Api {
            action,
            what,
            source: Box::new(source),
        }
    };
    let mut data = BTreeMap::new();
    for (prefix, values) in [("plug", plug), ("socket", socket)] {
        for (k, v) in values {
            data.insert(format!("{prefix}.{k}"), ByteString(v.clone().into_bytes()));
        }
    }
    let mut labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_owned(),
        "plugboard".to_owned(),
    )]);
    if owner_name.len() <= 63 {
        labels.insert("plugboard.dev/plug".to_owned(), owner_name.clone());
    }
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: K::api_version(&()).into_owned(),
                kind: K::kind(&()).into_owned(),
                name: owner_name.clone(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Default::default()
    };
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            Metrics::inc(&ctx.metrics.secret_writes);
            ctx.metrics.api_write("create", "secrets");
            return Ok(());
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(source) => return Err(api_error("write the result Secret")(source)),
    }
    let existing = look(&api, name)
        .await
        .map_err(api_error("check the owner of the result Secret"))?;
    if !owned_by(&existing, &uid) {
        return Err(Error::ResultSecretNotOwned {
            namespace,
            name: name.to_owned(),
            plug: owner_name,
        });
    }
    // Only the Secret just looked at: a 409 if it was replaced meanwhile (then retried).
    secret.metadata.resource_version = existing.metadata.resource_version;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(api_error("write the result Secret"))?;
    Metrics::inc(&ctx.metrics.secret_writes);
    ctx.metrics.api_write("apply", "secrets");
    Ok(())
}

/// Deletes the result Secret `name` when the object with `owner_uid` owns it; a missing one is
/// fine, and one it does not own is left in place (with a warning in the log).
pub(crate) async fn delete(
    ctx: &Context,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<(), Error> {
    let api_error = |action: &'static str| {
        let what = format!("{namespace}/{name}");
        move |source: kube::Error| Error::Api {
            action,
            what,
            source: Box::new(source),
        }
    };
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let existing = match look(&api, name).await {
        Ok(existing) => existing,
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
        Err(source) => return Err(api_error("check the owner of the result Secret")(source)),
    };
    if !owned_by(&existing, owner_uid) {
        tracing::warn!(
            namespace,
            name,
            "a Secret with the result Secret's name is not owned by the Plug; left in place"
        );
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            Metrics::inc(&ctx.metrics.secret_writes);
            ctx.metrics.api_write("delete", "secrets");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(api_error("delete the result Secret")(source)),
    }
}
