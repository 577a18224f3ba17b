//! The default log filter of plugboard's commands and tests.

/// The filter used when `RUST_LOG` is unset: `level` for everything, except the Kubernetes
/// client's per-request failure lines (connection refused, 5xx) unless at debug or trace —
/// while an API server starts, or restarts, they repeat every few hundred milliseconds and
/// say nothing the operator's own messages do not — and the WebAssembly compiler's internals.
pub fn default_filter(level: &str) -> String {
    let level = level.trim();
    let level = if level.is_empty() { "info" } else { level };
    let verbose = ["debug", "trace"]
        .iter()
        .any(|l| level.eq_ignore_ascii_case(l));
    let mut directives = vec![level.to_owned()];
    if !verbose {
        directives.push("kube_client::client::builder=off".to_owned());
    }
    directives.push("cranelift_codegen=warn".to_owned());
    directives.push("wasmtime_cranelift=warn".to_owned());
    directives.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_failures_are_hidden_unless_debugging() {
        assert!(default_filter("info").contains("kube_client::client::builder=off"));
        assert!(default_filter("warn").contains("kube_client::client::builder=off"));
        assert!(!default_filter("debug").contains("kube_client::client::builder"));
        assert!(default_filter("").starts_with("info,"));
        assert!(tracing_subscriber::EnvFilter::try_new(default_filter("info")).is_ok());
    }
}
