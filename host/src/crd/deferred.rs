//! The `DeferredResource` resource: a Kubernetes object created later — after a delay, and once
//! named objects exist — to order dependent creations (reference section 10).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;
use super::shared::DEFAULT_SERVICE_ACCOUNT;

/// A DeferredResource creates `resource` in its own namespace once `timeout` seconds have passed
/// since the DeferredResource was created and every object in `waitFor` exists.
///
/// It creates the object once: when an object of that name already exists (created by it
/// earlier, or by anyone else), it is recorded and left as it is, never updated; later edits of
/// `resource` are not applied. The object carries an ownerReference to the DeferredResource and
/// is deleted with it, unless plugboard did not create it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "plugboard.dev",
    version = "v1alpha1",
    kind = "DeferredResource",
    namespaced,
    status = "DeferredResourceStatus",
    shortname = "dr",
    category = "plugboard",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the object exists"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason", "description": "Waiting, ResourceCreated, or what went wrong"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeferredResourceSpec {
    /// Minimum delay in seconds, counted from the DeferredResource's creation, before the object
    /// is created. Despite its name (kept from the original project) it is not a maximum wait:
    /// there is no giving up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub timeout: Option<i64>,
    /// Objects in the DeferredResource's namespace that must exist before the object is
    /// created. Checked every few seconds, as the DeferredResource's ServiceAccount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wait_for: Vec<WaitFor>,
    /// The object to create (apiVersion, kind and metadata.name are required). It is created in
    /// the DeferredResource's namespace; naming another namespace is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub resource: Option<serde_json::Value>,
    /// ServiceAccount (in this namespace) whose permissions are used to read the `waitFor`
    /// objects and to create and delete the object.
    #[serde(default = "default_service_account_name")]
    #[schemars(length(min = 1))]
    pub service_account_name: String,
}

fn default_service_account_name() -> String {
    DEFAULT_SERVICE_ACCOUNT.to_owned()
}

/// An object a DeferredResource waits for, in its namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitFor {
    /// apiVersion of the object (`v1`, `apps/v1`). When unset, `group` and `version` are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// API group of the object (empty for the core group); used when `apiVersion` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// API version of the object; used when `apiVersion` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind of the object.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the object.
    #[schemars(length(min = 1))]
    pub name: String,
}

impl WaitFor {
    /// The apiVersion: `apiVersion`, else `group/version`, else `version`. `None` when none
    /// is set.
    pub fn resolved_api_version(&self) -> Option<String> {
        let set = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        if let Some(api_version) = set(&self.api_version) {
            return Some(api_version);
        }
        let version = set(&self.version)?;
        Some(match set(&self.group) {
            Some(group) => format!("{group}/{version}"),
            None => version,
        })
    }
}

/// The object a DeferredResource created or found, pinned by UID.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeferredObjectRef {
    /// apiVersion of the object.
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object (in the DeferredResource's namespace).
    pub name: String,
    /// UID of the object.
    pub uid: String,
    /// Whether this DeferredResource created it (and so deletes it when deleted). `false` when
    /// the object already existed.
    #[serde(default)]
    pub created: bool,
}

/// Status of a DeferredResource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeferredResourceStatus {
    /// The generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the object exists), `Reconciling` while waiting, `Stalled` when the spec or
    /// permissions must be fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The object, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<DeferredObjectRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(api_version: Option<&str>, group: Option<&str>, version: Option<&str>) -> WaitFor {
        WaitFor {
            api_version: api_version.map(str::to_owned),
            group: group.map(str::to_owned),
            version: version.map(str::to_owned),
            kind: "ConfigMap".into(),
            name: "x".into(),
        }
    }

    #[test]
    fn wait_for_api_version_is_resolved_like_the_reference() {
        assert_eq!(
            wait(Some("apps/v1"), Some("ignored"), Some("v2")).resolved_api_version(),
            Some("apps/v1".into())
        );
        assert_eq!(
            wait(None, Some("apps"), Some("v1")).resolved_api_version(),
            Some("apps/v1".into())
        );
        assert_eq!(
            wait(Some(""), Some(""), Some("v1")).resolved_api_version(),
            Some("v1".into())
        );
        assert_eq!(wait(None, Some("apps"), None).resolved_api_version(), None);
    }

    #[test]
    fn an_empty_spec_deserializes_with_the_default_service_account() {
        let spec: DeferredResourceSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.service_account_name, "default");
        assert!(spec.resource.is_none() && spec.wait_for.is_empty() && spec.timeout.is_none());
    }
}
