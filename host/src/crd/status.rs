//! Status types written by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to the other end of a coupling, pinned by UID so a re-created object with the
/// same name is recognised as a different one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoupledObjectRef {
    /// apiVersion of the object.
    pub api_version: String,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace of the object.
    pub namespace: String,
    /// UID of the object.
    pub uid: String,
}

/// Where a coupling's results are kept. Results may come from Secrets, so they are stored in a
/// Secret owned by the Plug rather than in status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultRef {
    /// Name of the Secret, in the Plug's namespace, holding the validated results under the keys
    /// `plug.<key>` and `socket.<key>`.
    pub secret_name: String,
    /// Checksum of the stored results, so the Secret is rewritten only when they change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The WebAssembly component a side's hooks run in, as resolved by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApparatusStatus {
    /// The OCI reference as written in the spec.
    pub image: String,
    /// The digest (`sha256:…`) the reference resolved to and that the hooks ran in.
    pub digest: String,
}

/// Status of a Plug.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlugStatus {
    /// The generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Coupled` (its reason is the lifecycle phase), and `Reconciling` / `Stalled`
    /// while they hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Plug's `created` hooks have run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// The Socket this Plug is coupled to (its `coupled` hooks have run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupled_socket: Option<CoupledObjectRef>,
    /// The Socket whose `coupled` hooks are running (recorded before they start, cleared once
    /// they finished or failed). The Socket's deletion waits for it as for a coupled Plug, so
    /// its `deleted` hook never runs in the middle of a coupling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupling_socket: Option<CoupledObjectRef>,
    /// Checksum of the coupling inputs the `coupled` or `updated` hooks last ran with. `updated`
    /// hooks run when the inputs' checksum differs from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupling_checksum: Option<String>,
    /// Where the coupling's results are kept; none while there are no results (then there is
    /// no result Secret either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultRef>,
    /// Checksum of the results the result resources were last applied with (also when there
    /// are none), so they are applied again only when the results change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_checksum: Option<String>,
    /// The resolved WebAssembly component of this Plug's apparatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparatus: Option<ApparatusStatus>,
}

/// Status of a Socket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketStatus {
    /// The generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Coupled` (its reason is the lifecycle phase), and `Reconciling` / `Stalled`
    /// while they hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Socket's `created` hooks have run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// The Plugs coupled to this Socket, once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["uid".into()]))]
    pub coupled_plugs: Vec<CoupledObjectRef>,
    /// Number of coupled Plugs (shown by `kubectl get sockets`).
    #[serde(default)]
    pub coupled_plug_count: i32,
    /// The resolved WebAssembly component of this Socket's apparatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparatus: Option<ApparatusStatus>,
}
