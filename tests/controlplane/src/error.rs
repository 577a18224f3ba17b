//! Errors of the control plane support.

use std::path::PathBuf;

/// Why the control plane could not be built, started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `go` is not installed or could not be run.
    #[error("failed to run `go` (Go 1.25 or newer is needed to build the control plane)")]
    GoMissing(#[source] std::io::Error),
    /// `go build` failed.
    #[error("building the control plane with `go build` failed ({status}); its output:\n{output}")]
    GoBuild {
        /// Exit status of `go build`.
        status: std::process::ExitStatus,
        /// Combined output of `go build`.
        output: String,
    },
    /// Generating certificates or keys failed.
    #[error("failed to generate control plane credentials")]
    Pki(#[from] rcgen::Error),
    /// A control plane process exited while starting.
    #[error("{name} exited during start-up ({status}); last log lines:\n{log_tail}")]
    ProcessExited {
        /// The process.
        name: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The control plane did not become ready in time.
    #[error("{what} was not ready after {seconds} s; last API server log lines:\n{log_tail}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
        /// The end of the API server log.
        log_tail: String,
    },
    /// A kubeconfig could not be built or read.
    #[error("failed to load kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {context}")]
    Kube {
        /// What the call was for.
        context: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The ServiceAccount token request returned no token.
    #[error("the token request for ServiceAccount {0} returned no token")]
    NoToken(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }
}
