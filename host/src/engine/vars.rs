//! The pure part of `vars` and `resultVars`: the namespace rule, parsing
//! `fieldref.fieldPath`, and reading a field of an object the way the reference does (5.4).
//! Reading the object itself (as the owner's ServiceAccount) is the controller's job.
//!
//! # Field path syntaxes
//!
//! - **JSONPath** (RFC 9535, through `serde_json_path`) when the path starts with `$`, e.g.
//!   `$.spec.template.spec.containers[0].image` or `$.metadata.labels['app.kubernetes.io/name']`.
//!   When it selects several nodes, the **first** is used. Member names in the `.name` shorthand
//!   must start with a letter or `_` and hold no `-`, `.` or `/`; use `['my-key']` for others.
//! - **kubectl style** `{.spec.replicas}`: a single `{…}` expression starting with `.` or `[`
//!   is read as the JSONPath `$…` (no text around it, no `range`).
//! - **Dotted paths** as in the reference (gjson): anything else, e.g. `data.host`,
//!   `spec.containers.0.image`, `metadata.labels.app\.kubernetes\.io/name`. Segments are
//!   separated by `.`; `\` escapes the next character (so `\.` is a dot inside a key). The path
//!   is evaluated directly on the JSON value, not converted to JSONPath: a segment is an object
//!   key, and on an array a segment of digits is an index (so `0` works both as an index and as
//!   a key). A segment that is exactly `#` is gjson's count: the array's length when it is the
//!   last segment, otherwise the rest of the path is read from every element (elements where it
//!   is missing are left out) and the matches form an array. gjson's wildcards (`*`, `?`),
//!   queries (`#(…)`), pipes (`|`) and modifiers (`@…`) are refused, and so are `[`/`]`, which
//!   gjson would read as part of a key (so `containers[0]` would silently find nothing); escape
//!   them with `\` to mean the character.
//!
//! # Values
//!
//! [`extract`] turns the found value into a string: strings unquoted; integers as written;
//! other numbers in plain decimal (no exponent); booleans `true`/`false`; objects and arrays as
//! compact JSON; a missing path or `null` gives `""`.

use std::fmt;

use serde_json::Value;
use serde_json_path::JsonPath;

/// A parsed `fieldref.fieldPath`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    text: String,
    syntax: Syntax,
}

#[derive(Debug, Clone, PartialEq)]
enum Syntax {
    Dotted(Vec<Segment>),
    JsonPath(JsonPath),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// An object key, or on an array an index when it is all digits.
    Key(String),
    /// gjson's `#`.
    Count,
}

impl FieldPath {
    /// The path as written in the spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A `fieldref.fieldPath` that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarPathError {
    /// The path is empty.
    #[error("field path is empty")]
    Empty,
    /// A dotted path has an empty segment (`a..b`, `.a`, `a.`).
    #[error("field path `{path}` has an empty segment")]
    EmptySegment {
        /// The path as written.
        path: String,
    },
    /// A dotted path ends with a lone `\`.
    #[error("field path `{path}` ends with a lone `\\`")]
    TrailingEscape {
        /// The path as written.
        path: String,
    },
    /// A dotted path uses a gjson feature plugboard does not implement.
    #[error(
        "field path `{path}` uses {feature}, which plugboard does not support in dotted paths; escape the character with `\\` or write a JSONPath starting with `$`"
    )]
    Unsupported {
        /// The path as written.
        path: String,
        /// E.g. `gjson wildcards`.
        feature: &'static str,
    },
    /// A JSONPath (or kubectl-style) path is not valid RFC 9535 JSONPath.
    #[error("field path `{path}` is not a valid JSONPath: {message}")]
    JsonPath {
        /// The path as written.
        path: String,
        /// The parser's message, with the position.
        message: String,
    },
}

/// A var's object named a namespace other than its owner's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("var objRef namespace {namespace} must be {owner_namespace}")]
pub struct VarNamespaceError {
    /// The namespace the var named.
    pub namespace: String,
    /// The owner's namespace, the only one allowed.
    pub owner_namespace: String,
}

/// The namespace a var reads from (reference 5.4 step 3): the owner's when `namespace` (the
/// rendered `templateNamespace`, else `objref.namespace`) is unset or empty; any other
/// namespace is refused with the reference's message.
pub fn var_namespace(
    namespace: Option<&str>,
    owner_namespace: &str,
) -> Result<String, VarNamespaceError> {
    match namespace {
        None | Some("") => Ok(owner_namespace.to_owned()),
        Some(ns) if ns == owner_namespace => Ok(owner_namespace.to_owned()),
        Some(ns) => Err(VarNamespaceError {
            namespace: ns.to_owned(),
            owner_namespace: owner_namespace.to_owned(),
        }),
    }
}

/// Parses a `fieldref.fieldPath` in any of the syntaxes of the [module docs](self).
pub fn parse_field_path(path: &str) -> Result<FieldPath, VarPathError> {
    if path.is_empty() {
        return Err(VarPathError::Empty);
    }
    let json_path = if path.starts_with('$') {
        Some(path.to_owned())
    } else {
        path.strip_prefix('{')
            .and_then(|p| p.strip_suffix('}'))
            .filter(|inner| inner.starts_with(['.', '[']))
            .map(|inner| format!("${inner}"))
    };
    let syntax = match json_path {
        Some(query) => {
            Syntax::JsonPath(JsonPath::parse(&query).map_err(|e| VarPathError::JsonPath {
                path: path.to_owned(),
                message: e.to_string(),
            })?)
        }
        None => Syntax::Dotted(parse_dotted(path)?),
    };
    Ok(FieldPath {
        text: path.to_owned(),
        syntax,
    })
}

fn parse_dotted(path: &str) -> Result<Vec<Segment>, VarPathError> {
    let unsupported = |feature| VarPathError::Unsupported {
        path: path.to_owned(),
        feature,
    };
    let mut segments = Vec::new();
    let mut key = String::new();
    // Whether the current segment is exactly an unescaped `#` so far.
    let mut bare_hash = false;
    let mut chars = path.chars();
    let mut finish = |key: &mut String, bare_hash: bool| {
        if key.is_empty() {
            return Err(VarPathError::EmptySegment {
                path: path.to_owned(),
            });
        }
        segments.push(if bare_hash {
            Segment::Count
        } else {
            Segment::Key(std::mem::take(key))
        });
        key.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    return Err(VarPathError::TrailingEscape {
                        path: path.to_owned(),
                    });
                };
                key.push(next);
                bare_hash = false;
            }
            '.' => {
                finish(&mut key, bare_hash)?;
                bare_hash = false;
            }
            '*' | '?' => return Err(unsupported("gjson wildcards (`*`, `?`)")),
            '|' => return Err(unsupported("gjson pipes (`|`)")),
            '[' | ']' => {
                return Err(unsupported(
                    "brackets (write `containers.0`, not `containers[0]`)",
                ));
            }
            '@' if key.is_empty() => {
                return Err(unsupported("gjson modifiers (`@…`)"));
            }
            '#' if key.is_empty() => {
                key.push('#');
                bare_hash = true;
            }
            _ => {
                if bare_hash {
                    return Err(unsupported("gjson queries (`#(…)`)"));
                }
                key.push(c);
            }
        }
    }
    finish(&mut key, bare_hash)?;
    Ok(segments)
}

/// Reads `path` from `object` and turns it into a string as the [module docs](self) describe:
/// a missing path or `null` gives `""`; with JSONPath the first match is used.
pub fn extract(object: &Value, path: &FieldPath) -> String {
    match &path.syntax {
        Syntax::JsonPath(query) => query
            .query(object)
            .first()
            .map(stringify)
            .unwrap_or_default(),
        Syntax::Dotted(segments) => walk(object, segments)
            .as_ref()
            .map(stringify)
            .unwrap_or_default(),
    }
}

/// Evaluates a dotted path; owned because `#` builds new values.
fn walk(value: &Value, segments: &[Segment]) -> Option<Value> {
    let Some((first, rest)) = segments.split_first() else {
        return Some(value.clone());
    };
    match first {
        Segment::Key(key) => walk(child(value, key)?, rest),
        Segment::Count => {
            let items = value.as_array()?;
            if rest.is_empty() {
                Some(Value::from(items.len()))
            } else {
                Some(Value::Array(
                    items.iter().filter_map(|item| walk(item, rest)).collect(),
                ))
            }
        }
    }
}

fn child<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) => {
            items.get(key.parse::<usize>().ok()?)
        }
        _ => None,
    }
}

/// The reference's stringification of a var value (5.4).
fn stringify(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else if let Some(f) = n.as_f64() {
                // `f64`'s Display is plain decimal: never an exponent.
                f.to_string()
            } else {
                n.to_string()
            }
        }
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config_map() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "db",
                "namespace": "apps",
                "labels": {"app.kubernetes.io/name": "postgres", "tier": "data"},
                "annotations": {"0": "zero-key"},
            },
            "data": {
                "host": "db.apps.svc",
                "port": "5432",
                "empty": "",
                "my-key": "dashed",
                "a.b": "dotted",
                "#": "hash",
            },
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "generation": 3},
            "spec": {
                "replicas": 2,
                "paused": false,
                "progressDeadlineSeconds": 600,
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
                            {"name": "sidecar", "image": "envoy:1.30"},
                        ],
                    },
                },
            },
            "status": {
                "ratio": 0.25,
                "big": 1.0e21,
                "tiny": 1.0e-7,
                "huge": 18446744073709551615u64,
                "negative": -4,
                "nothing": null,
                "conditions": [{"type": "Available", "status": "True"}],
            },
        })
    }

    fn read(object: &Value, path: &str) -> String {
        let parsed = parse_field_path(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        extract(object, &parsed)
    }

    #[test]
    fn both_syntaxes_read_a_config_map() {
        let cm = config_map();
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("data.host", "db.apps.svc"),
            ("$.data.host", "db.apps.svc"),
            ("{.data.host}", "db.apps.svc"),
            ("data.port", "5432"),
            ("data.empty", ""),
            ("data.my-key", "dashed"),
            ("$.data['my-key']", "dashed"),
            ("data.a\\.b", "dotted"),
            ("$.data['a.b']", "dotted"),
            ("data.\\#", "hash"),
            ("metadata.labels.app\\.kubernetes\\.io/name", "postgres"),
            ("$.metadata.labels['app.kubernetes.io/name']", "postgres"),
            ("metadata.annotations.0", "zero-key"),
            ("$.metadata.annotations['0']", "zero-key"),
            ("metadata.labels", r#"{"app.kubernetes.io/name":"postgres","tier":"data"}"#),
            ("$.metadata.labels", r#"{"app.kubernetes.io/name":"postgres","tier":"data"}"#),
        ];
        for (path, expected) in cases {
            assert_eq!(read(&cm, path), *expected, "{path}");
        }
    }

    #[test]
    fn both_syntaxes_read_a_deployment() {
        let deploy = deployment();
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("spec.template.spec.containers.0.image", "nginx:1.27"),
            ("spec.template.spec.containers.1.image", "envoy:1.30"),
            ("$.spec.template.spec.containers[0].image", "nginx:1.27"),
            ("$.spec.template.spec.containers[-1].image", "envoy:1.30"),
            ("{.spec.template.spec.containers[1].name}", "sidecar"),
            ("spec.template.spec.containers.0.ports.0.containerPort", "80"),
            ("spec.template.spec.containers.#", "2"),
            ("spec.template.spec.containers.#.name", r#"["app","sidecar"]"#),
            ("spec.template.spec.containers.#.ports", r#"[[{"containerPort":80}]]"#),
            // JSONPath with several matches: the first.
            ("$.spec.template.spec.containers[*].image", "nginx:1.27"),
            ("$..image", "nginx:1.27"),
            ("$.status.conditions[?@.type == 'Available'].status", "True"),
            ("status.conditions", r#"[{"status":"True","type":"Available"}]"#),
        ];
        for (path, expected) in cases {
            assert_eq!(read(&deploy, path), *expected, "{path}");
        }
    }

    #[test]
    fn every_value_type_is_stringified_like_the_reference() {
        let deploy = deployment();
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("metadata.name", "web"),                  // string, unquoted
            ("spec.replicas", "2"),                    // integer
            ("metadata.generation", "3"),
            ("status.negative", "-4"),
            ("status.huge", "18446744073709551615"),   // u64 beyond i64
            ("spec.progressDeadlineSeconds", "600"),
            ("status.ratio", "0.25"),                  // float, plain decimal
            ("status.big", "1000000000000000000000"),
            ("status.tiny", "0.0000001"),
            ("spec.paused", "false"),                  // boolean
            ("status.nothing", ""),                    // null
            ("spec.template.spec.containers.1",       // object, compact JSON
                r#"{"image":"envoy:1.30","name":"sidecar"}"#),
        ];
        for (path, expected) in cases {
            assert_eq!(read(&deploy, path), *expected, "{path}");
            let json_path = format!("$.{path}");
            if !path.contains(".1") {
                assert_eq!(read(&deploy, &json_path), *expected, "{json_path}");
            }
        }
        assert_eq!(read(&json!({"on": true}), "on"), "true");
        assert_eq!(read(&json!({"on": true}), "$.on"), "true");
    }

    #[test]
    fn missing_paths_give_empty_strings() {
        let deploy = deployment();
        for path in [
            "spec.missing",
            "spec.replicas.deeper",
            "spec.template.spec.containers.2.image",
            "spec.template.spec.containers.x",
            "spec.template.spec.containers.-1",
            "metadata.name.#",
            "$.spec.missing",
            "$.spec.template.spec.containers[5].image",
            "{.nope}",
        ] {
            assert_eq!(read(&deploy, path), "", "{path}");
        }
    }

    #[test]
    fn invalid_paths_are_refused_with_a_reason() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("", "field path is empty"),
            ("a..b", "field path `a..b` has an empty segment"),
            (".a", "field path `.a` has an empty segment"),
            ("a.", "field path `a.` has an empty segment"),
            ("a\\", "field path `a\\` ends with a lone `\\`"),
            ("data.*", "gjson wildcards"),
            ("data.ho?t", "gjson wildcards"),
            ("a|b", "gjson pipes"),
            ("spec.containers[0].image", "brackets"),
            ("a.@reverse", "gjson modifiers"),
            ("a.#(name==x)", "gjson queries"),
            ("$.data.my-key", "is not a valid JSONPath"),
            ("$[", "is not a valid JSONPath"),
            ("{.a.b-c}", "is not a valid JSONPath"),
        ];
        for (path, expected) in cases {
            let err = parse_field_path(path).unwrap_err().to_string();
            assert!(err.contains(expected), "{path}: {err}");
        }
    }

    #[test]
    fn escapes_and_specials_inside_keys() {
        let object = json!({"a": {"b@c": "at", "x#": "hash-in-key", "d*": "star", "": "empty"}});
        assert_eq!(read(&object, "a.b@c"), "at");
        assert_eq!(read(&object, "a.x#"), "hash-in-key");
        assert_eq!(read(&object, "a.d\\*"), "star");
        // A `\` followed by anything is that character: an escaped `#` is the key `#`, not
        // the count.
        assert_eq!(read(&json!({"l": {"#": "k"}}), "l.\\#"), "k");
        assert_eq!(read(&json!({"l": [1, 2, 3]}), "l.#"), "3");
        // `{…}` that is not a kubectl expression is a dotted key.
        assert_eq!(read(&json!({"{x}": "braced"}), "{x}"), "braced");
    }

    #[test]
    fn field_path_keeps_its_text() {
        let path = parse_field_path("spec.replicas").unwrap();
        assert_eq!(path.as_str(), "spec.replicas");
        assert_eq!(path.to_string(), "spec.replicas");
    }

    #[test]
    fn var_namespace_defaults_to_and_must_be_the_owners() {
        assert_eq!(var_namespace(None, "apps").unwrap(), "apps");
        assert_eq!(var_namespace(Some(""), "apps").unwrap(), "apps");
        assert_eq!(var_namespace(Some("apps"), "apps").unwrap(), "apps");
        assert_eq!(
            var_namespace(Some("other"), "apps")
                .unwrap_err()
                .to_string(),
            "var objRef namespace other must be apps"
        );
    }
}
