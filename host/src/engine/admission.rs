//! Who may couple to a Socket.
//!
//! Secure by default: a Socket admits Plugs from its own namespace only. `validation.allow`
//! admits other namespaces by label selector or by name pattern; `validation.deny` refuses
//! namespaces the same ways and wins over everything, the Socket's own namespace included.
//! Name patterns are regular expressions matched against the whole name. The decision is taken
//! again on every reconcile, so a Plug whose namespace stops being admitted is decoupled.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt as _};
use regex::Regex;

use crate::crd::{CouplingPolicy, NamespaceMatch};

/// The Plug's namespace as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct PlugNamespace<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// The outcome of admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The Plug may couple.
    Admitted,
    /// The Plug may not couple; the message names the rule.
    Refused(String),
}

/// The Socket's policy cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A name pattern is not a valid regular expression.
    #[error("Socket field {field} holds an invalid regular expression {pattern:?}: {reason}")]
    InvalidPattern {
        /// Where the pattern is.
        field: String,
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A label selector is invalid.
    #[error("Socket field {field} holds an invalid label selector: {reason}")]
    InvalidSelector {
        /// Where the selector is.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// Which rule of a [`NamespaceMatch`] matched.
fn matching_rule(
    set: &NamespaceMatch,
    field: &str,
    ns: PlugNamespace<'_>,
) -> Result<Option<String>, PolicyError> {
    if let Some(selector) = &set.namespace_selector {
        let parsed =
            Selector::try_from(selector.clone()).map_err(|e| PolicyError::InvalidSelector {
                field: format!("{field}.namespaceSelector"),
                reason: e.to_string(),
            })?;
        if parsed.matches(ns.labels) {
            return Ok(Some(format!("{field}.namespaceSelector")));
        }
    }
    for (i, pattern) in set.namespaces.iter().enumerate() {
        let anchored = format!("^(?:{pattern})$");
        let re = Regex::new(&anchored).map_err(|e| PolicyError::InvalidPattern {
            field: format!("{field}.namespaces[{i}]"),
            pattern: pattern.clone(),
            reason: e.to_string(),
        })?;
        if re.is_match(ns.name) {
            return Ok(Some(format!("{field}.namespaces[{i}] ({pattern:?})")));
        }
    }
    Ok(None)
}

/// Decides whether a Plug in namespace `plug` may couple to a Socket in `socket_namespace`
/// with `policy`.
pub fn admit(
    socket_namespace: &str,
    policy: Option<&CouplingPolicy>,
    plug: PlugNamespace<'_>,
) -> Result<Admission, PolicyError> {
    if let Some(deny) = policy.and_then(|p| p.deny.as_ref())
        && let Some(rule) = matching_rule(deny, "spec.validation.deny", plug)?
    {
        return Ok(Admission::Refused(format!(
            "the Socket refuses Plugs from namespace {}: it matches {rule}",
            plug.name
        )));
    }
    if plug.name == socket_namespace {
        return Ok(Admission::Admitted);
    }
    if let Some(allow) = policy.and_then(|p| p.allow.as_ref())
        && matching_rule(allow, "spec.validation.allow", plug)?.is_some()
    {
        return Ok(Admission::Admitted);
    }
    Ok(Admission::Refused(format!(
        "the Socket admits Plugs from its own namespace {socket_namespace} only, and its \
         spec.validation.allow does not admit namespace {}; add the namespace (or a label \
         selector matching it) to the Socket's spec.validation.allow",
        plug.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn selector(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(labels(pairs)),
            ..Default::default()
        })
    }

    fn ns<'a>(name: &'a str, labels: &'a BTreeMap<String, String>) -> PlugNamespace<'a> {
        PlugNamespace { name, labels }
    }

    #[test]
    fn own_namespace_is_admitted_by_default() {
        let l = labels(&[]);
        assert_eq!(admit("db", None, ns("db", &l)), Ok(Admission::Admitted));
    }

    #[test]
    fn other_namespaces_are_refused_by_default_with_a_hint() {
        let l = labels(&[]);
        let Ok(Admission::Refused(message)) = admit("db", None, ns("app", &l)) else {
            panic!("expected refusal");
        };
        assert!(message.contains("own namespace db only"), "{message}");
        assert!(message.contains("spec.validation.allow"), "{message}");
    }

    #[test]
    fn allow_by_selector_and_by_anchored_pattern() {
        let policy = CouplingPolicy {
            allow: Some(NamespaceMatch {
                namespace_selector: selector(&[("team", "data")]),
                namespaces: vec!["app-.*".into()],
            }),
            deny: None,
        };
        let data = labels(&[("team", "data")]);
        let none = labels(&[]);
        assert_eq!(
            admit("db", Some(&policy), ns("x", &data)),
            Ok(Admission::Admitted)
        );
        assert_eq!(
            admit("db", Some(&policy), ns("app-1", &none)),
            Ok(Admission::Admitted)
        );
        // Anchored: a pattern does not match a substring.
        assert!(matches!(
            admit("db", Some(&policy), ns("my-app-1", &none)),
            Ok(Admission::Refused(_))
        ));
    }

    #[test]
    fn deny_wins_over_allow_and_own_namespace() {
        let policy = CouplingPolicy {
            allow: Some(NamespaceMatch {
                namespace_selector: Some(LabelSelector::default()),
                namespaces: vec![],
            }),
            deny: Some(NamespaceMatch {
                namespace_selector: selector(&[("quarantine", "true")]),
                namespaces: vec!["db".into()],
            }),
        };
        let q = labels(&[("quarantine", "true")]);
        let none = labels(&[]);
        let Ok(Admission::Refused(m)) = admit("db", Some(&policy), ns("app", &q)) else {
            panic!("deny selector must refuse");
        };
        assert!(m.contains("spec.validation.deny.namespaceSelector"), "{m}");
        let Ok(Admission::Refused(m)) = admit("db", Some(&policy), ns("db", &none)) else {
            panic!("deny pattern must refuse even the own namespace");
        };
        assert!(m.contains("spec.validation.deny.namespaces[0]"), "{m}");
        // An empty selector in allow admits every namespace that is not denied.
        assert_eq!(
            admit("db", Some(&policy), ns("other", &none)),
            Ok(Admission::Admitted)
        );
    }

    #[test]
    fn invalid_pattern_is_reported_with_its_field() {
        let policy = CouplingPolicy {
            allow: Some(NamespaceMatch {
                namespace_selector: None,
                namespaces: vec!["(".into()],
            }),
            deny: None,
        };
        let l = labels(&[]);
        let err = admit("db", Some(&policy), ns("app", &l)).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.validation.allow.namespaces[0]"),
            "{err}"
        );
    }
}
