//! A loopback HTTP apparatus for end-to-end tests: it records every request it receives and
//! answers with configurable replies.
//!
//! ```no_run
//! # async fn demo() {
//! use plugboard_tests::recorder::{Recorder, Reply};
//! use serde_json::json;
//!
//! let apparatus = Recorder::start().await;
//! apparatus.reply("/config", Reply::Json(json!({"port": 5432})));
//! // ... point a Plug or Socket's `spec.apparatus.endpoint` at `apparatus.url()` ...
//! let hooks: Vec<String> = apparatus.hook_calls().into_iter().map(|c| c.path).collect();
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

/// One request the recorder received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// The request path, including any prefix (for example `/socket/coupled`).
    pub path: String,
    /// The request body parsed as JSON; `null` when empty, and the raw text as a JSON string
    /// when it is not JSON.
    pub body: Value,
    /// The `Content-Type` header, when present and valid UTF-8.
    pub content_type: Option<String>,
    /// The `X-Forwarded-For` header: set when a proxy (such as the API server's pod proxy)
    /// passed the request on.
    pub forwarded_for: Option<String>,
    /// When the request arrived.
    pub received: Instant,
}

/// How the recorder answers requests to a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Status 200 with this JSON body.
    Json(Value),
    /// This status with an empty body (500 when the code is not a valid status).
    Status(u16),
    /// Accept the request and never answer, until the recorder is dropped.
    Hang,
    /// Accept the request and answer 200 with `{}` once [`Recorder::open_gate`] is called
    /// (at once when it was called before): a hook held in flight for as long as a test needs.
    Gate,
    /// Status 302 with this `Location`: a redirect, which plugboard must not follow.
    Redirect(String),
    /// Status 200 with `{"<key>": n}`, where `n` counts the requests answered this way (1, 2,
    /// ...): a deliberately non-deterministic apparatus.
    Counter(String),
}

/// A running loopback apparatus. Cloning gives another handle to the same server, which
/// stops when the last handle is dropped.
#[derive(Clone)]
pub struct Recorder {
    addr: SocketAddr,
    url: String,
    state: Arc<Mutex<State>>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
    _server: Arc<ServerGuard>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").field("url", &self.url).finish()
    }
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<RecordedCall>,
    /// Path suffixes and their replies, in registration order; the latest match wins.
    replies: Vec<(String, Reply)>,
    /// Requests answered with [`Reply::Counter`] so far.
    counted: u64,
}

/// Stops the server task (and with it every connection) when the last handle goes away.
#[derive(Debug)]
struct ServerGuard(AbortHandle);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the calls from the others.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// Starts a recorder on `127.0.0.1` with a free port, served by a task on the current
    /// tokio runtime. Every path answers 200 with `{}` until [`Recorder::reply`] says
    /// otherwise.
    pub async fn start() -> Recorder {
        Recorder::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Starts a recorder on `ip` (an address of this machine) with a free port.
    pub async fn start_on(ip: IpAddr) -> Recorder {
        let listener = match TcpListener::bind(SocketAddr::new(ip, 0)).await {
            Ok(listener) => listener,
            Err(e) => panic!("recorder: failed to bind a port on {ip}: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("recorder: failed to read the bound address: {e}"),
        };
        let state = Arc::new(Mutex::new(State::default()));
        let gate = Arc::new(tokio::sync::watch::Sender::new(false));
        let task = tokio::spawn(serve(listener, state.clone(), gate.clone()));
        Recorder {
            addr,
            url: format!("http://{addr}"),
            state,
            gate,
            _server: Arc::new(ServerGuard(task.abort_handle())),
        }
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.state).calls.clone()
    }

    /// The requests whose path does not end in `/config`: the lifecycle hooks.
    pub fn hook_calls(&self) -> Vec<RecordedCall> {
        lock(&self.state)
            .calls
            .iter()
            .filter(|call| !call.path.ends_with("/config"))
            .cloned()
            .collect()
    }

    /// Answers requests whose path ends in `path_suffix` with `reply` from now on. A later
    /// registration overrides earlier ones that match the same path.
    pub fn reply(&self, path_suffix: &str, reply: Reply) {
        lock(&self.state)
            .replies
            .push((path_suffix.to_owned(), reply));
    }

    /// Answers every request held by [`Reply::Gate`], and from now on answers them at once.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Forgets the recorded calls. Replies stay configured.
    pub fn clear(&self) {
        lock(&self.state).calls.clear();
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which aborts every
/// connection task too (including hanging ones).
async fn serve(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(stream, state.clone(), gate.subscribe()));
    }
}

async fn connection(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    gate: tokio::sync::watch::Receiver<bool>,
) {
    let service = service_fn(move |request| handle(request, state.clone(), gate.clone()));
    // A client that goes away mid-request is not the recorder's problem.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
    mut gate: tokio::sync::watch::Receiver<bool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let received = Instant::now();
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let forwarded_for = header("x-forwarded-for");
    let bytes = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let reply = {
        let mut state = lock(&state);
        state.calls.push(RecordedCall {
            path: path.clone(),
            body,
            content_type,
            forwarded_for,
            received,
        });
        let reply = state
            .replies
            .iter()
            .rev()
            .find(|(suffix, _)| path.ends_with(suffix.as_str()))
            .map(|(_, reply)| reply.clone());
        match reply {
            Some(Reply::Counter(key)) => {
                state.counted += 1;
                let mut answer = serde_json::Map::new();
                answer.insert(key, Value::from(state.counted));
                Some(Reply::Json(Value::Object(answer)))
            }
            other => other,
        }
    };
    let reply = match reply {
        Some(Reply::Gate) => {
            // The sender lives as long as the server: an error means it is stopping.
            if gate.wait_for(|open| *open).await.is_err() {
                std::future::pending::<()>().await;
            }
            None
        }
        other => other,
    };
    let response = match reply.unwrap_or_else(|| Reply::Json(Value::Object(Default::default()))) {
        Reply::Json(value) => {
            let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Reply::Status(code) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response
        }
        Reply::Redirect(location) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::FOUND;
            if let Ok(value) = hyper::header::HeaderValue::from_str(&location) {
                response
                    .headers_mut()
                    .insert(hyper::header::LOCATION, value);
            }
            response
        }
        Reply::Hang => std::future::pending().await,
        // Resolved to the default answer above, once the gate opened.
        Reply::Gate => Response::new(Full::new(Bytes::new())),
        // Resolved to `Json` above, under the lock.
        Reply::Counter(_) => Response::new(Full::new(Bytes::new())),
    };
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod tests {
    use std::time::Duration;

    use hyper::client::conn::http1 as client;
    use serde_json::json;

    use super::*;

    /// Posts `body` to `path` on a fresh connection; returns the status and the body.
    async fn post(recorder: &str, path: &str, body: &str) -> Result<(u16, Value), String> {
        let authority = recorder.trim_start_matches("http://").to_owned();
        let stream = TcpStream::connect(&authority).await.unwrap();
        let (mut sender, connection) = client::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let request = Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Ok((status, value))
    }

    #[tokio::test]
    async fn records_requests_and_answers_with_replies() {
        let recorder = Recorder::start().await;
        let url = recorder.url();
        assert!(recorder.url().starts_with("http://127.0.0.1:"));
        recorder.reply("/config", Reply::Json(json!({"port": 5432})));
        recorder.reply("/deleted", Reply::Status(503));

        let answer = post(&url, "/socket/config", r#"{"version":1}"#).await;
        assert_eq!(answer, Ok((200, json!({"port": 5432}))));
        let answer = post(&url, "/socket/coupled", r#"{"version":"1"}"#).await;
        assert_eq!(answer, Ok((200, json!({}))));
        let answer = post(&url, "/deleted", "not json").await;
        assert_eq!(answer, Ok((503, Value::Null)));

        // A later registration wins.
        recorder.reply("/config", Reply::Status(500));
        assert_eq!(post(&url, "/config", "").await, Ok((500, Value::Null)));

        let calls = recorder.calls();
        let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/socket/config", "/socket/coupled", "/deleted", "/config"]
        );
        assert_eq!(calls[0].body, json!({"version": 1}));
        assert_eq!(calls[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(calls[1].body, json!({"version": "1"}));
        assert_eq!(calls[2].body, json!("not json"));
        assert_eq!(calls[3].body, Value::Null);

        let hooks: Vec<String> = recorder.hook_calls().into_iter().map(|c| c.path).collect();
        assert_eq!(hooks, ["/socket/coupled", "/deleted"]);

        let handle = recorder.clone();
        handle.clear();
        assert!(recorder.calls().is_empty());
        assert_eq!(post(&url, "/config", "{}").await, Ok((500, Value::Null)));
        assert_eq!(recorder.calls().len(), 1);

        // A counter answers differently every time.
        recorder.reply("/count", Reply::Counter("n".into()));
        assert_eq!(post(&url, "/count", "").await, Ok((200, json!({"n": 1}))));
        assert_eq!(post(&url, "/count", "").await, Ok((200, json!({"n": 2}))));
    }

    #[tokio::test]
    async fn gate_holds_requests_until_opened() {
        let recorder = Recorder::start().await;
        let url = recorder.url();
        recorder.reply("/coupled", Reply::Gate);

        let held = tokio::spawn({
            let url = url.clone();
            async move { post(&url, "/coupled", "{}").await }
        });
        crate::wait_for("the held call to arrive", Duration::from_secs(10), || {
            let seen = recorder.calls().len();
            async move {
                if seen == 1 {
                    Ok(())
                } else {
                    Err(format!("{seen} calls"))
                }
            }
        })
        .await
        .unwrap();
        assert!(!held.is_finished(), "answered before the gate opened");
        // Other paths are not held.
        assert_eq!(post(&url, "/created", "{}").await, Ok((200, json!({}))));

        recorder.open_gate();
        let answer = tokio::time::timeout(Duration::from_secs(30), held)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, Ok((200, json!({}))));
        // Once open, the gate answers at once.
        assert_eq!(post(&url, "/coupled", "{}").await, Ok((200, json!({}))));
    }

    #[tokio::test]
    async fn hang_never_answers_until_the_recorder_is_dropped() {
        let recorder = Recorder::start().await;
        let url = recorder.url();
        recorder.reply("/coupled", Reply::Hang);

        let waited =
            tokio::time::timeout(Duration::from_millis(300), post(&url, "/coupled", "{}")).await;
        assert!(waited.is_err(), "answered: {waited:?}");
        assert_eq!(recorder.calls().len(), 1);

        // A hanging request ends (with a closed connection) once the recorder is gone.
        // Only the URL goes into the task: a Recorder handle would keep the server alive.
        let pending = tokio::spawn(async move { post(&url, "/coupled", "{}").await });
        crate::wait_for(
            "the hanging call to arrive",
            Duration::from_secs(10),
            || {
                let seen = recorder.calls().len();
                async move {
                    if seen == 2 {
                        Ok(())
                    } else {
                        Err(format!("{seen} calls"))
                    }
                }
            },
        )
        .await
        .unwrap();
        drop(recorder);
        let answer = tokio::time::timeout(Duration::from_secs(30), pending)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.is_err(), "answered: {answer:?}");
    }
}
