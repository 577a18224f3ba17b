//! The `oci-client` registry client as pushes use it (tests and tooling; pulls use [`super::pull`]
//! under the egress policy), and the translation of its errors into [`OciError`].

use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

use super::auth::RegistryAuth;
use super::error::{Missing, OciError};
use super::reference::ImageRef;

/// Sent as `User-Agent`.
const USER_AGENT: &str = concat!("plugboard/", env!("CARGO_PKG_VERSION"));

/// Builds a client that speaks HTTPS to every registry except the `host:port`s in
/// `plain_http_hosts`.
pub(crate) fn build(
    registry: &str,
    plain_http_hosts: &[String],
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<oci_client::Client, OciError> {
    ensure_crypto_provider();
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http_hosts.to_vec()),
        connect_timeout: Some(connect_timeout),
        read_timeout: Some(read_timeout),
        user_agent: USER_AGENT,
        // Image indexes are refused as "not wasm" before a platform would matter.
        platform_resolver: None,
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(config).map_err(|e| OciError::Transport {
        registry: registry.to_owned(),
        action: "set up a client for",
        source: Arc::new(e),
    })
}

/// `oci-client`'s reqwest is built with rustls but no crypto provider of its own (so the
/// process has one TLS stack, not two) and needs a process default: install ring, the provider
/// kube uses, unless one is installed already.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Translates a registry error. `missing` is what a "not found" answer refers to.
pub(crate) fn translate(
    error: OciDistributionError,
    image: &ImageRef,
    auth: &RegistryAuth,
    missing: Missing,
    action: &'static str,
) -> OciError {
    let unauthorized = || OciError::Unauthorized {
        registry: image.registry().to_owned(),
        image: image.to_string(),
        with_credentials: auth.has_credentials(),
    };
    let not_found = |what: Missing| OciError::NotFound {
        image: image.to_string(),
        what,
    };
    match &error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => return unauthorized(),
        OciDistributionError::ImageManifestNotFoundError(_) => return not_found(missing),
        OciDistributionError::ServerError { code: 404, .. } => return not_found(missing),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => return unauthorized(),
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            return OciError::DigestMismatch {
                image: image.to_string(),
                what: if matches!(missing, Missing::Layer(_)) {
                    "layer"
                } else {
                    "manifest"
                },
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            for e in &envelope.errors {
                match e.code {
                    OciErrorCode::NameUnknown => return not_found(Missing::Repository),
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::ManifestBlobUnknown
                    | OciErrorCode::NotFound => return not_found(missing),
                    OciErrorCode::Unauthorized | OciErrorCode::Denied => return unauthorized(),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    OciError::Transport {
        registry: image.registry().to_owned(),
        action,
        source: Arc::new(error),
    }
}

#[cfg(test)]
mod tests {
    use oci_client::errors::{OciEnvelope, OciError as RegistryError};

    use super::*;

    fn image() -> ImageRef {
        ImageRef::parse("r.example/app:1").unwrap()
    }

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![RegistryError {
                    code,
                    message: String::new(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "https://r.example/v2/app/manifests/1".into(),
        }
    }

    fn reason(error: OciDistributionError) -> &'static str {
        translate(
            error,
            &image(),
            &RegistryAuth::Anonymous,
            Missing::Tag("1".into()),
            "pull from",
        )
        .reason()
    }

    #[test]
    fn registry_codes_become_reasons() {
        assert_eq!(reason(envelope(OciErrorCode::NameUnknown)), "ImageNotFound");
        assert_eq!(
            reason(envelope(OciErrorCode::ManifestUnknown)),
            "ImageNotFound"
        );
        assert_eq!(reason(envelope(OciErrorCode::Denied)), "ImageUnauthorized");
        assert_eq!(
            reason(envelope(OciErrorCode::Toomanyrequests)),
            "RegistryUnavailable"
        );
        assert_eq!(
            reason(OciDistributionError::UnauthorizedError { url: "u".into() }),
            "ImageUnauthorized"
        );
        assert_eq!(
            reason(OciDistributionError::ServerError {
                code: 503,
                url: "u".into(),
                message: "busy".into()
            }),
            "RegistryUnavailable"
        );
    }

    #[test]
    fn unknown_repository_is_named_as_such() {
        let error = translate(
            envelope(OciErrorCode::NameUnknown),
            &image(),
            &RegistryAuth::Anonymous,
            Missing::Tag("1".into()),
            "pull from",
        );
        assert!(matches!(
            error,
            OciError::NotFound {
                what: Missing::Repository,
                ..
            }
        ));
    }
}
