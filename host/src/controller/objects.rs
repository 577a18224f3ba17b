//! Acting on arbitrary Kubernetes objects as a tenant's ServiceAccount: the edge that carries
//! out a plan of templated resources ([`ResourceStep`]s), and reads the objects that vars and
//! DeferredResources name.
//!
//! Every read and write goes through a client impersonating the owner's ServiceAccount
//! ([`Context::client_as`]), so a tenant can never make plugboard do what their ServiceAccount
//! may not — and only once that ServiceAccount has opted in (see `optin`). Only discovery (which kinds exist, their plural names and scope) uses the operator's
//! own client; it reads no objects.
//!
//! Guarantees:
//! - plugboard changes or deletes only objects that carry the [`OWNER_UID_LABEL`] of the owner
//!   acting on them. An existing object without it is refused on apply
//!   ([`ObjectError::NotOwned`]) and left alone on delete ([`ObjectOutcome::NotOwned`]).
//! - Server-side apply uses field manager [`FIELD_MANAGER`] and never forces: a field another
//!   manager owns is an [`ObjectError::Conflict`] naming the fields and managers.
//! - Only namespaced kinds, and only in the owner's namespace.
//! - A delete uses background propagation and a UID precondition, so an object re-created by
//!   someone else in the meantime is never deleted.
//!
//! Caveat: between the ownership check (a GET) and the apply, someone else may create an object
//! of the same name; server-side apply then merges into it, and fails on any field they manage.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::GroupVersion;
use kube::discovery::{ApiResource, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt as _};

use super::{Context, FIELD_MANAGER};
use crate::crd::conditions::reasons;
use crate::engine::resources::{OWNER_UID_LABEL, ObjectOwner, PlannedObject, ResourceStep};

/// How long a `recreate` waits for the old object to be gone before giving up.
pub const RECREATE_DELETE_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval when the ServiceAccount may not watch the kind it re-creates.
const GONE_POLL: Duration = Duration::from_millis(250);
/// Discovered kinds kept at most; the cache is cleared when it grows past this.
const KIND_CACHE_MAX: usize = 512;
/// How long a discovered kind is trusted before it is discovered again (a CRD may be removed or
/// change its plural).
const KIND_CACHE_TTL: Duration = Duration::from_secs(600);
/// Longest API server message carried into a condition.
const MAX_API_MESSAGE: usize = 512;

/// Why acting on or reading an object failed. Each variant maps to a condition reason.
///
/// Whether retrying can help ([`ObjectError::needs_spec_change`]): RBAC can be granted, a CRD
/// installed, a foreign object removed and another field manager can give up its fields, all
/// without a spec change and without plugboard being told (it does not watch RBAC, CRDs or other
/// tenants' objects). So those are retried on the operator's retry delay; only a cluster-scoped
/// kind or another namespace needs the spec changed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// plugboard may not act as the ServiceAccount (it has not opted in), or could not set up
    /// a client acting as it.
    #[error(transparent)]
    Impersonation(super::optin::ImpersonationError),
    /// The API server does not serve this kind (a typo, or a CRD not installed yet).
    #[error(
        "the API server does not serve kind {kind:?} in apiVersion {api_version:?}; check apiVersion and kind, or install the CustomResourceDefinition that defines it"
    )]
    UnknownKind {
        /// As written.
        api_version: String,
        /// As written.
        kind: String,
    },
    /// Discovery failed for another reason (the API server or an aggregated API is down).
    #[error("failed to discover kind {kind} in apiVersion {api_version}")]
    Discovery {
        /// As written.
        api_version: String,
        /// As written.
        kind: String,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
    /// The kind is cluster-scoped; a tenant's objects live in the owner's namespace.
    #[error(
        "kind {kind} ({api_version}) is cluster-scoped; plugboard reads and writes only namespaced objects, in the owner's namespace"
    )]
    ClusterScoped {
        /// As written.
        api_version: String,
        /// As written.
        kind: String,
    },
    /// The object is not in the owner's namespace.
    #[error(
        "{what} is not in namespace {namespace}; plugboard acts only on objects in the owner's namespace"
    )]
    WrongNamespace {
        /// `Kind namespace/name`.
        what: String,
        /// The owner's namespace.
        namespace: String,
    },
    /// The object exists but plugboard did not create it for this owner.
    #[error(
        "{what} already exists and plugboard did not create it for {owner}, so it is left untouched; delete or rename that object, or give the resource another name"
    )]
    NotOwned {
        /// `Kind namespace/name`.
        what: String,
        /// `Kind namespace/name` of the owner.
        owner: String,
    },
    /// Server-side apply found fields managed by another field manager.
    #[error(
        "server-side apply of {what} conflicts with fields of another field manager (plugboard never forces): {message}"
    )]
    Conflict {
        /// `Kind namespace/name`.
        what: String,
        /// The API server's message, naming the fields and their managers.
        message: String,
    },
    /// The ServiceAccount may not do this.
    #[error(
        "ServiceAccount {service_account} is not allowed to {verb} {resource} in namespace {namespace} ({what}); grant it with a Role and RoleBinding: {message}"
    )]
    Forbidden {
        /// `namespace/name`.
        service_account: String,
        /// The RBAC verbs needed, e.g. `get` or `create and patch`.
        verb: &'static str,
        /// The resource as RBAC names it: plural, then `.group` unless core (`deployments.apps`).
        resource: String,
        /// The namespace.
        namespace: String,
        /// `Kind namespace/name`.
        what: String,
        /// The API server's message.
        message: String,
    },
    /// The old object of a `recreate` did not go away in time.
    #[error(
        "{what} was still there {seconds} s after it was deleted, so it was not re-created (a finalizer may be holding it)"
    )]
    DeleteTimeout {
        /// `Kind namespace/name`.
        what: String,
        /// How long plugboard waited.
        seconds: u64,
    },
    /// Any other API failure.
    #[error("failed to {action} {what} as ServiceAccount {service_account}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// `Kind namespace/name`.
        what: String,
        /// `namespace/name`.
        service_account: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

impl ObjectError {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ObjectError::Forbidden { .. } => reasons::RESOURCE_FORBIDDEN,
            ObjectError::Conflict { .. } => reasons::RESOURCE_CONFLICT,
            ObjectError::NotOwned { .. } => reasons::RESOURCE_NOT_OWNED,
            ObjectError::UnknownKind { .. } => reasons::UNKNOWN_KIND,
            ObjectError::Impersonation(source) if source.is_not_allowed() => source.reason(),
            ObjectError::Impersonation(_)
            | ObjectError::Discovery { .. }
            | ObjectError::ClusterScoped { .. }
            | ObjectError::WrongNamespace { .. }
            | ObjectError::DeleteTimeout { .. }
            | ObjectError::Api { .. } => reasons::RESOURCE_FAILED,
        }
    }

    /// Whether only a spec change can fix this. Everything else may be fixed outside the spec
    /// (RBAC, a CRD, another object, another manager) and is retried; see the type's docs.
    pub fn needs_spec_change(&self) -> bool {
        matches!(
            self,
            ObjectError::ClusterScoped { .. } | ObjectError::WrongNamespace { .. }
        )
    }
}

/// What [`act`] did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOutcome {
    /// Server-side applied (created or updated); its UID afterwards.
    Applied {
        /// UID of the object.
        uid: String,
    },
    /// Deletion requested (background propagation); the UID of the deleted object.
    Deleted {
        /// UID of the deleted object.
        uid: String,
    },
    /// Deleted, gone, then applied again: a new object.
    Recreated {
        /// UID of the deleted object, if there was one.
        old_uid: Option<String>,
        /// UID of the new object.
        uid: String,
    },
    /// A delete found nothing to delete.
    Absent,
    /// A delete found an object plugboard did not create for this owner and left it alone.
    NotOwned,
}

/// One object [`act`] handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActedObject {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace (the owner's).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Where the object came from (the planned object's origin).
    pub origin: String,
    /// What happened.
    pub outcome: ObjectOutcome,
}

impl ActedObject {
    /// `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What [`act`] did, one entry per step, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acted {
    /// The objects, in the order of the steps.
    pub objects: Vec<ActedObject>,
}

impl Acted {
    /// Objects a delete left alone because plugboard did not create them for this owner (worth
    /// a Warning Event).
    pub fn not_owned(&self) -> impl Iterator<Item = &ActedObject> {
        self.objects
            .iter()
            .filter(|o| o.outcome == ObjectOutcome::NotOwned)
    }
}

/// A kind as discovery reports it.
#[derive(Debug, Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

/// Discovered kinds by `(apiVersion, kind)`. Only kinds the API server serves are kept, so a
/// kind missing now (a CRD not installed yet) is looked up again next time; entries expire after
/// [`KIND_CACHE_TTL`] and the map is cleared past [`KIND_CACHE_MAX`] entries.
#[derive(Debug, Default)]
pub(crate) struct KindCache {
    entries: std::sync::Mutex<HashMap<(String, String), (Kind, Instant)>>,
}

impl KindCache {
    fn get(&self, api_version: &str, kind: &str, now: Instant) -> Option<Kind> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(&(api_version.to_owned(), kind.to_owned()))
            .filter(|(_, at)| now.saturating_duration_since(*at) < KIND_CACHE_TTL)
            .map(|(k, _)| k.clone())
    }

    fn insert(&self, api_version: &str, kind: &str, found: Kind, now: Instant) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= KIND_CACHE_MAX {
            entries.clear();
        }
        entries.insert((api_version.to_owned(), kind.to_owned()), (found, now));
    }
}

/// Parses an `apiVersion` written by a tenant: `version` or `group/version`, with only the
/// characters those may contain (they end up in a URL path).
fn parse_api_version(api_version: &str) -> Option<GroupVersion> {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    // A group is a DNS subdomain: dot-separated labels of lowercase letters, digits and '-'.
    let group_ok = api_version.find('/').is_none()
        || group.split('.').all(|label| {
            let alnum =
                |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            alnum(label.bytes().next())
                && alnum(label.bytes().last())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    let version_ok = !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (group_ok && version_ok && group.len() <= 253).then(|| GroupVersion {
        group: group.to_owned(),
        version: version.to_owned(),
    })
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.len() <= 253 && kind.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Resolves `(apiVersion, kind)` to its resource, from the cache or by discovery (as the
/// operator). Cluster-scoped kinds are refused.
async fn resolve(ctx: &Context, api_version: &str, kind: &str) -> Result<ApiResource, ObjectError> {
    let unknown = || ObjectError::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    };
    let found = match ctx.kinds.get(api_version, kind, Instant::now()) {
        Some(found) => found,
        None => {
            let gv = parse_api_version(api_version).ok_or_else(unknown)?;
            if !valid_kind(kind) {
                return Err(unknown());
            }
            match kube::discovery::pinned_kind(&ctx.client, &gv.with_kind(kind)).await {
                Ok((resource, caps)) => {
                    let found = Kind {
                        resource,
                        namespaced: caps.scope == Scope::Namespaced,
                    };
                    ctx.kinds
                        .insert(api_version, kind, found.clone(), Instant::now());
                    found
                }
                Err(kube::Error::Discovery(_)) => return Err(unknown()),
                // A group version the server does not serve answers with a plain-text 404.
                Err(kube::Error::Api(status)) if status.code == 404 => return Err(unknown()),
                Err(source) => {
                    return Err(ObjectError::Discovery {
                        api_version: api_version.to_owned(),
                        kind: kind.to_owned(),
                        source: Box::new(source),
                    });
                }
            }
        }
    };
    if !found.namespaced {
        return Err(ObjectError::ClusterScoped {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    Ok(found.resource)
}

async fn client_as(
    ctx: &Context,
    namespace: &str,
    service_account: &str,
) -> Result<Client, ObjectError> {
    ctx.impersonate(namespace, service_account)
        .await
        .map_err(ObjectError::Impersonation)
}

/// A call on one object, as the RBAC verbs it needs and the words for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    /// Server-side apply of an object that exists.
    Patch,
    /// Server-side apply of an object that does not exist yet (needs create as well as patch).
    Create,
    Delete,
}

impl Verb {
    fn rbac(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Patch => "patch",
            Verb::Create => "create and patch",
            Verb::Delete => "delete",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Verb::Get => "read",
            Verb::Patch | Verb::Create => "apply",
            Verb::Delete => "delete",
        }
    }
}

fn bounded(message: &str) -> String {
    if message.len() <= MAX_API_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_API_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// The resource as RBAC rules name it.
fn rbac_resource(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

/// One object, resolved, with a client acting as the owner's ServiceAccount.
struct Target {
    api: Api<DynamicObject>,
    resource: ApiResource,
    namespace: String,
    name: String,
    service_account: String,
    what: String,
}

impl Target {
    async fn new(
        ctx: &Context,
        client: Client,
        service_account: &str,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Self, ObjectError> {
        let resource = resolve(ctx, api_version, kind).await?;
        Ok(Target {
            api: Api::namespaced_with(client, namespace, &resource),
            what: format!("{} {namespace}/{name}", resource.kind),
            resource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            service_account: format!("{namespace}/{service_account}"),
        })
    }

    fn error(&self, source: kube::Error, verb: Verb) -> ObjectError {
        classify(
            source,
            verb,
            &self.service_account,
            &self.resource,
            &self.namespace,
            &self.what,
        )
    }

    async fn get(&self) -> Result<Option<DynamicObject>, ObjectError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e, Verb::Get))
    }

    fn not_owned(&self, owner: &ObjectOwner) -> ObjectError {
        ObjectError::NotOwned {
            what: self.what.clone(),
            owner: format!("{} {}/{}", owner.kind, owner.namespace, owner.name),
        }
    }

    /// Server-side applies `planned` unless an object of that name exists that this owner did
    /// not create. Returns the UID.
    async fn apply(
        &self,
        planned: &PlannedObject,
        owner: &ObjectOwner,
    ) -> Result<String, ObjectError> {
        let existing = self.get().await?;
        if let Some(obj) = &existing
            && !owned_by(obj, &owner.uid)
        {
            return Err(self.not_owned(owner));
        }
        let verb = if existing.is_some() {
            Verb::Patch
        } else {
            Verb::Create
        };
        let applied = self
            .api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&planned.object),
            )
            .await
            .map_err(|e| self.error(e, verb))?;
        Ok(applied.uid().unwrap_or_default())
    }

    /// Deletes the object if this owner created it.
    async fn delete(&self, owner: &ObjectOwner) -> Result<ObjectOutcome, ObjectError> {
        let Some(obj) = self.get().await? else {
            return Ok(ObjectOutcome::Absent);
        };
        if !owned_by(&obj, &owner.uid) {
            return Ok(ObjectOutcome::NotOwned);
        }
        let uid = obj.uid().unwrap_or_default();
        let params = DeleteParams::background().preconditions(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        });
        match self.api.delete(&self.name, &params).await {
            Ok(_) => Ok(ObjectOutcome::Deleted { uid }),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(ObjectOutcome::Absent),
            Err(e) => Err(self.error(e, Verb::Delete)),
        }
    }

    /// Waits until the object with `uid` is gone: by a watch, or by polling when the
    /// ServiceAccount may not list and watch the kind.
    async fn wait_gone(&self, uid: &str, timeout: Duration) -> Result<(), ObjectError> {
        let started = Instant::now();
        let timed_out = || ObjectError::DeleteTimeout {
            what: self.what.clone(),
            seconds: timeout.as_secs(),
        };
        let watched = tokio::time::timeout(
            timeout,
            await_condition(self.api.clone(), &self.name, conditions::is_deleted(uid)),
        )
        .await;
        match watched {
            Ok(Ok(_)) => return Ok(()),
            Err(_) => return Err(timed_out()),
            Ok(Err(error)) => {
                tracing::debug!(%error, what = %self.what, "cannot watch; polling until the object is gone");
            }
        }
        loop {
            match self.get().await? {
                None => return Ok(()),
                Some(obj) if obj.uid().as_deref() != Some(uid) => return Ok(()),
                Some(_) => {}
            }
            if started.elapsed() >= timeout {
                return Err(timed_out());
            }
            tokio::time::sleep(GONE_POLL).await;
        }
    }
}

/// Whether `obj` was created by plugboard for the owner with `uid` (it carries
/// [`OWNER_UID_LABEL`] with that value).
pub fn owned_by(obj: &DynamicObject, uid: &str) -> bool {
    !uid.is_empty() && obj.labels().get(OWNER_UID_LABEL).map(String::as_str) == Some(uid)
}

/// Turns an API error into what it means for a tenant: Forbidden names the ServiceAccount, the
/// verbs and the resource; a conflict carries the API server's list of fields and managers.
fn classify(
    source: kube::Error,
    verb: Verb,
    service_account: &str,
    resource: &ApiResource,
    namespace: &str,
    what: &str,
) -> ObjectError {
    match &source {
        // By code: kube's `is_forbidden` and `is_conflict` look only at the reason.
        kube::Error::Api(status) if status.code == 403 => ObjectError::Forbidden {
            service_account: service_account.to_owned(),
            verb: verb.rbac(),
            resource: rbac_resource(resource),
            namespace: namespace.to_owned(),
            what: what.to_owned(),
            message: bounded(&status.message),
        },
        kube::Error::Api(status)
            if status.code == 409 && matches!(verb, Verb::Patch | Verb::Create) =>
        {
            ObjectError::Conflict {
                what: what.to_owned(),
                message: bounded(&status.message),
            }
        }
        _ => ObjectError::Api {
            action: verb.action(),
            what: what.to_owned(),
            service_account: service_account.to_owned(),
            source: Box::new(source),
        },
    }
}

/// Reads object `namespace/name` of `apiVersion`/`kind` as ServiceAccount
/// `owner_namespace/service_account`; `None` when it does not exist. `namespace` must be the
/// owner's namespace, and the kind namespaced.
pub async fn get_as(
    ctx: &Context,
    owner_namespace: &str,
    service_account: &str,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, ObjectError> {
    if namespace != owner_namespace {
        return Err(ObjectError::WrongNamespace {
            what: format!("{kind} {namespace}/{name}"),
            namespace: owner_namespace.to_owned(),
        });
    }
    let client = client_as(ctx, owner_namespace, service_account).await?;
    Target::new(
        ctx,
        client,
        service_account,
        api_version,
        kind,
        namespace,
        name,
    )
    .await?
    .get()
    .await
}

/// Carries out `steps` in order as the owner's ServiceAccount, stopping at the first failure
/// (steps done before it stay done; every step is safe to repeat).
///
/// - `Apply`: refused with [`ObjectError::NotOwned`] when an object of that name exists without
///   the owner's UID label; otherwise server-side applied, without force.
/// - `Delete`: a missing object is fine; one the owner did not create is left alone and listed
///   as [`ObjectOutcome::NotOwned`]; otherwise deleted (background propagation, UID
///   precondition).
/// - `Recreate`: deleted as above (an object the owner did not create is refused as for
///   `Apply`), waited for until gone (at most [`RECREATE_DELETE_TIMEOUT`]), then applied.
pub async fn act(
    ctx: &Context,
    owner: &ObjectOwner,
    steps: &[ResourceStep],
) -> Result<Acted, ObjectError> {
    let mut acted = Acted::default();
    if steps.is_empty() {
        return Ok(acted);
    }
    let client = client_as(ctx, &owner.namespace, &owner.service_account).await?;
    for step in steps {
        let planned = step.object();
        if planned.namespace != owner.namespace {
            return Err(ObjectError::WrongNamespace {
                what: format!("{} {}/{}", planned.kind, planned.namespace, planned.name),
                namespace: owner.namespace.clone(),
            });
        }
        let target = Target::new(
            ctx,
            client.clone(),
            &owner.service_account,
            &planned.api_version,
            &planned.kind,
            &planned.namespace,
            &planned.name,
        )
        .await?;
        let outcome = match step {
            ResourceStep::Apply(planned) => ObjectOutcome::Applied {
                uid: target.apply(planned, owner).await?,
            },
            ResourceStep::Delete(_) => target.delete(owner).await?,
            ResourceStep::Recreate(planned) => {
                let old_uid = match target.delete(owner).await? {
                    ObjectOutcome::NotOwned => return Err(target.not_owned(owner)),
                    ObjectOutcome::Deleted { uid } => {
                        target.wait_gone(&uid, RECREATE_DELETE_TIMEOUT).await?;
                        Some(uid)
                    }
                    _ => None,
                };
                ObjectOutcome::Recreated {
                    old_uid,
                    uid: target.apply(planned, owner).await?,
                }
            }
        };
        tracing::debug!(what = %target.what, ?outcome, "acted on an object");
        let plural = target.resource.plural.as_str();
        match &outcome {
            ObjectOutcome::Applied { .. } => ctx.metrics.api_write("apply", plural),
            ObjectOutcome::Deleted { .. } => ctx.metrics.api_write("delete", plural),
            ObjectOutcome::Recreated { old_uid, .. } => {
                if old_uid.is_some() {
                    ctx.metrics.api_write("delete", plural);
                }
                ctx.metrics.api_write("apply", plural);
            }
            _ => {}
        }
        acted.objects.push(ActedObject {
            api_version: planned.api_version.clone(),
            kind: planned.kind.clone(),
            namespace: planned.namespace.clone(),
            name: planned.name.clone(),
            origin: planned.origin.clone(),
            outcome,
        });
    }
    Ok(acted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use serde_json::json;

    fn config_maps() -> ApiResource {
        ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        }
    }

    fn deployments() -> ApiResource {
        ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        }
    }

    fn object(labels: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "ns", "labels": labels},
        }))
        .unwrap()
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn only_objects_labelled_with_the_owner_uid_are_owned() {
        assert!(owned_by(&object(json!({OWNER_UID_LABEL: "u-1"})), "u-1"));
        assert!(!owned_by(&object(json!({OWNER_UID_LABEL: "u-2"})), "u-1"));
        assert!(!owned_by(&object(json!({"app": "x"})), "u-1"));
        assert!(!owned_by(&object(json!({OWNER_UID_LABEL: ""})), ""));
    }

    #[test]
    fn forbidden_names_the_service_account_verb_and_resource() {
        let error = classify(
            api_error(
                403,
                "Forbidden",
                "deployments.apps \"web\" is forbidden: User cannot create",
            ),
            Verb::Create,
            "team/builder",
            &deployments(),
            "team",
            "Deployment team/web",
        );
        assert_eq!(error.reason(), "ResourceForbidden");
        assert!(!error.needs_spec_change());
        let message = error.to_string();
        assert!(
            message.starts_with(
                "ServiceAccount team/builder is not allowed to create and patch deployments.apps \
                 in namespace team (Deployment team/web)"
            ),
            "{message}"
        );
        let get = classify(
            api_error(403, "Forbidden", "no"),
            Verb::Get,
            "team/default",
            &config_maps(),
            "team",
            "ConfigMap team/x",
        );
        assert!(
            get.to_string()
                .contains("not allowed to get configmaps in namespace team"),
            "{get}"
        );
    }

    #[test]
    fn apply_conflicts_carry_the_api_message_but_other_conflicts_do_not() {
        let text = "Apply failed with 1 conflict: conflict with \"kubectl\": .data.key";
        let error = classify(
            api_error(409, "Conflict", text),
            Verb::Patch,
            "ns/default",
            &config_maps(),
            "ns",
            "ConfigMap ns/x",
        );
        assert_eq!(error.reason(), "ResourceConflict");
        assert!(error.to_string().ends_with(text), "{error}");
        let delete = classify(
            api_error(409, "Conflict", "precondition failed"),
            Verb::Delete,
            "ns/default",
            &config_maps(),
            "ns",
            "ConfigMap ns/x",
        );
        assert!(matches!(
            delete,
            ObjectError::Api {
                action: "delete",
                ..
            }
        ));
        assert_eq!(delete.reason(), "ResourceFailed");
    }

    #[test]
    fn other_api_errors_say_what_was_being_done() {
        let error = classify(
            api_error(500, "InternalError", "boom"),
            Verb::Get,
            "ns/sa",
            &config_maps(),
            "ns",
            "ConfigMap ns/x",
        );
        assert_eq!(
            error.to_string(),
            "failed to read ConfigMap ns/x as ServiceAccount ns/sa"
        );
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn reasons_and_retry_policy() {
        let unknown = ObjectError::UnknownKind {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
        };
        assert_eq!(unknown.reason(), "UnknownKind");
        assert!(!unknown.needs_spec_change(), "a CRD may be installed later");
        assert!(unknown.to_string().contains("\"Widget\""));
        assert!(unknown.to_string().contains("\"example.com/v1\""));
        let not_owned = ObjectError::NotOwned {
            what: "ConfigMap ns/x".into(),
            owner: "Plug ns/app".into(),
        };
        assert_eq!(not_owned.reason(), "ResourceNotOwned");
        assert!(
            not_owned
                .to_string()
                .contains("plugboard did not create it for Plug ns/app")
        );
        let cluster = ObjectError::ClusterScoped {
            api_version: "v1".into(),
            kind: "Namespace".into(),
        };
        assert!(cluster.needs_spec_change());
        assert_eq!(cluster.reason(), "ResourceFailed");
    }

    #[test]
    fn api_versions_are_parsed_strictly() {
        let core = parse_api_version("v1").unwrap();
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        let apps = parse_api_version("apps/v1").unwrap();
        assert_eq!((apps.group.as_str(), apps.version.as_str()), ("apps", "v1"));
        assert!(parse_api_version("cert-manager.io/v1").is_some());
        for bad in [
            "",
            "/v1",
            "apps/",
            "a/b/c",
            "v1?watch=1",
            "Apps/v1",
            "../v1",
        ] {
            assert!(parse_api_version(bad).is_none(), "{bad:?}");
        }
        assert!(valid_kind("ConfigMap"));
        assert!(!valid_kind(""));
        assert!(!valid_kind("Config/Map"));
    }

    #[test]
    fn rbac_resource_names_include_the_group() {
        assert_eq!(rbac_resource(&config_maps()), "configmaps");
        assert_eq!(rbac_resource(&deployments()), "deployments.apps");
    }

    #[test]
    fn kind_cache_expires_and_stays_bounded() {
        let cache = KindCache::default();
        let start = Instant::now();
        let kind = Kind {
            resource: config_maps(),
            namespaced: true,
        };
        cache.insert("v1", "ConfigMap", kind.clone(), start);
        assert!(cache.get("v1", "ConfigMap", start).is_some());
        assert!(cache.get("v1", "Secret", start).is_none());
        assert!(
            cache
                .get("v1", "ConfigMap", start + KIND_CACHE_TTL)
                .is_none()
        );
        for i in 0..KIND_CACHE_MAX + 1 {
            cache.insert("v1", &format!("K{i}"), kind.clone(), start);
        }
        let len = cache
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        assert!(len <= KIND_CACHE_MAX, "{len}");
    }

    #[test]
    fn long_api_messages_are_bounded() {
        let long = "é".repeat(MAX_API_MESSAGE);
        let short = bounded(&long);
        assert!(short.len() <= MAX_API_MESSAGE + '…'.len_utf8());
        assert!(short.ends_with('…'));
        assert_eq!(bounded("ok"), "ok");
    }

    #[test]
    fn acted_lists_objects_left_alone() {
        let entry = |outcome| ActedObject {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: "x".into(),
            origin: "spec.resources[0].template".into(),
            outcome,
        };
        let acted = Acted {
            objects: vec![
                entry(ObjectOutcome::Deleted { uid: "u".into() }),
                entry(ObjectOutcome::NotOwned),
                entry(ObjectOutcome::Absent),
            ],
        };
        let left: Vec<_> = acted.not_owned().map(ActedObject::describe).collect();
        assert_eq!(left, ["ConfigMap ns/x"]);
    }
}
