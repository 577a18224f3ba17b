//! Why a resource list could not be planned. Every error names where the object came from
//! (its *origin*, e.g. `spec.resources[1].stringTemplates[0] (document 2)`), never the values it
//! was rendered with.

use crate::engine::template::TemplateError;

/// A resource list that could not be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A template string of the resource failed to render.
    #[error("failed to render {origin}")]
    Render {
        /// The resource's template field, e.g. `spec.resources[0].template`.
        origin: String,
        /// What the template engine said (field, line, cause).
        #[source]
        source: TemplateError,
    },
    /// A rendered string template is not valid YAML or JSON.
    #[error("failed to parse {origin} as YAML or JSON: {message}")]
    Parse {
        /// The template and document, e.g. `spec.resources[0].stringTemplate (document 2)`.
        origin: String,
        /// The parser's message, with the line and column in the rendered text (no values).
        message: String,
    },
    /// A rendered document is not an object (a list, a string, a number).
    #[error("{origin} is not an object")]
    NotAnObject {
        /// Where the document came from.
        origin: String,
    },
    /// A required field is missing, empty or not a string.
    #[error("{origin} has no {field}")]
    MissingField {
        /// Where the object came from.
        origin: String,
        /// `apiVersion`, `kind` or `metadata.name`.
        field: &'static str,
    },
    /// The object names itself with `metadata.generateName` only.
    #[error(
        "{origin} sets metadata.generateName without metadata.name; plugboard needs a fixed name to find the object again"
    )]
    GenerateName {
        /// Where the object came from.
        origin: String,
    },
    /// A field plugboard adds to has the wrong type.
    #[error("{origin}: {field} must be {expected}")]
    InvalidField {
        /// Where the object came from.
        origin: String,
        /// E.g. `metadata.labels`.
        field: &'static str,
        /// E.g. `an object`.
        expected: &'static str,
    },
    /// Two keys of a templated object render to the same key.
    #[error("two keys of {field} render to the same key")]
    DuplicateKey {
        /// The object path holding the keys, e.g. `spec.resources[0].template.data`.
        field: String,
    },
    /// The object names a namespace other than its owner's.
    #[error("{origin}: resource namespace {namespace} must be {owner_namespace}")]
    Namespace {
        /// Where the object came from.
        origin: String,
        /// The namespace the object names.
        namespace: String,
        /// The owner's namespace, the only one allowed.
        owner_namespace: String,
    },
    /// The object sets one of plugboard's ownership labels (or its owner annotation) to another
    /// value.
    #[error("{origin} sets {key}, which plugboard manages, to another value")]
    LabelClash {
        /// Where the object came from.
        origin: String,
        /// The label or annotation key.
        key: &'static str,
    },
    /// The list renders to more objects than one plan may hold.
    #[error("{list} renders more than {limit} objects, the limit")]
    TooMany {
        /// `spec.resources` or `spec.resultResources`.
        list: &'static str,
        /// The limit, [`MAX_OBJECTS`](super::MAX_OBJECTS).
        limit: usize,
    },
    /// The list renders to more bytes of objects than one plan may hold.
    #[error("{list} renders more than {limit} bytes of objects, the limit")]
    TooBig {
        /// `spec.resources` or `spec.resultResources`.
        list: &'static str,
        /// The limit, [`MAX_TOTAL_BYTES`](super::MAX_TOTAL_BYTES).
        limit: usize,
    },
    /// Planning the decouple auto-delete (reference 8.4) of one resource failed: the resource
    /// does not run at `decoupled` but must be rendered to know what to delete.
    #[error("failed to plan the decouple auto-delete of {resource}")]
    AutoDelete {
        /// The resource, e.g. `spec.resources[2]`.
        resource: String,
        /// Why.
        #[source]
        source: Box<ResourceError>,
    },
}
