//! Templated Kubernetes objects (`resources`, `resultResources`): what to apply, delete or
//! recreate at a lifecycle point, rendered and checked, as plain values. Acting on a plan is
//! the controller's job (`controller::objects`).
//!
//! # What is planned when
//!
//! [`plan_lifecycle`] plans a side's `spec.resources` at one lifecycle point (reference 4.8,
//! 8.2, 8.4):
//!
//! - every resource whose `when` lists the point, in list order, with its `do` (`apply` when
//!   unset, D-2): [`ResourceStep::Apply`], [`ResourceStep::Delete`] or [`ResourceStep::Recreate`];
//! - at `decoupled`, after those, the **auto-delete**: every resource whose `do` is not
//!   `delete`, whose `when` does not list `decoupled` and that is not `retainWhenDecoupled`
//!   becomes a [`ResourceStep::Delete`], rendered with the same context. That includes resources
//!   that only run at `created`, `updated` or `deleted` and resources without `when`, which never
//!   run but are still deleted here (D-3), even if they were never applied.
//!
//! [`plan_results`] plans a side's `spec.resultResources`: all of them, each with its `do`, no
//! `when`, never auto-deleted (reference 8.3).
//!
//! # Rendering
//!
//! The template strings of one resource are taken in the reference's order (8.1): `template`,
//! each of `templates`, `stringTemplate`, each of `stringTemplates`.
//!
//! - Object forms (`template`, `templates`) are **not** rendered as JSON text (a Jinja string
//!   literal would break on JSON's escaped quotes): every string value and every map key is
//!   rendered on its own, the structure and all non-string values are kept, and a rendered
//!   value stays a string. Strings without `{{`, `{%` or `{#` contain no template syntax and are
//!   kept exactly as written without calling the renderer. A `null` template is blank.
//! - String forms (`stringTemplate`, `stringTemplates`) are rendered as text and then parsed as
//!   YAML (JSON is YAML), **every document**, not only the first. Documents are numbered from 1
//!   in the rendered text; origins and errors name them, e.g.
//!   `spec.resources[1].stringTemplates[0] (document 2)`.
//! - Blank renders produce nothing and are not errors (D-4): a render that is only whitespace,
//!   and any document that is only `---`, comments or `null`.
//!
//! Rendering is a parameter (`render(field, source)`), so this module does not depend on the
//! template engine; `field` names the spec field being rendered, e.g.
//! `spec.resources[0].template.metadata.name` or `spec.resources[2].stringTemplate`.
//!
//! # Checks and ownership
//!
//! Every rendered object must have non-empty string `apiVersion`, `kind` and `metadata.name`
//! (`metadata.generateName` alone is refused: plugboard must find the object again by name).
//! Its namespace is forced to the owner's: unset or empty becomes the owner's namespace, any
//! other value is refused with the reference's message `resource namespace <x> must be
//! <owner-ns>`. Then plugboard marks it as its own:
//!
//! - label [`OWNER_UID_LABEL`] = the owner's UID;
//! - label [`MANAGED_BY_LABEL`] = [`MANAGED_BY`];
//! - label [`COUPLING_LABEL`] = the coupling id ([`coupling_id`]) when planned for a coupling;
//! - annotation [`OWNER_ANNOTATION`] = `<Kind> <namespace>/<name>` of the owner;
//! - an ownerReference to the owner (`controller: false`, `blockOwnerDeletion: false`) added to
//!   any the template set (one the template set for the owner's UID is replaced), so nothing
//!   plugboard creates outlives its owner.
//!
//! A template that sets one of these labels or the annotation to another value is refused.
//! plugboard deletes or re-applies **only** objects that carry the acting owner's UID in
//! [`OWNER_UID_LABEL`]; an object of the same name created by someone else is never touched.
//! The controller matches on that label alone: an object applied at `created` has no coupling
//! label but is still the owner's to delete at decouple.
//!
//! A plan holds at most [`MAX_OBJECTS`] objects and [`MAX_TOTAL_BYTES`] bytes of objects (as
//! compact JSON); more is an error that names the list and the limit.

mod check;
mod error;
mod plan;
mod render;
#[cfg(test)]
mod tests;

pub use error::ResourceError;
pub use plan::{coupling_id, plan_lifecycle, plan_results};

use serde_json::Value;

/// The most objects one plan (one call of [`plan_lifecycle`] or [`plan_results`]) may hold.
pub const MAX_OBJECTS: usize = 256;
/// The most bytes (compact JSON, before plugboard's labels are added) the objects of one plan
/// may take together.
pub const MAX_TOTAL_BYTES: usize = 4 * 1024 * 1024;

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
