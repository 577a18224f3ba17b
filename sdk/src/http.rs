//! Outbound HTTP through the host.
//!
//! A component has no network of its own. [`send`] asks plugboard to make the request, which it
//! does only when the URL's host is in the spec's `allowedHosts`, with its own timeout and
//! response size cap.
//!
//! # What may be reached
//!
//! - **Scheme**: `http` or `https` only.
//! - **Host**: compared with each `allowedHosts` entry case-insensitively, ignoring a trailing
//!   `.`; no wildcards, no subdomains (`api.example.com` does not allow `eu.api.example.com`).
//!   IPv6 addresses are written in brackets (`[::1]:8080`).
//! - **Port**: an entry `host:port` allows that port; an entry without a port allows only the
//!   scheme's default port (443 for `https`, 80 for `http`), never every port.
//! - **Egress policy**: the operator's own policy applies too, judged on the address the name
//!   resolves to when connecting (so a name pointing at loopback, link-local, cloud metadata
//!   or the API server is refused unless the operator allows it); a refusal is
//!   [`SendError::Denied`] naming the address and why.
//! - **Redirects** are never followed: a 3xx is the response, and the hook decides.
//! - **Time**: a request ends at the host's request timeout or at the hook's deadline,
//!   whichever comes first ([`SendError::Timeout`]); it never outlives the call.
//! - **Size**: a response body over the host's cap is [`SendError::TooLarge`].
//!
//! ```no_run
//! use plugboard_sdk::http::{self, Request};
//! use plugboard_sdk::HookError;
//!
//! fn lookup() -> Result<String, HookError> {
//!     let response = http::send(Request::get("https://inventory.example.com/v1/hosts"))?;
//!     if !response.is_success() {
//!         return Err(HookError::retry_later(format!("inventory answered {}", response.status)));
//!     }
//!     Ok(response.text().unwrap_or_default().to_owned())
//! }
//! ```

use crate::host;

/// An outbound HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    pub method: String,
    /// Absolute `http://` or `https://` URL; its host and port must be in the spec's
    /// `allowedHosts` (an entry without a port allows only 443 for `https` and 80 for `http`)
    /// and the operator's egress policy must permit the address it resolves to. Redirects are
    /// never followed: a 3xx is the response.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request with a body.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).with_body(body)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and its `content-type`.
    pub fn with_json(self, body: &serde_json::Value) -> Self {
        self.with_header("content-type", "application/json")
            .with_body(body.to_string())
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body, up to the host's size cap.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no headers and an empty body (for test fixtures).
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header with this name (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The URL's host and port are not in the spec's `allowedHosts`, the operator's egress
    /// policy refuses the address, or the URL is not usable.
    #[error("request denied: {0}")]
    Denied(String),
    /// No response within the host's request timeout, or before the hook's deadline (a
    /// request is never given more time than the call has left).
    #[error("request timed out")]
    Timeout,
    /// The response was larger than the host's cap.
    #[error("response too large")]
    TooLarge,
    /// Connecting or transferring failed.
    #[error("transport error: {0}")]
    Transport(String),
}

/// Sends a request through the host and waits for the response.
///
/// Outside plugboard and a [`testing::Harness`](crate::testing::Harness) (a native program
/// calling hooks directly) every request is [`SendError::Denied`].
pub fn send(request: Request) -> Result<Response, SendError> {
    host::send(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_helpers_read_status_headers_and_body() {
        let r = Response::new(201)
            .with_header("Content-Type", "application/json")
            .with_body(r#"{"ok":true}"#);
        assert!(r.is_success());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.text().ok(), Some(r#"{"ok":true}"#));
        assert_eq!(r.json().ok(), Some(serde_json::json!({"ok": true})));
        assert!(!Response::new(404).is_success());
    }

    #[test]
    fn json_request_sets_content_type() {
        let r = Request::new("PUT", "https://x.example").with_json(&serde_json::json!([1]));
        assert_eq!(r.body.as_deref(), Some(&b"[1]"[..]));
        assert_eq!(
            r.headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
    }
}
