//! The registry side of a pull: the OCI distribution spec's pull flow on plugboard's own
//! `reqwest` client, so that every connection a pull makes goes through the operator's egress
//! policy (registries are chosen by tenants, in `spec.apparatus.wasm.image`).
//!
//! - **Connections.** The client resolves names with the [`EgressResolver`], which judges the
//!   addresses at connect time; URLs whose host is an address literal are judged before the
//!   request. No proxy from the environment is used (a proxy would make the policy judge the
//!   proxy instead of the registry). Registry, token service and redirect targets alike.
//! - **Authentication.** A `401` answer's `WWW-Authenticate` challenge is answered once:
//!   `Bearer` by asking the challenge's realm for a token for `repository:<name>:pull` (with the
//!   pull secret's credentials as Basic authentication, when there are any), `Basic` with the
//!   credentials themselves. The answer is remembered per registry, repository and credentials
//!   until the token expires. Credentials go only to the registry itself and to its realm,
//!   never over plain HTTP to a host the operator did not list in `plain_http_hosts`, and never
//!   to an address the policy refuses (the connection is refused before anything is sent).
//! - **Redirects.** Registries commonly redirect blob (and sometimes manifest) downloads to
//!   storage. Up to [`MAX_REDIRECTS`] hops are followed by hand: each target is judged by the
//!   egress policy at its own connect time like any other connection, may not downgrade to
//!   plain HTTP (unless the operator listed its host), and gets the registry's authorization
//!   only when it is on the registry's own origin. The token service's redirects are not
//!   followed.
//! - **Sizes.** Manifests, token answers and error bodies are read as a stream and refused
//!   past their limit, never buffered whole first; blobs are streamed by the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;

use super::auth::RegistryAuth;
use super::challenge::{self, Challenge};
use super::error::{Missing, OciError};
use super::media;
use super::reference::ImageRef;
use crate::egress::{self, EgressPolicy};

/// Redirects followed for one request at most.
pub(crate) const MAX_REDIRECTS: usize = 5;
/// The largest error body read (to find the registry's error code).
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Authorizations remembered at most; the map starts over past this.
const MAX_AUTHORIZATIONS: usize = 256;
/// How long a token without `expires_in` is used (the distribution spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// The longest a token is kept, whatever it says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How long Basic credentials are sent without a new challenge.
const BASIC_LIFETIME: Duration = Duration::from_secs(600);

/// Sent as `User-Agent`.
const USER_AGENT: &str = concat!("plugboard/", env!("CARGO_PKG_VERSION"));

/// A registry answered outside what the pull expects.
#[derive(Debug, thiserror::Error)]
enum Protocol {
    /// An unexpected status.
    #[error("the registry answered {status} to GET {path}")]
    Status { status: StatusCode, path: String },
    /// Too many redirects.
    #[error("more than {MAX_REDIRECTS} redirects for GET {path}")]
    TooManyRedirects { path: String },
    /// A redirect that cannot be followed.
    #[error("a redirect for GET {path} cannot be followed: {problem}")]
    BadRedirect { path: String, problem: String },
    /// The token service could not be used.
    #[error("the token service {realm} {problem}")]
    Token { realm: String, problem: String },
}

/// Why a capped read stopped.
enum ReadError {
    TooLarge(u64),
    Transport(reqwest::Error),
}

/// Reads `response`'s body, refusing it past `limit` bytes (announced or seen) without reading
/// further.
async fn read_capped(mut response: Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if let Some(length) = response.content_length()
        && length > limit
    {
        return Err(ReadError::TooLarge(length));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        let size = body.len() as u64 + chunk.len() as u64;
        if size > limit {
            return Err(ReadError::TooLarge(size));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Who may be authorized how, remembered between pulls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AuthKey {
    registry: String,
    repository: String,
    auth: RegistryAuth,
}

/// The HTTP client of pulls, shared by every fetch of a store.
pub(crate) struct PullClient {
    http: reqwest::Client,
    egress: EgressPolicy,
    plain_http_hosts: Vec<String>,
    /// The largest manifest (and token answer) read.
    max_manifest_bytes: u64,
    authorizations: Mutex<HashMap<AuthKey, (HeaderValue, Instant)>>,
}

impl PullClient {
    /// A client connecting only where `egress` permits.
    pub(crate) fn new(
        egress: EgressPolicy,
        plain_http_hosts: Vec<String>,
        connect_timeout: Duration,
        read_timeout: Duration,
        max_manifest_bytes: u64,
    ) -> Result<PullClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::apparatus::http::tls_config())
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(egress.resolver())
            .user_agent(USER_AGENT)
            .build()?;
        Ok(PullClient {
            http,
            egress,
            plain_http_hosts,
            max_manifest_bytes,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a pull of `image` with `auth`.
    pub(crate) fn pull<'a>(
        &'a self,
        image: &'a ImageRef,
        auth: &'a RegistryAuth,
    ) -> Result<Pull<'a>, OciError> {
        let scheme = if self.plain_http(image.registry()) || self.plain_http(image.api_registry()) {
            "http"
        } else {
            "https"
        };
        let base =
            Url::parse(&format!("{scheme}://{}/v2/", image.api_registry())).map_err(|e| {
                OciError::InvalidReference {
                    reference: image.to_string(),
                    problem: format!("the registry is not a valid host: {e}"),
                }
            })?;
        let key = AuthKey {
            registry: image.api_registry().to_owned(),
            repository: image.repository().to_owned(),
            auth: auth.clone(),
        };
        let authorization = {
            let remembered = lock(&self.authorizations);
            remembered
                .get(&key)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(value, _)| value.clone())
        };
        Ok(Pull {
            client: self,
            image,
            auth,
            base,
            key,
            authorization,
        })
    }

    /// Whether `host` (`host:port` as written) may be spoken to over plain HTTP.
    fn plain_http(&self, host: &str) -> bool {
        self.plain_http_hosts.iter().any(|h| h == host)
    }

    fn remember(&self, key: &AuthKey, value: HeaderValue, lifetime: Duration) {
        let mut remembered = lock(&self.authorizations);
        if remembered.len() >= MAX_AUTHORIZATIONS {
            remembered.clear();
        }
        remembered.insert(key.clone(), (value, Instant::now() + lifetime));
    }

    fn forget(&self, key: &AuthKey) {
        lock(&self.authorizations).remove(key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map holds no invariant a panicking holder could break halfway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One pull of one image: its requests share an authorization.
pub(crate) struct Pull<'a> {
    client: &'a PullClient,
    image: &'a ImageRef,
    auth: &'a RegistryAuth,
    /// `scheme://registry/v2/`.
    base: Url,
    key: AuthKey,
    authorization: Option<HeaderValue>,
}

/// A manifest as the registry served it.
pub(crate) struct Manifest {
    pub(crate) body: Vec<u8>,
    /// The registry's `Docker-Content-Digest` header, when it sent one.
    pub(crate) announced_digest: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
}

impl Pull<'_> {
    /// The manifest the image names (by digest when pinned, else by tag), read within the
    /// manifest limit.
    pub(crate) async fn manifest(&mut self) -> Result<Manifest, OciError> {
        let (reference, missing) = match (self.image.digest(), self.image.tag()) {
            (Some(digest), _) => (digest, Missing::Manifest(digest.to_owned())),
            (None, tag) => {
                let tag = tag.unwrap_or_default();
                (tag, Missing::Tag(tag.to_owned()))
            }
        };
        let url = self.url(&format!("manifests/{reference}"))?;
        let accept = media::ACCEPTED_MANIFEST_MEDIA_TYPES.join(", ");
        let response = self.get(url, Some(&accept), &missing).await?;
        let announced_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.client.max_manifest_bytes;
        let body = read_capped(response, limit).await.map_err(|e| match e {
            ReadError::TooLarge(size) => OciError::TooLarge {
                image: self.image.to_string(),
                what: "manifest",
                size,
                limit,
            },
            ReadError::Transport(e) => self.transport("pull from", e),
        })?;
        Ok(Manifest {
            body,
            announced_digest,
        })
    }

    /// The answer to `GET` of the blob `digest`, its status checked; the caller streams it.
    pub(crate) async fn blob(&mut self, digest: &str) -> Result<Response, OciError> {
        let url = self.url(&format!("blobs/{digest}"))?;
        self.get(url, None, &Missing::Layer(digest.to_owned()))
            .await
    }

    /// A transport failure (or an egress refusal found inside it).
    pub(crate) fn transport(&self, action: &'static str, e: reqwest::Error) -> OciError {
        let e = e.without_url();
        if let Some(denied) = egress::find_denied(&e) {
            return self.denied(denied.clone());
        }
        OciError::Transport {
            registry: self.image.registry().to_owned(),
            action,
            source: Arc::new(e),
        }
    }

    fn denied(&self, source: egress::EgressDenied) -> OciError {
        tracing::debug!(%source, "egress policy refused a registry connection");
        OciError::EgressDenied {
            registry: self.image.registry().to_owned(),
            image: self.image.to_string(),
            source,
        }
    }

    fn protocol(&self, error: Protocol) -> OciError {
        OciError::Transport {
            registry: self.image.registry().to_owned(),
            action: "pull from",
            source: Arc::new(error),
        }
    }

    fn unauthorized(&self) -> OciError {
        OciError::Unauthorized {
            registry: self.image.registry().to_owned(),
            image: self.image.to_string(),
            with_credentials: self.auth.has_credentials(),
        }
    }

    /// `<base><repository>/<rest>`.
    fn url(&self, rest: &str) -> Result<Url, OciError> {
        self.base
            .join(&format!("{}/{rest}", self.image.repository()))
            .map_err(|e| OciError::InvalidReference {
                reference: self.image.to_string(),
                problem: format!("it does not make a valid URL: {e}"),
            })
    }

    /// `GET url` on the registry: redirects followed within the rules, one challenge answered,
    /// the status checked.
    async fn get(
        &mut self,
        url: Url,
        accept: Option<&str>,
        missing: &Missing,
    ) -> Result<Response, OciError> {
        let mut challenged = false;
        loop {
            let response = self.send_following(url.clone(), accept).await?;
            if response.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                self.client.forget(&self.key);
                let (value, lifetime) = self.answer(response.headers()).await?;
                self.client.remember(&self.key, value.clone(), lifetime);
                self.authorization = Some(value);
                continue;
            }
            return self.check(response, missing).await;
        }
    }

    /// Sends `GET url`, following up to [`MAX_REDIRECTS`] redirects; each hop is judged by
    /// the egress policy (address literals here, names by the resolver at connect time).
    async fn send_following(&self, url: Url, accept: Option<&str>) -> Result<Response, OciError> {
        let mut url = url;
        let path = url.path().to_owned();
        for hop in 0..=MAX_REDIRECTS {
            self.permit(&url)?;
            let mut request = self.client.http.get(url.clone());
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            if let Some(authorization) = &self.authorization
                && url.origin() == self.base.origin()
            {
                request = request.header(header::AUTHORIZATION, authorization.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| self.transport("pull from", e))?;
            if !response.status().is_redirection() || hop == MAX_REDIRECTS {
                if response.status().is_redirection() {
                    return Err(self.protocol(Protocol::TooManyRedirects { path }));
                }
                return Ok(response);
            }
            let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
            else {
                return Ok(response);
            };
            let next = url.join(location).map_err(|e| {
                self.protocol(Protocol::BadRedirect {
                    path: path.clone(),
                    problem: format!("its location is not a URL ({e})"),
                })
            })?;
            tracing::debug!(
                hop = hop + 1,
                to = %format!("{}{}", next.origin().ascii_serialization(), next.path()),
                "following a registry redirect"
            );
            url = next;
        }
        Err(self.protocol(Protocol::TooManyRedirects { path }))
    }

    /// Refuses a URL the pull may not connect to: a scheme other than HTTPS (plain HTTP only
    /// to hosts the operator listed), or an address literal the egress policy refuses.
    fn permit(&self, url: &Url) -> Result<(), OciError> {
        let host_port = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => String::new(),
        };
        match url.scheme() {
            "https" => {}
            "http" if self.client.plain_http(&host_port) => {}
            scheme => {
                return Err(self.protocol(Protocol::BadRedirect {
                    path: url.path().to_owned(),
                    problem: format!(
                        "{scheme} to {host_port} is not allowed (HTTPS only, plain HTTP only to \
                         registries the operator allows)"
                    ),
                }));
            }
        }
        self.client
            .egress
            .check_url(url)
            .map_err(|denied| self.denied(denied))
    }

    /// An authorization answering the challenges of a 401, and how long it may be reused.
    async fn answer(&self, headers: &HeaderMap) -> Result<(HeaderValue, Duration), OciError> {
        let challenges: Vec<Challenge> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            return self.token(bearer).await;
        }
        if challenges.iter().any(|c| c.scheme == "basic")
            && let RegistryAuth::Basic { username, password } = self.auth
        {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|_| self.unauthorized())?;
            value.set_sensitive(true);
            return Ok((value, BASIC_LIFETIME));
        }
        Err(self.unauthorized())
    }

    /// A Bearer token from the challenge's realm.
    async fn token(&self, bearer: &Challenge) -> Result<(HeaderValue, Duration), OciError> {
        let problem = |realm: &str, problem: &str| {
            self.protocol(Protocol::Token {
                realm: realm.to_owned(),
                problem: problem.to_owned(),
            })
        };
        let Some(realm) = bearer.param("realm") else {
            return Err(problem(
                "(none)",
                "is missing from the registry's challenge",
            ));
        };
        let mut url = Url::parse(realm).map_err(|_| problem("(invalid)", "is not a valid URL"))?;
        let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
        url.set_fragment(None);
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = bearer.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair(
                "scope",
                &format!("repository:{}:pull", self.image.repository()),
            );
        }
        self.permit(&url)?;
        let mut request = self.client.http.get(url);
        if let RegistryAuth::Basic { username, password } = self.auth {
            request = request.basic_auth(username, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport("get a token for", e))?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.unauthorized()),
            s => return Err(problem(&shown, &format!("answered {s}"))),
        }
        let limit = self.client.max_manifest_bytes;
        let body = read_capped(response, limit).await.map_err(|e| match e {
            ReadError::TooLarge(size) => problem(
                &shown,
                &format!("answered more than {limit} bytes ({size})"),
            ),
            ReadError::Transport(e) => self.transport("get a token for", e),
        })?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| problem(&shown, "answered something other than a token (JSON)"))?;
        let token = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| problem(&shown, "answered without a token"))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| problem(&shown, "answered a token that is not a header value"))?;
        value.set_sensitive(true);
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .min(MAX_TOKEN_LIFETIME)
            .saturating_sub(TOKEN_MARGIN);
        Ok((value, lifetime))
    }

    /// `response` when it succeeded; otherwise the error its status and error code say.
    async fn check(&self, response: Response, missing: &Missing) -> Result<Response, OciError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let path = response.url().path().to_owned();
        let body = read_capped(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let codes: Vec<String> = serde_json::from_slice::<ErrorEnvelope>(&body)
            .map(|e| e.errors.into_iter().map(|e| e.code).collect())
            .unwrap_or_default();
        let has = |code: &str| codes.iter().any(|c| c.eq_ignore_ascii_case(code));
        let not_found = |what: Missing| OciError::NotFound {
            image: self.image.to_string(),
            what,
        };
        if has("NAME_UNKNOWN") {
            return Err(not_found(Missing::Repository));
        }
        if status == StatusCode::NOT_FOUND
            || [
                "MANIFEST_UNKNOWN",
                "BLOB_UNKNOWN",
                "MANIFEST_BLOB_UNKNOWN",
                "NOT_FOUND",
            ]
            .iter()
            .any(|c| has(c))
        {
            return Err(not_found(missing.clone()));
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            || has("UNAUTHORIZED")
            || has("DENIED")
        {
            return Err(self.unauthorized());
        }
        Err(self.protocol(Protocol::Status { status, path }))
    }
}
