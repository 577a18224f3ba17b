//! Impersonation opt-in: plugboard acts as a ServiceAccount only when that ServiceAccount
//! carries the label [`IMPERSONATION_LABEL`]`=`[`IMPERSONATION_ALLOWED`].
//!
//! Without it, whoever may create a Plug, Socket or DeferredResource in a namespace could make
//! plugboard act as any ServiceAccount there (`default` included) — with every right granted to
//! it, for whatever other workload it serves. With it, creating those objects is exactly as
//! strong as the ServiceAccounts that opted in, and a namespace's owner decides which ones.
//!
//! Why a label, not an annotation or a grant object:
//! - The operator watches only the ServiceAccounts that opted in (a label selector, metadata
//!   only), so its cache holds a handful of names rather than every ServiceAccount of the
//!   cluster, and `kubectl get sa -A -l plugboard.dev/impersonation=allowed` audits who opted in.
//! - Setting it needs `patch` on that very ServiceAccount, which is a right over the
//!   ServiceAccount itself; a grant object would be a new kind whose RBAC every cluster must get
//!   right as well.
//!
//! How it is enforced: [`Context::impersonate`](super::Context) — the only way a client acting
//! as a ServiceAccount is made — checks the opt-in on every call, against the watch cache (an
//! opted-in ServiceAccount) and, when the cache does not list it, the API server (so a cache
//! that has not listed everything yet, or lags, never refuses wrongly). Revoking takes effect
//! at the next check: the watch removes the ServiceAccount from the cache first, then wakes the
//! Plugs, Sockets and DeferredResources that use it. Reconciles also check up front, before any
//! hook runs, so that an apparatus is not called for a coupling that cannot complete.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::crd::conditions::reasons;

/// Label a ServiceAccount carries to let plugboard act as it.
pub const IMPERSONATION_LABEL: &str = "plugboard.dev/impersonation";
/// The value of [`IMPERSONATION_LABEL`] that opts in (any other value does not).
pub const IMPERSONATION_ALLOWED: &str = "allowed";

/// The label selector of the ServiceAccounts that opted in.
pub(crate) fn selector() -> String {
    format!("{IMPERSONATION_LABEL}={IMPERSONATION_ALLOWED}")
}

/// The opted-in ServiceAccounts, as the operator's watch last saw them.
pub(crate) type OptIns = Store<PartialObjectMeta<ServiceAccount>>;

/// Why plugboard will not, or could not, act as a ServiceAccount.
#[derive(Debug, thiserror::Error)]
pub enum ImpersonationError {
    /// The ServiceAccount has not opted in, or does not exist.
    #[error(
        "ServiceAccount {namespace}/{name} {}; plugboard acts only as ServiceAccounts labelled {IMPERSONATION_LABEL}={IMPERSONATION_ALLOWED}, and reads and writes nothing as this one until then: kubectl label serviceaccount {name} -n {namespace} {IMPERSONATION_LABEL}={IMPERSONATION_ALLOWED} (whoever may create Plugs, Sockets or DeferredResources in {namespace} can then act with its rights)",
        if *exists { "has not opted in" } else { "does not exist" }
    )]
    NotAllowed {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Whether it exists at all.
        exists: bool,
    },
    /// The ServiceAccount could not be read to check its opt-in.
    #[error("failed to read ServiceAccount {namespace}/{name} to check its opt-in")]
    Check {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
    /// A client acting as the ServiceAccount could not be built.
    #[error("failed to set up a client acting as ServiceAccount {namespace}/{name}")]
    Client {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
}

impl ImpersonationError {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ImpersonationError::NotAllowed { .. } => reasons::SERVICE_ACCOUNT_NOT_ALLOWED,
            ImpersonationError::Check { .. } | ImpersonationError::Client { .. } => {
                "ReconcileError"
            }
        }
    }

    /// Whether the ServiceAccount has not opted in (as opposed to a failure to find out).
    pub fn is_not_allowed(&self) -> bool {
        matches!(self, ImpersonationError::NotAllowed { .. })
    }
}

/// Whether `meta` carries the opt-in label.
pub(crate) fn opted_in(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(IMPERSONATION_LABEL))
        .is_some_and(|v| v == IMPERSONATION_ALLOWED)
}

/// Checks that ServiceAccount `namespace/name` opted in: first in `cache` (when there is one),
/// then, when the cache does not list it, on the API server with `client`. With `lenient`
/// (planning as a user who may not read ServiceAccounts), a refused read counts as opted in.
pub(crate) async fn check(
    cache: Option<&OptIns>,
    client: &Client,
    namespace: &str,
    name: &str,
    lenient: bool,
) -> Result<(), ImpersonationError> {
    if let Some(cache) = cache
        && cache
            .get(&ObjectRef::new(name).within(namespace))
            .is_some_and(|sa| opted_in(&sa.metadata))
    {
        return Ok(());
    }
    // Not listed: not opted in, or the watch has not seen it yet. Ask the API server, so a
    // refusal is always the API server's word.
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    match api.get_metadata_opt(name).await {
        Ok(Some(sa)) if opted_in(&sa.metadata) => Ok(()),
        Ok(found) => Err(ImpersonationError::NotAllowed {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            exists: found.is_some(),
        }),
        Err(kube::Error::Api(status)) if lenient && status.code == 403 => {
            tracing::debug!(
                namespace,
                name,
                "may not read the ServiceAccount; its opt-in is not checked in this plan"
            );
            Ok(())
        }
        Err(source) => Err(ImpersonationError::Check {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_label_value_opts_in() {
        let meta = |value: Option<&str>| kube::api::ObjectMeta {
            labels: value.map(|v| [(IMPERSONATION_LABEL.to_owned(), v.to_owned())].into()),
            ..Default::default()
        };
        assert!(opted_in(&meta(Some("allowed"))));
        assert!(!opted_in(&meta(Some("true"))));
        assert!(!opted_in(&meta(Some(""))));
        assert!(!opted_in(&meta(None)));
        assert_eq!(selector(), "plugboard.dev/impersonation=allowed");
    }

    #[test]
    fn the_refusal_names_the_service_account_and_the_label_to_add() {
        let error = ImpersonationError::NotAllowed {
            namespace: "team".into(),
            name: "builder".into(),
            exists: true,
        };
        let message = error.to_string();
        assert!(message.contains("ServiceAccount team/builder has not opted in"));
        assert!(message.contains(
            "kubectl label serviceaccount builder -n team plugboard.dev/impersonation=allowed"
        ));
        assert_eq!(error.reason(), "ServiceAccountNotAllowed");
        // `plugboard plan` falls back to planning as the caller on messages about
        // impersonation rights; a missing opt-in must not look like one.
        assert!(!message.contains("impersonate"));
        let missing = ImpersonationError::NotAllowed {
            namespace: "team".into(),
            name: "gone".into(),
            exists: false,
        };
        assert!(
            missing
                .to_string()
                .contains("ServiceAccount team/gone does not exist")
        );
    }
}
