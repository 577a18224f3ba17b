//! Pushing artifacts: components in the CNCF wasm layout for tests and tooling, and arbitrary
//! single-layer artifacts for tests of what the store refuses.

use std::sync::Arc;
use std::time::Duration;

use oci_client::RegistryOperation;
use reqwest::header::HeaderValue;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::auth::RegistryAuth;
use super::client;
use super::error::{Missing, OciError};
use super::media::{
    OCI_EMPTY_CONFIG_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE, is_wasm_config,
};
use super::reference::ImageRef;

const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Pushes `component` to `reference` (`registry/repository:tag`) in the CNCF wasm artifact
/// layout: config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer. The
/// bytes are not checked. Registries in `plain_http_hosts` (`host:port`) are spoken to over
/// plain HTTP. Returns the manifest digest.
pub async fn push_component(
    reference: &str,
    component: &[u8],
    auth: &RegistryAuth,
    plain_http_hosts: &[String],
) -> Result<String, OciError> {
    push_artifact(
        reference,
        WASM_CONFIG_MEDIA_TYPE,
        WASM_LAYER_MEDIA_TYPE,
        component,
        auth,
        plain_http_hosts,
    )
    .await
}

/// Pushes a single-layer artifact with the given media types to `reference`
/// (`registry/repository:tag`) and returns the manifest digest. For a WebAssembly config media
/// type the config is the CNCF layout's JSON (`architecture`, `os`, `layerDigests`); for the
/// OCI empty config it is `{}`; otherwise it is a minimal image config.
pub async fn push_artifact(
    reference: &str,
    config_media_type: &str,
    layer_media_type: &str,
    layer: &[u8],
    auth: &RegistryAuth,
    plain_http_hosts: &[String],
) -> Result<String, OciError> {
    let layer_digest = sha256(layer);
    let config = match config_media_type {
        OCI_EMPTY_CONFIG_MEDIA_TYPE => json!({}),
        wasm if is_wasm_config(wasm) => {
            json!({"architecture": "wasm", "os": "wasip2", "layerDigests": [layer_digest]})
        }
        _ => json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        }),
    };
    push_with_config(
        reference,
        config_media_type,
        &config,
        layer_media_type,
        layer,
        auth,
        plain_http_hosts,
    )
    .await
}

/// Pushes a single-layer artifact with the given config JSON and media types to `reference`
/// (`registry/repository:tag`) and returns the manifest digest.
pub async fn push_with_config(
    reference: &str,
    config_media_type: &str,
    config: &serde_json::Value,
    layer_media_type: &str,
    layer: &[u8],
    auth: &RegistryAuth,
    plain_http_hosts: &[String],
) -> Result<String, OciError> {
    let image = ImageRef::parse(reference)?;
    if image.digest().is_some() || image.tag().is_none() {
        return Err(OciError::InvalidReference {
            reference: reference.to_owned(),
            problem: "push to a tag (registry/repository:tag), not to a digest".into(),
        });
    }
    let config = serde_json::to_vec(config).map_err(|e| encode_error(&image, e))?;
    let digest = push_single_layer(
        &image,
        SingleLayer {
            config_media_type,
            config: &config,
            layer_media_type,
            layer,
            layer_annotations: None,
        },
        auth,
        plain_http_hosts,
    )
    .await?;
    tracing::debug!(image = %image, digest = %digest, "pushed artifact");
    Ok(digest)
}

/// What [`push_single_layer`] stores: a config blob and one layer.
pub(super) struct SingleLayer<'a> {
    pub(super) config_media_type: &'a str,
    /// The config blob, serialised.
    pub(super) config: &'a [u8],
    pub(super) layer_media_type: &'a str,
    pub(super) layer: &'a [u8],
    pub(super) layer_annotations: Option<serde_json::Value>,
}

/// Pushes the blobs of `artifact` and its OCI manifest to `image` (a tag) and returns the
/// manifest digest.
pub(super) async fn push_single_layer(
    image: &ImageRef,
    artifact: SingleLayer<'_>,
    auth: &RegistryAuth,
    plain_http_hosts: &[String],
) -> Result<String, OciError> {
    let client = client::build(
        image.registry(),
        plain_http_hosts,
        PUSH_TIMEOUT,
        PUSH_TIMEOUT,
    )?;
    let translate = |e| client::translate(e, image, auth, Missing::Repository, "push to");
    client
        .auth(image.oci(), &auth.to_oci(), RegistryOperation::Push)
        .await
        .map_err(translate)?;

    let layer_digest = sha256(artifact.layer);
    let config_digest = sha256(artifact.config);
    client
        .push_blob(image.oci(), artifact.layer.to_vec(), &layer_digest)
        .await
        .map_err(translate)?;
    client
        .push_blob(image.oci(), artifact.config.to_vec(), &config_digest)
        .await
        .map_err(translate)?;

    let mut layer = json!({
        "mediaType": artifact.layer_media_type,
        "digest": layer_digest,
        "size": artifact.layer.len(),
    });
    if let Some(annotations) = artifact.layer_annotations {
        layer["annotations"] = annotations;
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": artifact.config_media_type,
            "digest": config_digest,
            "size": artifact.config.len(),
        },
        "layers": [layer],
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| encode_error(image, e))?;
    let manifest_digest = sha256(&manifest);
    client
        .push_manifest_raw(
            image.oci(),
            manifest,
            HeaderValue::from_static(OCI_MANIFEST_MEDIA_TYPE),
        )
        .await
        .map_err(translate)?;
    Ok(manifest_digest)
}

pub(super) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub(super) fn encode_error(image: &ImageRef, e: serde_json::Error) -> OciError {
    OciError::Transport {
        registry: image.registry().to_owned(),
        action: "encode an artifact or signature for",
        source: Arc::new(e),
    }
}
