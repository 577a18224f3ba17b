//! What hooks receive and return: the WIT contract's types in Rust shape.

use std::collections::BTreeMap;
use std::fmt;

use crate::http::SendError;
use crate::object::Object;

/// A string map: config, data, vars or a hook's result.
pub type Values = BTreeMap<String, String>;

/// What a hook returns: `Ok` or a [`HookError`].
pub type HookResult<T = ()> = Result<T, HookError>;

/// The side of a coupling a call is for: whose apparatus the component is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The component is the Plug's apparatus.
    Plug,
    /// The component is the Socket's apparatus.
    Socket,
}

impl Side {
    /// `"plug"` or `"socket"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Plug => "plug",
            Side::Socket => "socket",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Plug => Side::Socket,
            Side::Socket => Side::Plug,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a hook failed. Errors are data that plugboard turns into a condition on the Plug or
/// Socket; a panic is a bug and is reported as a trap instead.
///
/// Each kind has its own behaviour in the operator (the condition reason is in brackets):
///
/// | kind | conditions | Warning Event | called again |
/// | --- | --- | --- | --- |
/// | [`InvalidInput`](HookError::InvalidInput) (`HookInvalidInput`) | `Ready=False`, `Stalled=True` | yes | only once the spec (generation, labels, annotations) or the hook's inputs (configs, data, vars) change |
/// | [`RetryLater`](HookError::RetryLater) (`HookRetryLater`) | `Ready=False`, `Reconciling=True` saying it will retry; not Stalled | no | after a backoff (doubling per failure, up to the operator's `--retry-max-seconds`) |
/// | [`Failed`](HookError::Failed) (`HookFailed`) | `Ready=False`, `Stalled=True` | yes | after a backoff |
///
/// Over HTTP (`plugboard_sdk::server`, feature `http-server`) the kinds are the statuses
/// `422`, `503` and `500`, which plugboard maps back to the same behaviour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The input cannot be used; retrying is pointless until the Plug or Socket changes. The
    /// message says what to fix. plugboard does not call the hook again with the same inputs.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A transient condition (a dependency is down, a result is not ready); plugboard calls
    /// the hook again after a backoff, without marking the Plug or Socket Stalled.
    #[error("retry later: {0}")]
    RetryLater(String),
    /// The hook failed; plugboard reports the message (Stalled, with a Warning Event) and
    /// calls the hook again after a backoff.
    #[error("{0}")]
    Failed(String),
}

impl HookError {
    /// An [`InvalidInput`](HookError::InvalidInput) error: the message says what to fix.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        HookError::InvalidInput(message.into())
    }

    /// A [`RetryLater`](HookError::RetryLater) error.
    pub fn retry_later(message: impl Into<String>) -> Self {
        HookError::RetryLater(message.into())
    }

    /// A [`Failed`](HookError::Failed) error.
    pub fn failed(message: impl Into<String>) -> Self {
        HookError::Failed(message.into())
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            HookError::InvalidInput(m) | HookError::RetryLater(m) | HookError::Failed(m) => m,
        }
    }
}

/// Lets hooks use `?` on [`http::send`](crate::http::send): a host the spec does not allow is
/// invalid input (the spec has to change), a timeout or transport failure is worth a retry, and
/// an oversized response is a failure.
impl From<SendError> for HookError {
    fn from(e: SendError) -> Self {
        let message = format!("HTTP request failed: {e}");
        match e {
            SendError::Denied(_) => HookError::InvalidInput(message),
            SendError::Timeout | SendError::Transport(_) => HookError::RetryLater(message),
            SendError::TooLarge => HookError::Failed(message),
        }
    }
}

/// What the [`config`](crate::Apparatus::config) hook sees.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConfigInput {
    /// Whose config is being computed.
    pub side: Side,
    /// The Plug.
    pub plug: Object,
    /// The Socket.
    pub socket: Object,
    /// The Plug's data (inline, ConfigMap and Secret sources merged).
    pub plug_data: Values,
    /// The Socket's data.
    pub socket_data: Values,
    /// The calling side's resolved vars, when it declares any.
    pub vars: Option<Values>,
}

impl ConfigInput {
    /// An input with empty data and no vars; add them with the `with_*` methods.
    pub fn new(side: Side, plug: Object, socket: Object) -> Self {
        Self {
            side,
            plug,
            socket,
            plug_data: Values::new(),
            socket_data: Values::new(),
            vars: None,
        }
    }

    /// Adds a key to the Plug's data.
    pub fn with_plug_data(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.plug_data.insert(key.into(), value.into());
        self
    }

    /// Adds a key to the Socket's data.
    pub fn with_socket_data(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.socket_data.insert(key.into(), value.into());
        self
    }

    /// Adds a var (and makes `vars` present).
    pub fn with_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars
            .get_or_insert_with(Values::new)
            .insert(key.into(), value.into());
        self
    }

    /// The calling side's object: the Plug on the Plug side, the Socket on the Socket side.
    pub fn owner(&self) -> &Object {
        match self.side {
            Side::Plug => &self.plug,
            Side::Socket => &self.socket,
        }
    }

    /// The other side's object.
    pub fn peer(&self) -> &Object {
        match self.side {
            Side::Plug => &self.socket,
            Side::Socket => &self.plug,
        }
    }

    /// The calling side's data.
    pub fn owner_data(&self) -> &Values {
        match self.side {
            Side::Plug => &self.plug_data,
            Side::Socket => &self.socket_data,
        }
    }

    /// The other side's data.
    pub fn peer_data(&self) -> &Values {
        match self.side {
            Side::Plug => &self.socket_data,
            Side::Socket => &self.plug_data,
        }
    }
}

/// What a lifecycle hook sees of a coupling.
///
/// For `created` and `deleted` only the owner's object is set (`plug` on the Plug side,
/// `socket` on the Socket side) and both configs are empty. For `coupled`, `updated` and
/// `decoupled` both objects are set and both configs are the validated configs. A `decoupled`
/// hook whose Socket no longer exists gets no `socket`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Coupling {
    /// Whose apparatus this call is for.
    pub side: Side,
    /// The Plug, when the hook sees it.
    pub plug: Option<Object>,
    /// The Socket, when the hook sees it.
    pub socket: Option<Object>,
    /// The Plug's validated config.
    pub plug_config: Values,
    /// The Socket's validated config.
    pub socket_config: Values,
}

impl Coupling {
    /// A coupling with no objects and empty configs; add them with the `with_*` methods.
    pub fn new(side: Side) -> Self {
        Self {
            side,
            plug: None,
            socket: None,
            plug_config: Values::new(),
            socket_config: Values::new(),
        }
    }

    /// Sets the Plug.
    pub fn with_plug(mut self, plug: Object) -> Self {
        self.plug = Some(plug);
        self
    }

    /// Sets the Socket.
    pub fn with_socket(mut self, socket: Object) -> Self {
        self.socket = Some(socket);
        self
    }

    /// Adds a key to the Plug's config.
    pub fn with_plug_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.plug_config.insert(key.into(), value.into());
        self
    }

    /// Adds a key to the Socket's config.
    pub fn with_socket_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.socket_config.insert(key.into(), value.into());
        self
    }

    /// The object whose apparatus this call is for, when the hook sees it.
    pub fn owner(&self) -> Option<&Object> {
        match self.side {
            Side::Plug => self.plug.as_ref(),
            Side::Socket => self.socket.as_ref(),
        }
    }

    /// The other side's object, when the hook sees it.
    pub fn peer(&self) -> Option<&Object> {
        match self.side {
            Side::Plug => self.socket.as_ref(),
            Side::Socket => self.plug.as_ref(),
        }
    }

    /// The calling side's validated config.
    pub fn owner_config(&self) -> &Values {
        match self.side {
            Side::Plug => &self.plug_config,
            Side::Socket => &self.socket_config,
        }
    }

    /// The other side's validated config.
    pub fn peer_config(&self) -> &Values {
        match self.side {
            Side::Plug => &self.socket_config,
            Side::Socket => &self.plug_config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(name: &str) -> Object {
        Object::new(json!({"metadata": {"name": name}}))
    }

    #[test]
    fn owner_and_peer_follow_the_side() {
        let input = ConfigInput::new(Side::Socket, object("p"), object("s"))
            .with_plug_data("a", "1")
            .with_socket_data("b", "2");
        assert_eq!(input.owner().name(), "s");
        assert_eq!(input.peer().name(), "p");
        assert_eq!(input.owner_data()["b"], "2");
        assert_eq!(input.peer_data()["a"], "1");

        let coupling = Coupling::new(Side::Plug)
            .with_plug(object("p"))
            .with_plug_config("k", "v");
        assert_eq!(coupling.owner().map(Object::name), Some("p"));
        assert_eq!(coupling.peer(), None);
        assert_eq!(coupling.owner_config()["k"], "v");
        assert!(coupling.peer_config().is_empty());
    }

    #[test]
    fn send_errors_map_to_hook_errors_by_what_would_fix_them() {
        assert!(matches!(
            HookError::from(SendError::Denied("x".into())),
            HookError::InvalidInput(_)
        ));
        assert!(matches!(
            HookError::from(SendError::Timeout),
            HookError::RetryLater(_)
        ));
        assert!(matches!(
            HookError::from(SendError::Transport("reset".into())),
            HookError::RetryLater(_)
        ));
        assert!(matches!(
            HookError::from(SendError::TooLarge),
            HookError::Failed(_)
        ));
    }

    #[test]
    fn hook_error_message_has_no_kind_prefix() {
        assert_eq!(HookError::retry_later("db down").message(), "db down");
        assert_eq!(
            HookError::retry_later("db down").to_string(),
            "retry later: db down"
        );
    }
}
