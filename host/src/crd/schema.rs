//! Schema fragments the derive macros cannot express on their own, and the CEL rules shared by
//! several types.

use schemars::{Schema, SchemaGenerator, json_schema};

/// CEL rule: a resource has at least one template source.
pub const HAS_TEMPLATE_RULE: &str = "has(self.template) || has(self.templates) || has(self.stringTemplate) || has(self.stringTemplates)";
/// Message shown when [`HAS_TEMPLATE_RULE`] fails.
pub const HAS_TEMPLATE_MESSAGE: &str =
    "a resource needs one of template, templates, stringTemplate or stringTemplates";

/// An object with any content, kept as written (a Kubernetes object template).
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A list of objects with any content.
pub fn free_form_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}
