//! The state of one hook call's store: a WASI context that grants nothing, the memory limiter,
//! bounded output, and the host imports (`log`, gated `send`).

use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::plugboard::apparatus::host::{self, Level, Request, Response, SendError};
use super::bindings::plugboard::apparatus::types;
use super::{CallContext, CallLimits, WasmOptions};

/// Refuses memory growth past the cap, and remembers that it did (to tell an out-of-memory
/// trap from other traps).
pub(crate) struct Limiter {
    memory: usize,
    pub(crate) denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.denied = true;
            return Ok(false);
        }
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
    /// Writes what the guest printed to the operator's log.
    pub(crate) fn flush(&self, owner: &str, hook: &str) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().take(200) {
                tracing::info!(owner, hook, stream, "{line}");
            }
        }
    }

    /// Whether the guest hit the output budget (its write then trapped).
    pub(crate) fn overflowed(&self) -> bool {
        self.stdout.contents().len() >= self.budget || self.stderr.contents().len() >= self.budget
    }
}

/// Outbound HTTP, limited to the spec's allowed hosts.
struct Gate {
    allowed: Vec<String>,
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    max_body: usize,
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
}

impl CallState {
    pub(crate) fn new(
        context: &CallContext,
        limits: &CallLimits,
        options: &WasmOptions,
        client: reqwest::Client,
        handle: tokio::runtime::Handle,
    ) -> (Self, Output) {
        let stdout = MemoryOutputPipe::new(options.output_budget);
        let stderr = MemoryOutputPipe::new(options.output_budget);
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
                denied: false,
            },
            gate: Gate {
                allowed: context.allowed_hosts.clone(),
                client,
                handle,
                timeout: options.http_timeout,
                max_body: options.http_max_body,
            },
            owner: context.owner.clone(),
            log_budget: options.output_budget,
            logged: 0,
            last_log: None,
        };
        let output = Output {
            stdout,
            stderr,
            budget: options.output_budget,
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

/// Whether `url`'s host (and port) is in the allow-list (`host` or `host:port` entries).
pub(crate) fn allowed(allowed: &[String], url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default();
    allowed.iter().any(|entry| {
        let (h, p) = match entry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p.parse::<u16>().ok()),
            _ => (entry.as_str(), None),
        };
        h.eq_ignore_ascii_case(host) && (p.is_none() || p == port)
    })
}

impl host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if self.logged >= self.log_budget {
            return;
        }
        self.logged += message.len();
        let mut line = message;
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

    fn send(&mut self, request: Request) -> Result<Response, SendError> {
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
                "host {} is not in spec.apparatus.wasm.allowedHosts",
                url.host_str().unwrap_or_default()
            )));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            SendError::Denied(format!("method {:?} is not supported", request.method))
        })?;
        let mut builder = self
            .gate
            .client
            .request(method, url)
            .timeout(self.gate.timeout);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let max = self.gate.max_body;
        self.gate.handle.block_on(async move {
            let mut response = builder.send().await.map_err(|e| {
                if e.is_timeout() {
                    SendError::Timeout
                } else {
                    SendError::Transport(e.without_url().to_string())
                }
            })?;
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_host_and_optional_port() {
        let allowed_hosts = vec!["api.example.com".to_owned(), "127.0.0.1:8080".to_owned()];
        let ok = |u: &str| allowed(&allowed_hosts, &reqwest::Url::parse(u).unwrap());
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://API.example.com:9999/"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("https://evil.example.com/"));
        assert!(!ok("https://api.example.com.evil.net/"));
        assert!(!allowed(
            &[],
            &reqwest::Url::parse("http://127.0.0.1/").unwrap()
        ));
    }
}
