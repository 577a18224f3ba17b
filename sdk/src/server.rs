//! Serving an [`Apparatus`] as an HTTP apparatus (feature `http-server`).
//!
//! The same trait implementation that builds into a WebAssembly component can run as a plain
//! program — in an apparatus pod, behind any URL, or on your laptop with the operator's debug
//! endpoint pointed at it — speaking the wire protocol plugboard's HTTP apparatus client
//! speaks (the reference implementation's):
//!
//! | request | body | answer |
//! | --- | --- | --- |
//! | `POST <prefix>/config` | `{"version": 1, "plug", "socket", "plugData", "socketData", "vars"?}` | `200`, a JSON object of strings: the config keys |
//! | `POST <prefix>/created`, `/deleted` | `{"version": "1", "plug"}` or `{"version": "1", "socket"}` | `200` `{}` |
//! | `POST <prefix>/coupled`, `/updated`, `/decoupled` | `{"version": "1", "plug", "socket", "plugConfig", "socketConfig"}` | `200` `{}` |
//! | `GET <prefix>/ping` | — | `200` `pong` |
//!
//! A [`HookError`] is answered with a status plugboard maps back to the same kind:
//! [`InvalidInput`](HookError::InvalidInput) is `422`, [`RetryLater`](HookError::RetryLater)
//! is `503`, [`Failed`](HookError::Failed) is `500`; the message is the `text/plain` body (for
//! your own logs: plugboard does not copy an apparatus's answer into status). A body that is
//! not the protocol's is `400`, a panicking hook `500`.
//!
//! **Which side.** The protocol does not say whose apparatus is called, so the path does:
//! `…/plug/<hook>` calls the hook with [`Side::Plug`], `…/socket/<hook>` with
//! [`Side::Socket`]. Point a Socket's `spec.apparatus.endpoint` at `http://host:port/socket`
//! and a Plug's at `http://host:port/plug`. Paths without either use [`Server::side`], and
//! fail with `404` when it is unset (except `created` and `deleted`, whose body names the side).
//!
//! **Same semantics as WebAssembly.** Each call constructs the apparatus with `Default` and
//! runs the hook on a blocking thread, so nothing survives from one call to the next, as in a
//! component. [`log`](crate::log) lines go to standard error. [`http::send`](crate::http::send)
//! has no host to go through and is [denied](crate::http::SendError::Denied): a hook that
//! needs outbound HTTP runs as a component, where the spec's `allowedHosts` governs it.
//!
//! ```no_run
//! use plugboard_sdk::{Apparatus, server::Server};
//!
//! #[derive(Default)]
//! struct Greeter;
//! impl Apparatus for Greeter {}
//!
//! fn main() -> std::io::Result<()> {
//!     // Serves until the process is stopped.
//!     Server::new().run::<Greeter>("0.0.0.0:8080")
//! }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::Apparatus;
use crate::object::Object;
use crate::types::{ConfigInput, Coupling, HookError, Side, Values};

/// The largest request body read by default: Plug and Socket objects with their configs.
const DEFAULT_MAX_BODY: usize = 8 << 20;

/// An HTTP apparatus server for any [`Apparatus`] that implements [`Default`].
#[derive(Debug, Clone)]
pub struct Server {
    side: Option<Side>,
    max_body_bytes: usize,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server that takes the side from the path and reads bodies of up to 8 MiB.
    pub fn new() -> Self {
        Self {
            side: None,
            max_body_bytes: DEFAULT_MAX_BODY,
        }
    }

    /// The side for paths that name none (`/<hook>` instead of `/socket/<hook>`): set it when
    /// the endpoint is an apparatus pod whose spec gives no path prefix.
    pub fn side(mut self, side: Side) -> Self {
        self.side = Some(side);
        self
    }

    /// The largest request body accepted; a larger one is answered `413`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Serves `A` on `listener` until the task is dropped; each connection is served on a task
    /// of its own. Fails only when accepting connections fails.
    pub async fn serve<A: Apparatus + Default + 'static>(
        self,
        listener: TcpListener,
    ) -> std::io::Result<()> {
        let server = Arc::new(self);
        loop {
            let (stream, _) = listener.accept().await?;
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle::<A>(request).await) }
                });
                // A connection that breaks ends only itself.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Binds `addr` (`host:port`), prints the address it listens on to standard error and
    /// serves `A` until the process is stopped, on a runtime of its own. For a plugin's
    /// `main`.
    pub fn run<A: Apparatus + Default + 'static>(self, addr: &str) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let listener = TcpListener::bind(addr).await?;
            let local: SocketAddr = listener.local_addr()?;
            eprintln!("plugboard apparatus listening on http://{local}");
            self.serve::<A>(listener).await
        })
    }

    async fn handle<A: Apparatus + Default + 'static>(
        &self,
        request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let (side, hook) = route(&path);
        if request.method() == Method::GET && hook == "ping" {
            return text(StatusCode::OK, "pong");
        }
        if request.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "plugboard apparatus calls are POST requests",
            );
        }
        let Some(call) = Hook::parse(hook) else {
            return text(
                StatusCode::NOT_FOUND,
                &format!(
                    "no hook at {path}; the paths are <prefix>/config, /created, /coupled, \
                     /updated, /decoupled and /deleted"
                ),
            );
        };
        let body = match Limited::new(request.into_body(), self.max_body_bytes)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the body is larger than {} bytes or could not be read",
                        self.max_body_bytes
                    ),
                );
            }
        };
        let body: Map<String, Value> = match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not a JSON object: {e}"),
                );
            }
        };
        let side = side.or(self.side).or_else(|| call.side_from(&body));
        let Some(side) = side else {
            return text(
                StatusCode::NOT_FOUND,
                &format!(
                    "{path} does not say whose apparatus this is: use …/plug/{hook} or \
                     …/socket/{hook} as the endpoint, or set Server::side"
                ),
            );
        };
        let outcome = match call {
            Hook::Config => config_input(side, &body).map(Call::Config),
            _ => coupling(call, side, &body).map(|c| Call::Lifecycle(call, c)),
        };
        let call = match outcome {
            Ok(call) => call,
            Err(problem) => return text(StatusCode::BAD_REQUEST, &problem),
        };
        match tokio::task::spawn_blocking(move || call.run(&A::default())).await {
            Ok(Ok(Some(values))) => match serde_json::to_vec(&values) {
                Ok(body) => json(body),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Ok(Ok(None)) => json(b"{}".to_vec()),
            Ok(Err(error)) => {
                let status = match error {
                    HookError::InvalidInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    HookError::RetryLater(_) => StatusCode::SERVICE_UNAVAILABLE,
                    HookError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                text(status, error.message())
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the {hook} hook panicked"),
            ),
        }
    }
}

/// The side named by the path's second-to-last segment, and the last segment (the hook).
fn route(path: &str) -> (Option<Side>, &str) {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let hook = segments.next().unwrap_or_default();
    let side = match segments.next() {
        Some("plug") => Some(Side::Plug),
        Some("socket") => Some(Side::Socket),
        _ => None,
    };
    (side, hook)
}

/// A hook of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Config,
    Created,
    Coupled,
    Updated,
    Decoupled,
    Deleted,
}

impl Hook {
    fn parse(name: &str) -> Option<Hook> {
        Some(match name {
            "config" => Hook::Config,
            "created" => Hook::Created,
            "coupled" => Hook::Coupled,
            "updated" => Hook::Updated,
            "decoupled" => Hook::Decoupled,
            "deleted" => Hook::Deleted,
            _ => return None,
        })
    }

    /// `created` and `deleted` carry only the owner, which names the side.
    fn side_from(self, body: &Map<String, Value>) -> Option<Side> {
        if !matches!(self, Hook::Created | Hook::Deleted) {
            return None;
        }
        match (body.contains_key("plug"), body.contains_key("socket")) {
            (true, false) => Some(Side::Plug),
            (false, true) => Some(Side::Socket),
            _ => None,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Config => "config",
            Hook::Created => "created",
            Hook::Coupled => "coupled",
            Hook::Updated => "updated",
            Hook::Decoupled => "decoupled",
            Hook::Deleted => "deleted",
        })
    }
}

/// A parsed call, ready to run on a blocking thread.
enum Call {
    Config(ConfigInput),
    Lifecycle(Hook, Coupling),
}

impl Call {
    fn run<A: Apparatus>(self, apparatus: &A) -> Result<Option<Values>, HookError> {
        match self {
            Call::Config(input) => apparatus.config(input).map(Some),
            Call::Lifecycle(hook, coupling) => match hook {
                Hook::Created => apparatus.created(coupling),
                Hook::Coupled => apparatus.coupled(coupling),
                Hook::Updated => apparatus.updated(coupling),
                Hook::Decoupled => apparatus.decoupled(coupling),
                // `config` is always `Call::Config`.
                Hook::Deleted | Hook::Config => apparatus.deleted(coupling),
            }
            .map(|()| None),
        }
    }
}

/// Checks `version`: a number for `config`, a string for lifecycle hooks, as plugboard sends.
fn check_version(body: &Map<String, Value>, config: bool) -> Result<(), String> {
    let version = body.get("version");
    let ok = match version {
        Some(Value::Number(n)) => config && n.as_u64() == Some(1),
        Some(Value::String(s)) => !config && s == "1",
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let expected = if config {
        "the number 1"
    } else {
        "the string \"1\""
    };
    Err(format!(
        "unsupported protocol version {}; expected {expected}",
        version.map_or_else(|| "(none)".to_owned(), Value::to_string)
    ))
}

fn object(body: &Map<String, Value>, key: &str) -> Result<Option<Object>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(Object::new(v.clone()))),
        Some(_) => Err(format!("`{key}` is not a JSON object")),
    }
}

fn required(body: &Map<String, Value>, key: &str) -> Result<Object, String> {
    object(body, key)?.ok_or_else(|| format!("the body has no `{key}`"))
}

fn values(body: &Map<String, Value>, key: &str) -> Result<Option<Values>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("`{key}` is not an object of strings: {e}")),
    }
}

fn config_input(side: Side, body: &Map<String, Value>) -> Result<ConfigInput, String> {
    check_version(body, true)?;
    Ok(ConfigInput {
        side,
        plug: required(body, "plug")?,
        socket: required(body, "socket")?,
        plug_data: values(body, "plugData")?.unwrap_or_default(),
        socket_data: values(body, "socketData")?.unwrap_or_default(),
        vars: values(body, "vars")?,
    })
}

fn coupling(hook: Hook, side: Side, body: &Map<String, Value>) -> Result<Coupling, String> {
    check_version(body, false)?;
    let coupling = Coupling {
        side,
        plug: object(body, "plug")?,
        socket: object(body, "socket")?,
        plug_config: values(body, "plugConfig")?.unwrap_or_default(),
        socket_config: values(body, "socketConfig")?.unwrap_or_default(),
    };
    if coupling.owner().is_none() {
        return Err(format!(
            "the {hook} hook of the {side} apparatus needs `{side}` in the body"
        ));
    }
    Ok(coupling)
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("fixtures are objects"),
        }
    }

    #[test]
    fn paths_name_the_hook_and_the_side() {
        assert_eq!(route("/socket/coupled"), (Some(Side::Socket), "coupled"));
        assert_eq!(route("/team/plug/config/"), (Some(Side::Plug), "config"));
        assert_eq!(route("/created"), (None, "created"));
        assert_eq!(Hook::parse("ping"), None);
    }

    #[test]
    fn versions_are_checked_as_plugboard_sends_them() {
        assert!(check_version(&body(json!({"version": 1})), true).is_ok());
        assert!(check_version(&body(json!({"version": "1"})), false).is_ok());
        assert!(check_version(&body(json!({"version": "1"})), true).is_err());
        let err = check_version(&body(json!({"version": 2})), false).unwrap_err();
        assert!(err.contains("unsupported protocol version 2"), "{err}");
    }

    #[test]
    fn created_and_deleted_bodies_name_their_side() {
        let plug_only = body(json!({"version": "1", "plug": {}}));
        assert_eq!(Hook::Created.side_from(&plug_only), Some(Side::Plug));
        assert_eq!(Hook::Coupled.side_from(&plug_only), None);
        let both = body(json!({"version": "1", "plug": {}, "socket": {}}));
        assert_eq!(Hook::Deleted.side_from(&both), None);
    }

    #[test]
    fn bodies_become_the_hooks_inputs() {
        let input = config_input(
            Side::Socket,
            &body(json!({"version": 1, "plug": {"metadata": {"name": "p"}},
                         "socket": {"metadata": {"name": "s"}},
                         "plugData": {"a": "1"}, "socketData": {}, "vars": {"v": "x"}})),
        )
        .unwrap();
        assert_eq!(input.owner().name(), "s");
        assert_eq!(input.plug_data["a"], "1");
        assert_eq!(input.vars.unwrap()["v"], "x");

        let coupled = coupling(
            Hook::Coupled,
            Side::Plug,
            &body(json!({"version": "1", "plug": {"metadata": {"name": "p"}},
                         "socket": {"metadata": {"name": "s"}},
                         "plugConfig": {"k": "v"}, "socketConfig": {}})),
        )
        .unwrap();
        assert_eq!(coupled.owner_config()["k"], "v");

        let missing = coupling(
            Hook::Deleted,
            Side::Socket,
            &body(json!({"version": "1", "plug": {}})),
        );
        assert!(missing.unwrap_err().contains("needs `socket`"));
        let not_strings = config_input(
            Side::Plug,
            &body(json!({"version": 1, "plug": {}, "socket": {}, "plugData": {"n": 1}})),
        );
        assert!(
            not_strings
                .unwrap_err()
                .contains("`plugData` is not an object of strings")
        );
    }
}
