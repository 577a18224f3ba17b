//! Checking one rendered object and marking it as its owner's: required fields, the namespace
//! rule, plugboard's labels, annotation and ownerReference.

use serde_json::{Map, Value, json};

use super::error::ResourceError;
use super::render::Rendered;
use super::{
    COUPLING_LABEL, MANAGED_BY, MANAGED_BY_LABEL, OWNER_ANNOTATION, OWNER_UID_LABEL, ObjectOwner,
    PlannedObject,
};

/// Checks a rendered object, forces its namespace to the owner's and adds plugboard's marks.
pub(super) fn check(
    rendered: Rendered,
    owner: &ObjectOwner,
    coupling: Option<&str>,
) -> Result<PlannedObject, ResourceError> {
    let Rendered { mut object, origin } = rendered;
    let api_version = required_string(&object, &["apiVersion"], "apiVersion", &origin)?;
    let kind = required_string(&object, &["kind"], "kind", &origin)?;
    let name = match non_empty_string(&object, &["metadata", "name"]) {
        Some(name) => name,
        None if non_empty_string(&object, &["metadata", "generateName"]).is_some() => {
            return Err(ResourceError::GenerateName { origin });
        }
        None => {
            return Err(ResourceError::MissingField {
                origin,
                field: "metadata.name",
            });
        }
    };

    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        // Unreachable: `metadata.name` was found above.
        return Err(ResourceError::MissingField {
            origin,
            field: "metadata.name",
        });
    };
    match metadata.get("namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(ns)) if ns.is_empty() || *ns == owner.namespace => {}
        Some(other) => {
            let namespace = match other {
                Value::String(ns) => ns.clone(),
                other => other.to_string(),
            };
            return Err(ResourceError::Namespace {
                origin,
                namespace,
                owner_namespace: owner.namespace.clone(),
            });
        }
    }
    metadata.insert("namespace".into(), Value::String(owner.namespace.clone()));

    let labels = string_map(metadata, "labels", "metadata.labels", &origin)?;
    let mut wanted = vec![
        (OWNER_UID_LABEL, owner.uid.as_str()),
        (MANAGED_BY_LABEL, MANAGED_BY),
    ];
    if let Some(coupling) = coupling {
        wanted.push((COUPLING_LABEL, coupling));
    }
    set_owned(labels, &wanted, &origin)?;

    let annotation = format!("{} {}/{}", owner.kind, owner.namespace, owner.name);
    let annotations = string_map(metadata, "annotations", "metadata.annotations", &origin)?;
    set_owned(annotations, &[(OWNER_ANNOTATION, &annotation)], &origin)?;

    let references = metadata.entry("ownerReferences").or_insert(Value::Null);
    if references.is_null() {
        *references = Value::Array(Vec::new());
    }
    let Some(references) = references.as_array_mut() else {
        return Err(ResourceError::InvalidField {
            origin,
            field: "metadata.ownerReferences",
            expected: "a list",
        });
    };
    references.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner.uid.as_str()));
    references.push(json!({
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": false,
        "blockOwnerDeletion": false,
    }));

    Ok(PlannedObject {
        api_version,
        kind,
        name,
        namespace: owner.namespace.clone(),
        object,
        origin,
    })
}

/// The non-empty string at `path`, if there is one.
fn non_empty_string(object: &Value, path: &[&str]) -> Option<String> {
    let mut value = object;
    for key in path {
        value = value.get(key)?;
    }
    value.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn required_string(
    object: &Value,
    path: &[&str],
    field: &'static str,
    origin: &str,
) -> Result<String, ResourceError> {
    non_empty_string(object, path).ok_or_else(|| ResourceError::MissingField {
        origin: origin.to_owned(),
        field,
    })
}

/// The map at `metadata[key]`, created when absent or `null`.
fn string_map<'m>(
    metadata: &'m mut Map<String, Value>,
    key: &str,
    field: &'static str,
    origin: &str,
) -> Result<&'m mut Map<String, Value>, ResourceError> {
    let value = metadata
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    value
        .as_object_mut()
        .ok_or_else(|| ResourceError::InvalidField {
            origin: origin.to_owned(),
            field,
            expected: "an object",
        })
}

/// Sets plugboard's keys; a key the template set to another value is refused.
fn set_owned(
    map: &mut Map<String, Value>,
    wanted: &[(&'static str, &str)],
    origin: &str,
) -> Result<(), ResourceError> {
    for (key, value) in wanted {
        match map.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::String(set)) if set == value => {}
            Some(_) => {
                return Err(ResourceError::LabelClash {
                    origin: origin.to_owned(),
                    key,
                });
            }
        }
        map.insert((*key).to_owned(), Value::String((*value).to_owned()));
    }
    Ok(())
}
