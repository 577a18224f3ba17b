//! The HTTP apparatus: the reference implementation's wire protocol, spoken over `reqwest`.
//!
//! Every call is a `POST` with `Content-Type: application/json` and a compact JSON body:
//!
//! - `POST <base>/config` with `{"version": 1, "plug", "socket", "plugData", "socketData",
//!   "vars"?}` (`version` is a **number**; `vars` only when the side declares vars). The answer
//!   must be a JSON object; each value is turned into a string the way Go's `%v` prints it
//!   ([`go_value_string`]).
//! - `POST <base>/<point>` for the lifecycle points `created`, `coupled`, `updated`,
//!   `decoupled` and `deleted`, with `"version": "1"` (a **string**). `created` and `deleted`
//!   carry only the owner (`plug` or `socket`); the others carry `plug`, `socket`, `plugConfig`
//!   and `socketConfig`. The answer body is ignored.
//!
//! A status of 400 or more is an error and never retried. Redirects are never followed: a 3xx
//! answer is an error naming its status ([`HttpApparatusError::Redirect`]), so an endpoint
//! cannot bounce the configs in the body to another host. Every connection is subject to the
//! operator's [`EgressPolicy`], judged against the resolved address at connect time; a refused
//! endpoint is [`HttpApparatusError::EgressDenied`] and never retried. Transport failures (connection
//! refused, DNS, a connection closed before the answer) are retried with exponential backoff;
//! when retries run out the error is [`HttpApparatusError::Unreachable`], the "apparatus is not
//! running" class that makes the operator start apparatus pods. A call that gets no answer
//! within the request timeout fails with [`HttpApparatusError::Timeout`] and is not retried.
//!
//! Bodies are never logged, and URLs in messages and logs never show `user:password@`: the
//! bodies carry config values that may come from Secrets.
//!
//! An [`Endpoint`] is either a URL (an external apparatus, or an apparatus pod reached at its
//! IP) or a pod reached through the API server's pod proxy
//! ([`Endpoint::pod_via_api_server`]), for an operator running outside the cluster. Both speak
//! the same protocol with the same timeouts, retries and limits.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use super::{ConfigRequest, HookRequest, Side};
use crate::crd::LifecyclePoint;
use crate::egress::{self, EgressDenied, EgressPolicy};
use crate::engine::Values;

/// Tuning of [`HttpApparatus`] calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// How long establishing a connection (including TLS) may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long one attempt may take from sending the request to the end of the answer.
    /// Default 30 s.
    pub request_timeout: Duration,
    /// The largest answer body accepted, in bytes. Default 1 MiB.
    pub max_response_bytes: usize,
    /// How many times a call is repeated after a transport failure. Default 3.
    pub retries: u32,
    /// The pause before the first repetition; it doubles for each further one. Default 100 ms.
    pub retry_backoff_min: Duration,
    /// The longest pause between repetitions. Default 2 s.
    pub retry_backoff_max: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 1024 * 1024,
            retries: 3,
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(2),
        }
    }
}

/// A transport error of either client (reqwest, or the Kubernetes client for the API server
/// proxy).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP apparatus call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpApparatusError {
    /// No connection could be made or it broke before an answer (connection refused, DNS,
    /// reset), also after retrying: the apparatus is most likely not running.
    #[error(
        "failed to reach apparatus at {url} after {attempts} attempt(s); is it running and \
         listening there?"
    )]
    Unreachable {
        /// The request URL, without credentials.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: BoxError,
    },
    /// The connection broke while the answer was being read, also after retrying.
    #[error(
        "failed to read the answer of apparatus at {url} after {attempts} attempt(s); the \
         connection broke while reading it"
    )]
    Interrupted {
        /// The request URL, without credentials.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: BoxError,
    },
    /// The apparatus did not connect or answer in time.
    #[error(
        "failed to get an answer from apparatus at {url} within {after:?}; is it overloaded \
         or stuck?"
    )]
    Timeout {
        /// The request URL, without credentials.
        url: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The request could not be sent for a reason retrying cannot fix (for example an
    /// invalid request).
    #[error("failed to send the request to apparatus at {url}")]
    Request {
        /// The request URL, without credentials.
        url: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The apparatus answered with a status of 400 or more.
    #[error("{what} failed with {code} status from POST {url}")]
    Status {
        /// `config` or `event <point>`.
        what: String,
        /// The HTTP status code.
        code: u16,
        /// The request URL, without credentials.
        url: String,
    },
    /// The apparatus answered with a redirect, which plugboard never follows.
    #[error(
        "{what} got a redirect ({code} status) from POST {url}; plugboard does not follow \
         redirects, so set the endpoint to the final URL"
    )]
    Redirect {
        /// `config` or `event <point>`.
        what: String,
        /// The HTTP status code.
        code: u16,
        /// The request URL, without credentials.
        url: String,
    },
    /// The operator's egress policy refuses the endpoint's address.
    #[error("refused to call apparatus at {url}")]
    EgressDenied {
        /// The request URL, without credentials.
        url: String,
        /// Which address and why.
        #[source]
        source: EgressDenied,
    },
    /// The answer was larger than [`HttpOptions::max_response_bytes`].
    #[error(
        "failed to read the answer of apparatus at {url}: it is larger than the limit of \
         {limit} bytes"
    )]
    TooLarge {
        /// The request URL, without credentials.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The `/config` answer is not JSON.
    #[error(
        "failed to parse the answer of apparatus at {url} as JSON; /config must answer with \
         a JSON object"
    )]
    InvalidJson {
        /// The request URL, without credentials.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The `/config` answer is JSON but not an object.
    #[error(
        "failed to use the answer of apparatus at {url}: it is not a JSON object; /config \
         must answer with a JSON object of config values"
    )]
    NotAnObject {
        /// The request URL, without credentials.
        url: String,
    },
    /// The request body could not be encoded.
    #[error("failed to encode the request body for apparatus at {url}")]
    Encode {
        /// The request URL, without credentials.
        url: String,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A hook request lacks an object the wire protocol needs (a bug in the caller).
    #[error("failed to call the {point} hook of the {side} apparatus: the request has no {field}")]
    IncompleteRequest {
        /// The lifecycle point.
        point: &'static str,
        /// `plug` or `socket`.
        side: &'static str,
        /// The missing body key.
        field: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("failed to set up the HTTP client for apparatus calls")]
    Client {
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
}

impl HttpApparatusError {
    /// Whether the error means the apparatus is not running (reference 4.6): the connection was
    /// refused, the name did not resolve or the transport failed before any answer. Status
    /// errors and timeouts are not.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HttpApparatusError::Unreachable { .. })
    }

    /// Whether the apparatus did not connect or answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpApparatusError::Timeout { .. })
    }

    /// The kind of hook error an error status means ([`super::HookErrorKind::from_status`]);
    /// `None` for failures that are not the apparatus's answer.
    pub fn hook_error_kind(&self) -> Option<super::HookErrorKind> {
        match self {
            HttpApparatusError::Status { code, .. } => {
                Some(super::HookErrorKind::from_status(*code))
            }
            _ => None,
        }
    }

    /// Whether the operator's egress policy refused the endpoint.
    pub fn is_egress_denied(&self) -> bool {
        matches!(self, HttpApparatusError::EgressDenied { .. })
    }
}

/// An apparatus endpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The endpoint is not a usable `http://` or `https://` URL.
    #[error(
        "failed to use apparatus endpoint {endpoint:?}: {reason}; use a URL like \
         http://host:port/prefix, host:port, or a path like /prefix"
    )]
    Invalid {
        /// The endpoint after normalisation, without credentials.
        endpoint: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// Where an apparatus listens: a base URL that call names are appended to, or a base path on
/// the API server (its pod proxy) and the client that reaches it.
#[derive(Clone)]
pub struct Endpoint {
    base: String,
    /// Set for [`Endpoint::pod_via_api_server`]: `base` is a path on the API server.
    api_server: Option<kube::Client>,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base && self.api_server.is_some() == other.api_server.is_some()
    }
}

impl Eq for Endpoint {}

impl Endpoint {
    /// Resolves `spec.apparatus.endpoint` of an owner (reference 9.3, with BUG-7 fixed).
    ///
    /// - Absent, empty or starting with `/`: with containers, the reference's apparatus Service
    ///   `http://<owner>-apparatus.<ns>.svc.cluster.local` followed by the endpoint as a path
    ///   prefix (plugboard itself calls apparatus pods at their IP instead: see
    ///   [`Endpoint::pod_prefix`] and [`Endpoint::pod`]); without containers `http://localhost`
    ///   followed by the endpoint, unchanged.
    /// - Otherwise `http://` is prefixed unless the endpoint has an `http://` or `https://`
    ///   scheme, and exactly one trailing `/` is removed.
    ///
    /// Endpoints that do not form a valid URL with a host, that use another scheme, or that
    /// carry a query or fragment are rejected.
    pub fn resolve(
        endpoint: Option<&str>,
        owner_name: &str,
        owner_namespace: &str,
        has_containers: bool,
    ) -> Result<Endpoint, EndpointError> {
        let endpoint = endpoint.unwrap_or("").trim();
        let mut base = if endpoint.is_empty() || endpoint.starts_with('/') {
            if !has_containers {
                let base = format!("http://localhost{endpoint}");
                validate(&base)?;
                return Ok(Endpoint {
                    base,
                    api_server: None,
                });
            }
            format!("{owner_name}-apparatus.{owner_namespace}.svc.cluster.local{endpoint}")
        } else {
            endpoint.to_owned()
        };
        match scheme_of(&base) {
            Some(scheme)
                if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {}
            Some(scheme) => {
                return Err(EndpointError::Invalid {
                    endpoint: redact(&base),
                    reason: format!("the scheme {scheme:?} is not supported, only http and https"),
                });
            }
            None => base.insert_str(0, "http://"),
        }
        if base.ends_with('/') {
            base.pop();
        }
        validate(&base)?;
        Ok(Endpoint {
            base,
            api_server: None,
        })
    }

    /// The path prefix on an apparatus pod that `spec.apparatus.endpoint` names, when it names
    /// one: absent, empty or starting with `/` (reference 9.3: with containers, such an endpoint
    /// is a path prefix on the pod). Exactly one trailing `/` is removed (D-7). `None` for a
    /// URL, which is called as it is even when the owner runs a pod.
    ///
    /// The prefix must be plain path segments (letters, digits and `-._~!$&'()*+,;=:@`), with no
    /// `.` or `..` segment, no percent-encoding, query or fragment: through the API server
    /// proxy it becomes part of a request the operator makes with its own credentials, and
    /// must not be able to leave the pod's proxy path.
    pub fn pod_prefix(endpoint: Option<&str>) -> Option<Result<String, EndpointError>> {
        let endpoint = endpoint.unwrap_or("").trim();
        if !(endpoint.is_empty() || endpoint.starts_with('/')) {
            return None;
        }
        let prefix = endpoint.strip_suffix('/').unwrap_or(endpoint);
        let valid = prefix.split('/').skip(1).all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b))
        });
        Some(if valid {
            Ok(prefix.to_owned())
        } else {
            Err(EndpointError::Invalid {
                endpoint: endpoint.to_owned(),
                reason: "a path prefix on the apparatus pod may hold only plain path segments \
                         (letters, digits and -._~!$&'()*+,;=:@), with no '.' or '..' segment, \
                         no '%', '?' or '#'"
                    .to_owned(),
            })
        })
    }

    /// An apparatus pod reached at `addr` (its IP and the port named `container`), calls going
    /// to `<prefix>/<name>` ([`Endpoint::pod_prefix`]).
    pub fn pod(addr: SocketAddr, prefix: &str) -> Result<Endpoint, EndpointError> {
        let base = format!("http://{addr}{prefix}");
        validate(&base)?;
        Ok(Endpoint {
            base,
            api_server: None,
        })
    }

    /// An apparatus pod reached through the API server's pod proxy with `client`:
    /// `POST /api/v1/namespaces/<namespace>/pods/<pod>:<port>/proxy<prefix>/<name>`. For an
    /// operator outside the cluster, which cannot reach pod IPs. `prefix` must come from
    /// [`Endpoint::pod_prefix`].
    pub fn pod_via_api_server(
        client: kube::Client,
        namespace: &str,
        pod: &str,
        port: u16,
        prefix: &str,
    ) -> Endpoint {
        Endpoint {
            base: format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{prefix}"),
            api_server: Some(client),
        }
    }

    /// The URL of a call: the base, `/`, and `name` (`config`, `created`, …). Through the API
    /// server proxy, a path on the API server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Whether calls go through the API server's pod proxy.
    pub fn via_api_server(&self) -> bool {
        self.api_server.is_some()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.base))?;
        if self.api_server.is_some() {
            f.write_str(" (through the API server)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &redact(&self.base))
            .field("api_server", &self.api_server.is_some())
            .finish()
    }
}

/// The scheme of `s` when it starts with `<scheme>://`.
fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// Checks that `base` is an absolute http(s) URL with a host and no query or fragment, so
/// that appending `/<name>` yields a valid request URL.
fn validate(base: &str) -> Result<(), EndpointError> {
    let invalid = |reason: String| EndpointError::Invalid {
        endpoint: redact(base),
        reason,
    };
    let url = reqwest::Url::parse(base).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme {:?} is not supported, only http and https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "it has a query or fragment, so call names cannot be appended".to_owned(),
        ));
    }
    Ok(())
}

/// `url` with any `user:password@` removed from its authority.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A client for HTTP apparatuses. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct HttpApparatus {
    client: reqwest::Client,
    options: Arc<HttpOptions>,
    egress: EgressPolicy,
}

#[derive(Serialize)]
struct ConfigBody<'a> {
    version: u8,
    plug: &'a Value,
    socket: &'a Value,
    #[serde(rename = "plugData")]
    plug_data: &'a Values,
    #[serde(rename = "socketData")]
    socket_data: &'a Values,
    #[serde(skip_serializing_if = "Option::is_none")]
    vars: Option<&'a Values>,
}

#[derive(Serialize)]
struct HookBody<'a> {
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    plug: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<&'a Value>,
    #[serde(rename = "plugConfig", skip_serializing_if = "Option::is_none")]
    plug_config: Option<&'a Values>,
    #[serde(rename = "socketConfig", skip_serializing_if = "Option::is_none")]
    socket_config: Option<&'a Values>,
}

/// How one attempt failed.
enum AttemptError {
    /// A transport failure worth retrying; `answered` tells whether a status line arrived.
    Transport { source: BoxError, answered: bool },
    /// A failure retrying cannot fix.
    Final(HttpApparatusError),
}

impl HttpApparatus {
    /// Builds a client. TLS uses rustls with the ring provider and the platform's root
    /// certificates; when none can be loaded a warning is logged and `https` endpoints fail
    /// certificate verification, while `http` endpoints keep working. Connections go only
    /// where `egress` permits, and redirects are never followed.
    pub fn new(
        options: HttpOptions,
        egress: EgressPolicy,
    ) -> Result<HttpApparatus, HttpApparatusError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config())
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would be judged instead of the target.
            .no_proxy()
            .dns_resolver(egress.resolver())
            .user_agent(concat!("plugboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| HttpApparatusError::Client {
                source: source.without_url(),
            })?;
        Ok(HttpApparatus {
            client,
            options: Arc::new(options),
            egress,
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    /// Calls `POST <endpoint>/config` and converts the answer's values to strings like Go's
    /// `%v` ([`go_value_string`]).
    pub async fn config(
        &self,
        endpoint: &Endpoint,
        req: &ConfigRequest<'_>,
    ) -> Result<Values, HttpApparatusError> {
        let url = endpoint.url("config");
        let shown = redact(&url);
        let body = ConfigBody {
            version: 1,
            plug: req.plug,
            socket: req.socket,
            plug_data: req.plug_data,
            socket_data: req.socket_data,
            vars: req.vars,
        };
        let span = tracing::debug_span!("apparatus_config", side = req.side.as_str(), url = %shown);
        async {
            let body = serde_json::to_vec(&body).map_err(|source| HttpApparatusError::Encode {
                url: shown.clone(),
                source,
            })?;
            let answer = self.post(endpoint, &url, &shown, "config", body).await?;
            let values = config_reply(&shown, &answer)?;
            tracing::debug!(keys = values.len(), "apparatus returned config");
            Ok(values)
        }
        .instrument(span)
        .await
    }

    /// Calls `POST <endpoint>/<point>` for a lifecycle hook. The answer body is read (up to
    /// the size limit) and ignored.
    pub async fn hook(
        &self,
        endpoint: &Endpoint,
        req: &HookRequest<'_>,
    ) -> Result<(), HttpApparatusError> {
        let point = req.point.as_str();
        let url = endpoint.url(point);
        let shown = redact(&url);
        let missing = |field: &'static str| HttpApparatusError::IncompleteRequest {
            point,
            side: req.side.as_str(),
            field,
        };
        let body = match req.point {
            LifecyclePoint::Created | LifecyclePoint::Deleted => match req.side {
                Side::Plug => HookBody {
                    version: "1",
                    plug: Some(req.plug.ok_or_else(|| missing("plug"))?),
                    socket: None,
                    plug_config: None,
                    socket_config: None,
                },
                Side::Socket => HookBody {
                    version: "1",
                    plug: None,
                    socket: Some(req.socket.ok_or_else(|| missing("socket"))?),
                    plug_config: None,
                    socket_config: None,
                },
            },
            LifecyclePoint::Coupled | LifecyclePoint::Updated | LifecyclePoint::Decoupled => {
                HookBody {
                    version: "1",
                    plug: Some(req.plug.ok_or_else(|| missing("plug"))?),
                    socket: Some(req.socket.ok_or_else(|| missing("socket"))?),
                    plug_config: Some(req.plug_config.ok_or_else(|| missing("plugConfig"))?),
                    socket_config: Some(req.socket_config.ok_or_else(|| missing("socketConfig"))?),
                }
            }
        };
        let span = tracing::debug_span!(
            "apparatus_hook",
            side = req.side.as_str(),
            point,
            url = %shown
        );
        async {
            let body = serde_json::to_vec(&body).map_err(|source| HttpApparatusError::Encode {
                url: shown.clone(),
                source,
            })?;
            self.post(endpoint, &url, &shown, &format!("event {point}"), body)
                .await?;
            tracing::debug!("apparatus hook done");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Posts `body` to `url` (of `endpoint`), retrying transport failures, and returns the
    /// answer body. `shown` is `url` without credentials; `what` names the call in status
    /// errors.
    async fn post(
        &self,
        endpoint: &Endpoint,
        url: &str,
        shown: &str,
        what: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, HttpApparatusError> {
        // An address literal never reaches the resolver, so it is judged here; names are
        // judged by the resolver against the addresses they resolve to.
        if let Ok(parsed) = reqwest::Url::parse(url)
            && let Err(source) = self.egress.check_url(&parsed)
        {
            tracing::debug!(%source, "egress policy refused the endpoint");
            return Err(HttpApparatusError::EgressDenied {
                url: shown.to_owned(),
                source,
            });
        }
        let options = &self.options;
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            tracing::debug!(attempt = attempts, "posting to apparatus");
            let attempt = async {
                match &endpoint.api_server {
                    Some(client) => {
                        self.attempt_via(client, url, shown, what, body.clone())
                            .await
                    }
                    None => self.attempt(url, shown, what, body.clone()).await,
                }
            };
            let (source, answered) =
                match tokio::time::timeout(options.request_timeout, attempt).await {
                    Err(_elapsed) => {
                        tracing::debug!(after = ?options.request_timeout, "apparatus timed out");
                        return Err(HttpApparatusError::Timeout {
                            url: shown.to_owned(),
                            after: options.request_timeout,
                        });
                    }
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(AttemptError::Final(e))) => return Err(e),
                    Ok(Err(AttemptError::Transport { source, answered })) => (source, answered),
                };
            if attempts > options.retries {
                return Err(if answered {
                    HttpApparatusError::Interrupted {
                        url: shown.to_owned(),
                        attempts,
                        source,
                    }
                } else {
                    HttpApparatusError::Unreachable {
                        url: shown.to_owned(),
                        attempts,
                        source,
                    }
                });
            }
            let delay = backoff(options, attempts - 1);
            tracing::debug!(error = %source, ?delay, "apparatus transport failure; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One request and the reading of its answer.
    async fn attempt(
        &self,
        url: &str,
        shown: &str,
        what: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, AttemptError> {
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Err(classify(e, shown, self.options.connect_timeout, false)),
        };
        let status = response.status();
        tracing::debug!(status = status.as_u16(), "apparatus answered");
        if status.is_redirection() {
            return Err(AttemptError::Final(HttpApparatusError::Redirect {
                what: what.to_owned(),
                code: status.as_u16(),
                url: shown.to_owned(),
            }));
        }
        if status.as_u16() >= 400 {
            return Err(AttemptError::Final(HttpApparatusError::Status {
                what: what.to_owned(),
                code: status.as_u16(),
                url: shown.to_owned(),
            }));
        }
        let limit = self.options.max_response_bytes;
        let too_large = || {
            AttemptError::Final(HttpApparatusError::TooLarge {
                url: shown.to_owned(),
                limit,
            })
        };
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(too_large());
        }
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if answer.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    answer.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(answer),
                Err(e) => return Err(classify(e, shown, self.options.connect_timeout, true)),
            }
        }
    }

    /// One request through the API server (its pod proxy) with `client`, and the reading of
    /// its answer. A status of 400 or more is an error as for a direct call, whether the
    /// apparatus or the API server (e.g. 502/503 when it cannot reach the pod) answered it.
    async fn attempt_via(
        &self,
        client: &kube::Client,
        path: &str,
        shown: &str,
        what: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, AttemptError> {
        use http_body_util::BodyExt as _;

        let request = kube::core::Request::new(path)
            .create(&kube::api::PostParams::default(), body)
            .map_err(|e| {
                AttemptError::Final(HttpApparatusError::Request {
                    url: shown.to_owned(),
                    source: Box::new(e),
                })
            })?;
        let response = client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(|e| AttemptError::Transport {
                source: Box::new(e),
                answered: false,
            })?;
        let status = response.status().as_u16();
        tracing::debug!(status, "apparatus answered through the API server");
        if status >= 400 {
            return Err(AttemptError::Final(HttpApparatusError::Status {
                what: what.to_owned(),
                code: status,
                url: shown.to_owned(),
            }));
        }
        let limit = self.options.max_response_bytes;
        let too_large = || {
            AttemptError::Final(HttpApparatusError::TooLarge {
                url: shown.to_owned(),
                limit,
            })
        };
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        match http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes().to_vec()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(AttemptError::Transport {
                source: e,
                answered: true,
            }),
        }
    }
}

/// Sorts a `reqwest` error into retryable transport failures and final errors.
fn classify(
    e: reqwest::Error,
    shown: &str,
    connect_timeout: Duration,
    answered: bool,
) -> AttemptError {
    let e = e.without_url();
    if let Some(denied) = egress::find_denied(&e) {
        return AttemptError::Final(HttpApparatusError::EgressDenied {
            url: shown.to_owned(),
            source: denied.clone(),
        });
    }
    if e.is_timeout() {
        // Only the connect timeout is set on the client; the request timeout is ours.
        AttemptError::Final(HttpApparatusError::Timeout {
            url: shown.to_owned(),
            after: connect_timeout,
        })
    } else if e.is_builder() || e.is_redirect() {
        AttemptError::Final(HttpApparatusError::Request {
            url: shown.to_owned(),
            source: Box::new(e),
        })
    } else {
        AttemptError::Transport {
            source: Box::new(e),
            answered,
        }
    }
}

/// The pause before repetition `retry` (0-based): the minimum doubled per repetition, capped.
fn backoff(options: &HttpOptions, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.min(31));
    options
        .retry_backoff_min
        .saturating_mul(factor)
        .min(options.retry_backoff_max)
}

/// rustls with the ring provider and the platform's roots (falling back to no roots).
/// Converts the body of a `config` answer from the endpoint `shown` (redacted) into values:
/// a JSON object whose values become strings the way the original's Go templates print them.
/// Any other body (not JSON, nested beyond serde_json's depth limit, not an object) is an
/// error naming the endpoint.
pub(crate) fn config_reply(shown: &str, answer: &[u8]) -> Result<Values, HttpApparatusError> {
    let value: Value =
        serde_json::from_slice(answer).map_err(|source| HttpApparatusError::InvalidJson {
            url: shown.to_owned(),
            source,
        })?;
    let Value::Object(map) = value else {
        return Err(HttpApparatusError::NotAnObject {
            url: shown.to_owned(),
        });
    };
    Ok(map
        .iter()
        .map(|(k, v)| (k.clone(), go_value_string(v)))
        .collect())
}

pub(crate) fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!(error = %e, "rustls rejected its default protocol versions");
            rustls::ClientConfig::builder()
        }
    };
    match rustls_platform_verifier::Verifier::new(provider) {
        Ok(verifier) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "failed to load the platform's root certificates; https apparatus endpoints \
                 will fail certificate verification"
            );
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    }
}

/// Prints a JSON value the way Go's `fmt` `%v` prints the same value decoded into
/// `interface{}` (reference 5.6): strings as-is, `true`/`false`, `<nil>` for null, numbers as
/// `float64` in `%g` shortest form (`5432`, `0.5`, `1e+06`, `1.234567e+06`, `1e-05`), objects
/// as `map[k:v …]` with sorted keys, and arrays as `[a b …]`.
pub fn go_value_string(v: &Value) -> String {
    let mut out = String::new();
    write_go_value(&mut out, v);
    out
}

fn write_go_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => out.push_str(s),
        Value::Number(n) => match n.as_f64() {
            Some(f) => out.push_str(&go_float(f)),
            None => out.push_str(&n.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_go_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push_str("map[");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_go_value(out, v);
            }
            out.push(']');
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits that round-trip, in `%e`
/// form when the decimal exponent is below -4 or at least 6 (the exponent with a sign and at
/// least two digits), in `%f` form otherwise.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, e.g. `1.234567e6`, `5e-1`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i64 = exponent.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let nd = digits.len() as i64;
    let dp = exp + 1;

    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        // %e with nd-1 fractional digits.
        out.push(char::from(digits.first().copied().unwrap_or(b'0')));
        if digits.len() > 1 {
            out.push('.');
            out.extend(digits[1..].iter().map(|&d| char::from(d)));
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let magnitude = exp.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
    } else {
        // %f with max(nd-dp, 0) fractional digits.
        if dp > 0 {
            for i in 0..dp {
                out.push(char::from(digit_at(&digits, i)));
            }
        } else {
            out.push('0');
        }
        let decimals = (nd - dp).max(0);
        if decimals > 0 {
            out.push('.');
            for i in 0..decimals {
                out.push(char::from(digit_at(&digits, dp + i)));
            }
        }
    }
    out
}

/// The digit at `i`, or `0` outside the digits.
fn digit_at(digits: &[u8], i: i64) -> u8 {
    usize::try_from(i)
        .ok()
        .and_then(|i| digits.get(i).copied())
        .unwrap_or(b'0')
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected values"
)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::net::TcpListener;

    use super::*;

    // ---- value conversion ----

    fn conv(raw: &str) -> String {
        go_value_string(&serde_json::from_str(raw).unwrap())
    }

    #[test]
    fn go_value_string_reference_examples() {
        assert_eq!(conv("5432"), "5432");
        assert_eq!(conv("0.5"), "0.5");
        assert_eq!(conv("1000000"), "1e+06");
        assert_eq!(conv("1234567"), "1.234567e+06");
        assert_eq!(conv(r#""text""#), "text");
        assert_eq!(conv("true"), "true");
        assert_eq!(conv("false"), "false");
        assert_eq!(conv("null"), "<nil>");
        assert_eq!(conv(r#"{"b":"x","a":1}"#), "map[a:1 b:x]");
        assert_eq!(conv("[1,2]"), "[1 2]");
    }

    #[test]
    fn pod_prefixes_are_plain_paths_and_urls_are_not_prefixes() {
        let prefix = |e: Option<&str>| Endpoint::pod_prefix(e).unwrap().unwrap();
        assert_eq!(prefix(None), "");
        assert_eq!(prefix(Some("")), "");
        assert_eq!(prefix(Some("/")), "");
        assert_eq!(prefix(Some("/hooks/")), "/hooks");
        assert_eq!(prefix(Some("/a/b-c_d.e~f")), "/a/b-c_d.e~f");
        assert!(Endpoint::pod_prefix(Some("http://hooks.example")).is_none());
        assert!(Endpoint::pod_prefix(Some("hooks.example:8080/x")).is_none());
        // Through the API server the prefix is part of a request made with the operator's
        // credentials: it must not be able to leave the pod's proxy path.
        for bad in [
            "/../x",
            "/a/./b",
            "/a//b",
            "/a/%2e%2e",
            "/a?x=1",
            "/a#f",
            "/a b",
            "/a/..",
        ] {
            assert!(
                Endpoint::pod_prefix(Some(bad)).unwrap().is_err(),
                "{bad} was accepted"
            );
        }
        let endpoint = Endpoint::pod("10.0.0.5:8080".parse().unwrap(), "/hooks").unwrap();
        assert_eq!(
            endpoint.url("created"),
            "http://10.0.0.5:8080/hooks/created"
        );
        assert!(!endpoint.via_api_server());
        let root = Endpoint::pod("[fd00::5]:80".parse().unwrap(), "").unwrap();
        assert_eq!(root.url("config"), "http://[fd00::5]:80/config");
    }

    #[test]
    fn go_value_string_numbers_follow_strconv_g_shortest() {
        let cases = [
            ("0", "0"),
            ("-0", "-0"),
            ("0.0", "0"),
            ("1", "1"),
            ("-7", "-7"),
            ("100000", "100000"),
            ("999999", "999999"),
            ("123456", "123456"),
            ("-1000000", "-1e+06"),
            ("1500000", "1.5e+06"),
            ("0.0001", "0.0001"),
            ("0.00012", "0.00012"),
            ("0.00001", "1e-05"),
            ("0.000012345", "1.2345e-05"),
            ("1e-7", "1e-07"),
            ("1.5", "1.5"),
            ("3.14159", "3.14159"),
            ("123456.5", "123456.5"),
            ("1234567.5", "1.2345675e+06"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1e21", "1e+21"),
            ("1e100", "1e+100"),
            ("1.5e300", "1.5e+300"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("12345678901234567890", "1.2345678901234567e+19"),
            ("9007199254740993", "9.007199254740992e+15"),
            ("-0.5", "-0.5"),
            ("2.50", "2.5"),
        ];
        for (raw, want) in cases {
            assert_eq!(conv(raw), want, "converting {raw}");
        }
    }

    #[test]
    fn go_value_string_nested_values() {
        assert_eq!(conv("{}"), "map[]");
        assert_eq!(conv("[]"), "[]");
        assert_eq!(
            conv(r#"[1,"two",null,true,[],{},1000000]"#),
            "[1 two <nil> true [] map[] 1e+06]"
        );
        assert_eq!(
            conv(r#"{"z":{"y":[1,{"k":null}],"a":"s p"},"B":false,"a":0.5}"#),
            "map[B:false a:0.5 z:map[a:s p y:[1 map[k:<nil>]]]]"
        );
        assert_eq!(conv(r#""""#), "");
        assert_eq!(conv(r#""1000000""#), "1000000");
    }

    // ---- endpoint resolution ----

    fn base(endpoint: Option<&str>, containers: bool) -> String {
        Endpoint::resolve(endpoint, "kc", "auth", containers)
            .unwrap()
            .url("x")
            .strip_suffix("/x")
            .unwrap()
            .to_owned()
    }

    #[test]
    fn endpoint_defaults_to_the_apparatus_service_or_localhost() {
        assert_eq!(
            base(None, true),
            "http://kc-apparatus.auth.svc.cluster.local"
        );
        assert_eq!(
            base(Some(""), true),
            "http://kc-apparatus.auth.svc.cluster.local"
        );
        assert_eq!(
            base(Some("/socket"), true),
            "http://kc-apparatus.auth.svc.cluster.local/socket"
        );
        assert_eq!(
            base(Some("/socket/"), true),
            "http://kc-apparatus.auth.svc.cluster.local/socket"
        );
        assert_eq!(
            base(Some("/"), true),
            "http://kc-apparatus.auth.svc.cluster.local"
        );
        assert_eq!(base(None, false), "http://localhost");
        assert_eq!(base(Some("/hooks"), false), "http://localhost/hooks");
        // Reference: returned without further normalisation.
        assert_eq!(base(Some("/"), false), "http://localhost/");
    }

    #[test]
    fn endpoint_reference_example_url() {
        let endpoint = Endpoint::resolve(Some("/socket"), "kc", "auth", true).unwrap();
        assert_eq!(
            endpoint.url("coupled"),
            "http://kc-apparatus.auth.svc.cluster.local/socket/coupled"
        );
    }

    #[test]
    fn endpoint_normalisation_strips_one_slash_and_adds_the_scheme() {
        assert_eq!(base(Some("example.com"), false), "http://example.com");
        assert_eq!(
            base(Some("example.com:8080/"), true),
            "http://example.com:8080"
        );
        assert_eq!(base(Some("http://a.b/socket/"), false), "http://a.b/socket");
        assert_eq!(base(Some("https://a.b/p//"), false), "https://a.b/p/");
        assert_eq!(base(Some("http://a.b"), false), "http://a.b");
        assert_eq!(base(Some("HTTPS://a.b/"), false), "HTTPS://a.b");
        // Seven characters: the reference panicked here (BUG-7).
        assert_eq!(base(Some("abc.def"), false), "http://abc.def");
        assert_eq!(base(Some("a"), false), "http://a");
        assert_eq!(base(Some("  svc:80  "), false), "http://svc:80");
    }

    #[test]
    fn endpoint_never_panics_and_rejects_unusable_urls() {
        let inputs = [
            "",
            "/",
            "//",
            "h",
            "http:/",
            "http://",
            "https://",
            "http:///",
            "https:/",
            "abcdefg",
            "1234567",
            "http://a",
            "ftp://a.b",
            "://",
            ":",
            "@",
            "http://@/",
            "http://a b",
            "http://a:99999",
            "a.b?x=1",
            "a.b#frag",
            "ħttp://ü",
            "\u{0}",
            "[::1]",
            "http://[::1]:8080/",
            "/?",
            "/#",
            "//x",
            "mailto:x@y",
        ];
        for input in inputs {
            for containers in [false, true] {
                let _ = Endpoint::resolve(Some(input), "p", "ns", containers);
            }
        }
        for bad in [
            "http://",
            "https://",
            "ftp://a.b",
            "http://a b",
            "http://a:99999",
            "a.b?x=1",
            "a.b#frag",
        ] {
            let err = Endpoint::resolve(Some(bad), "p", "ns", false).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("failed to use apparatus endpoint")
            );
        }
        assert_eq!(base(Some("http://[::1]:8080/"), false), "http://[::1]:8080");
    }

    #[test]
    fn endpoint_display_and_debug_hide_credentials() {
        let endpoint =
            Endpoint::resolve(Some("http://user:secret@a.b:81/p/"), "p", "ns", false).unwrap();
        assert_eq!(endpoint.to_string(), "http://a.b:81/p");
        assert!(!format!("{endpoint:?}").contains("secret"));
        assert_eq!(endpoint.url("config"), "http://user:secret@a.b:81/p/config");
        assert_eq!(redact("http://u@h/x@y"), "http://h/x@y");
        assert_eq!(redact("no scheme"), "no scheme");
        let err = Endpoint::resolve(Some("ftp://user:secret@a.b"), "p", "ns", false).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let options = HttpOptions::default();
        assert_eq!(backoff(&options, 0), Duration::from_millis(100));
        assert_eq!(backoff(&options, 1), Duration::from_millis(200));
        assert_eq!(backoff(&options, 4), Duration::from_millis(1600));
        assert_eq!(backoff(&options, 5), Duration::from_secs(2));
        assert_eq!(backoff(&options, u32::MAX), Duration::from_secs(2));
    }

    // ---- requests against a loopback server ----

    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        content_type: Option<String>,
        body: Value,
    }

    type Handler = Arc<dyn Fn(&str) -> (u16, Vec<u8>) + Send + Sync>;

    struct Server {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        /// Serves HTTP/1 on a loopback port; `drop_first` connections are closed unanswered.
        async fn start(drop_first: usize, handler: Handler) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let dropped = Arc::new(AtomicUsize::new(0));
            let seen_in_task = seen.clone();
            let task = tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    if dropped.fetch_add(1, Ordering::SeqCst) < drop_first {
                        drop(stream);
                        continue;
                    }
                    let seen = seen_in_task.clone();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let seen = seen.clone();
                            let handler = handler.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let content_type = req
                                    .headers()
                                    .get("content-type")
                                    .map(|v| v.to_str().unwrap().to_owned());
                                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                                let body = serde_json::from_slice(&bytes).unwrap();
                                seen.lock().unwrap().push(Seen {
                                    path: path.clone(),
                                    content_type,
                                    body,
                                });
                                let (status, answer) = handler(&path);
                                let mut response = Response::new(Full::new(Bytes::from(answer)));
                                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Server { addr, seen, task }
        }

        fn endpoint(&self, prefix: &str) -> Endpoint {
            Endpoint::resolve(
                Some(&format!("http://{}{prefix}", self.addr)),
                "p",
                "ns",
                false,
            )
            .unwrap()
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn answering(status: u16, body: &str) -> Handler {
        let body = body.as_bytes().to_vec();
        Arc::new(move |_| (status, body.clone()))
    }

    fn fast_options() -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_response_bytes: 1024,
            retries: 2,
            retry_backoff_min: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(20),
        }
    }

    /// A client whose egress policy permits the loopback test servers.
    fn client(options: HttpOptions) -> HttpApparatus {
        let egress = EgressPolicy::new(egress::EgressOptions::default().allowing_loopback());
        HttpApparatus::new(options, egress).unwrap()
    }

    fn config_request<'a>(
        plug: &'a Value,
        socket: &'a Value,
        empty: &'a Values,
    ) -> ConfigRequest<'a> {
        ConfigRequest {
            side: Side::Plug,
            plug,
            socket,
            plug_data: empty,
            socket_data: empty,
            vars: None,
        }
    }

    #[tokio::test]
    async fn redirects_are_errors_and_never_followed() {
        let handler: Handler = Arc::new(|path: &str| {
            if path == "/config" {
                (302, Vec::new())
            } else {
                (200, b"{}".to_vec())
            }
        });
        let server = Server::start(0, handler).await;
        // The Location header is absent; reqwest would still not follow with Policy::none, and
        // the answer must be an error naming the status either way.
        let (plug, socket, empty) = (plug(), socket(), Values::new());
        let err = client(fast_options())
            .config(
                &server.endpoint(""),
                &config_request(&plug, &socket, &empty),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpApparatusError::Redirect { code: 302, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("does not follow redirects"),
            "{err}"
        );
        assert_eq!(
            server.seen().len(),
            1,
            "the redirect was retried or followed"
        );
    }

    #[tokio::test]
    async fn default_egress_policy_refuses_loopback_without_connecting() {
        let server = Server::start(0, answering(200, "{}")).await;
        let apparatus = HttpApparatus::new(fast_options(), EgressPolicy::default()).unwrap();
        let (plug, socket, empty) = (plug(), socket(), Values::new());
        let req = config_request(&plug, &socket, &empty);
        // An address literal: judged before sending.
        let err = apparatus
            .config(&server.endpoint(""), &req)
            .await
            .unwrap_err();
        assert!(err.is_egress_denied(), "{err:?}");
        assert!(!err.is_unreachable());
        // A name resolving to loopback: judged by the resolver at connect time.
        let port = server
            .endpoint("")
            .to_string()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        let by_name =
            Endpoint::resolve(Some(&format!("localhost:{port}")), "p", "ns", false).unwrap();
        let err = apparatus.config(&by_name, &req).await.unwrap_err();
        assert!(err.is_egress_denied(), "{err:?}");
        let message = crate::controller::Error::Apparatus {
            side: Side::Plug,
            source: err,
        }
        .message();
        assert!(
            message.contains("egress policy refuses localhost (127.0.0.1)")
                || message.contains("egress policy refuses localhost (::1)"),
            "{message}"
        );
        assert!(server.seen().is_empty(), "a refused endpoint was reached");
    }

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    }

    fn plug() -> Value {
        json!({"apiVersion": "plugboard.dev/v1", "kind": "Plug", "metadata": {"name": "p"}})
    }

    fn socket() -> Value {
        json!({"apiVersion": "plugboard.dev/v1", "kind": "Socket", "metadata": {"name": "s"}})
    }

    #[tokio::test]
    async fn config_posts_the_reference_body_and_converts_the_answer() {
        let server = Server::start(
            0,
            answering(
                200,
                r#"{"port":5432,"big":1000000,"ratio":0.5,"on":true,"none":null,"host":"db","m":{"b":2,"a":"x"},"l":[1,"y"]}"#,
            ),
        )
        .await;
        let (plug, socket) = (plug(), socket());
        let plug_data = values(&[("pd", "1")]);
        let socket_data = values(&[("sd", "2")]);
        let vars = values(&[("v", "3")]);
        let apparatus = client(fast_options());
        let req = ConfigRequest {
            side: Side::Socket,
            plug: &plug,
            socket: &socket,
            plug_data: &plug_data,
            socket_data: &socket_data,
            vars: Some(&vars),
        };
        let got = apparatus
            .config(&server.endpoint("/socket/"), &req)
            .await
            .unwrap();
        assert_eq!(
            got,
            values(&[
                ("port", "5432"),
                ("big", "1e+06"),
                ("ratio", "0.5"),
                ("on", "true"),
                ("none", "<nil>"),
                ("host", "db"),
                ("m", "map[a:x b:2]"),
                ("l", "[1 y]"),
            ])
        );
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/socket/config");
        assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(
            seen[0].body,
            json!({
                "version": 1,
                "plug": plug,
                "socket": socket,
                "plugData": {"pd": "1"},
                "socketData": {"sd": "2"},
                "vars": {"v": "3"},
            })
        );
        assert!(seen[0].body["version"].is_u64());

        // Without vars the key is absent.
        let req = ConfigRequest { vars: None, ..req };
        apparatus.config(&server.endpoint(""), &req).await.unwrap();
        let seen = server.seen();
        assert_eq!(seen[1].path, "/config");
        assert!(seen[1].body.get("vars").is_none(), "{}", seen[1].body);
        assert_eq!(seen[1].body["version"], json!(1));
    }

    #[tokio::test]
    async fn hooks_post_the_reference_bodies() {
        let server = Server::start(0, answering(200, "not json, ignored")).await;
        let apparatus = client(fast_options());
        let endpoint = server.endpoint("/hooks");
        let (plug, socket) = (plug(), socket());
        let plug_config = values(&[("a", "1")]);
        let socket_config = values(&[("b", "2")]);
        let full = |side, point| HookRequest {
            side,
            point,
            plug: Some(&plug),
            socket: Some(&socket),
            plug_config: Some(&plug_config),
            socket_config: Some(&socket_config),
        };
        for side in [Side::Plug, Side::Socket] {
            for point in LifecyclePoint::ALL {
                apparatus.hook(&endpoint, &full(side, point)).await.unwrap();
            }
        }
        let seen = server.seen();
        assert_eq!(seen.len(), 10);
        let mut i = 0;
        for side in [Side::Plug, Side::Socket] {
            for point in LifecyclePoint::ALL {
                let call = &seen[i];
                i += 1;
                assert_eq!(call.path, format!("/hooks/{}", point.as_str()));
                assert_eq!(call.content_type.as_deref(), Some("application/json"));
                let want = match (point, side) {
                    (LifecyclePoint::Created | LifecyclePoint::Deleted, Side::Plug) => {
                        json!({"version": "1", "plug": plug})
                    }
                    (LifecyclePoint::Created | LifecyclePoint::Deleted, Side::Socket) => {
                        json!({"version": "1", "socket": socket})
                    }
                    _ => json!({
                        "version": "1",
                        "plug": plug,
                        "socket": socket,
                        "plugConfig": {"a": "1"},
                        "socketConfig": {"b": "2"},
                    }),
                };
                assert_eq!(call.body, want, "{side:?} {point:?}");
                assert!(call.body["version"].is_string());
            }
        }
    }

    #[tokio::test]
    async fn hook_with_missing_objects_is_rejected_before_sending() {
        let apparatus = client(fast_options());
        let endpoint = Endpoint::resolve(Some("127.0.0.1:9"), "p", "ns", false).unwrap();
        let plug = plug();
        let req = HookRequest {
            side: Side::Socket,
            point: LifecyclePoint::Created,
            plug: Some(&plug),
            socket: None,
            plug_config: None,
            socket_config: None,
        };
        let err = apparatus.hook(&endpoint, &req).await.unwrap_err();
        assert!(
            matches!(
                err,
                HttpApparatusError::IncompleteRequest {
                    field: "socket",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn error_status_is_reported_and_not_retried() {
        let server = Server::start(0, answering(500, "boom")).await;
        let apparatus = client(fast_options());
        let endpoint = server.endpoint("");
        let (plug, socket) = (plug(), socket());
        let empty = Values::new();
        let req = ConfigRequest {
            side: Side::Plug,
            plug: &plug,
            socket: &socket,
            plug_data: &empty,
            socket_data: &empty,
            vars: None,
        };
        let err = apparatus.config(&endpoint, &req).await.unwrap_err();
        assert!(
            matches!(err, HttpApparatusError::Status { code: 500, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "config failed with 500 status from POST http://{}/config",
                server.addr
            )
        );
        assert!(!err.is_unreachable());

        let hook = HookRequest {
            side: Side::Plug,
            point: LifecyclePoint::Coupled,
            plug: Some(&plug),
            socket: Some(&socket),
            plug_config: Some(&empty),
            socket_config: Some(&empty),
        };
        let err = apparatus.hook(&endpoint, &hook).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "event coupled failed with 500 status from POST http://{}/coupled",
                server.addr
            )
        );
        assert_eq!(server.seen().len(), 2, "status errors are not retried");
    }

    #[tokio::test]
    async fn silent_server_times_out_without_retry() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accepted_in_task = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted_in_task.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let apparatus = client(HttpOptions {
            request_timeout: Duration::from_millis(300),
            ..fast_options()
        });
        let endpoint = Endpoint::resolve(Some(&addr.to_string()), "p", "ns", false).unwrap();
        let plug = plug();
        let req = HookRequest {
            side: Side::Plug,
            point: LifecyclePoint::Created,
            plug: Some(&plug),
            socket: None,
            plug_config: None,
            socket_config: None,
        };
        let err = apparatus.hook(&endpoint, &req).await.unwrap_err();
        assert!(
            matches!(&err, HttpApparatusError::Timeout { after, .. } if *after == Duration::from_millis(300)),
            "{err:?}"
        );
        assert!(err.is_timeout() && !err.is_unreachable());
        assert!(err.to_string().contains(&format!("http://{addr}/created")));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "timeouts are not retried"
        );
        task.abort();
    }

    #[tokio::test]
    async fn refused_connection_is_unreachable_after_retries() {
        // A freed port on an address no other test listens on: on 127.0.0.1 a test running in
        // parallel could be given the same port and receive these connections.
        let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let apparatus = client(fast_options());
        let endpoint =
            Endpoint::resolve(Some(&format!("http://u:pw@{addr}/x")), "p", "ns", false).unwrap();
        let (plug, socket) = (plug(), socket());
        let empty = Values::new();
        let req = ConfigRequest {
            side: Side::Plug,
            plug: &plug,
            socket: &socket,
            plug_data: &empty,
            socket_data: &empty,
            vars: None,
        };
        let err = apparatus.config(&endpoint, &req).await.unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(
            matches!(err, HttpApparatusError::Unreachable { attempts: 3, .. }),
            "{err:?}"
        );
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(
            chain.contains(&format!("http://{addr}/x/config")),
            "{chain}"
        );
        assert!(!chain.contains("pw"), "credentials leaked: {chain}");
    }

    #[tokio::test]
    async fn closed_connections_are_retried_until_an_answer() {
        let server = Server::start(2, answering(200, "{}")).await;
        let apparatus = client(fast_options());
        let (plug, socket) = (plug(), socket());
        let empty = Values::new();
        let req = HookRequest {
            side: Side::Socket,
            point: LifecyclePoint::Updated,
            plug: Some(&plug),
            socket: Some(&socket),
            plug_config: Some(&empty),
            socket_config: Some(&empty),
        };
        apparatus.hook(&server.endpoint(""), &req).await.unwrap();
        assert_eq!(server.seen().len(), 1);

        // More closed connections than retries: unreachable.
        let server = Server::start(10, answering(200, "{}")).await;
        let err = apparatus
            .hook(&server.endpoint(""), &req)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpApparatusError::Unreachable { attempts: 3, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oversized_answers_are_rejected() {
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(2000));
        let server = Server::start(0, answering(200, &big)).await;
        let apparatus = client(fast_options());
        let (plug, socket) = (plug(), socket());
        let empty = Values::new();
        let req = ConfigRequest {
            side: Side::Plug,
            plug: &plug,
            socket: &socket,
            plug_data: &empty,
            socket_data: &empty,
            vars: None,
        };
        let err = apparatus
            .config(&server.endpoint(""), &req)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpApparatusError::TooLarge { limit: 1024, .. }),
            "{err:?}"
        );
        let hook = HookRequest {
            side: Side::Plug,
            point: LifecyclePoint::Deleted,
            plug: Some(&plug),
            socket: None,
            plug_config: None,
            socket_config: None,
        };
        let err = apparatus
            .hook(&server.endpoint(""), &hook)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpApparatusError::TooLarge { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oversized_chunked_answers_are_rejected_while_reading() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // Read the request head and body (small), then stream an endless answer.
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = stream.read(&mut buf).await;
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                transfer-encoding: chunked\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("100\r\n{}\r\n", " ".repeat(256));
                    while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        let apparatus = client(fast_options());
        let endpoint = Endpoint::resolve(Some(&addr.to_string()), "p", "ns", false).unwrap();
        let (plug, socket) = (plug(), socket());
        let empty = Values::new();
        let req = ConfigRequest {
            side: Side::Plug,
            plug: &plug,
            socket: &socket,
            plug_data: &empty,
            socket_data: &empty,
            vars: None,
        };
        let err = apparatus.config(&endpoint, &req).await.unwrap_err();
        assert!(
            matches!(err, HttpApparatusError::TooLarge { limit: 1024, .. }),
            "{err:?}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn config_answers_must_be_json_objects() {
        let handler: Handler = Arc::new(|path| match path {
            "/array/config" => (200, b"[1,2]".to_vec()),
            "/string/config" => (200, br#""s""#.to_vec()),
            "/empty/config" => (200, Vec::new()),
            _ => (200, b"{not json".to_vec()),
        });
        let server = Server::start(0, handler).await;
        let apparatus = client(fast_options());
        let (plug, socket) = (plug(), socket());
        let empty = Values::new();
        let req = ConfigRequest {
            side: Side::Plug,
            plug: &plug,
            socket: &socket,
            plug_data: &empty,
            socket_data: &empty,
            vars: None,
        };
        for prefix in ["/array", "/string"] {
            let err = apparatus
                .config(&server.endpoint(prefix), &req)
                .await
                .unwrap_err();
            assert!(
                matches!(err, HttpApparatusError::NotAnObject { .. }),
                "{prefix}: {err:?}"
            );
        }
        for prefix in ["/empty", "/garbage"] {
            let err = apparatus
                .config(&server.endpoint(prefix), &req)
                .await
                .unwrap_err();
            assert!(
                matches!(err, HttpApparatusError::InvalidJson { .. }),
                "{prefix}: {err:?}"
            );
        }
    }
}
