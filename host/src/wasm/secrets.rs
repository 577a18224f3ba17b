//! Values read from Secrets, and guest text scrubbed of them before it reaches status, Events
//! and logs.

use std::sync::Mutex;

use super::WasmError;

/// Values shorter than this are not scrubbed from guest text: they are too common to mean
/// anything (and scrubbing them would garble every message).
const SCRUB_MIN_LEN: usize = 4;

/// How many Secret values [`SecretValues`] keeps; the oldest are forgotten first (and
/// remembered again the next time their Secret is read for a coupling).
const SECRET_VALUES_KEPT: usize = 16_384;

/// Values read from Secrets, remembered so that guest text that repeats them is scrubbed
/// before it reaches status and Events. Bounded; only values of at least four bytes.
#[derive(Debug, Default)]
pub struct SecretValues {
    inner: Mutex<(
        std::collections::HashSet<String>,
        std::collections::VecDeque<String>,
    )>,
}

impl SecretValues {
    /// Remembers `values` (those of at least four bytes).
    pub fn remember<'a>(&self, values: impl IntoIterator<Item = &'a String>) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *guard;
        for value in values {
            if value.len() < SCRUB_MIN_LEN || set.contains(value) {
                continue;
            }
            if order.len() >= SECRET_VALUES_KEPT
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
            set.insert(value.clone());
            order.push_back(value.clone());
        }
    }

    /// Those of `values` that were read from Secrets (one lock for all).
    pub(crate) fn among<'a>(&self, values: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        values
            .into_iter()
            .filter(|v| guard.0.contains(v.as_str()))
            .cloned()
            .collect()
    }

    /// Whether `value` was read from a Secret.
    pub fn contains(&self, value: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .contains(value)
    }
}

/// `error` with every value the hook received that came from a Secret (`inputs` holds only
/// those) replaced by `[redacted]` in the text the guest supplied, so a component cannot read
/// Secret values back through status and Events.
pub(super) fn scrub_error(error: WasmError, inputs: &[String]) -> WasmError {
    match error {
        WasmError::Guest {
            hook,
            kind,
            message,
        } => WasmError::Guest {
            hook,
            kind,
            message: scrub(&message, inputs),
        },
        WasmError::Trap { hook, message } => WasmError::Trap {
            hook,
            message: scrub(&message, inputs),
        },
        WasmError::EgressDenied {
            hook,
            kind,
            message,
            source,
        } => WasmError::EgressDenied {
            hook,
            kind,
            message: scrub(&message, inputs),
            source,
        },
        other => other,
    }
}

/// `text` with each of `values` (longest first, of at least [`SCRUB_MIN_LEN`] bytes) replaced
/// by `[redacted]`.
pub(crate) fn scrub(text: &str, values: &[String]) -> String {
    let mut values: Vec<&str> = values
        .iter()
        .map(String::as_str)
        .filter(|v| v.len() >= SCRUB_MIN_LEN)
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for value in values {
        if out.contains(value) {
            out = out.replace(value, "[redacted]");
        }
    }
    out
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_remembered_bounded() {
        let values = SecretValues::default();
        values.remember(&["s3cr3t-password".to_owned(), "abc".to_owned()]);
        assert!(values.contains("s3cr3t-password"));
        assert!(!values.contains("abc"), "short values are not kept");
        let many: Vec<String> = (0..SECRET_VALUES_KEPT + 1)
            .map(|i| format!("value-{i}"))
            .collect();
        values.remember(&many);
        assert!(
            !values.contains("s3cr3t-password"),
            "the oldest is forgotten"
        );
        assert!(values.contains(&format!("value-{SECRET_VALUES_KEPT}")));
        let asked = [
            format!("value-{SECRET_VALUES_KEPT}"),
            "never-read".to_owned(),
        ];
        assert_eq!(values.among(&asked), vec![asked[0].clone()]);
    }

    #[test]
    fn guest_text_never_carries_input_values() {
        let inputs = vec![
            "s3cr3t-password".to_owned(),
            "s3cr3t".to_owned(),
            "eu".to_owned(),
        ];
        assert_eq!(
            scrub("bad password s3cr3t-password (s3cr3t) in eu", &inputs),
            "bad password [redacted] ([redacted]) in eu"
        );
        let error = scrub_error(
            WasmError::Guest {
                hook: "config",
                kind: crate::apparatus::HookErrorKind::Failed,
                message: "got s3cr3t-password".into(),
            },
            &inputs,
        );
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }
}
