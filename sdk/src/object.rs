//! Kubernetes objects as hooks receive them: JSON with typed accessors for the common fields.

use std::collections::BTreeMap;

use serde_json::Value;

static NULL: Value = Value::Null;

/// A Kubernetes object (a Plug or a Socket: metadata, spec, status) as JSON.
///
/// The accessors return empty values when a field is missing rather than failing, because
/// plugboard always sends complete objects and a hook that needs a field can check for
/// emptiness where it matters.
#[derive(Debug, Clone, PartialEq)]
pub struct Object(Value);

impl Object {
    /// Wraps an object's JSON.
    pub fn new(json: Value) -> Self {
        Object(json)
    }

    /// Parses an object from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text).map(Object)
    }

    /// The whole object.
    pub fn json(&self) -> &Value {
        &self.0
    }

    /// The whole object, by value.
    pub fn into_json(self) -> Value {
        self.0
    }

    /// `apiVersion`, or `""`.
    pub fn api_version(&self) -> &str {
        self.str_at(&["apiVersion"])
    }

    /// `kind`, or `""`.
    pub fn kind(&self) -> &str {
        self.str_at(&["kind"])
    }

    /// `metadata.name`, or `""`.
    pub fn name(&self) -> &str {
        self.str_at(&["metadata", "name"])
    }

    /// `metadata.namespace`, or `""`.
    pub fn namespace(&self) -> &str {
        self.str_at(&["metadata", "namespace"])
    }

    /// `metadata.uid`, or `""`.
    pub fn uid(&self) -> &str {
        self.str_at(&["metadata", "uid"])
    }

    /// `namespace/name`, the way Kubernetes names an object in messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }

    /// `metadata.labels` (entries whose value is not a string are left out).
    pub fn labels(&self) -> BTreeMap<&str, &str> {
        self.string_map(&["metadata", "labels"])
    }

    /// `metadata.annotations` (entries whose value is not a string are left out).
    pub fn annotations(&self) -> BTreeMap<&str, &str> {
        self.string_map(&["metadata", "annotations"])
    }

    /// `spec`, or `null`.
    pub fn spec(&self) -> &Value {
        self.at(&["spec"]).unwrap_or(&NULL)
    }

    /// `status`, or `null`.
    pub fn status(&self) -> &Value {
        self.at(&["status"]).unwrap_or(&NULL)
    }

    /// The value at a dotted path such as `spec.data.mode` or `spec.resources.0.name`
    /// (numbers index arrays). For keys that contain dots, such as most label keys, use
    /// [`pointer`](Self::pointer).
    pub fn get(&self, path: &str) -> Option<&Value> {
        path.split('.')
            .try_fold(&self.0, |value, segment| match value {
                Value::Object(map) => map.get(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }

    /// The string at a dotted path (see [`get`](Self::get)), if there is a string there.
    pub fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// The value at a JSON pointer (RFC 6901) such as `/metadata/labels/app.kubernetes.io~1name`.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        self.0.pointer(pointer)
    }

    fn at(&self, path: &[&str]) -> Option<&Value> {
        path.iter()
            .try_fold(&self.0, |value, key| value.as_object()?.get(*key))
    }

    fn str_at(&self, path: &[&str]) -> &str {
        self.at(path).and_then(Value::as_str).unwrap_or("")
    }

    fn string_map(&self, path: &[&str]) -> BTreeMap<&str, &str> {
        self.at(path)
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl From<Value> for Object {
    fn from(json: Value) -> Self {
        Object(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plug() -> Object {
        Object::new(json!({
            "apiVersion": "plugboard.dev/v1alpha1",
            "kind": "Plug",
            "metadata": {
                "name": "app",
                "namespace": "shop",
                "uid": "5f1c",
                "labels": {"app.kubernetes.io/name": "app", "n": 1},
            },
            "spec": {"data": {"mode": "fs"}, "resources": [{"name": "first"}]},
        }))
    }

    #[test]
    fn metadata_accessors_read_the_fields() {
        let p = plug();
        assert_eq!(p.api_version(), "plugboard.dev/v1alpha1");
        assert_eq!(p.kind(), "Plug");
        assert_eq!(p.name(), "app");
        assert_eq!(p.namespace(), "shop");
        assert_eq!(p.uid(), "5f1c");
        assert_eq!(p.key(), "shop/app");
        assert_eq!(
            p.labels(),
            BTreeMap::from([("app.kubernetes.io/name", "app")])
        );
        assert!(p.annotations().is_empty());
        assert_eq!(p.status(), &Value::Null);
    }

    #[test]
    fn get_follows_dotted_paths_through_objects_and_arrays() {
        let p = plug();
        assert_eq!(p.get_str("spec.data.mode"), Some("fs"));
        assert_eq!(p.get_str("spec.resources.0.name"), Some("first"));
        assert_eq!(p.get("spec.resources.1"), None);
        assert_eq!(p.get("spec.data.mode.deeper"), None);
        assert_eq!(
            p.pointer("/metadata/labels/app.kubernetes.io~1name"),
            Some(&json!("app"))
        );
    }

    #[test]
    fn missing_fields_read_as_empty() {
        let o = Object::new(json!("not an object"));
        assert_eq!(o.name(), "");
        assert_eq!(o.key(), "/");
        assert_eq!(o.spec(), &Value::Null);
        assert!(o.labels().is_empty());
    }
}
