//! The `Socket` resource: what an application offers to Plugs.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::SideSpec;
use super::status::SocketStatus;

/// A Socket is what an application offers: Plugs couple to it, it validates their config
/// against its interface, and both sides run hooks and resources at each lifecycle point.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "plugboard.dev",
    version = "v1alpha1",
    kind = "Socket",
    namespaced,
    status = "SocketStatus",
    shortname = "sock",
    category = "plugboard",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn = r#"{"name": "Plugs", "type": "integer", "jsonPath": ".status.coupledPlugCount", "description": "Coupled Plugs"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the Socket is serving"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Coupled\")].reason", "description": "Lifecycle phase"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SocketSpec {
    /// What this Socket declares about itself.
    #[serde(flatten)]
    pub side: SideSpec,
    /// The config and result keys each side must or may provide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
    /// Which Plugs may couple. Without it, only Plugs in the Socket's own namespace may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<CouplingPolicy>,
    /// Maximum number of coupled Plugs. Accepted for compatibility; not enforced yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub limit: Option<i32>,
}

/// The config and result keys each side of a coupling must or may provide.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Keys of the config each side gives the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<InterfaceSides>,
    /// Keys of the result each side publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<InterfaceSides>,
}

/// Properties expected from each side.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceSides {
    /// Properties the Plug provides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plug: Option<BTreeMap<String, InterfaceProperty>>,
    /// Properties the Socket provides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<BTreeMap<String, InterfaceProperty>>,
}

/// One expected property.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceProperty {
    /// Value used when the side does not provide one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// What the property means, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The side must provide a non-empty value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// Which Plugs may couple to a Socket. Plugs in the Socket's own namespace may unless denied;
/// others only when `allow` admits their namespace. `deny` wins over everything.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouplingPolicy {
    /// Namespaces, besides the Socket's own, whose Plugs may couple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<NamespaceMatch>,
    /// Namespaces whose Plugs may not couple, whatever `allow` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<NamespaceMatch>,
}

/// A set of namespaces: those matching the label selector or any of the name patterns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceMatch {
    /// Namespaces whose labels match this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Regular expressions matched against the whole namespace name (anchored at both ends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}
