//! The HTTP apparatus `plugboard dev` serves itself, on loopback: the samples' HTTP endpoint
//! Socket calls it at its URL, and the apparatus pod sample reaches it as its pod's container
//! (the dev kubelet reports the pod at 127.0.0.1, the port is the container's). Every hook and
//! `config` call succeeds with `{}`; the calls are kept so the playground (and its test) can
//! show which hooks ran.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The largest request body read; the rest of a larger one is not looked at.
const MAX_BODY: usize = 1 << 20;

/// A running loopback apparatus; dropping it stops the server and its connections.
#[derive(Debug)]
pub struct DevApparatus {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DevApparatus {
    /// Starts serving on `127.0.0.1` with a free port.
    pub async fn start() -> std::io::Result<DevApparatus> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(listener, calls.clone()));
        Ok(DevApparatus { addr, calls, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(&mut self) {
        self.task.abort();
        // The task's end (cancelled) is all that matters here.
        let _ = (&mut self.task).await;
    }

    /// The paths called so far, in arrival order (`/http/socket/coupled`, …).
    pub fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for DevApparatus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, and with it every
/// connection.
async fn serve(listener: TcpListener, calls: Arc<Mutex<Vec<String>>>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let calls = calls.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(request, calls.clone()));
            // A client that goes away mid-request is of no concern here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    calls: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    // The body (the hook's input) is read and dropped: every hook succeeds.
    let _ = http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await;
    tracing::debug!(path, "dev apparatus called");
    calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(path);
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn answers_every_hook_with_an_empty_object_and_records_it() {
        let apparatus = DevApparatus::start().await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", apparatus.port()))
            .await
            .unwrap();
        let body = r#"{"plug":{}}"#;
        let request = format!(
            "POST /http/plug/coupled HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("{}"), "{answer}");
        assert_eq!(apparatus.calls(), vec!["/http/plug/coupled".to_owned()]);
        assert!(apparatus.url().starts_with("http://127.0.0.1:"));
    }
}
