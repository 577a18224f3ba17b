//! Log output: human-readable or JSON lines on stderr, at a level from a flag unless `RUST_LOG`
//! says otherwise. Reconcile spans carry the object's kind, namespace and name, so every line
//! logged inside a reconcile names its object.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event, with its span fields.
    #[default]
    Human,
    /// One JSON object per line, the span fields under `spans` and `span`.
    Json,
}

/// The log settings of a command.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// How lines look.
    pub format: LogFormat,
    /// The level (`error`, `warn`, `info`, `debug`, `trace`) or a full filter directive.
    pub level: String,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

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

/// Installs the log subscriber (once per process).
pub fn init(options: &LogOptions) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(default_filter(&options.level))
            .unwrap_or_else(|_| EnvFilter::new(default_filter("info")))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match options.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
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
        assert!(EnvFilter::try_new(default_filter("info")).is_ok());
    }
}
