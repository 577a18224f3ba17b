//! The `Plug` resource: an application's request to couple to a Socket.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::SideSpec;
use super::status::PlugStatus;

/// A Plug couples an application to a [`Socket`](super::Socket): it names the Socket, gives
/// config to it, receives config and results from it, and runs its own hooks and resources at
/// each lifecycle point.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "plugboard.dev",
    version = "v1alpha1",
    kind = "Plug",
    namespaced,
    status = "PlugStatus",
    shortname = "plug",
    category = "plugboard",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn = r#"{"name": "Socket", "type": "string", "jsonPath": ".spec.socket.name", "description": "The Socket this Plug couples to"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the Plug is coupled with results"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Coupled\")].reason", "description": "Lifecycle phase"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PlugSpec {
    /// The Socket to couple to.
    pub socket: SocketRef,
    /// What this Plug declares about itself.
    #[serde(flatten)]
    pub side: SideSpec,
}

/// A reference to a Socket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketRef {
    /// Name of the Socket.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the Socket; defaults to the Plug's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
