//! Errors of fetching and pushing components: each variant is something a user can act on and
//! maps to one condition reason ([`OciError::reason`]).
//!
//! No message carries credentials: references and registry answers are shown, usernames and
//! passwords never are. Errors are `Clone` (sources are behind `Arc`) because one download's
//! outcome is handed to every caller waiting on it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Fetching or pushing a WebAssembly component failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OciError {
    /// The image reference cannot be used.
    #[error("invalid image reference {reference:?}: {problem}")]
    InvalidReference {
        /// The reference as written.
        reference: String,
        /// What is wrong with it and how to write it instead.
        problem: String,
    },
    /// A `kubernetes.io/dockerconfigjson` pull secret cannot be read.
    #[error("invalid pull secret: {problem}")]
    InvalidPullSecret {
        /// What is wrong with it (never its values).
        problem: String,
    },
    /// The registry has no such repository, tag, manifest or layer.
    #[error(
        "{what} not found in {image}: check the image name, tag and digest, and that the component was pushed"
    )]
    NotFound {
        /// The image reference.
        image: String,
        /// What is missing.
        what: Missing,
    },
    /// The registry refused access.
    #[error(
        "registry {registry} refused access to {image}: {}",
        if *.with_credentials {
            "the pull secret's credentials were rejected or may not read this repository"
        } else {
            "it needs credentials; add a pull secret (kubernetes.io/dockerconfigjson) for this registry"
        }
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The image reference.
        image: String,
        /// Whether credentials were sent.
        with_credentials: bool,
    },
    /// Content did not hash to the digest it was requested or announced by.
    #[error(
        "the {what} of {image} has digest {actual}, not the expected {expected}: the pinned \
         digest is wrong, or the registry or something between altered the content"
    )]
    DigestMismatch {
        /// The image reference.
        image: String,
        /// `manifest` or `layer`.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// The manifest does not describe a WebAssembly component artifact.
    #[error(
        "{image} is not a WebAssembly component artifact: found media types [{}]; push the \
         component with config media type application/vnd.wasm.config.v0+json and one \
         application/wasm layer (e.g. with `wkg oci push`)",
        .media_types.join(", ")
    )]
    NotWasm {
        /// The image reference.
        image: String,
        /// The media types found: the manifest's (when it states one), the config's, then each
        /// layer's.
        media_types: Vec<String>,
    },
    /// The manifest is not a valid OCI image manifest.
    #[error("the manifest of {image} is not a valid OCI image manifest: {problem}")]
    InvalidManifest {
        /// The image reference.
        image: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The layer is WebAssembly of the wrong kind, or not WebAssembly at all.
    #[error("the layer of {image} is not a WebAssembly component: {found}")]
    NotAComponent {
        /// The image reference.
        image: String,
        /// What the layer is, and what to do.
        found: String,
    },
    /// The manifest or the layer is larger than allowed.
    #[error(
        "the {what} of {image} is larger than the limit of {limit} bytes ({size} bytes or \
         more): make it smaller or raise the operator's limit"
    )]
    TooLarge {
        /// The image reference.
        image: String,
        /// `manifest` or `layer`.
        what: &'static str,
        /// The size seen so far, or announced.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The registry could not be reached or answered outside the protocol.
    #[error(
        "failed to {action} registry {registry}: check that it is reachable and serves HTTPS \
         (plain HTTP only for hosts the operator allows)"
    )]
    Transport {
        /// The registry host.
        registry: String,
        /// What was being done, e.g. `pull from` or `push to`.
        action: &'static str,
        /// What went wrong.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The operator's egress policy refused a connection the pull needed: to the registry,
    /// its token service, or a redirect target. Nothing was sent there.
    #[error(
        "cannot pull {image}: a connection for registry {registry} was refused, and nothing \
         (no credentials) was sent"
    )]
    EgressDenied {
        /// The registry host, as written in the reference.
        registry: String,
        /// The image reference.
        image: String,
        /// What was refused (host, address) and why, with the flags that change it.
        #[source]
        source: crate::egress::EgressDenied,
    },
    /// The on-disk cache failed.
    #[error(
        "failed to {action} {path} in the component cache: check the cache directory's space and permissions"
    )]
    Cache {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// What a registry did not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The repository.
    Repository,
    /// The tag.
    Tag(String),
    /// The manifest with this digest.
    Manifest(String),
    /// The layer blob with this digest.
    Layer(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Repository => f.write_str("repository"),
            Missing::Tag(tag) => write!(f, "tag {tag:?}"),
            Missing::Manifest(digest) => write!(f, "manifest {digest}"),
            Missing::Layer(digest) => write!(f, "layer {digest}"),
        }
    }
}

impl OciError {
    /// The condition and Event reason (CamelCase) for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::InvalidReference { .. } => "InvalidImageReference",
            OciError::InvalidPullSecret { .. } => "InvalidPullSecret",
            OciError::NotFound { .. } => "ImageNotFound",
            OciError::Unauthorized { .. } => "ImageUnauthorized",
            OciError::DigestMismatch { .. } => "DigestMismatch",
            OciError::NotWasm { .. } => "NotWasm",
            OciError::InvalidManifest { .. } => "InvalidManifest",
            OciError::NotAComponent { .. } => "NotAComponent",
            OciError::TooLarge { .. } => "ImageTooLarge",
            OciError::Transport { .. } => "RegistryUnavailable",
            OciError::EgressDenied { .. } => crate::crd::conditions::reasons::EGRESS_DENIED,
            OciError::Cache { .. } => "ComponentCacheError",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything (the registry
    /// was unreachable, or the local cache failed).
    pub fn is_transient(&self) -> bool {
        matches!(self, OciError::Transport { .. } | OciError::Cache { .. })
    }

    pub(crate) fn cache(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |e| OciError::Cache {
            action,
            path,
            source: Arc::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_do_not_repeat_their_source() {
        let err = OciError::Transport {
            registry: "ghcr.io".into(),
            action: "pull from",
            source: Arc::new(std::io::Error::other("connection refused")),
        };
        let message = err.to_string();
        assert!(message.starts_with("failed to pull from registry ghcr.io"));
        assert!(!message.contains("connection refused"));
        assert_eq!(err.reason(), "RegistryUnavailable");
        assert!(err.is_transient());
    }

    #[test]
    fn not_wasm_lists_what_was_found() {
        let err = OciError::NotWasm {
            image: "r.example/app:1".into(),
            media_types: vec![
                "application/vnd.oci.image.config.v1+json".into(),
                "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            ],
        };
        assert!(err.to_string().contains(
            "found media types [application/vnd.oci.image.config.v1+json, \
             application/vnd.oci.image.layer.v1.tar+gzip]"
        ));
        assert_eq!(err.reason(), "NotWasm");
    }

    #[test]
    fn unauthorized_says_whether_credentials_were_sent() {
        let mk = |with_credentials| OciError::Unauthorized {
            registry: "r.example".into(),
            image: "r.example/app:1".into(),
            with_credentials,
        };
        assert!(mk(false).to_string().contains("add a pull secret"));
        assert!(mk(true).to_string().contains("credentials were rejected"));
    }

    #[test]
    fn not_found_names_what_is_missing() {
        let err = OciError::NotFound {
            image: "r.example/app:2".into(),
            what: Missing::Tag("2".into()),
        };
        assert_eq!(
            err.to_string(),
            "tag \"2\" not found in r.example/app:2: check the image name, tag and digest, and \
             that the component was pushed"
        );
        assert_eq!(err.reason(), "ImageNotFound");
    }
}
