//! The samples `plugboard dev` applies (`host/samples/`), one file per way of running hooks,
//! with the playground's addresses filled in for their `${…}` placeholders.

use std::collections::BTreeMap;

use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, Client};

use super::Error;

/// The sample files, in the order they are applied: the ServiceAccount's rights and opt-in
/// first, then each Socket with its Plug.
pub const SAMPLES: [(&str, &str); 6] = [
    ("rbac.yaml", include_str!("../../samples/rbac.yaml")),
    ("socket.yaml", include_str!("../../samples/socket.yaml")),
    ("plug.yaml", include_str!("../../samples/plug.yaml")),
    ("wasm.yaml", include_str!("../../samples/wasm.yaml")),
    ("http.yaml", include_str!("../../samples/http.yaml")),
    ("pod.yaml", include_str!("../../samples/pod.yaml")),
];

/// Field manager of what `plugboard dev` applies.
const FIELD_MANAGER: &str = "plugboard-dev";

/// The values of the placeholders: `REGISTRY` (`127.0.0.1:PORT`), `APPARATUS_URL`
/// (`http://127.0.0.1:PORT`) and `APPARATUS_PORT`.
pub type Vars = BTreeMap<&'static str, String>;

/// `text` with every `${NAME}` replaced by its value; an unknown or unterminated placeholder
/// is an error naming it.
pub fn fill(file: &str, text: &str, vars: &Vars) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(Error::Sample {
                file: file.to_owned(),
                problem: "a `${` is not closed".to_owned(),
            });
        };
        let name = &after[..end];
        let value = vars.get(name).ok_or_else(|| Error::Sample {
            file: file.to_owned(),
            problem: format!("unknown placeholder `${{{name}}}`"),
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The objects of one filled-in sample file.
pub fn parse(file: &str, text: &str) -> Result<Vec<DynamicObject>, Error> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| Error::Sample {
            file: file.to_owned(),
            problem: e.to_string(),
        })?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            serde_json::from_value(d).map_err(|e| Error::Sample {
                file: file.to_owned(),
                problem: e.to_string(),
            })
        })
        .collect()
}

/// What was applied: `(kind, name)` of each object.
pub type Applied = Vec<(String, String)>;

/// Fills in and applies every sample in `namespace` (server-side apply), returning what was
/// applied.
pub async fn apply_all(client: &Client, namespace: &str, vars: &Vars) -> Result<Applied, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::new();
    for (file, text) in SAMPLES {
        for object in parse(file, &fill(file, text, vars)?)? {
            let types = object.types.clone().ok_or_else(|| Error::Sample {
                file: file.to_owned(),
                problem: "an object has no apiVersion or kind".to_owned(),
            })?;
            let gvk = GroupVersionKind::try_from(&types).map_err(|e| Error::Sample {
                file: file.to_owned(),
                problem: e.to_string(),
            })?;
            let name = object.metadata.name.clone().unwrap_or_default();
            let (resource, capabilities) =
                pinned_kind(client, &gvk)
                    .await
                    .map_err(|source| Error::Kube {
                        context: format!("find the API of {}", types.kind),
                        source,
                    })?;
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            api.patch(&name, &params, &Patch::Apply(&object))
                .await
                .map_err(|source| Error::Kube {
                    context: format!("apply {} {name} from {file}", types.kind),
                    source,
                })?;
            applied.push((types.kind, name));
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from([
            ("REGISTRY", "127.0.0.1:5000".to_owned()),
            ("APPARATUS_URL", "http://127.0.0.1:8080".to_owned()),
            ("APPARATUS_PORT", "8080".to_owned()),
        ])
    }

    #[test]
    fn placeholders_are_filled_in() {
        let text = "image: ${REGISTRY}/x:1\nport: ${APPARATUS_PORT}\n";
        assert_eq!(
            fill("f", text, &vars()).unwrap(),
            "image: 127.0.0.1:5000/x:1\nport: 8080\n"
        );
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_named() {
        let err = fill("f.yaml", "a: ${NOPE}", &vars())
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.yaml") && err.contains("${NOPE}"), "{err}");
        let err = fill("f.yaml", "a: ${REGISTRY", &vars())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not closed"), "{err}");
    }

    #[test]
    fn every_sample_fills_in_and_parses() {
        let mut kinds = Vec::new();
        for (file, text) in SAMPLES {
            let filled = fill(file, text, &vars()).unwrap();
            assert!(!filled.contains("${"), "{file}");
            for object in parse(file, &filled).unwrap() {
                kinds.push(object.types.unwrap().kind);
            }
        }
        let sockets = kinds.iter().filter(|k| *k == "Socket").count();
        let plugs = kinds.iter().filter(|k| *k == "Plug").count();
        assert_eq!((sockets, plugs), (4, 4), "{kinds:?}");
    }

    #[test]
    fn samples_parse_as_plugboard_types() {
        for (file, text) in SAMPLES {
            let filled = fill(file, text, &vars()).unwrap();
            for object in parse(file, &filled).unwrap() {
                let kind = object.types.as_ref().unwrap().kind.clone();
                let value = serde_json::to_value(&object).unwrap();
                match kind.as_str() {
                    "Socket" => {
                        serde_json::from_value::<crate::crd::Socket>(value).unwrap();
                    }
                    "Plug" => {
                        serde_json::from_value::<crate::crd::Plug>(value).unwrap();
                    }
                    _ => {}
                }
            }
        }
    }
}
