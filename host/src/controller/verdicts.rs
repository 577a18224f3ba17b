//! Hooks that answered `invalid-input` are not called again with the same inputs.
//!
//! An apparatus that says its input cannot be used (the WIT `hook-error::invalid-input`, or an
//! HTTP apparatus's `422`) will say so again until the Plug or Socket changes, so calling it on
//! every reconcile — each status write wakes one, and a stalled coupling is looked at again on
//! the re-check timer — would only repeat the same answer. The operator remembers the answer
//! under a digest of what the hook saw that a user can change: each object's UID, generation,
//! `spec`, labels and annotations, and the configs, data and vars the call carried (not
//! `status`, which the operator writes itself). The same call with the same inputs gets the
//! remembered error without a call; any change to those inputs calls the hook again. The
//! memory is per process and bounded: an operator restart, or an entry pushed out, costs one
//! more call.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Context, Error};
use crate::apparatus::{HookErrorKind, Side};
use crate::engine::Values;

/// Calls remembered at most; the oldest are forgotten first.
const KEPT: usize = 4096;

/// What a remembered call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The condition reason.
    pub(crate) reason: &'static str,
    /// The condition message, as first shown.
    pub(crate) message: String,
}

/// The answers of calls that returned invalid input, by call digest.
#[derive(Debug, Default)]
pub(crate) struct InvalidInputs {
    inner: Mutex<(HashMap<String, Verdict>, VecDeque<String>)>,
}

impl InvalidInputs {
    /// The remembered answer to the call `key`, if it returned invalid input.
    pub(crate) fn get(&self, key: &str) -> Option<Verdict> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .get(key)
            .cloned()
    }

    /// Remembers that the call `key` returned invalid input.
    pub(crate) fn remember(&self, key: String, verdict: Verdict) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), verdict).is_none() {
            order.push_back(key);
        }
        while order.len() > KEPT {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }
}

/// Fails with the remembered answer when the call `key` already returned invalid input.
pub(crate) fn check(ctx: &Context, key: &str) -> Result<(), Error> {
    match ctx.invalid_inputs.get(key) {
        Some(Verdict { reason, message }) => {
            tracing::debug!(
                reason,
                "not calling the hook again: same inputs as its invalid-input answer"
            );
            Err(Error::InvalidInputUnchanged { reason, message })
        }
        None => Ok(()),
    }
}

/// `error`, remembered under the call `key` when it is the hook's invalid-input answer.
pub(crate) fn note(ctx: &Context, key: String, error: Error) -> Error {
    if error.hook_error_kind() == Some(HookErrorKind::InvalidInput) {
        ctx.invalid_inputs.remember(
            key,
            Verdict {
                reason: error.reason(),
                message: error.message(),
            },
        );
    }
    error
}

/// What of an object a hook's answer may depend on and a user can change.
fn identity(object: Option<&Value>) -> Value {
    let Some(object) = object else {
        return Value::Null;
    };
    let metadata = &object["metadata"];
    json!({
        "uid": metadata["uid"],
        "generation": metadata["generation"],
        "labels": metadata["labels"],
        "annotations": metadata["annotations"],
        "spec": object["spec"],
    })
}

/// The digest of one call: which owner's hook, on which side, with which inputs.
pub(crate) fn call_key(
    owner_uid: &str,
    side: Side,
    hook: &str,
    plug: Option<&Value>,
    socket: Option<&Value>,
    values: &[Option<&Values>],
) -> String {
    let inputs = json!({
        "owner": owner_uid,
        "side": side.as_str(),
        "hook": hook,
        "plug": identity(plug),
        "socket": identity(socket),
        "values": values,
    });
    hex::encode(Sha256::digest(inputs.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plug(generation: i64, status: &str) -> Value {
        json!({"metadata": {"uid": "u1", "generation": generation, "resourceVersion": status,
                            "labels": {"a": "b"}},
               "spec": {"socket": {"name": "db"}}, "status": {"phase": status}})
    }

    #[test]
    fn keys_change_with_what_users_change_not_with_status() {
        let config = Values::from([("k".to_owned(), "v".to_owned())]);
        let key = |p: &Value, c: &Values| {
            call_key("u1", Side::Plug, "coupled", Some(p), None, &[Some(c)])
        };
        let base = key(&plug(1, "x"), &config);
        assert_eq!(
            base,
            key(&plug(1, "y"), &config),
            "status and resourceVersion do not count"
        );
        assert_ne!(base, key(&plug(2, "x"), &config), "the generation does");
        let mut relabelled = plug(1, "x");
        relabelled["metadata"]["labels"]["a"] = json!("c");
        assert_ne!(base, key(&relabelled, &config), "labels do");
        let other = Values::from([("k".to_owned(), "w".to_owned())]);
        assert_ne!(base, key(&plug(1, "x"), &other), "inputs do");
        assert_ne!(
            base,
            call_key(
                "u1",
                Side::Plug,
                "updated",
                Some(&plug(1, "x")),
                None,
                &[Some(&config)]
            ),
            "the hook does"
        );
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let memory = InvalidInputs::default();
        let verdict = Verdict {
            reason: "HookInvalidInput",
            message: "m".into(),
        };
        for i in 0..=KEPT {
            memory.remember(format!("k{i}"), verdict.clone());
        }
        assert_eq!(memory.get("k0"), None);
        assert_eq!(memory.get(&format!("k{KEPT}")), Some(verdict));
    }
}
