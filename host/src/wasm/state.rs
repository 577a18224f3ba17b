//! The state of one hook call's store: a WASI context that grants nothing, the memory limiter,
//! bounded output, and the host imports (`log`, gated `send`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::plugboard::apparatus::host::{self, Level, Request, Response, SendError};
use super::bindings::plugboard::apparatus::types;
use super::call::Shared;
use super::{CallContext, CallLimits};
use crate::egress::{self, EgressDenied};

/// Refuses memory growth past the cap — counted over all the linear memories of the call, so a
/// component with several memories gets no more than one cap — and remembers that it did (to
/// tell an out-of-memory trap from other traps).
pub(crate) struct Limiter {
    memory: usize,
    /// Bytes of linear memory the call's instances hold together.
    pub(crate) used: usize,
    pub(crate) denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory {
            self.denied = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Guest stdout and stderr, captured up to a budget.
pub(crate) struct Output {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    budget: usize,
}

impl Output {
    /// Writes what the guest printed to the operator's log, without the values in `secrets`
    /// and with control characters escaped.
    pub(crate) fn flush(&self, owner: &str, hook: &str, secrets: &[String]) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().take(200) {
                let line = log_safe(&super::secrets::scrub(line, secrets));
                tracing::info!(owner, hook, stream, "{line}");
            }
        }
    }

    /// Whether the guest hit the output budget (its write then trapped).
    pub(crate) fn overflowed(&self) -> bool {
        self.stdout.contents().len() >= self.budget || self.stderr.contents().len() >= self.budget
    }
}

/// Outbound HTTP, limited to the spec's allowed hosts and the operator's egress policy (the
/// client's resolver enforces it for names; address literals are judged here).
struct Gate {
    allowed: Vec<String>,
    /// The runtime's client, egress policy and bounds.
    shared: Arc<Shared>,
    /// When the call's deadline passes: no request outlives it.
    deadline: Instant,
}

impl Gate {
    /// The timeout of a request sent now: the host's request timeout, capped at the time left
    /// before the call's deadline. `None` when no time is left.
    fn timeout_now(&self) -> Option<Duration> {
        capped_timeout(self.shared.http_timeout, self.deadline, Instant::now())
    }
}

/// `timeout`, capped at what is left of `deadline` at `now`; `None` when nothing is left.
fn capped_timeout(timeout: Duration, deadline: Instant, now: Instant) -> Option<Duration> {
    let left = deadline.checked_duration_since(now)?;
    (!left.is_zero()).then(|| timeout.min(left))
}

/// The store data of one call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    gate: Gate,
    owner: String,
    log_budget: usize,
    logged: usize,
    pub(crate) last_log: Option<String>,
    /// The last request the egress policy refused, to name it if the hook then fails.
    pub(crate) egress_denied: Option<EgressDenied>,
    /// Values of this call's inputs that came from Secrets, scrubbed from guest log lines.
    secrets: Vec<String>,
}

impl CallState {
    pub(crate) fn new(
        context: CallContext,
        limits: &CallLimits,
        shared: Arc<Shared>,
        secrets: Vec<String>,
    ) -> (Self, Output) {
        let budget = shared.output_budget;
        let stdout = MemoryOutputPipe::new(budget);
        let stderr = MemoryOutputPipe::new(budget);
        // Nothing is granted: no preopened directories, no environment, no arguments, no
        // network (socket calls are refused), no stdin.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                memory: usize::try_from(limits.memory).unwrap_or(usize::MAX),
                used: 0,
                denied: false,
            },
            gate: Gate {
                allowed: context.allowed_hosts,
                shared,
                // The store's epoch deadline starts when the call does, right after this.
                deadline: Instant::now() + limits.timeout,
            },
            owner: context.owner,
            log_budget: budget,
            logged: 0,
            last_log: None,
            egress_denied: None,
            secrets,
        };
        let output = Output {
            stdout,
            stderr,
            budget,
        };
        (state, output)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

/// Whether `url`'s host and port are in the allow-list. An entry is `host` or `host:port`
/// (IPv6 addresses in brackets, `[::1]:8080`); an entry without a port allows only the URL
/// scheme's default port — 443 for `https`, 80 for `http` — never every port.
pub(crate) fn allowed(allowed: &[String], url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        let (h, p) = match entry.rsplit_once(':') {
            // `host:port` or `[v6]:port`; a bare IPv6 address has colons but no brackets.
            Some((h, p))
                if !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_digit())
                    && (!h.contains(':') || h.ends_with(']')) =>
            {
                (h, p.parse::<u16>().ok())
            }
            _ => (entry, None),
        };
        let default = match url.scheme() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let h = h.trim_end_matches('.');
        let wanted = host.trim_end_matches('.');
        let same_host = h.eq_ignore_ascii_case(wanted)
            || (h.trim_start_matches('[').trim_end_matches(']')
                == wanted.trim_start_matches('[').trim_end_matches(']')
                && wanted.starts_with('['));
        same_host && p.or(default) == Some(port)
    })
}

/// `line` with control characters escaped, so a guest cannot forge log lines or terminal
/// escapes.
fn log_safe(line: &str) -> String {
    if !line.chars().any(char::is_control) {
        return line.to_owned();
    }
    line.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if self.logged >= self.log_budget {
            return;
        }
        self.logged += message.len();
        let mut line = log_safe(&super::secrets::scrub(&message, &self.secrets));
        if line.len() > 1024 {
            let mut end = 1024;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push('…');
        }
        let owner = self.owner.as_str();
        match level {
            Level::Trace => tracing::trace!(owner, "{line}"),
            Level::Debug => tracing::debug!(owner, "{line}"),
            Level::Info => tracing::info!(owner, "{line}"),
            Level::Warn => tracing::warn!(owner, "{line}"),
            Level::Error => tracing::error!(owner, "{line}"),
        }
        if self.logged >= self.log_budget {
            tracing::warn!(
                owner,
                "component log output over budget; further lines dropped"
            );
        }
        self.last_log = Some(line);
    }

    async fn send(&mut self, request: Request) -> Result<Response, SendError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| SendError::Denied(format!("invalid URL {:?}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SendError::Denied(format!(
                "scheme {} is not allowed; use http or https",
                url.scheme()
            )));
        }
        if !allowed(&self.gate.allowed, &url) {
            return Err(SendError::Denied(format!(
                "host {}:{} is not in spec.apparatus.wasm.allowedHosts (an entry without a port \
                 allows only port 443 for https and 80 for http)",
                url.host_str().unwrap_or_default(),
                url.port_or_known_default().unwrap_or_default()
            )));
        }
        // Address literals never reach the resolver: judge them here.
        let shared = self.gate.shared.clone();
        if let Err(denied) = shared.egress.check_url(&url) {
            let message = denied.to_string();
            self.egress_denied = Some(denied);
            return Err(SendError::Denied(message));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            SendError::Denied(format!("method {:?} is not supported", request.method))
        })?;
        let client = shared.client().map_err(|e| {
            SendError::Transport(format!("the operator's HTTP client cannot be set up: {e}"))
        })?;
        // The guest is not interrupted while the host waits for the answer: the request's
        // timeout is what keeps the call within its deadline.
        let Some(timeout) = self.gate.timeout_now() else {
            return Err(SendError::Timeout);
        };
        let mut builder = client.request(method, url).timeout(timeout);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let max = shared.http_max_body;
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                let e = e.without_url();
                if let Some(denied) = egress::find_denied(&e) {
                    let message = denied.to_string();
                    self.egress_denied = Some(denied.clone());
                    return Err(SendError::Denied(message));
                }
                return Err(if e.is_timeout() {
                    SendError::Timeout
                } else {
                    SendError::Transport(e.to_string())
                });
            }
        };
        if response.status().is_redirection() {
            // The client never follows redirects; the guest sees the 3xx and decides.
            tracing::debug!(owner = %self.owner, status = response.status().as_u16(), "host.send got a redirect; not followed");
        }
        {
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                if e.is_timeout() {
                    SendError::Timeout
                } else {
                    SendError::Transport(e.without_url().to_string())
                }
            })? {
                if body.len() + chunk.len() > max {
                    return Err(SendError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeouts_never_pass_the_call_deadline() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(
            capped_timeout(10 * second, now + 2 * second, now),
            Some(2 * second)
        );
        assert_eq!(
            capped_timeout(second, now + 5 * second, now),
            Some(second),
            "a deadline far off leaves the host's timeout"
        );
        assert_eq!(capped_timeout(second, now, now), None);
        assert_eq!(capped_timeout(second, now, now + second), None);
    }

    #[test]
    fn allow_list_matches_host_and_port_defaulting_to_the_scheme_port() {
        let allowed_hosts = vec![
            "api.example.com".to_owned(),
            "127.0.0.1:8080".to_owned(),
            "[::1]:9000".to_owned(),
            "plain.example".to_owned(),
        ];
        let ok = |u: &str| allowed(&allowed_hosts, &reqwest::Url::parse(u).unwrap());
        assert!(ok("https://api.example.com/x"));
        assert!(ok("https://API.example.com:443/"));
        assert!(ok("http://api.example.com/"));
        // An entry without a port never means every port.
        assert!(!ok("http://API.example.com:9999/"));
        assert!(!ok("https://api.example.com:8443/"));
        assert!(ok("http://plain.example/"));
        assert!(!ok("http://plain.example:22/"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("http://127.0.0.1/"));
        assert!(ok("http://[::1]:9000/"));
        assert!(!ok("http://[::1]:9001/"));
        assert!(!ok("https://evil.example.com/"));
        assert!(!ok("https://api.example.com.evil.net/"));
        assert!(!allowed(
            &[],
            &reqwest::Url::parse("http://127.0.0.1/").unwrap()
        ));
    }
}
