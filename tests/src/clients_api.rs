//! A small loopback HTTP service that keeps a registry of clients, the way an identity service
//! does: the counterpart the `clients` example plugins (plugins/clients, plugins/clients-py)
//! register Plugs with.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /clients` | 200, a JSON list of every client |
//! | `GET /clients/{id}` | 200 with the client, or 404 |
//! | `POST /clients` (a client) | 201, or 409 when the id is taken |
//! | `PUT /clients/{id}` (a client) | 200, or 404 when there is no such client |
//! | `DELETE /clients/{id}` | 204, or 404 |
//!
//! A client is the JSON object it was given (`clientId`, `redirectUris`, `owner`). When started
//! with a token, every request must carry `Authorization: Bearer <token>` (else 401).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};

#[derive(Debug, Default)]
struct State {
    clients: BTreeMap<String, Value>,
    requests: Vec<(String, String)>,
}

/// A running client registry; stops when dropped.
#[derive(Debug)]
pub struct ClientsApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: AbortHandle,
}

impl Drop for ClientsApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientsApi {
    /// Starts the service on `127.0.0.1` with a free port; requests must carry `token` as a
    /// bearer token.
    pub async fn start(token: &str) -> ClientsApi {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap_or_else(|e| panic!("clients API: failed to bind a port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("clients API: failed to read the bound address: {e}"));
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(serve(listener, state.clone(), format!("Bearer {token}")));
        ClientsApi {
            addr,
            state,
            server: task.abort_handle(),
        }
    }

    /// `host:port`, for `allowedHosts`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The base URL, for the Socket's `apiUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The clients registered now, by id.
    pub fn clients(&self) -> BTreeMap<String, Value> {
        lock(&self.state).clients.clone()
    }

    /// Every request received so far, as `(method, path)`.
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.state).requests.clone()
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>, authorization: String) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        let authorization = authorization.clone();
        connections.spawn(async move {
            let service =
                service_fn(move |request| handle(request, state.clone(), authorization.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(status: StatusCode, body: Option<Value>) -> Response<Full<Bytes>> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
    authorization: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == authorization.as_bytes());
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut state = lock(&state);
    state.requests.push((method.to_string(), path.clone()));
    if !authorized {
        return Ok(answer(StatusCode::UNAUTHORIZED, None));
    }
    let client: Option<Value> = serde_json::from_slice(&body).ok();
    let id = path.strip_prefix("/clients/").map(str::to_owned);
    let response = match (method, path.as_str(), id) {
        (Method::GET, "/clients", _) => answer(
            StatusCode::OK,
            Some(Value::Array(state.clients.values().cloned().collect())),
        ),
        (Method::POST, "/clients", _) => {
            match client.as_ref().and_then(|c| c.get("clientId")?.as_str()) {
                None => answer(StatusCode::BAD_REQUEST, None),
                Some(id) if state.clients.contains_key(id) => answer(StatusCode::CONFLICT, None),
                Some(id) => {
                    let id = id.to_owned();
                    state.clients.insert(id, client.unwrap_or_default());
                    answer(StatusCode::CREATED, None)
                }
            }
        }
        (Method::GET, _, Some(id)) => match state.clients.get(&id) {
            Some(c) => answer(StatusCode::OK, Some(c.clone())),
            None => answer(StatusCode::NOT_FOUND, None),
        },
        (Method::PUT, _, Some(id)) => match (state.clients.get_mut(&id), client) {
            (Some(existing), Some(client)) => {
                *existing = client;
                answer(StatusCode::OK, None)
            }
            (Some(_), None) => answer(StatusCode::BAD_REQUEST, None),
            (None, _) => answer(StatusCode::NOT_FOUND, None),
        },
        (Method::DELETE, _, Some(id)) => match state.clients.remove(&id) {
            Some(_) => answer(StatusCode::NO_CONTENT, None),
            None => answer(StatusCode::NOT_FOUND, None),
        },
        _ => answer(StatusCode::METHOD_NOT_ALLOWED, None),
    };
    Ok(response)
}
