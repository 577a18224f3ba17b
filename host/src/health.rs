//! The health and metrics server of `plugboard run`, on a port of its own: `/healthz` (the
//! process serves), `/readyz` (the watches' caches are synced; with leader election a standby
//! is ready too, and the body says `leader` or `standby`) and `/metrics` (the `plugboard_*`
//! families of [`crate::metrics`] in the Prometheus text format).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What this process is doing, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Leader election is off: this process runs the controllers.
    Single = 0,
    /// Waiting for the lease; the controllers do not run.
    Standby = 1,
    /// Holds the lease and runs the controllers.
    Leader = 2,
}

impl Role {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Role::Standby,
            2 => Role::Leader,
            _ => Role::Single,
        }
    }
}

/// The `/readyz` answer: status code and body.
pub fn readiness(role: Role, synced: bool) -> (StatusCode, &'static str) {
    match (role, synced) {
        (Role::Standby, _) => (StatusCode::OK, "standby\n"),
        (Role::Leader, true) => (StatusCode::OK, "leader\n"),
        (Role::Leader, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "leader: caches not synced yet\n",
        ),
        (Role::Single, true) => (StatusCode::OK, "ready\n"),
        (Role::Single, false) => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n"),
    }
}

/// State the server reports: the metrics (which also know whether caches are synced) and the
/// process's role.
#[derive(Debug)]
pub struct Health {
    metrics: Arc<Metrics>,
    role: AtomicU8,
}

impl Health {
    /// Health of a process in `role` with `metrics`.
    pub fn new(metrics: Arc<Metrics>, role: Role) -> Self {
        metrics.set_leader(role != Role::Standby);
        Self {
            metrics,
            role: AtomicU8::new(role as u8),
        }
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The current role.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Records a new role (and the `plugboard_leader` gauge).
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Release);
        self.metrics.set_leader(role != Role::Standby);
    }

    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: &'static str| {
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        };
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match request.uri().path() {
            "/healthz" | "/livez" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                let (status, body) = readiness(self.role(), self.metrics.synced());
                text(status, body)
            }
            "/metrics" => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /healthz, /readyz, /metrics\n",
            ),
        }
    }
}

/// Serves `health` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, health: Arc<Health>, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "health server: accept failed");
                    continue;
                }
            },
        };
        let health = health.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = health.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "health server: connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_ready_and_says_so() {
        assert_eq!(
            readiness(Role::Standby, false),
            (StatusCode::OK, "standby\n")
        );
        assert_eq!(
            readiness(Role::Standby, true),
            (StatusCode::OK, "standby\n")
        );
    }

    #[test]
    fn a_leader_or_single_process_is_ready_once_synced() {
        assert_eq!(readiness(Role::Leader, true), (StatusCode::OK, "leader\n"));
        assert_eq!(
            readiness(Role::Leader, false).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(readiness(Role::Single, true), (StatusCode::OK, "ready\n"));
        assert_eq!(
            readiness(Role::Single, false).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn the_leader_gauge_follows_the_role() {
        let health = Health::new(Arc::new(Metrics::default()), Role::Standby);
        assert!(health.metrics().encode().contains("plugboard_leader 0"));
        health.set_role(Role::Leader);
        assert!(health.metrics().encode().contains("plugboard_leader 1"));
        assert_eq!(health.role(), Role::Leader);
    }
}
