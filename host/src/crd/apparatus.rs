//! `spec.apparatus`: where a side's lifecycle hooks run. Exactly one of two forms:
//!
//! - the **HTTP** form (`endpoint`, `containers`, `idleTimeout` and the pod fields): the wire
//!   protocol of the reference implementation, served by an external endpoint or by a pod the
//!   operator starts on demand;
//! - the **wasm** form: a WebAssembly component pulled from an OCI registry and run in-process.
//!
//! The API server enforces the one-of with CEL rules; [`ApparatusSpec::kind`] gives code the
//! same view as an enum.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, LocalObjectReference, PodSecurityContext, Toleration,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Seconds an idle apparatus pod lives when `idleTimeout` is not set.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u32 = 60;

/// Where a side's hooks run. Exactly one of the HTTP form and `wasm`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.wasm) || !(has(self.endpoint) || has(self.containers) || has(self.idleTimeout) || has(self.nodeSelector) || has(self.tolerations) || has(self.affinity) || has(self.securityContext) || has(self.imagePullSecrets))").message("apparatus takes either the HTTP form (endpoint, containers and pod fields) or wasm, not both"),
    validation = Rule::new("has(self.wasm) || has(self.endpoint) || has(self.containers)").message("apparatus needs an endpoint or containers (HTTP form), or wasm"),
    validation = Rule::new("has(self.containers) || !(has(self.idleTimeout) || has(self.nodeSelector) || has(self.tolerations) || has(self.affinity) || has(self.securityContext) || has(self.imagePullSecrets))").message("idleTimeout, nodeSelector, tolerations, affinity, securityContext and imagePullSecrets configure the apparatus pod and need containers"),
)]
pub struct ApparatusSpec {
    /// HTTP form: base URL of the apparatus (`http://host:port/prefix`), or, when `containers` is
    /// set, a path prefix on the apparatus pod (`/hooks`: calls go to `/hooks/<hook>` at the
    /// pod's IP and its port named `container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// HTTP form: containers of a pod the operator starts when a hook needs it (as this object's
    /// ServiceAccount, which must be allowed to create pods) and deletes after `idleTimeout`
    /// seconds without calls. One container must expose a port named `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub containers: Option<Vec<Container>>,
    /// HTTP form: seconds the apparatus pod may stay idle before it is deleted (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub idle_timeout: Option<u32>,
    /// HTTP form: node selector of the apparatus pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// HTTP form: tolerations of the apparatus pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// HTTP form: affinity of the apparatus pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// HTTP form: pod-level security context of the apparatus pod. When unset: `runAsNonRoot` and
    /// the `RuntimeDefault` seccomp profile (and, for containers without their own, no
    /// privilege escalation and no capabilities); set `{}` to opt out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// HTTP form: pull secrets for the apparatus pod's images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// WebAssembly form: a component pulled from an OCI registry and run in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmApparatus>,
}

/// The two forms of an apparatus, as code sees them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ApparatusKind<'a> {
    /// Hooks are served over HTTP (external endpoint or on-demand pod).
    Http(&'a ApparatusSpec),
    /// Hooks run in a WebAssembly component.
    Wasm(&'a WasmApparatus),
}

/// An apparatus spec that names neither or both forms. The API server rejects these; the
/// operator still refuses them itself for objects stored before the rules existed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApparatusFormError {
    /// Both the HTTP form and `wasm` are set.
    #[error(
        "apparatus takes either the HTTP form (endpoint, containers and pod fields) or wasm, not both"
    )]
    Both,
    /// Neither form is set.
    #[error("apparatus needs an endpoint or containers (HTTP form), or wasm")]
    Neither,
}

impl ApparatusSpec {
    fn has_http_fields(&self) -> bool {
        self.endpoint.is_some()
            || self.containers.is_some()
            || self.idle_timeout.is_some()
            || self.node_selector.is_some()
            || self.tolerations.is_some()
            || self.affinity.is_some()
            || self.security_context.is_some()
            || self.image_pull_secrets.is_some()
    }

    /// Which form this apparatus takes.
    pub fn kind(&self) -> Result<ApparatusKind<'_>, ApparatusFormError> {
        match (&self.wasm, self.has_http_fields()) {
            (Some(_), true) => Err(ApparatusFormError::Both),
            (Some(wasm), false) => Ok(ApparatusKind::Wasm(wasm)),
            (None, true) if self.endpoint.is_some() || self.containers.is_some() => {
                Ok(ApparatusKind::Http(self))
            }
            (None, _) => Err(ApparatusFormError::Neither),
        }
    }

    /// Idle lifetime of the apparatus pod, with the default applied.
    pub fn idle_timeout_seconds(&self) -> u32 {
        self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECONDS)
    }
}

/// A WebAssembly component apparatus.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmApparatus {
    /// OCI reference of the component: `registry/repository:tag`, `registry/repository@sha256:…`
    /// or both. Pinning a digest is recommended; a tag is resolved to a digest, which is shown
    /// in status.
    #[schemars(length(min = 1), regex(pattern = r"^[^\s@]+(@sha256:[a-f0-9]{64})?$"))]
    pub image: String,
    /// Secrets of type `kubernetes.io/dockerconfigjson` in this object's namespace used to pull
    /// the component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<LocalObjectReference>,
    /// Limits of each hook call. They may lower the operator's defaults, never raise its bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<WasmLimits>,
    /// Hosts (`host` or `host:port`) the component may send HTTP requests to. An entry without
    /// a port allows only the scheme's default port (443 for https, 80 for http). The operator's
    /// egress policy applies on top (loopback, link-local and the API server are refused by
    /// default). Empty means no network access at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
}

/// Limits of each call into a WebAssembly component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmLimits {
    /// Wall-clock deadline of one hook call, e.g. `500ms`, `5s`, `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub timeout: Option<String>,
    /// Memory cap of one hook call, e.g. `64Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]*(Ki|Mi|Gi)?$"))]
    pub memory: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm() -> WasmApparatus {
        WasmApparatus {
            image: "registry.example/hooks:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn endpoint_alone_is_http() {
        let spec = ApparatusSpec {
            endpoint: Some("http://hooks".into()),
            ..Default::default()
        };
        assert!(matches!(spec.kind(), Ok(ApparatusKind::Http(_))));
    }

    #[test]
    fn wasm_alone_is_wasm() {
        let spec = ApparatusSpec {
            wasm: Some(wasm()),
            ..Default::default()
        };
        assert!(
            matches!(spec.kind(), Ok(ApparatusKind::Wasm(w)) if w.image == "registry.example/hooks:1")
        );
    }

    #[test]
    fn both_forms_are_refused() {
        let spec = ApparatusSpec {
            idle_timeout: Some(5),
            wasm: Some(wasm()),
            ..Default::default()
        };
        assert_eq!(spec.kind(), Err(ApparatusFormError::Both));
    }

    #[test]
    fn pod_fields_without_endpoint_or_containers_are_refused() {
        let spec = ApparatusSpec {
            idle_timeout: Some(5),
            ..Default::default()
        };
        assert_eq!(spec.kind(), Err(ApparatusFormError::Neither));
        assert_eq!(
            ApparatusSpec::default().kind(),
            Err(ApparatusFormError::Neither)
        );
    }

    #[test]
    fn idle_timeout_defaults_to_sixty_seconds() {
        assert_eq!(ApparatusSpec::default().idle_timeout_seconds(), 60);
    }
}
