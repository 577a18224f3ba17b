//! Spec types shared by [`Plug`](super::Plug) and [`Socket`](super::Socket): the fields each end of
//! a coupling declares about itself (its data, config, result, vars, templated resources and
//! apparatus).

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::apparatus::ApparatusSpec;
use super::schema;

/// What each end of a coupling declares about itself. Flattened into both `PlugSpec` and
/// `SocketSpec`, so the fields appear directly under `spec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SideSpec {
    /// Values read from other Kubernetes objects before config is computed; visible to config
    /// templates and to the apparatus `config` hook as `vars.<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<Var>,
    /// Values read from other Kubernetes objects when results are computed; visible to result
    /// templates as `resultVars.<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result_vars: Vec<Var>,

    /// Inline data: values this side offers to templates and apparatuses but that are not part of
    /// the interface.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// ConfigMap in this object's namespace whose `data` is merged over `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_config_map_name: Option<String>,
    /// Secret in this object's namespace whose values are merged under `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,

    /// Inline config this side gives the other side of the coupling.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// ConfigMap in this object's namespace whose `data` is merged into the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_config_map_name: Option<String>,
    /// Secret in this object's namespace whose values are merged into the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_secret_name: Option<String>,
    /// Config keys whose values are Jinja templates rendered when the config is computed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_template: BTreeMap<String, String>,

    /// Inline result this side publishes once coupled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub result: BTreeMap<String, String>,
    /// ConfigMap in this object's namespace whose `data` is merged into the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_config_map_name: Option<String>,
    /// Secret in this object's namespace whose values are merged into the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_secret_name: Option<String>,
    /// Result keys whose values are Jinja templates rendered when results are computed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub result_template: BTreeMap<String, String>,

    /// ServiceAccount (in this object's namespace) whose permissions are used for everything
    /// done on this side's behalf: reading sources and vars, applying resources, running
    /// apparatus pods.
    #[serde(default = "default_service_account_name")]
    #[schemars(length(min = 1))]
    pub service_account_name: String,

    /// Where this side's lifecycle hooks run: an HTTP apparatus or a WebAssembly component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparatus: Option<ApparatusSpec>,

    /// Kubernetes objects templated and acted on at lifecycle points, in this object's
    /// namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    /// Kubernetes objects templated and applied each time results are computed, in this
    /// object's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result_resources: Vec<ResultResource>,

    /// Free-form value. Changing it counts as a change of this side's inputs, so it forces an
    /// `updated` cycle without changing anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// The ServiceAccount used when `serviceAccountName` is not set.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

fn default_service_account_name() -> String {
    DEFAULT_SERVICE_ACCOUNT.to_owned()
}

impl SideSpec {
    /// The templated sources (config and result templates, vars) this side uses.
    pub fn template_sources(&self) -> Vec<&'static str> {
        let mut used = Vec::new();
        if !self.config_template.is_empty() {
            used.push("configTemplate");
        }
        if !self.result_template.is_empty() {
            used.push("resultTemplate");
        }
        if !self.vars.is_empty() {
            used.push("vars");
        }
        if !self.result_vars.is_empty() {
            used.push("resultVars");
        }
        used
    }
}

/// A value read from a field of another Kubernetes object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Var {
    /// Key under which the value is visible (`vars.<name>` / `resultVars.<name>`).
    #[schemars(length(min = 1))]
    pub name: String,
    /// The object to read.
    pub objref: VarObjectRef,
    /// The field of that object to read.
    pub fieldref: VarFieldRef,
}

/// The object a [`Var`] reads. It must live in the owner's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) || has(self.templateName)").message("objref needs name or templateName"))]
pub struct VarObjectRef {
    /// apiVersion of the object, e.g. `v1` or `apps/v1`.
    #[schemars(length(min = 1))]
    pub api_version: String,
    /// Kind of the object, e.g. `Secret`.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the object; defaults to the owner's namespace, and must equal it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Template rendering the object's name; overrides `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// Template rendering the object's namespace; overrides `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_namespace: Option<String>,
}

/// The field a [`Var`] reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VarFieldRef {
    /// Path of the field in the object's JSON, e.g. `spec.replicas` or `data.password`.
    #[schemars(length(min = 1))]
    pub field_path: String,
}

/// What to do with a templated resource.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceAction {
    /// Server-side apply the rendered object.
    #[default]
    Apply,
    /// Delete the rendered object; a missing object is fine.
    Delete,
    /// Delete the rendered object, then apply it again.
    Recreate,
}

/// A point in the coupling lifecycle at which hooks and resources run.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LifecyclePoint {
    /// The Plug or Socket was first seen.
    Created,
    /// A Plug coupled to a Socket.
    Coupled,
    /// The inputs of a coupling changed.
    Updated,
    /// A Plug decoupled from a Socket.
    Decoupled,
    /// The Plug or Socket is being deleted.
    Deleted,
}

impl LifecyclePoint {
    /// Every lifecycle point, in lifecycle order.
    pub const ALL: [LifecyclePoint; 5] = [
        LifecyclePoint::Created,
        LifecyclePoint::Coupled,
        LifecyclePoint::Updated,
        LifecyclePoint::Decoupled,
        LifecyclePoint::Deleted,
    ];

    /// The lowercase name used in specs, hook paths and Event messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecyclePoint::Created => "created",
            LifecyclePoint::Coupled => "coupled",
            LifecyclePoint::Updated => "updated",
            LifecyclePoint::Decoupled => "decoupled",
            LifecyclePoint::Deleted => "deleted",
        }
    }
}

/// A templated Kubernetes object acted on at chosen lifecycle points.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(schema::HAS_TEMPLATE_RULE).message(schema::HAS_TEMPLATE_MESSAGE))]
pub struct Resource {
    /// What to do with the rendered object. Defaults to `apply`.
    #[serde(default, rename = "do")]
    pub action: ResourceAction,
    /// One object whose string values may contain template expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub template: Option<serde_json::Value>,
    /// Several objects whose string values may contain template expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::free_form_object_list")]
    pub templates: Vec<serde_json::Value>,
    /// One object as a template text that renders to YAML or JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_template: Option<String>,
    /// Several objects as template texts that render to YAML or JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub string_templates: Vec<String>,
    /// Lifecycle points at which the action runs. A resource without any never runs, but is
    /// still deleted at decouple unless `retainWhenDecoupled` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<LifecyclePoint>,
    /// Keep the object when the coupling ends instead of deleting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retain_when_decoupled: bool,
}

/// A templated Kubernetes object applied each time results are computed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(schema::HAS_TEMPLATE_RULE).message(schema::HAS_TEMPLATE_MESSAGE))]
pub struct ResultResource {
    /// What to do with the rendered object. Defaults to `apply`.
    #[serde(default, rename = "do")]
    pub action: ResourceAction,
    /// One object whose string values may contain template expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub template: Option<serde_json::Value>,
    /// Several objects whose string values may contain template expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::free_form_object_list")]
    pub templates: Vec<serde_json::Value>,
    /// One object as a template text that renders to YAML or JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_template: Option<String>,
    /// Several objects as template texts that render to YAML or JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub string_templates: Vec<String>,
}
