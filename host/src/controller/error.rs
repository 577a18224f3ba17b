//! Errors of a reconcile. Each maps mechanically to a condition reason (also the Event reason),
//! and its message (the chain of causes) says what to fix. Messages never carry values read
//! from Secrets or apparatuses: only names and keys.

use crate::apparatus::http::{EndpointError, HttpApparatusError};
use crate::apparatus::{HookErrorKind, Side};
use crate::crd::conditions::reasons;
use crate::engine::admission::PolicyError;
use crate::engine::config::MissingProperties;

/// Why a reconcile step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// plugboard may not, or could not, act as the owner's ServiceAccount (it has not opted
    /// in, or a client acting as it could not be built).
    #[error(transparent)]
    Impersonation(super::optin::ImpersonationError),
    /// The HTTP apparatus client could not be built.
    #[error("failed to set up the HTTP apparatus client: {0}")]
    HttpSetup(String),
    /// A call the operator makes for itself failed (status, finalizer, result Secret).
    #[error("failed to {action} {what}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// On which object.
        what: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A Secret or ConfigMap named in the spec could not be read as the owner's ServiceAccount.
    #[error(
        "failed to read {kind} {namespace}/{name} named by {field} as ServiceAccount {namespace}/{service_account}"
    )]
    SourceRead {
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Its namespace (the owner's).
        namespace: String,
        /// Its name.
        name: String,
        /// The spec field naming it.
        field: &'static str,
        /// The ServiceAccount used.
        service_account: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A Secret value is not UTF-8 text.
    #[error("Secret {namespace}/{name} named by {field} holds non-UTF-8 data under key {key:?}")]
    SourceNotText {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The spec field naming it.
        field: &'static str,
        /// The key.
        key: String,
    },
    /// A config does not satisfy the Socket's interface.
    #[error("the config does not satisfy the Socket's interface")]
    Interface(#[source] MissingProperties),
    /// A side's apparatus endpoint is not usable.
    #[error("the {} apparatus endpoint is invalid", side.as_str())]
    Endpoint {
        /// Whose apparatus.
        side: Side,
        /// Why.
        #[source]
        source: EndpointError,
    },
    /// A side's apparatus call failed.
    #[error("the {} apparatus failed", side.as_str())]
    Apparatus {
        /// Whose apparatus.
        side: Side,
        /// Why.
        #[source]
        source: HttpApparatusError,
    },
    /// A side's WebAssembly component could not be fetched.
    #[error("failed to fetch the {} apparatus component", side.as_str())]
    Oci {
        /// Whose apparatus.
        side: Side,
        /// Why.
        #[source]
        source: crate::oci::OciError,
    },
    /// A side's WebAssembly component could not be loaded or its hook failed.
    #[error("the {} apparatus component failed", side.as_str())]
    Wasm {
        /// Whose apparatus.
        side: Side,
        /// Why.
        #[source]
        source: crate::wasm::WasmError,
    },
    /// A side's WebAssembly component is not signed as the operator's policy demands.
    #[error("the {} apparatus component's signature was not accepted", side.as_str())]
    Signature {
        /// Whose apparatus.
        side: Side,
        /// Why.
        #[source]
        source: crate::signature::SignatureError,
    },
    /// The Socket's coupling policy cannot be evaluated.
    #[error("the Socket's coupling policy is invalid")]
    Policy(#[source] PolicyError),
    /// A side's apparatus pod could not be started or used.
    #[error("failed to run the {} apparatus pod", side.as_str())]
    Pod {
        /// Whose apparatus.
        side: Side,
        /// Why.
        #[source]
        source: super::pods::PodError,
    },
    /// A result key cannot be stored in a Secret.
    #[error(
        "result key {key:?} of the {side} side is not a valid Secret key (letters, digits, '-', '_' and '.' only)"
    )]
    ResultKey {
        /// `plug` or `socket`.
        side: &'static str,
        /// The key.
        key: String,
    },
    /// Decoupling failed; the finalizer stays.
    #[error(
        "failed to decouple from Socket {socket}; fix the cause, or set the annotation plugboard.dev/force-decouple=true on the Plug to decouple anyway"
    )]
    Decouple {
        /// `namespace/name` of the Socket.
        socket: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A template in the spec could not be rendered.
    #[error("{owner}: template error")]
    Template {
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// Which field, which line, why.
        #[source]
        source: crate::engine::template::TemplateError,
    },
    /// A templated resource could not be planned (bad render, wrong namespace, missing field).
    #[error("{owner}: invalid resource")]
    Resource {
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// Why.
        #[source]
        source: Box<crate::engine::resources::ResourceError>,
    },
    /// A var's object or path is not usable (spec problem).
    #[error("{owner}: {field} is invalid: {problem}")]
    VarInvalid {
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// `spec.vars[0]`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The object a var reads does not exist (yet): the coupling waits for it.
    #[error("{owner}: {field} reads {kind} {namespace}/{name}, which does not exist yet")]
    VarTargetMissing {
        /// `Plug ns/name` or `Socket ns/name`.
        owner: String,
        /// `spec.vars[0]`.
        field: String,
        /// Kind of the object.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A `config` hook answers differently to the same inputs, so every re-check would look
    /// like a change.
    #[error(
        "the configs changed between two computations with the same spec: a config hook or source is not deterministic; plugboard will not run updated hooks for changes it cannot trust until the spec changes (make the config hook return the same values for the same inputs)"
    )]
    ConfigFlapping,
    /// The Socket's password seed Secret could not be kept.
    #[error("failed to keep the password seed Secret {namespace}/{name}: {problem}")]
    Seed {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What went wrong.
        problem: String,
    },
    /// A Secret with the result Secret's name exists and the Plug does not own it: plugboard
    /// leaves it untouched.
    #[error(
        "Secret {namespace}/{name} exists but does not belong to Plug {namespace}/{plug}, so \
         plugboard does not write the Plug's results into it; delete or rename that Secret \
         (plugboard then creates its own)"
    )]
    ResultSecretNotOwned {
        /// The namespace.
        namespace: String,
        /// The Secret's name (`<plug>-plugboard-result`).
        name: String,
        /// The Plug's name.
        plug: String,
    },
    /// Reading or acting on a Kubernetes object as the owner's ServiceAccount failed.
    #[error(transparent)]
    Object(Box<super::objects::ObjectError>),
    /// An object could not be turned into JSON.
    #[error("failed to encode {what} as JSON")]
    Encode {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A reconcile ran past the operator's deadline and was dropped.
    #[error("the reconcile did not finish within {} s; retrying", after.as_secs())]
    Deadline {
        /// The deadline.
        after: std::time::Duration,
    },
    /// A hook already answered invalid input to these very inputs (see `verdicts`): it is not
    /// called again until they change.
    #[error("{message}")]
    InvalidInputUnchanged {
        /// The reason of the first answer.
        reason: &'static str,
        /// The message of the first answer.
        message: String,
    },
    /// The hook calls of a Socket already use all its slots.
    #[error(
        "the apparatus calls of Socket {socket} already use all {limit} of its slots; retrying"
    )]
    ApparatusBusy {
        /// `namespace/name` of the Socket.
        socket: String,
        /// Its slots.
        limit: usize,
    },
}

impl From<super::objects::ObjectError> for Error {
    fn from(source: super::objects::ObjectError) -> Self {
        Error::Object(Box::new(source))
    }
}

impl Error {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::HttpSetup(_) | Error::Api { .. } | Error::Encode { .. } => "ReconcileError",
            Error::SourceRead { .. } | Error::SourceNotText { .. } => reasons::SOURCE_UNAVAILABLE,
            Error::Interface(_) => reasons::CONFIG_INVALID,
            Error::Apparatus { source, .. } if source.is_egress_denied() => reasons::EGRESS_DENIED,
            Error::Apparatus { source, .. } => match source.hook_error_kind() {
                Some(kind @ (HookErrorKind::InvalidInput | HookErrorKind::RetryLater)) => {
                    kind.reason()
                }
                _ => reasons::APPARATUS_FAILED,
            },
            Error::Endpoint { .. } => reasons::APPARATUS_FAILED,
            Error::Policy(_) => reasons::INVALID_POLICY,
            Error::Pod { source, .. } => source.reason(),
            Error::ResultKey { .. } => reasons::RESULT_INVALID,
            Error::ResultSecretNotOwned { .. } => reasons::RESOURCE_NOT_OWNED,
            Error::Decouple { .. } => reasons::DECOUPLE_FAILED,
            Error::Template { .. } => reasons::TEMPLATE_INVALID,
            Error::Resource { .. } => reasons::RESOURCE_INVALID,
            Error::VarInvalid { .. } => reasons::VAR_INVALID,
            Error::VarTargetMissing { .. } => reasons::VAR_PENDING,
            Error::ConfigFlapping => reasons::CONFIG_FLAPPING,
            Error::Seed { .. } => "ReconcileError",
            Error::Oci { source, .. } => source.reason(),
            Error::Object(source) => source.reason(),
            Error::Wasm { source, .. } => source.reason(),
            Error::Signature { source, .. } => source.reason(),
            Error::Impersonation(source) => source.reason(),
            Error::Deadline { .. } => "ReconcileTimeout",
            Error::ApparatusBusy { .. } => "ApparatusBusy",
            Error::InvalidInputUnchanged { reason, .. } => reason,
        }
    }

    /// The kind of error the apparatus returned, when this is a hook's own answer (not a
    /// trap, a timeout or a transport failure): what the operator does next depends on it.
    pub fn hook_error_kind(&self) -> Option<HookErrorKind> {
        match self {
            Error::Wasm {
                source: crate::wasm::WasmError::Guest { kind, .. },
                ..
            } => Some(*kind),
            Error::Apparatus { source, .. } => source.hook_error_kind(),
            Error::InvalidInputUnchanged { .. } => Some(HookErrorKind::InvalidInput),
            _ => None,
        }
    }

    /// Whether only a spec change can fix this (so retrying on a timer is pointless).
    pub fn needs_spec_change(&self) -> bool {
        if let Error::Object(source) = self {
            return source.needs_spec_change();
        }
        if let Error::Pod { source, .. } = self {
            return source.needs_spec_change();
        }
        matches!(
            self,
            Error::Policy(_)
                | Error::Endpoint { .. }
                | Error::ResultKey { .. }
                | Error::VarInvalid { .. }
                | Error::Oci {
                    source: crate::oci::OciError::InvalidReference { .. },
                    ..
                }
                | Error::Wasm {
                    source: crate::wasm::WasmError::Limits(_),
                    ..
                }
        )
    }

    /// Whether this failed because no apparatus pod can start in a namespace being deleted:
    /// hooks of Plugs and Sockets being deleted with it are then skipped, so the namespace's
    /// deletion finishes.
    pub fn namespace_terminating(&self) -> bool {
        matches!(
            self,
            Error::Pod {
                source: super::pods::PodError::NamespaceTerminating { .. },
                ..
            }
        )
    }

    /// The message: this error and its causes, joined with ": ", skipping a cause whose text
    /// its parent already contains. Bounded to 1 KiB, control characters replaced (see
    /// [`sanitize`]).
    pub fn message(&self) -> String {
        chain(self)
    }
}

/// One link of a chain. An API server refusal reads as its message and reason, not as the
/// client's debug dump of the whole Status.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) if !status.message.is_empty() => {
            format!("{} ({})", status.message, status.reason)
        }
        _ => e.to_string(),
    }
}

/// Renders an error chain on one line, bounded and sanitised: the one place where text from
/// endpoints, components and the API server becomes a condition message or an Event note.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = describe(s);
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    sanitize(&out, MAX_MESSAGE)
}

/// The longest condition message or Event note built from an error, in bytes.
pub(crate) const MAX_MESSAGE: usize = 1024;

/// `text` made safe to show in status and Events: each control character (newlines, escape
/// sequences, NUL, bidirectional overrides) becomes `\u{…}` text, and the result is cut to
/// `max` bytes (at a character boundary, marked with `…`). Text that came from Secrets must
/// not reach here at all (callers keep it out; WebAssembly guest text is scrubbed of the
/// values the hook received).
pub(crate) fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 4);
    for c in text.chars() {
        let escaped;
        let mut buf = [0u8; 4];
        let piece: &str =
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                escaped = c.escape_unicode().to_string();
                &escaped
            } else {
                c.encode_utf8(&mut buf)
            };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_and_free_of_control_characters() {
        assert_eq!(sanitize("plain text", 100), "plain text");
        assert_eq!(
            sanitize("line one\nline two\x1b[31m\u{202e}", 100),
            "line one\\u{a}line two\\u{1b}[31m\\u{202e}"
        );
        let long = "é".repeat(1000);
        let cut = sanitize(&long, MAX_MESSAGE);
        assert!(cut.len() <= MAX_MESSAGE + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        let error = Error::HttpSetup(format!("guest said {}\r\n{}", "x".repeat(5000), "y"));
        let message = error.message();
        assert!(!message.chars().any(char::is_control), "{message}");
        assert!(message.len() <= MAX_MESSAGE + 3);
    }
}
