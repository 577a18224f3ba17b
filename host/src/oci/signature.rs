//! Cosign signatures in the registry: reading the `sha256-<hex>.sig` manifest next to a
//! component and its signature layers, and writing one (see [`crate::signature`] for the
//! format and its verification).

use serde::Deserialize;
use serde_json::json;

use super::auth::RegistryAuth;
use super::error::OciError;
use super::pull::{Pull, PullClient};
use super::push::{SingleLayer, encode_error, push_single_layer, sha256};
use super::reference::ImageRef;
use crate::signature::{SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, StoredSignature};

/// The most signature layers read from one signature manifest.
const MAX_SIGNATURES: usize = 16;
/// The largest signature manifest read.
const MAX_MANIFEST_BYTES: usize = 256 << 10;
/// The largest payload layer read (cosign's are a few hundred bytes).
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureManifest {
    #[serde(default)]
    layers: Vec<SignatureLayer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureLayer {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The reference of the signature manifest of `image` at `manifest_digest`.
fn signature_ref(image: &ImageRef, manifest_digest: &str) -> Result<ImageRef, OciError> {
    ImageRef::parse(&format!(
        "{}/{}:{}",
        image.registry(),
        image.repository(),
        crate::signature::signature_tag(manifest_digest)
    ))
}

/// Reads the signatures stored for `image` at `manifest_digest`, through the store's pull
/// client (under the egress policy, manifests read capped): `None` when there is no signature
/// manifest. Layers that are not simple-signing payloads with a signature are skipped; each
/// payload is read within a size limit and checked against its digest.
pub(crate) async fn fetch(
    client: &PullClient,
    image: &ImageRef,
    auth: &RegistryAuth,
    manifest_digest: &str,
) -> Result<Option<Vec<StoredSignature>>, OciError> {
    let sig = signature_ref(image, manifest_digest)?;
    let mut pull = client.pull(&sig, auth)?;
    let manifest = match pull.manifest().await {
        Ok(manifest) => manifest.body,
        Err(OciError::NotFound { .. }) => return Ok(None),
        Err(other) => return Err(other),
    };
    let invalid = |problem: String| OciError::InvalidManifest {
        image: sig.to_string(),
        problem,
    };
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(invalid(format!(
            "the signature manifest is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let manifest: SignatureManifest = serde_json::from_slice(&manifest)
        .map_err(|e| invalid(format!("the signature manifest is not JSON ({e})")))?;
    let mut found = Vec::new();
    for layer in manifest.layers.into_iter().take(MAX_SIGNATURES) {
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION).cloned() else {
            continue;
        };
        let payload = read_payload(&mut pull, &sig, &layer).await?;
        found.push(StoredSignature { payload, signature });
    }
    Ok(Some(found))
}

async fn read_payload(
    pull: &mut Pull<'_>,
    sig: &ImageRef,
    layer: &SignatureLayer,
) -> Result<Vec<u8>, OciError> {
    let too_large = |size| OciError::TooLarge {
        image: sig.to_string(),
        what: "signature payload",
        size,
        limit: MAX_PAYLOAD_BYTES,
    };
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(too_large(size));
    }
    let mut response = pull.blob(&layer.digest).await?;
    let mut payload = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(pull.transport("download a signature from", e)),
        };
        if (payload.len() + chunk.len()) as u64 > MAX_PAYLOAD_BYTES {
            return Err(too_large((payload.len() + chunk.len()) as u64));
        }
        payload.extend_from_slice(&chunk);
    }
    let actual = sha256(&payload);
    if actual != layer.digest {
        return Err(OciError::DigestMismatch {
            image: sig.to_string(),
            what: "signature payload",
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok(payload)
}

/// Stores `signature` (base64, see [`crate::signature::sign`]) of `payload` as the cosign
/// signature manifest of `reference`'s repository at `manifest_digest`, replacing any there.
/// Returns the signature manifest's tag.
pub async fn push_signature(
    reference: &str,
    manifest_digest: &str,
    payload: &[u8],
    signature: &str,
    auth: &RegistryAuth,
    plain_http_hosts: &[String],
) -> Result<String, OciError> {
    let image = ImageRef::parse(reference)?;
    let sig = signature_ref(&image, manifest_digest)?;
    // The image config cosign writes: its one "layer" is the payload.
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]},
    }))
    .map_err(|e| encode_error(&sig, e))?;
    push_single_layer(
        &sig,
        SingleLayer {
            config_media_type: "application/vnd.oci.image.config.v1+json",
            config: &config,
            layer_media_type: SIMPLE_SIGNING_MEDIA_TYPE,
            layer: payload,
            layer_annotations: Some(json!({SIGNATURE_ANNOTATION: signature})),
        },
        auth,
        plain_http_hosts,
    )
    .await?;
    Ok(crate::signature::signature_tag(manifest_digest))
}
