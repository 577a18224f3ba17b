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
