//! Apparatuses: where a side's lifecycle hooks run and where it can get config from.
//!
//! The HTTP form speaks the reference implementation's wire protocol (`http`), to an external
//! endpoint or to a pod plugboard runs on demand (`pod`: what that pod is, pure); the
//! WebAssembly form runs components in-process. The coupling engine sees both through [`HookRequest`] and
//! [`ConfigRequest`], which carry the same information the HTTP bodies do.

pub mod http;
pub mod pod;

use serde_json::Value;

use crate::crd::LifecyclePoint;
use crate::engine::Values;

/// The side of a coupling an apparatus belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The Plug's apparatus.
    Plug,
    /// The Socket's apparatus.
    Socket,
}

impl Side {
    /// `plug` or `socket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Plug => "plug",
            Side::Socket => "socket",
        }
    }
}

/// A `config` call: the apparatus computes part of its side's config.
#[derive(Debug, Clone)]
pub struct ConfigRequest<'a> {
    /// Whose apparatus is called.
    pub side: Side,
    /// The Plug object as JSON (the full Kubernetes object).
    pub plug: &'a Value,
    /// The Socket object as JSON.
    pub socket: &'a Value,
    /// The Plug's data.
    pub plug_data: &'a Values,
    /// The Socket's data.
    pub socket_data: &'a Values,
    /// The calling side's resolved vars, when it declares any.
    pub vars: Option<&'a Values>,
}

/// A lifecycle hook call.
#[derive(Debug, Clone)]
pub struct HookRequest<'a> {
    /// Whose apparatus is called.
    pub side: Side,
    /// The lifecycle point.
    pub point: LifecyclePoint,
    /// The Plug object as JSON; absent for a Socket's `created` and `deleted` hooks.
    pub plug: Option<&'a Value>,
    /// The Socket object as JSON; absent for a Plug's `created` and `deleted` hooks.
    pub socket: Option<&'a Value>,
    /// The Plug's validated config (`coupled`, `updated`, `decoupled` only).
    pub plug_config: Option<&'a Values>,
    /// The Socket's validated config (`coupled`, `updated`, `decoupled` only).
    pub socket_config: Option<&'a Values>,
}

/// The kinds of error a hook returns — the WIT `hook-error` of a WebAssembly component, the
/// status of an HTTP apparatus's answer ([`HookErrorKind::from_status`]) — each with its own
/// behaviour in the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookErrorKind {
    /// `invalid-input`: Stalled; not called again until the spec or the hook's inputs change.
    InvalidInput,
    /// `retry-later`: not Stalled; called again after a backoff.
    RetryLater,
    /// `failed`: Stalled with a Warning Event; called again after a backoff.
    Failed,
}

impl HookErrorKind {
    /// The kind an HTTP apparatus's error status means: `422` is invalid input, `429` and `503`
    /// ask to retry later, any other status of 400 or more is a failure. (`plugboard-sdk`'s
    /// HTTP server answers each `HookError` with these.)
    pub fn from_status(code: u16) -> Self {
        match code {
            422 => HookErrorKind::InvalidInput,
            429 | 503 => HookErrorKind::RetryLater,
            _ => HookErrorKind::Failed,
        }
    }

    /// The condition and Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            HookErrorKind::InvalidInput => "HookInvalidInput",
            HookErrorKind::RetryLater => "HookRetryLater",
            HookErrorKind::Failed => "HookFailed",
        }
    }
}

impl std::fmt::Display for HookErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookErrorKind::InvalidInput => "invalid input",
            HookErrorKind::RetryLater => "retry later",
            HookErrorKind::Failed => "failed",
        })
    }
}
