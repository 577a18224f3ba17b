//! Apparatus pods, the edge: started when a call needs one, awaited by watching, reached at
//! their IP (or through the API server), marked with their last use, and deleted when idle.
//!
//! - **Start on demand.** [`PodManager::acquire`] runs before every call to an apparatus with
//!   `containers` (hooks and `config`). It finds the owner's pod by label, or creates one **as
//!   the owner's ServiceAccount** (so a Plug cannot start a pod its ServiceAccount could not),
//!   built by [`pod::desired_pod`]. Concurrent calls for one owner share one pod: creation and
//!   the wait for readiness are single-flight per owner.
//! - **Readiness by watching.** A pod that is not ready yet is watched (`await_condition`) until
//!   it is ready, reports a failure of its own (image pull, crash loop, OOM, unschedulable:
//!   [`pod::diagnose`]) or [`PodOptions::ready_timeout`] passes. The last two end as
//!   [`PodError::NotReady`] / [`PodError::ReadyTimeout`] (condition `ApparatusNotReady` with the
//!   pod's own reason), retried on the operator's retry delay — never a blind fixed requeue.
//! - **Reaching it.** At `<pod IP>:<port named container>`, with `spec.apparatus.endpoint` as a
//!   path prefix; with [`PodOptions::via_api_server`], through the API server's pod proxy with
//!   the operator's client (for an operator outside the cluster, e.g. `plugboard dev`).
//! - **Idle cleanup.** Each call writes the time on the pod ([`pod::LAST_USED_ANNOTATION`], at
//!   most every [`pod::touch_interval`]), so the time survives restarts. [`reap`] scans the
//!   apparatus pods (from a watch) every [`PodOptions::reap_interval`] and deletes those idle for
//!   `idleTimeout`, those whose owner's spec changed, and those whose owner no longer runs one;
//!   never a pod with a call in flight, never a pod whose owner this instance does not manage.
//!   Deleting the owner deletes its pods (explicitly, and by ownerReference garbage collection).
//!
//! Everything but creation is done with the operator's own client: watching, the last-use
//! annotation (patch) and deletion (see the chart's RBAC rules).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt as _};

use super::sources::Owner;
use super::{Context, FIELD_MANAGER};
use crate::apparatus::http::{Endpoint, EndpointError};
use crate::apparatus::pod::{self, PodSpecError, PodState, Verdict};
use crate::crd::conditions::reasons;
use crate::crd::{ApparatusSpec, Plug, Socket};
use crate::metrics::Metrics;

/// Apparatus pod settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    /// How long a call waits for a new or starting apparatus pod to become ready before the
    /// owner gets `ApparatusNotReady`. Default 120 s.
    pub ready_timeout: Duration,
    /// Reach apparatus pods through the API server's pod proxy instead of at their IP: for an
    /// operator running outside the cluster. Default off.
    pub via_api_server: bool,
    /// How often idle apparatus pods are looked for. Default 5 s.
    pub reap_interval: Duration,
}

impl Default for PodOptions {
    fn default() -> Self {
        PodOptions {
            ready_timeout: Duration::from_secs(120),
            via_api_server: false,
            reap_interval: Duration::from_secs(5),
        }
    }
}

/// An apparatus pod could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// `spec.apparatus` cannot run as a pod.
    #[error("spec.apparatus of {owner} cannot run as a pod")]
    Spec {
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// Why.
        #[source]
        source: PodSpecError,
    },
    /// `spec.apparatus.endpoint` is not a usable path prefix on the pod.
    #[error("spec.apparatus.endpoint of {owner} is invalid")]
    Endpoint {
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// Why.
        #[source]
        source: EndpointError,
    },
    /// The API server refused to create the pod as the owner's ServiceAccount (RBAC, a
    /// missing ServiceAccount, Pod Security admission, a quota).
    #[error(
        "ServiceAccount {service_account} may not create the apparatus pod of {owner}{hint}: {message}"
    )]
    Forbidden {
        /// `namespace/name`.
        service_account: String,
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// What to do, when the API server's message says.
        hint: &'static str,
        /// The API server's message.
        message: String,
    },
    /// The namespace is being deleted: no pod can be created in it any more.
    #[error("the apparatus pod of {owner} cannot start: namespace {namespace} is being deleted")]
    NamespaceTerminating {
        /// The namespace.
        namespace: String,
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
    },
    /// The API server rejected the pod as invalid.
    #[error("the apparatus pod of {owner} is invalid; fix spec.apparatus: {message}")]
    Invalid {
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// The API server's message.
        message: String,
    },
    /// The pod reports a failure of its own.
    #[error("apparatus pod {namespace}/{pod} is not ready: {reason}: {message}")]
    NotReady {
        /// Its namespace.
        namespace: String,
        /// Its name.
        pod: String,
        /// The pod's reason (`ImagePullBackOff`, `CrashLoopBackOff`, `Unschedulable`, …).
        reason: String,
        /// What the kubelet or scheduler said.
        message: String,
    },
    /// The pod did not become ready in time.
    #[error(
        "apparatus pod {namespace}/{pod} did not become ready within {seconds} s; last seen: {state}"
    )]
    ReadyTimeout {
        /// Its namespace.
        namespace: String,
        /// Its name.
        pod: String,
        /// How long plugboard waited.
        seconds: u64,
        /// Where it was.
        state: String,
    },
    /// plugboard may not act as the owner's ServiceAccount, or could not set up a client that
    /// does.
    #[error(transparent)]
    Impersonation(super::optin::ImpersonationError),
    /// Watching the pod for readiness failed.
    #[error("failed to watch apparatus pod {namespace}/{pod} for readiness")]
    Watch {
        /// Its namespace.
        namespace: String,
        /// Its name.
        pod: String,
        /// Why.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// Another API call failed.
    #[error("failed to {action} the apparatus pod of {owner}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

impl PodError {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PodError::Spec { .. } | PodError::Endpoint { .. } | PodError::Invalid { .. } => {
                reasons::APPARATUS_INVALID
            }
            PodError::Forbidden { .. } | PodError::NamespaceTerminating { .. } => {
                reasons::APPARATUS_FORBIDDEN
            }
            PodError::NotReady { .. } | PodError::ReadyTimeout { .. } => {
                reasons::APPARATUS_NOT_READY
            }
            PodError::Impersonation(source) => source.reason(),
            PodError::Watch { .. } | PodError::Api { .. } => reasons::APPARATUS_FAILED,
        }
    }

    /// Whether only a spec change can fix this. A pod that is not ready may become ready, and
    /// RBAC may be granted, without plugboard being told: those are retried.
    pub fn needs_spec_change(&self) -> bool {
        matches!(
            self,
            PodError::Spec { .. } | PodError::Endpoint { .. } | PodError::Invalid { .. }
        )
    }
}

/// What one owner's calls share: single-flight creation, calls in flight, the last use.
#[derive(Debug, Default)]
struct Slot {
    /// Held while the owner's pod is found, created and awaited.
    ensure: tokio::sync::Mutex<()>,
    /// Calls holding a [`Lease`].
    in_flight: AtomicUsize,
    /// The end of the latest call this process made (may be later than the annotation).
    last_used: Mutex<Option<Timestamp>>,
}

impl Slot {
    fn last_used(&self) -> Option<Timestamp> {
        *self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn used(&self, at: Timestamp) {
        let mut last = self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = Some(last.map_or(at, |l| l.max(at)));
    }
}

/// The apparatus pods of this operator instance, by owner UID.
#[derive(Debug, Default)]
pub(crate) struct PodManager {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// A call using an owner's pod: counted in flight until dropped, which records the end of the
/// use.
#[derive(Debug)]
struct InFlight(Arc<Slot>);

impl InFlight {
    fn new(slot: Arc<Slot>) -> Self {
        slot.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.used(Timestamp::now());
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A ready apparatus pod a call may use. While it lives the pod is not deleted as idle; dropping
/// it records the end of the use.
#[derive(Debug)]
pub(crate) struct Lease {
    _in_flight: InFlight,
    /// Where calls go.
    pub(crate) endpoint: Endpoint,
}

/// Where an owner's calls go once its pod is ready.
enum Route {
    /// A path prefix on the pod.
    Prefix(String),
    /// A URL, called as it is (the reference allowed `containers` with a full URL endpoint).
    Url(Endpoint),
}

fn owner_text(owner: &Owner<'_>) -> String {
    owner.describe()
}

impl PodManager {
    fn slot(&self, uid: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(uid.to_owned()).or_default().clone()
    }

    /// The latest use of an owner's pod this process knows of, without keeping a slot.
    fn last_used(&self, uid: &str) -> Option<Timestamp> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.get(uid).and_then(|s| s.last_used())
    }

    /// Forgets an owner's slot unless someone still uses it (slots are recreated on demand;
    /// they are created and cloned only under the map's lock, so this cannot split a flight).
    fn forget(&self, uid: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.get(uid).is_some_and(|s| Arc::strong_count(s) == 1) {
            slots.remove(uid);
        }
    }

    /// The owner's ready apparatus pod, started if needed, for one call.
    pub(crate) async fn acquire(
        &self,
        ctx: &Context,
        owner: Owner<'_>,
        spec: &ApparatusSpec,
    ) -> Result<Lease, PodError> {
        // Check the endpoint before starting anything.
        let route = match Endpoint::pod_prefix(spec.endpoint.as_deref()) {
            Some(Ok(prefix)) => Route::Prefix(prefix),
            Some(Err(source)) => {
                return Err(PodError::Endpoint {
                    owner: owner_text(&owner),
                    source,
                });
            }
            None => Route::Url(
                Endpoint::resolve(spec.endpoint.as_deref(), owner.name, owner.namespace, true)
                    .map_err(|source| PodError::Endpoint {
                        owner: owner_text(&owner),
                        source,
                    })?,
            ),
        };
        let slot = self.slot(owner.uid);
        // Counted before the pod is found, so the reaper leaves it alone from here on.
        let in_flight = InFlight::new(slot.clone());
        let ready = {
            let _flight = slot.ensure.lock().await;
            ensure(ctx, owner, spec, &slot).await?
        };
        let endpoint = match route {
            Route::Url(endpoint) => endpoint,
            Route::Prefix(prefix) if ctx.options.pods.via_api_server => {
                Endpoint::pod_via_api_server(
                    ctx.client.clone(),
                    owner.namespace,
                    &ready.name,
                    ready.port,
                    &prefix,
                )
            }
            Route::Prefix(prefix) => Endpoint::pod(SocketAddr::new(ready.ip, ready.port), &prefix)
                .map_err(|source| PodError::Endpoint {
                    owner: owner_text(&owner),
                    source,
                })?,
        };
        Ok(Lease {
            _in_flight: in_flight,
            endpoint,
        })
    }
}

/// A ready pod.
struct Ready {
    name: String,
    ip: std::net::IpAddr,
    port: u16,
}

fn api_error(action: &'static str, owner: &Owner<'_>) -> impl FnOnce(kube::Error) -> PodError {
    let owner = owner_text(owner);
    move |source| PodError::Api {
        action,
        owner,
        source: Box::new(source),
    }
}

/// Finds, creates and awaits the owner's pod. Runs under the owner's flight lock.
async fn ensure(
    ctx: &Context,
    owner: Owner<'_>,
    spec: &ApparatusSpec,
    slot: &Slot,
) -> Result<Ready, PodError> {
    let object_owner = owner.object_owner();
    let desired = pod::desired_pod(&object_owner, spec, Timestamp::now()).map_err(|source| {
        PodError::Spec {
            owner: owner_text(&owner),
            source,
        }
    })?;
    let hash = pod::pod_spec_hash(&desired).unwrap_or_default().to_owned();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), owner.namespace);
    let listed = api
        .list(&ListParams::default().labels(&format!("{}={}", pod::OWNER_UID_LABEL, owner.uid)))
        .await
        .map_err(api_error("list", &owner))?;
    let mut usable = None;
    for existing in listed.items {
        if !pod::owned_by(&existing, owner.uid) {
            continue;
        }
        let state = pod::diagnose(&existing);
        let stale = pod::pod_spec_hash(&existing) != Some(hash.as_str());
        match state {
            PodState::Terminating => {}
            PodState::Ended { .. } => delete_pod(ctx, &existing, "it ended").await,
            _ if stale => delete_pod(ctx, &existing, "its owner's apparatus spec changed").await,
            _ if usable.is_some() => delete_pod(ctx, &existing, "the owner has another").await,
            _ => usable = Some(existing),
        }
    }
    let current = match usable {
        Some(existing) => existing,
        None => create(ctx, &owner, &desired).await?,
    };
    let ready_pod = await_ready(ctx, &api, current).await?;
    let name = ready_pod.name_any();
    let PodState::Ready { ip } = pod::diagnose(&ready_pod) else {
        return Err(PodError::ReadyTimeout {
            namespace: owner.namespace.to_owned(),
            pod: name,
            seconds: 0,
            state: "not ready".to_owned(),
        });
    };
    let port = pod::pod_port(&ready_pod).map_err(|source| PodError::Spec {
        owner: owner_text(&owner),
        source,
    })?;
    touch(&api, &ready_pod, spec, slot).await;
    Ok(Ready { name, ip, port })
}

/// Creates the pod as the owner's ServiceAccount. In a namespace being deleted no pod can start
/// (and its RBAC may already be gone, so the API server's refusal would mislead):
/// [`PodError::NamespaceTerminating`] without trying.
async fn create(ctx: &Context, owner: &Owner<'_>, desired: &Pod) -> Result<Pod, PodError> {
    let terminating = || PodError::NamespaceTerminating {
        namespace: owner.namespace.to_owned(),
        owner: owner_text(owner),
    };
    let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(ctx.client.clone())
        .get_opt(owner.namespace)
        .await
        .map_err(api_error("read the namespace for", owner))?;
    if namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()) {
        return Err(terminating());
    }
    let service_account = owner.spec.service_account_name.as_str();
    let client = ctx
        .impersonate(owner.namespace, service_account)
        .await
        .map_err(PodError::Impersonation)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let created = Api::<Pod>::namespaced(client, owner.namespace)
        .create(&params, desired)
        .await
        .map_err(|source| match source {
            // The NamespaceLifecycle admission plugin's refusal.
            kube::Error::Api(status)
                if status.is_forbidden()
                    && status.message.contains("because it is being terminated") =>
            {
                terminating()
            }
            kube::Error::Api(status) if status.is_forbidden() => PodError::Forbidden {
                service_account: format!("{}/{service_account}", owner.namespace),
                owner: owner_text(owner),
                hint: if status.message.contains("cannot create resource") {
                    " (grant it `create` on pods with a Role and RoleBinding)"
                } else {
                    ""
                },
                message: bounded(&status.message),
            },
            kube::Error::Api(status) if status.code == 422 => PodError::Invalid {
                owner: owner_text(owner),
                message: bounded(&status.message),
            },
            other => PodError::Api {
                action: "create",
                owner: owner_text(owner),
                source: Box::new(other),
            },
        })?;
    Metrics::inc(&ctx.metrics.apparatus_pods_created);
    ctx.metrics.api_write("create", "pods");
    tracing::info!(
        pod = created.name_any(),
        namespace = owner.namespace,
        owner = %owner_text(owner),
        "started apparatus pod"
    );
    Ok(created)
}

/// Waits until `current` is ready, by watching it. A pod that reports a failure of its own
/// fails at once; one still starting when the deadline passes fails then.
async fn await_ready(ctx: &Context, api: &Api<Pod>, current: Pod) -> Result<Pod, PodError> {
    let name = current.name_any();
    let namespace = current.namespace().unwrap_or_default();
    let uid = current.uid();
    let settled = |p: &Pod| !matches!(pod::diagnose(p), PodState::Starting { .. });
    let settled_pod = if settled(&current) {
        current
    } else {
        let started = Instant::now();
        let deadline = ctx.options.pods.ready_timeout;
        let condition = {
            let uid = uid.clone();
            move |p: Option<&Pod>| p.is_none_or(|p| p.uid() != uid || settled(p))
        };
        // On a task of its own: decoding Pod watch events needs a deep stack, which the
        // reconcile's own (already deep) stack must not have to provide.
        let mut waiting = {
            let (api, name) = (api.clone(), name.clone());
            AbortOnDrop(tokio::spawn(async move {
                tokio::time::timeout(deadline, await_condition(api, &name, condition)).await
            }))
        };
        // A wait that ended without an answer (its task failed) counts as one that timed out.
        let outcome = (&mut waiting.0).await.ok();
        match outcome.and_then(|o| o.ok()) {
            None => {
                let state = match api.get_opt(&name).await {
                    Ok(Some(p)) => match pod::diagnose(&p) {
                        PodState::Starting { detail } => detail,
                        other => format!("{other:?}"),
                    },
                    Ok(None) => "deleted".to_owned(),
                    Err(e) => format!("unknown ({e})"),
                };
                return Err(PodError::ReadyTimeout {
                    namespace,
                    pod: name,
                    seconds: deadline.as_secs(),
                    state,
                });
            }
            Some(Err(source)) => {
                return Err(PodError::Watch {
                    namespace,
                    pod: name,
                    source,
                });
            }
            Some(Ok(found)) => {
                tracing::debug!(
                    pod = name,
                    waited = ?started.elapsed(),
                    "apparatus pod settled"
                );
                match found.filter(|p| p.uid() == uid) {
                    Some(p) => p,
                    None => {
                        return Err(PodError::NotReady {
                            namespace,
                            pod: name,
                            reason: "Deleted".to_owned(),
                            message: "the pod was deleted while it was starting".to_owned(),
                        });
                    }
                }
            }
        }
    };
    match pod::diagnose(&settled_pod) {
        PodState::Ready { .. } => Ok(settled_pod),
        PodState::Failing { reason, message } | PodState::Ended { reason, message } => {
            Err(PodError::NotReady {
                namespace,
                pod: name,
                reason,
                message,
            })
        }
        PodState::Terminating => Err(PodError::NotReady {
            namespace,
            pod: name,
            reason: "Terminating".to_owned(),
            message: "the pod is being deleted".to_owned(),
        }),
        PodState::Starting { detail } => Err(PodError::ReadyTimeout {
            namespace,
            pod: name,
            seconds: ctx.options.pods.ready_timeout.as_secs(),
            state: detail,
        }),
    }
}

/// Records a use: in memory always, on the pod when its annotation is older than
/// [`pod::touch_interval`]. A failed write is logged: the in-memory time still protects the pod
/// in this process, and the next call writes again.
async fn touch(api: &Api<Pod>, current: &Pod, spec: &ApparatusSpec, slot: &Slot) {
    let now = Timestamp::now();
    slot.used(now);
    let idle = Duration::from_secs(u64::from(spec.idle_timeout_seconds()));
    if !pod::needs_touch(current, idle, now) {
        return;
    }
    let patch = serde_json::json!({
        "metadata": {"annotations": {pod::LAST_USED_ANNOTATION: now.to_string()}}
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api
        .patch(&current.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, pod = current.name_any(), "failed to record the last use of an apparatus pod")
        }
    }
}

/// Deletes one of plugboard's apparatus pods (UID precondition, so a pod re-created under the
/// same name is never hit). Best effort: a failure is logged and retried by the next pass.
async fn delete_pod(ctx: &Context, target: &Pod, why: &str) {
    let name = target.name_any();
    let namespace = target.namespace().unwrap_or_default();
    let params = DeleteParams::background().preconditions(Preconditions {
        uid: target.uid(),
        resource_version: None,
    });
    match Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .delete(&name, &params)
        .await
    {
        Ok(_) => {
            Metrics::inc(&ctx.metrics.apparatus_pods_deleted);
            ctx.metrics.api_write("delete", "pods");
            tracing::info!(pod = name, namespace, why, "deleted apparatus pod");
        }
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 409 => {}
        Err(error) => {
            tracing::warn!(%error, pod = name, namespace, why, "failed to delete apparatus pod");
        }
    }
}

/// Deletes every apparatus pod of a deleted owner (its ownerReference would have the garbage
/// collector do it too, later).
pub(crate) async fn delete_for_owner(ctx: &Context, owner: Owner<'_>) {
    if owner
        .spec
        .apparatus
        .as_ref()
        .and_then(|a| a.containers.as_ref())
        .is_none()
    {
        return;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), owner.namespace);
    let params = ListParams::default().labels(&format!("{}={}", pod::OWNER_UID_LABEL, owner.uid));
    match api.list(&params).await {
        Ok(list) => {
            for p in list.items.iter().filter(|p| pod::owned_by(p, owner.uid)) {
                if p.metadata.deletion_timestamp.is_none() {
                    delete_pod(ctx, p, "its owner is deleted").await;
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, owner = %owner_text(&owner), "failed to list apparatus pods to delete them");
        }
    }
    ctx.pods.forget(owner.uid);
}

/// The current spec hash and idle timeout of the owner of `p`, when this instance manages that
/// owner: `Some(None)` when the owner no longer runs an apparatus pod, `None` when the owner is
/// not (or not yet) in this instance's caches.
fn wanted(
    p: &Pod,
    plugs: &Store<Plug>,
    sockets: &Store<Socket>,
) -> Option<Option<(String, Duration)>> {
    let reference = pod::apparatus_owner(p)?;
    let namespace = p.namespace()?;
    let side = match reference.kind.as_str() {
        "Plug" => plugs
            .get(&ObjectRef::new(&reference.name).within(&namespace))
            .filter(|o| o.uid().as_deref() == Some(reference.uid.as_str()))
            .map(|o| o.spec.side.clone()),
        "Socket" => sockets
            .get(&ObjectRef::new(&reference.name).within(&namespace))
            .filter(|o| o.uid().as_deref() == Some(reference.uid.as_str()))
            .map(|o| o.spec.side.clone()),
        _ => None,
    }?;
    Some(
        side.apparatus
            .filter(|a| a.containers.is_some() && a.wasm.is_none())
            .map(|a| {
                (
                    pod::spec_hash(&side.service_account_name, &a),
                    Duration::from_secs(u64::from(a.idle_timeout_seconds())),
                )
            }),
    )
}

/// One pass of idle cleanup over the apparatus pods in `pods`.
pub(crate) async fn reap_once(
    ctx: &Context,
    pods: &Store<Pod>,
    plugs: &Store<Plug>,
    sockets: &Store<Socket>,
) {
    let now = Timestamp::now();
    for p in pods.state() {
        let Some(owner_uid) = pod::apparatus_owner(&p).map(|o| o.uid.clone()) else {
            continue;
        };
        let Some(wanted) = wanted(&p, plugs, sockets) else {
            continue;
        };
        let decide = |used| {
            pod::reap_verdict(
                &p,
                wanted.as_ref().map(|(h, i)| (h.as_str(), *i)),
                used,
                now,
            )
        };
        if decide(ctx.pods.last_used(&owner_uid)) == Verdict::Keep {
            continue;
        }
        let slot = ctx.pods.slot(&owner_uid);
        // Never while a call is finding, starting or using the owner's pod; holding the flight
        // lock keeps new calls out until the pod is deleted.
        if let Ok(_flight) = slot.ensure.try_lock()
            && slot.in_flight.load(Ordering::SeqCst) == 0
            && let Verdict::Delete(why) = decide(slot.last_used())
        {
            delete_pod(ctx, &p, &why).await;
        }
        drop(slot);
        ctx.pods.forget(&owner_uid);
    }
}

/// Runs [`reap_once`] every [`PodOptions::reap_interval`] until `stop` completes.
pub(crate) async fn reap(
    ctx: Arc<Context>,
    pods: Store<Pod>,
    plugs: Store<Plug>,
    sockets: Store<Socket>,
    stop: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(ctx.options.pods.reap_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => reap_once(&ctx, &pods, &plugs, &sockets).await,
        }
    }
}

/// `message` cut to 512 bytes.
fn bounded(message: &str) -> String {
    const MAX: usize = 512;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// A task that is stopped when its handle is dropped (when the reconcile waiting on it is).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_errors_map_to_reasons_and_retry_policy() {
        let not_ready = PodError::NotReady {
            namespace: "ns".into(),
            pod: "app-apparatus-x".into(),
            reason: "ImagePullBackOff".into(),
            message: "container hooks: Back-off pulling image".into(),
        };
        assert_eq!(not_ready.reason(), "ApparatusNotReady");
        assert!(!not_ready.needs_spec_change());
        assert_eq!(
            not_ready.to_string(),
            "apparatus pod ns/app-apparatus-x is not ready: ImagePullBackOff: container hooks: \
             Back-off pulling image"
        );
        let forbidden = PodError::Forbidden {
            service_account: "ns/hooks".into(),
            owner: "Plug ns/app".into(),
            hint: " (grant it `create` on pods with a Role and RoleBinding)",
            message: "pods is forbidden".into(),
        };
        assert_eq!(forbidden.reason(), "ApparatusForbidden");
        assert!(!forbidden.needs_spec_change());
        assert!(forbidden.to_string().starts_with(
            "ServiceAccount ns/hooks may not create the apparatus pod of Plug ns/app (grant"
        ));
        let spec = PodError::Spec {
            owner: "Plug ns/app".into(),
            source: PodSpecError::NoPort,
        };
        assert_eq!(spec.reason(), "ApparatusInvalid");
        assert!(spec.needs_spec_change());
    }

    #[test]
    fn slots_are_shared_while_used_and_forgotten_after() {
        let manager = PodManager::default();
        let a = manager.slot("u");
        let b = manager.slot("u");
        assert!(Arc::ptr_eq(&a, &b), "one owner, one flight");
        manager.forget("u");
        assert!(Arc::ptr_eq(&a, &manager.slot("u")), "kept while in use");
        drop((a, b));
        manager.forget("u");
        assert!(
            manager
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
    }
}
