//! Apparatus pods, the pure part: the pod plugboard runs for an HTTP apparatus with
//! `containers` (reference 9.2, with D-8), what its status says about serving hooks, and when it
//! has been idle long enough to go. No client and no clock: callers pass the time in. The
//! controller (`controller::pods`) creates, watches, touches and deletes the pods.
//!
//! A pod is plugboard's for an owner only when it carries all three marks: label
//! [`OWNER_UID_LABEL`] with the owner's UID, label [`MANAGED_BY_LABEL`] = [`MANAGED_BY`], and an
//! ownerReference to the owner with that UID ([`owned_by`], [`apparatus_owner`]). plugboard never
//! reads, patches or deletes any other pod, whatever its name; in particular never a pod named
//! like the owner (the reference's BUG-8).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest as _, Sha256};

use crate::crd::ApparatusSpec;
pub use crate::engine::resources::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::engine::resources::{OWNER_ANNOTATION, ObjectOwner};

/// Label carrying the UID of the Plug or Socket an apparatus pod serves. Distinct from the
/// label of templated objects, so a Pod a template creates is never taken for an apparatus.
pub const OWNER_UID_LABEL: &str = "plugboard.dev/apparatus-owner-uid";
/// Label saying what the pod is, for people and selectors.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Value of [`COMPONENT_LABEL`].
pub const COMPONENT: &str = "apparatus";
/// Annotation with the hash of everything the pod is built from ([`spec_hash`]). A pod whose
/// hash differs from the owner's current one is replaced.
pub const SPEC_HASH_ANNOTATION: &str = "plugboard.dev/apparatus-spec-hash";
/// Annotation with the time (RFC 3339) the pod was last used for a call. It is what idle
/// deletion goes by, so idle pods are found again after an operator restart.
pub const LAST_USED_ANNOTATION: &str = "plugboard.dev/apparatus-last-used";
/// The name of the container port plugboard calls (reference 9.2).
pub const PORT_NAME: &str = "container";
/// The longest pod status message carried into a condition.
const MAX_MESSAGE: usize = 400;

/// Waiting reasons of a container that mean it will not serve without a change or a long
/// wait: the kubelet reports them after it tried and failed.
const FAILING_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreStartHookError",
    "PostStartHookError",
];

/// `spec.apparatus` cannot be turned into a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodSpecError {
    /// `containers` is absent or empty.
    #[error("spec.apparatus.containers is empty; list the container(s) of the apparatus pod")]
    NoContainers,
    /// No container exposes a port named `container`.
    #[error(
        "no container in spec.apparatus.containers exposes a port named \"container\"; add \
         `ports: [{{name: container, containerPort: <port>}}]` to the container that serves the hooks"
    )]
    NoPort,
    /// The port named `container` is not a valid TCP port.
    #[error(
        "the port named \"container\" has containerPort {port}, which is not between 1 and 65535"
    )]
    InvalidPort {
        /// As written.
        port: i32,
    },
}

/// What an apparatus pod's status says about serving hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Ready: calls can go to `ip`.
    Ready {
        /// The pod's IP.
        ip: IpAddr,
    },
    /// Still starting (scheduling, pulling, starting, not ready yet); `detail` says where.
    Starting {
        /// For messages, e.g. `Pending; container hooks: ContainerCreating`.
        detail: String,
    },
    /// Started but failing in a way the kubelet reports (image pull, crash loop, OOM,
    /// unschedulable): waiting longer is unlikely to help soon.
    Failing {
        /// The pod's own reason, e.g. `ImagePullBackOff`, `CrashLoopBackOff`, `OOMKilled`,
        /// `Unschedulable`.
        reason: String,
        /// What the kubelet or scheduler said, bounded.
        message: String,
    },
    /// Ended (phase `Failed` or `Succeeded`, e.g. evicted): it will never serve again.
    Ended {
        /// The pod's reason, or its phase.
        reason: String,
        /// What the kubelet said, bounded.
        message: String,
    },
    /// Being deleted.
    Terminating,
}

/// What [`reap_verdict`] decides about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it.
    Keep,
    /// Delete it, for this reason (for logs).
    Delete(String),
}

/// The name prefix of an owner's apparatus pods: `<owner>-apparatus-`, the API server appends
/// five random characters. Long owner names are cut (the API server would cut the prefix to
/// 58 characters anyway; cutting here keeps the `-apparatus-` part visible).
pub fn generate_name(owner_name: &str) -> String {
    const SUFFIX: &str = "-apparatus-";
    const MAX_PREFIX: usize = 58;
    let keep = MAX_PREFIX - SUFFIX.len();
    let mut end = owner_name.len().min(keep);
    while !owner_name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{SUFFIX}", owner_name[..end].trim_end_matches(['-', '.']))
}

/// The port of `containers` named [`PORT_NAME`].
pub fn container_port(containers: &[Container]) -> Result<u16, PodSpecError> {
    let port = containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(PORT_NAME))
        .ok_or(PodSpecError::NoPort)?;
    u16::try_from(port.container_port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(PodSpecError::InvalidPort {
            port: port.container_port,
        })
}

/// The port named [`PORT_NAME`] of a pod.
pub fn pod_port(pod: &Pod) -> Result<u16, PodSpecError> {
    container_port(
        pod.spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default(),
    )
}

/// The hash of everything an owner's pod is built from: the ServiceAccount and the pod fields
/// of the apparatus (not `endpoint` or `idleTimeout`, which change no pod). Hex SHA-256.
pub fn spec_hash(service_account: &str, spec: &ApparatusSpec) -> String {
    let shaped = serde_json::json!({
        "serviceAccountName": service_account,
        "containers": spec.containers,
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "affinity": spec.affinity,
        "securityContext": spec.security_context,
        "imagePullSecrets": spec.image_pull_secrets,
    });
    let mut hash = Sha256::new();
    hash.update(shaped.to_string().as_bytes());
    hex::encode(hash.finalize())
}

/// The pod-level security context used when the spec sets none: non-root, the runtime's
/// default seccomp profile (what the `restricted` Pod Security Standard asks).
pub fn default_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The container-level security context used for containers that set none: no privilege
/// escalation and no Linux capabilities.
pub fn default_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// The pod to create for `owner`'s apparatus, used first at `now`.
///
/// - `generateName` [`generate_name`], in the owner's namespace; labels [`OWNER_UID_LABEL`],
///   [`MANAGED_BY_LABEL`] and [`COMPONENT_LABEL`]; annotations [`SPEC_HASH_ANNOTATION`],
///   [`LAST_USED_ANNOTATION`], the owner for people, and `sidecar.istio.io/inject: "false"`
///   (plugboard calls the pod's IP directly, as the reference did); an ownerReference to the
///   owner, so deleting the owner deletes the pod.
/// - `serviceAccountName` is the owner's; the pod-level fields (`nodeSelector`,
///   `tolerations`, `affinity`, `securityContext`, `imagePullSecrets`) come from the spec, with
///   [`default_pod_security_context`] when it sets none and
///   [`default_container_security_context`] for containers that set none. No architecture is
///   imposed (the reference required amd64); use `nodeSelector` or `affinity` for that.
pub fn desired_pod(
    owner: &ObjectOwner,
    spec: &ApparatusSpec,
    now: Timestamp,
) -> Result<Pod, PodSpecError> {
    let containers = spec
        .containers
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or(PodSpecError::NoContainers)?;
    container_port(&containers)?;
    let containers = containers
        .into_iter()
        .map(|mut c| {
            if c.security_context.is_none() {
                c.security_context = Some(default_container_security_context());
            }
            c
        })
        .collect();
    let labels = BTreeMap::from([
        (OWNER_UID_LABEL.to_owned(), owner.uid.clone()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (COMPONENT_LABEL.to_owned(), COMPONENT.to_owned()),
    ]);
    let annotations = BTreeMap::from([
        (
            SPEC_HASH_ANNOTATION.to_owned(),
            spec_hash(&owner.service_account, spec),
        ),
        (LAST_USED_ANNOTATION.to_owned(), now.to_string()),
        (
            OWNER_ANNOTATION.to_owned(),
            format!("{} {}/{}", owner.kind, owner.namespace, owner.name),
        ),
        ("sidecar.istio.io/inject".to_owned(), "false".to_owned()),
    ]);
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name(&owner.name)),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: owner.api_version.clone(),
                kind: owner.kind.clone(),
                name: owner.name.clone(),
                uid: owner.uid.clone(),
                controller: Some(true),
                // Setting it would need `update` on the owner's finalizers as the owner's
                // ServiceAccount (OwnerReferencesPermissionEnforcement); deletion order does not
                // matter for an apparatus.
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            service_account_name: Some(owner.service_account.clone()),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            affinity: spec.affinity.clone(),
            security_context: Some(
                spec.security_context
                    .clone()
                    .unwrap_or_else(default_pod_security_context),
            ),
            image_pull_secrets: spec.image_pull_secrets.clone(),
            restart_policy: Some("Always".to_owned()),
            ..Default::default()
        }),
        status: None,
    })
}

/// Whether `pod` is plugboard's apparatus pod for the owner with `uid`.
pub fn owned_by(pod: &Pod, uid: &str) -> bool {
    apparatus_owner(pod).is_some_and(|o| o.uid == uid)
}

/// The owner of a pod plugboard created for an apparatus: the ownerReference whose UID the
/// pod's [`OWNER_UID_LABEL`] names, when the pod also carries [`MANAGED_BY_LABEL`] =
/// [`MANAGED_BY`] and the reference is to a Plug or Socket. `None` for any other pod.
pub fn apparatus_owner(pod: &Pod) -> Option<&OwnerReference> {
    let labels = pod.metadata.labels.as_ref()?;
    let uid = labels.get(OWNER_UID_LABEL).filter(|u| !u.is_empty())?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    pod.metadata.owner_references.iter().flatten().find(|r| {
        &r.uid == uid
            && matches!(r.kind.as_str(), "Plug" | "Socket")
            && r.api_version.starts_with("plugboard.dev/")
    })
}

/// The pod's [`SPEC_HASH_ANNOTATION`].
pub fn pod_spec_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(SPEC_HASH_ANNOTATION)
        .map(String::as_str)
}

/// When the pod was last used: its [`LAST_USED_ANNOTATION`], or its creation time when the
/// annotation is missing or unreadable.
pub fn last_used(pod: &Pod) -> Option<Timestamp> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_USED_ANNOTATION))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How stale the [`LAST_USED_ANNOTATION`] may get before a call writes it again: a quarter of
/// the idle timeout, at most 5 s, at least 250 ms. After an operator restart, a pod may
/// therefore be deleted up to that much early.
pub fn touch_interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// Whether a call at `now` should write [`LAST_USED_ANNOTATION`] again.
pub fn needs_touch(pod: &Pod, idle: Duration, now: Timestamp) -> bool {
    last_used(pod).is_none_or(|at| elapsed(at, now) >= touch_interval(idle))
}

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

/// What to do with an apparatus pod at `now`. `wanted` is the owner's current spec hash and
/// idle timeout, `None` when the owner no longer has an apparatus pod; `used` is the latest use
/// this process knows of (it may be later than the annotation).
pub fn reap_verdict(
    pod: &Pod,
    wanted: Option<(&str, Duration)>,
    used: Option<Timestamp>,
    now: Timestamp,
) -> Verdict {
    if pod.metadata.deletion_timestamp.is_some() {
        return Verdict::Keep;
    }
    let Some((hash, idle)) = wanted else {
        return Verdict::Delete("its owner no longer runs an apparatus pod".to_owned());
    };
    if pod_spec_hash(pod) != Some(hash) {
        return Verdict::Delete("its owner's apparatus spec changed".to_owned());
    }
    if let PodState::Ended { reason, .. } = diagnose(pod) {
        return Verdict::Delete(format!("it ended ({reason})"));
    }
    let last = match (last_used(pod), used) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    match last {
        Some(last) if elapsed(last, now) >= idle => Verdict::Delete(format!(
            "it has been idle for {} s (idleTimeout {} s)",
            elapsed(last, now).as_secs(),
            idle.as_secs()
        )),
        _ => Verdict::Keep,
    }
}

/// `message` cut to [`MAX_MESSAGE`] bytes.
fn bounded(message: &str) -> String {
    let message = message.trim();
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Reads a pod's status: ready (with its IP), starting, failing with the pod's own reason
/// (image pull, crash loop, OOM, unschedulable), ended, or terminating.
pub fn diagnose(pod: &Pod) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let Some(status) = pod.status.as_ref() else {
        return PodState::Starting {
            detail: "no status yet (not scheduled)".to_owned(),
        };
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if matches!(phase, "Failed" | "Succeeded") {
        return PodState::Ended {
            reason: status.reason.clone().unwrap_or_else(|| phase.to_owned()),
            message: bounded(status.message.as_deref().unwrap_or_default()),
        };
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let ready = condition("Ready").is_some_and(|c| c.status == "True");
    let ip = status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    if let (true, Some(ip)) = (ready, ip) {
        return PodState::Ready { ip };
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let mut waiting = Vec::new();
    for c in containers {
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if FAILING_WAITING_REASONS.contains(&reason.as_str()) {
                let mut message = format!("container {}", c.name);
                if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                    message.push_str(": ");
                    message.push_str(m);
                }
                if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    message.push_str(&format!(
                        " (last exit: code {}{})",
                        t.exit_code,
                        t.reason
                            .as_deref()
                            .map(|r| format!(", {r}"))
                            .unwrap_or_default()
                    ));
                    if t.reason.as_deref() == Some("OOMKilled") {
                        return PodState::Failing {
                            reason: "OOMKilled".to_owned(),
                            message: bounded(&message),
                        };
                    }
                }
                return PodState::Failing {
                    reason,
                    message: bounded(&message),
                };
            }
            if !reason.is_empty() {
                waiting.push(format!("container {}: {reason}", c.name));
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref())
            && t.reason.as_deref() == Some("OOMKilled")
        {
            return PodState::Failing {
                reason: "OOMKilled".to_owned(),
                message: bounded(&format!(
                    "container {} was killed for using more memory than its limit (exit code {})",
                    c.name, t.exit_code
                )),
            };
        }
    }
    if let Some(scheduled) = condition("PodScheduled")
        && scheduled.status == "False"
    {
        let reason = scheduled
            .reason
            .clone()
            .unwrap_or_else(|| "Unschedulable".to_owned());
        if reason == "Unschedulable" || reason == "SchedulingGated" {
            return PodState::Failing {
                reason,
                message: bounded(scheduled.message.as_deref().unwrap_or_default()),
            };
        }
    }
    let mut detail = phase.to_owned();
    if waiting.is_empty() {
        if condition("PodScheduled").is_none_or(|c| c.status != "True") {
            detail.push_str("; not scheduled yet");
        } else if ready && ip.is_none() {
            detail.push_str("; ready but without a pod IP");
        } else {
            detail.push_str("; containers not ready");
        }
    } else {
        detail.push_str("; ");
        detail.push_str(&waiting.join(", "));
    }
    PodState::Starting {
        detail: bounded(&detail),
    }
}

/// The time `t` plus `d` (saturating), for deadlines in messages and tests.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;
    use serde_json::json;

    fn owner() -> ObjectOwner {
        ObjectOwner {
            api_version: "plugboard.dev/v1alpha1".into(),
            kind: "Plug".into(),
            name: "app".into(),
            namespace: "team".into(),
            uid: "uid-1".into(),
            service_account: "hooks".into(),
        }
    }

    fn container(port: Option<(&str, i32)>) -> Container {
        Container {
            name: "hooks".into(),
            image: Some("example.com/hooks:1".into()),
            ports: port.map(|(name, p)| {
                vec![ContainerPort {
                    name: Some(name.into()),
                    container_port: p,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    fn spec() -> ApparatusSpec {
        ApparatusSpec {
            endpoint: Some("/hooks".into()),
            containers: Some(vec![container(Some(("container", 8080)))]),
            ..Default::default()
        }
    }

    fn now() -> Timestamp {
        "2025-01-01T00:00:00Z".parse().unwrap()
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn desired_pod_is_labelled_owned_and_restricted_by_default() {
        let pod = desired_pod(&owner(), &spec(), now()).unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.generate_name.as_deref(), Some("app-apparatus-"));
        assert_eq!(meta.namespace.as_deref(), Some("team"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[OWNER_UID_LABEL], "uid-1");
        assert_eq!(labels[MANAGED_BY_LABEL], "plugboard");
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[SPEC_HASH_ANNOTATION],
            spec_hash("hooks", &spec())
        );
        assert_eq!(annotations[LAST_USED_ANNOTATION], "2025-01-01T00:00:00Z");
        let reference = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (reference.kind.as_str(), reference.uid.as_str()),
            ("Plug", "uid-1")
        );
        assert!(owned_by(&pod, "uid-1"));
        assert!(!owned_by(&pod, "uid-2"));

        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("hooks"));
        let security = spec.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let c = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(
            c.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        // No hard-coded architecture (the reference required amd64).
        assert!(spec.affinity.is_none() && spec.node_selector.is_none());
        assert_eq!(pod_port(&pod), Ok(8080));
    }

    #[test]
    fn spec_fields_are_applied_and_their_security_contexts_kept() {
        let mut s = spec();
        s.node_selector = Some([("kubernetes.io/arch".into(), "arm64".into())].into());
        s.security_context = Some(PodSecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        });
        let mut c = container(Some(("container", 80)));
        c.security_context = Some(SecurityContext {
            privileged: Some(false),
            ..Default::default()
        });
        s.containers = Some(vec![c]);
        s.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "pull".into(),
        }]);
        let pod = desired_pod(&owner(), &s, now()).unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_selector.unwrap()["kubernetes.io/arch"], "arm64");
        assert_eq!(spec.security_context.unwrap().run_as_user, Some(0));
        assert_eq!(
            spec.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .privileged,
            Some(false)
        );
        assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "pull");
    }

    #[test]
    fn pods_without_a_container_port_are_refused() {
        let mut s = spec();
        s.containers = Some(vec![container(Some(("http", 8080)))]);
        assert_eq!(
            desired_pod(&owner(), &s, now()).unwrap_err(),
            PodSpecError::NoPort
        );
        s.containers = Some(vec![container(Some(("container", 70000)))]);
        assert_eq!(
            desired_pod(&owner(), &s, now()).unwrap_err(),
            PodSpecError::InvalidPort { port: 70000 }
        );
        s.containers = Some(Vec::new());
        assert_eq!(
            desired_pod(&owner(), &s, now()).unwrap_err(),
            PodSpecError::NoContainers
        );
        assert!(
            PodSpecError::NoPort
                .to_string()
                .contains("named \"container\"")
        );
    }

    #[test]
    fn spec_hash_follows_pod_fields_only() {
        let base = spec_hash("hooks", &spec());
        let mut other = spec();
        other.endpoint = Some("/other".into());
        other.idle_timeout = Some(5);
        assert_eq!(
            spec_hash("hooks", &other),
            base,
            "endpoint and idleTimeout shape no pod"
        );
        other.containers = Some(vec![container(Some(("container", 9090)))]);
        assert_ne!(spec_hash("hooks", &other), base);
        assert_ne!(spec_hash("default", &spec()), base);
    }

    #[test]
    fn generated_names_are_bounded() {
        assert_eq!(generate_name("db"), "db-apparatus-");
        let long = generate_name(&"a".repeat(300));
        assert!(long.len() <= 58, "{}", long.len());
        assert!(long.ends_with("-apparatus-"));
        assert_eq!(
            generate_name(&format!("{}-x", "b".repeat(46))),
            format!("{}-apparatus-", "b".repeat(46))
        );
    }

    #[test]
    fn pods_without_all_three_marks_are_not_ours() {
        let base = json!({
            "metadata": {
                "name": "app-apparatus",
                "labels": {OWNER_UID_LABEL: "u", MANAGED_BY_LABEL: "plugboard"},
                "ownerReferences": [{"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
                                     "name": "app", "uid": "u"}],
            }
        });
        assert!(owned_by(&pod(base.clone()), "u"));
        let mut no_label = base.clone();
        no_label["metadata"]["labels"] = json!({MANAGED_BY_LABEL: "plugboard"});
        assert!(!owned_by(&pod(no_label), "u"));
        let mut other_manager = base.clone();
        other_manager["metadata"]["labels"][MANAGED_BY_LABEL] = json!("helm");
        assert!(!owned_by(&pod(other_manager), "u"));
        let mut no_reference = base.clone();
        no_reference["metadata"]["ownerReferences"] = json!([]);
        assert!(!owned_by(&pod(no_reference), "u"));
        let mut foreign_kind = base;
        foreign_kind["metadata"]["ownerReferences"][0]["kind"] = json!("Deployment");
        assert!(!owned_by(&pod(foreign_kind), "u"));
        assert!(!owned_by(&pod(json!({"metadata": {"name": "app"}})), ""));
    }

    fn with_status(status: serde_json::Value) -> Pod {
        pod(json!({"metadata": {"name": "p"}, "status": status}))
    }

    #[test]
    fn ready_pods_give_their_ip() {
        let p = with_status(json!({"phase": "Running", "podIP": "10.1.2.3",
            "conditions": [{"type": "Ready", "status": "True"}]}));
        assert_eq!(
            diagnose(&p),
            PodState::Ready {
                ip: "10.1.2.3".parse().unwrap()
            }
        );
        let no_ip = with_status(json!({"phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}));
        assert!(
            matches!(diagnose(&no_ip), PodState::Starting { detail } if detail.contains("without a pod IP"))
        );
    }

    #[test]
    fn failures_carry_the_pods_own_reason() {
        let pull = with_status(json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "hooks", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"example.com/hooks:1\""}}}]}));
        assert_eq!(
            diagnose(&pull),
            PodState::Failing {
                reason: "ImagePullBackOff".into(),
                message: "container hooks: Back-off pulling image \"example.com/hooks:1\"".into()
            }
        );
        let crash = with_status(json!({"phase": "Running",
            "containerStatuses": [{"name": "hooks", "image": "x", "imageID": "", "ready": false,
                "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}));
        assert!(matches!(diagnose(&crash),
            PodState::Failing { reason, message } if reason == "CrashLoopBackOff" && message.contains("code 1, Error")));
        let oom = with_status(json!({"phase": "Running",
            "containerStatuses": [{"name": "hooks", "image": "x", "imageID": "", "ready": false,
                "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        assert!(
            matches!(diagnose(&oom), PodState::Failing { reason, .. } if reason == "OOMKilled")
        );
        let unschedulable = with_status(json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory."}]}));
        assert_eq!(
            diagnose(&unschedulable),
            PodState::Failing {
                reason: "Unschedulable".into(),
                message: "0/3 nodes are available: 3 Insufficient memory.".into()
            }
        );
        let evicted = with_status(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        assert!(
            matches!(diagnose(&evicted), PodState::Ended { reason, .. } if reason == "Evicted")
        );
    }

    #[test]
    fn starting_pods_say_where_they_are() {
        let creating = with_status(json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "hooks", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(
            diagnose(&creating),
            PodState::Starting {
                detail: "Pending; container hooks: ContainerCreating".into()
            }
        );
        assert!(matches!(
            diagnose(&pod(json!({"metadata": {"name": "p"}}))),
            PodState::Starting { .. }
        ));
        let long = "x".repeat(2000);
        let noisy = with_status(json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": long}]}));
        let PodState::Failing { message, .. } = diagnose(&noisy) else {
            panic!("not failing")
        };
        assert!(message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    fn pod_used_at(hash: &str, last_used: &str) -> Pod {
        pod(json!({"metadata": {"name": "p", "annotations": {
            SPEC_HASH_ANNOTATION: hash, LAST_USED_ANNOTATION: last_used}}}))
    }

    #[test]
    fn idle_pods_are_reaped_after_their_timeout() {
        let idle = Duration::from_secs(60);
        let p = pod_used_at("h", "2025-01-01T00:00:00Z");
        let at = |s: u64| after(now(), Duration::from_secs(s));
        assert_eq!(
            reap_verdict(&p, Some(("h", idle)), None, at(59)),
            Verdict::Keep
        );
        assert!(
            matches!(reap_verdict(&p, Some(("h", idle)), None, at(60)), Verdict::Delete(why) if why.contains("idle for 60 s"))
        );
        // A later use known in memory wins over the annotation.
        assert_eq!(
            reap_verdict(&p, Some(("h", idle)), Some(at(30)), at(60)),
            Verdict::Keep
        );
        assert!(
            matches!(reap_verdict(&p, Some(("other", idle)), None, at(1)), Verdict::Delete(why) if why.contains("changed"))
        );
        assert!(matches!(
            reap_verdict(&p, None, None, at(1)),
            Verdict::Delete(_)
        ));
    }

    #[test]
    fn last_use_is_written_at_most_every_touch_interval() {
        assert_eq!(
            touch_interval(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            touch_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        let p = pod_used_at("h", "2025-01-01T00:00:00Z");
        let idle = Duration::from_secs(60);
        assert!(!needs_touch(&p, idle, after(now(), Duration::from_secs(4))));
        assert!(needs_touch(&p, idle, after(now(), Duration::from_secs(5))));
        assert!(needs_touch(
            &pod(json!({"metadata": {"name": "p"}})),
            idle,
            now()
        ));
    }
}
