//! The checksum of a coupling's inputs. `updated` hooks run when it changes, and only then: not
//! on operator restarts, not on label or annotation edits, not because a Socket reconciled.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::SideSpec;

use super::Values;

/// Everything a coupling's hooks see, apart from object metadata and status.
#[derive(Debug, Serialize)]
pub struct CouplingInputs<'a> {
    /// The Plug's side of the spec (its socket reference excluded: changing it decouples).
    pub plug_spec: &'a SideSpec,
    /// The Socket's side of the spec.
    pub socket_spec: &'a SideSpec,
    /// The Socket's interface and policy, serialised.
    pub socket_extra: serde_json::Value,
    /// The Plug's validated config.
    pub plug_config: &'a Values,
    /// The Socket's validated config.
    pub socket_config: &'a Values,
}

/// A hex SHA-256 over the canonical JSON of the inputs (maps are ordered, so equal inputs give
/// equal checksums).
pub fn checksum(inputs: &CouplingInputs<'_>) -> String {
    let mut hash = Sha256::new();
    // Serialising plain maps and derived structs cannot fail; an empty hash input would only
    // make every coupling look changed, never unchanged.
    if let Ok(bytes) = serde_json::to_vec(inputs) {
        hash.update(&bytes);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_give_equal_checksums_and_any_change_shows() {
        let plug = SideSpec::default();
        let socket = SideSpec::default();
        let config: Values = [("a".to_owned(), "1".to_owned())].into();
        let empty = Values::new();
        let base = CouplingInputs {
            plug_spec: &plug,
            socket_spec: &socket,
            socket_extra: serde_json::Value::Null,
            plug_config: &config,
            socket_config: &empty,
        };
        let again = CouplingInputs {
            plug_spec: &plug,
            socket_spec: &socket,
            socket_extra: serde_json::Value::Null,
            plug_config: &config.clone(),
            socket_config: &empty,
        };
        assert_eq!(checksum(&base), checksum(&again));
        let changed: Values = [("a".to_owned(), "2".to_owned())].into();
        let other = CouplingInputs {
            plug_config: &changed,
            ..again
        };
        assert_ne!(checksum(&base), checksum(&other));
    }
}
