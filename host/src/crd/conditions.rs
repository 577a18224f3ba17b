//! Condition types and reasons, and the pure merge that turns the conditions a reconcile wants
//! into the list written to status.
//!
//! Conditions follow Kubernetes conventions and kstatus: `Ready` says whether the object does
//! what it is for (so `kubectl wait --for=condition=Ready` works), `Coupled` carries the
//! lifecycle reason, and `Reconciling` / `Stalled` are set only while they are true. The
//! transition time of a condition moves only when its status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The object does what it is for: a Plug is coupled with results, a Socket is serving, a
    /// DeferredResource's object exists.
    pub const READY: &str = "Ready";
    /// Where the object is in the coupling lifecycle; the reason names the phase.
    pub const COUPLED: &str = "Coupled";
    /// Work is under way and the object will change without user action (kstatus).
    pub const RECONCILING: &str = "Reconciling";
    /// Progress needs user action (kstatus).
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons. Lifecycle reasons keep the reference implementation's names.
pub mod reasons {
    /// A Plug's created hooks ran.
    pub const PLUG_CREATED: &str = "PlugCreated";
    /// The Socket a Plug names does not exist (yet).
    pub const SOCKET_NOT_CREATED: &str = "SocketNotCreated";
    /// A Plug is coupling to its Socket.
    pub const COUPLING_IN_PROCESS: &str = "CouplingInProcess";
    /// A Plug is coupled and its results are computed.
    pub const COUPLING_SUCCEEDED: &str = "CouplingSucceeded";
    /// A coupled Plug's inputs changed and its updated hooks are running.
    pub const UPDATING_IN_PROCESS: &str = "UpdatingInProcess";
    /// A Socket's created hooks ran.
    pub const SOCKET_CREATED: &str = "SocketCreated";
    /// A Socket has at least one coupled Plug.
    pub const SOCKET_COUPLED: &str = "SocketCoupled";
    /// A Socket has no coupled Plug.
    pub const SOCKET_EMPTY: &str = "SocketEmpty";
    /// The Socket being deleted waits for its Plugs to decouple.
    pub const DECOUPLING: &str = "Decoupling";
    /// The Plug's namespace is not admitted by the Socket's `validation`.
    pub const COUPLING_REFUSED: &str = "CouplingRefused";
    /// The Socket's `validation` cannot be evaluated.
    pub const INVALID_POLICY: &str = "InvalidPolicy";
    /// A config source (Secret, ConfigMap) is missing or cannot be read.
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    /// A config does not satisfy the Socket's interface.
    pub const CONFIG_INVALID: &str = "ConfigInvalid";
    /// A result required by the interface is not there yet; the coupling waits for it.
    pub const RESULT_PENDING: &str = "ResultPending";
    /// A result cannot be stored (for example a key that is not a valid Secret key).
    pub const RESULT_INVALID: &str = "ResultInvalid";
    /// An apparatus call failed.
    pub const APPARATUS_FAILED: &str = "ApparatusFailed";
    /// The apparatus pod did not become ready: the pod's own reason is in the message (image
    /// pull failure, crash loop, OOM, unschedulable) or it did not get ready in time.
    pub const APPARATUS_NOT_READY: &str = "ApparatusNotReady";
    /// The owner's ServiceAccount may not create its apparatus pod.
    pub const APPARATUS_FORBIDDEN: &str = "ApparatusForbidden";
    /// `spec.apparatus` cannot run as a pod (no port named `container`, invalid pod, bad
    /// endpoint path).
    pub const APPARATUS_INVALID: &str = "ApparatusInvalid";
    /// The operator's egress policy refused an address an apparatus endpoint or a component's
    /// `host.send` would reach.
    pub const EGRESS_DENIED: &str = "EgressDenied";
    /// Decoupling failed; the finalizer stays until it succeeds or is forced.
    pub const DECOUPLE_FAILED: &str = "DecoupleFailed";
    /// The Plug or Socket is being deleted.
    pub const DELETING: &str = "Deleting";
    /// A template in the spec cannot be rendered.
    pub const TEMPLATE_INVALID: &str = "TemplateInvalid";
    /// A templated resource is invalid (bad YAML, missing kind or name, wrong namespace).
    pub const RESOURCE_INVALID: &str = "ResourceInvalid";
    /// A var's object reference or field path is invalid.
    pub const VAR_INVALID: &str = "VarInvalid";
    /// The object a var reads does not exist yet; the coupling waits for it.
    pub const VAR_PENDING: &str = "VarPending";
    /// A config hook or source answers differently to the same inputs.
    pub const CONFIG_FLAPPING: &str = "ConfigFlapping";
    /// The owner's ServiceAccount may not read or write an object it needs to (RBAC).
    pub const RESOURCE_FORBIDDEN: &str = "ResourceForbidden";
    /// Server-side apply of an object conflicts with fields another field manager owns.
    pub const RESOURCE_CONFLICT: &str = "ResourceConflict";
    /// An object of the same name exists that plugboard did not create for this owner.
    pub const RESOURCE_NOT_OWNED: &str = "ResourceNotOwned";
    /// The API server does not serve a kind named in the spec (a typo, or a CRD not installed).
    pub const UNKNOWN_KIND: &str = "UnknownKind";
    /// Reading or acting on an object failed for another reason.
    pub const RESOURCE_FAILED: &str = "ResourceFailed";
    /// The Socket a Plug names reports a failure of its own.
    pub const SOCKET_NOT_READY: &str = "SocketNotReady";
    /// The Socket is set up and admits Plugs.
    pub const SOCKET_READY: &str = "SocketReady";
    /// The spec cannot be acted on as written; the message says which field to fix.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A DeferredResource waits for its delay to pass or for the objects it waits for.
    pub const WAITING: &str = "Waiting";
    /// A DeferredResource's object exists (it created it, or found it already there).
    pub const RESOURCE_CREATED: &str = "ResourceCreated";
    /// A forced decouple completed and its `plugboard.dev/force-decouple` annotation was
    /// removed (Event reason).
    pub const FORCE_DECOUPLE_CLEARED: &str = "ForceDecoupleCleared";
    /// The owner's ServiceAccount has not opted in to being acted as by plugboard (or does not
    /// exist).
    pub const SERVICE_ACCOUNT_NOT_ALLOWED: &str = "ServiceAccountNotAllowed";
}

/// A condition as a reconcile wants it, before timestamps are assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type (one of [`types`]).
    pub type_: &'static str,
    /// Whether the condition holds.
    pub status: bool,
    /// CamelCase reason (one of [`reasons`] or an error category).
    pub reason: &'static str,
    /// Human-readable message saying what happened and, for failures, what to fix.
    pub message: String,
}

impl DesiredCondition {
    /// A condition that holds.
    pub fn holds(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn fails(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Builds the condition list to write: exactly the desired conditions, in the given order, each
/// keeping its previous `lastTransitionTime` when its status did not change.
pub fn merge_conditions(
    current: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|want| {
            let status = status_str(want.status);
            let last_transition_time = current
                .iter()
                .find(|c| c.type_ == want.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: want.type_.to_owned(),
                status: status.to_owned(),
                reason: want.reason.to_owned(),
                message: want.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of a given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn new_condition_gets_now() {
        let merged = merge_conditions(
            &[],
            &[DesiredCondition::holds(
                types::READY,
                reasons::COUPLING_SUCCEEDED,
                "ok",
            )],
            Some(3),
            &at(100),
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].status, "True");
        assert_eq!(merged[0].reason, "CouplingSucceeded");
        assert_eq!(merged[0].observed_generation, Some(3));
        assert_eq!(merged[0].last_transition_time, at(100));
    }

    #[test]
    fn unchanged_status_keeps_transition_time_but_takes_new_reason() {
        let first = merge_conditions(
            &[],
            &[DesiredCondition::fails(
                types::COUPLED,
                reasons::PLUG_CREATED,
                "created",
            )],
            Some(1),
            &at(100),
        );
        let second = merge_conditions(
            &first,
            &[DesiredCondition::fails(
                types::COUPLED,
                reasons::COUPLING_IN_PROCESS,
                "coupling",
            )],
            Some(2),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "CouplingInProcess");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = merge_conditions(
            &[],
            &[DesiredCondition::fails(
                types::READY,
                reasons::COUPLING_IN_PROCESS,
                "",
            )],
            None,
            &at(100),
        );
        let second = merge_conditions(
            &first,
            &[DesiredCondition::holds(
                types::READY,
                reasons::COUPLING_SUCCEEDED,
                "",
            )],
            None,
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(200));
    }

    #[test]
    fn conditions_no_longer_desired_are_dropped() {
        let first = merge_conditions(
            &[],
            &[
                DesiredCondition::holds(types::READY, reasons::COUPLING_SUCCEEDED, ""),
                DesiredCondition::holds(types::RECONCILING, reasons::UPDATING_IN_PROCESS, ""),
            ],
            None,
            &at(100),
        );
        let second = merge_conditions(
            &first,
            &[DesiredCondition::holds(
                types::READY,
                reasons::COUPLING_SUCCEEDED,
                "",
            )],
            None,
            &at(200),
        );
        assert_eq!(second.len(), 1);
        assert!(find(&second, types::RECONCILING).is_none());
    }
}
