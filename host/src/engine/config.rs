//! Merging a side's config or result from its sources, and validating it against the Socket's
//! interface.
//!
//! Merge order, later sources winning (reference 5.2 and 5.5): the Secret, the inline map, the
//! rendered templates, the ConfigMap, then (config only) the apparatus `config` hook.
//!
//! Interface rules (the same on every side and for config and result alike): a property is
//! *provided* when its value is present **and non-empty**. A required property that is not
//! provided is an error naming every missing key; an optional one takes its default when it
//! has one; keys the interface does not list are dropped. A side for which the interface lists
//! nothing is passed through unchanged.

use std::collections::BTreeMap;

use crate::apparatus::Side;
use crate::crd::InterfaceProperty;

use super::Values;

/// What a map of values is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValuesKind {
    /// A side's config, given to the other side.
    Config,
    /// A side's result, published once coupled.
    Result,
}

impl ValuesKind {
    /// `config` or `result`.
    pub fn as_str(self) -> &'static str {
        match self {
            ValuesKind::Config => "config",
            ValuesKind::Result => "result",
        }
    }
}

/// The sources of one side's config or result, each already read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    /// Values of the Secret named by `configSecretName` / `resultSecretName`.
    pub secret: Option<Values>,
    /// The inline `config` / `result` map.
    pub inline: Values,
    /// Rendered `configTemplate` / `resultTemplate` values.
    pub templates: Option<Values>,
    /// Data of the ConfigMap named by `configConfigMapName` / `resultConfigMapName`.
    pub config_map: Option<Values>,
    /// What the side's apparatus `config` hook returned (config only).
    pub apparatus: Option<Values>,
}

/// Merges sources in precedence order; later sources win key by key.
pub fn merge(sources: Sources) -> Values {
    let mut out = Values::new();
    for layer in [
        sources.secret,
        Some(sources.inline),
        sources.templates,
        sources.config_map,
        sources.apparatus,
    ]
    .into_iter()
    .flatten()
    {
        out.extend(layer);
    }
    out
}

/// Required interface properties a side did not provide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{side} {kind} is missing required {}: {}", if missing.len() == 1 { "property" } else { "properties" }, missing.join(", "))]
pub struct MissingProperties {
    /// The side that must provide them.
    pub side: &'static str,
    /// Config or result.
    pub kind: &'static str,
    /// The missing keys, sorted.
    pub missing: Vec<String>,
}

/// Applies the interface to `values` (see the module docs).
pub fn validate(
    side: Side,
    kind: ValuesKind,
    interface: Option<&BTreeMap<String, InterfaceProperty>>,
    values: Values,
) -> Result<Values, MissingProperties> {
    let Some(properties) = interface else {
        return Ok(values);
    };
    let mut out = Values::new();
    let mut missing = Vec::new();
    for (key, property) in properties {
        match values.get(key).filter(|v| !v.is_empty()) {
            Some(value) => {
                out.insert(key.clone(), value.clone());
            }
            None if property.required => missing.push(key.clone()),
            None => {
                if let Some(default) = property.default.as_ref().filter(|d| !d.is_empty()) {
                    out.insert(key.clone(), default.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(MissingProperties {
            side: side.as_str(),
            kind: kind.as_str(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn property(required: bool, default: Option<&str>) -> InterfaceProperty {
        InterfaceProperty {
            required,
            default: default.map(str::to_owned),
            description: None,
        }
    }

    #[test]
    fn later_sources_win() {
        let merged = merge(Sources {
            secret: Some(values(&[
                ("a", "secret"),
                ("b", "secret"),
                ("s", "only-secret"),
            ])),
            inline: values(&[("a", "inline"), ("b", "inline"), ("c", "inline")]),
            templates: Some(values(&[("b", "template")])),
            config_map: Some(values(&[("c", "configmap"), ("d", "configmap")])),
            apparatus: Some(values(&[("d", "apparatus")])),
        });
        assert_eq!(
            merged,
            values(&[
                ("a", "inline"),
                ("b", "template"),
                ("c", "configmap"),
                ("d", "apparatus"),
                ("s", "only-secret"),
            ])
        );
    }

    #[test]
    fn no_interface_passes_values_through() {
        let v = values(&[("anything", ""), ("x", "y")]);
        assert_eq!(
            validate(Side::Plug, ValuesKind::Config, None, v.clone()),
            Ok(v)
        );
    }

    #[test]
    fn required_means_present_and_non_empty_on_every_side() {
        let interface: BTreeMap<_, _> = [("database".to_owned(), property(true, None))].into();
        for side in [Side::Plug, Side::Socket] {
            for kind in [ValuesKind::Config, ValuesKind::Result] {
                let empty = validate(side, kind, Some(&interface), values(&[("database", "")]));
                assert_eq!(
                    empty.as_ref().map_err(|e| e.missing.clone()),
                    Err(vec!["database".to_owned()]),
                    "{side:?} {kind:?}"
                );
                let absent = validate(side, kind, Some(&interface), Values::new());
                assert!(absent.is_err());
                let ok = validate(side, kind, Some(&interface), values(&[("database", "app")]));
                assert_eq!(ok, Ok(values(&[("database", "app")])));
            }
        }
    }

    #[test]
    fn missing_properties_are_all_named() {
        let interface: BTreeMap<_, _> = [
            ("user".to_owned(), property(true, None)),
            ("password".to_owned(), property(true, None)),
            ("port".to_owned(), property(false, Some("5432"))),
        ]
        .into();
        let err = validate(
            Side::Socket,
            ValuesKind::Config,
            Some(&interface),
            Values::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "socket config is missing required properties: password, user"
        );
        let err = validate(
            Side::Plug,
            ValuesKind::Result,
            Some(&interface),
            values(&[("password", "x")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "plug result is missing required property: user"
        );
    }

    #[test]
    fn defaults_fill_absent_or_empty_optional_properties() {
        let interface: BTreeMap<_, _> = [
            ("port".to_owned(), property(false, Some("5432"))),
            ("tls".to_owned(), property(false, None)),
        ]
        .into();
        let out = validate(
            Side::Socket,
            ValuesKind::Config,
            Some(&interface),
            values(&[("port", ""), ("tls", "")]),
        );
        assert_eq!(out, Ok(values(&[("port", "5432")])));
        let out = validate(
            Side::Socket,
            ValuesKind::Config,
            Some(&interface),
            values(&[("port", "6543")]),
        );
        assert_eq!(out, Ok(values(&[("port", "6543")])));
    }

    #[test]
    fn unknown_keys_are_dropped() {
        let interface: BTreeMap<_, _> = [("database".to_owned(), property(false, None))].into();
        let out = validate(
            Side::Plug,
            ValuesKind::Config,
            Some(&interface),
            values(&[("database", "app"), ("extra", "dropped")]),
        );
        assert_eq!(out, Ok(values(&[("database", "app")])));
    }
}
