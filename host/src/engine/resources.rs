//! Templated Kubernetes objects (`resources`, `resultResources`): what to apply, delete or
//! recreate at a lifecycle point, rendered and checked, as plain values. Acting on a plan is
//! the controller's job (`controller::objects`).

use serde_json::Value;

/// Label naming the UID of the Plug or Socket an object was created for. plugboard deletes or
/// re-applies only objects that carry the UID of the owner acting on them.
pub const OWNER_UID_LABEL: &str = "plugboard.dev/owner-uid";
/// Label naming the coupling (a stable hash of the Plug and Socket UIDs) an object was created
/// for, when it was created at a coupling lifecycle point.
pub const COUPLING_LABEL: &str = "plugboard.dev/coupling";
/// Annotation naming the owner as `<Kind> <namespace>/<name>`, for people.
pub const OWNER_ANNOTATION: &str = "plugboard.dev/owner";
/// The standard label saying which tool manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "plugboard";

/// The Plug or Socket a templated object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOwner {
    /// `plugboard.dev/v1alpha1`.
    pub api_version: String,
    /// `Plug` or `Socket`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace; every templated object lives there.
    pub namespace: String,
    /// Its UID.
    pub uid: String,
    /// The ServiceAccount (in `namespace`) every read and write is made as.
    pub service_account: String,
}

/// A rendered object, checked and labelled, ready to act on.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedObject {
    /// `apiVersion` of the object.
    pub api_version: String,
    /// `kind` of the object.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (always the owner's).
    pub namespace: String,
    /// The whole object, with the owner's labels, annotation and ownerReference added.
    pub object: Value,
    /// Where it came from, for messages: e.g. `spec.resources[1].stringTemplates[0] (document 2)`.
    pub origin: String,
}

/// One thing to do to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceStep {
    /// Server-side apply (field manager `plugboard`, no force).
    Apply(PlannedObject),
    /// Delete (background propagation); a missing object is fine.
    Delete(PlannedObject),
    /// Delete, wait until the object is gone, then apply.
    Recreate(PlannedObject),
}

impl ResourceStep {
    /// The object acted on.
    pub fn object(&self) -> &PlannedObject {
        match self {
            ResourceStep::Apply(o) | ResourceStep::Delete(o) | ResourceStep::Recreate(o) => o,
        }
    }
}
