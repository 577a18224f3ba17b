//! Cosign-compatible signatures of components: what is signed, how it is checked, and the
//! operator's policy.
//!
//! A signature lives in the registry next to the component, as cosign stores it: an OCI
//! manifest tagged `sha256-<hex of the component's manifest digest>.sig` in the same
//! repository, whose layers (media type [`SIMPLE_SIGNING_MEDIA_TYPE`]) each hold a "simple
//! signing" payload ([`Payload`]) and carry in the annotation [`SIGNATURE_ANNOTATION`] the
//! base64 DER ECDSA P-256/SHA-256 signature of the payload's bytes. A component is signed by
//! a key when one layer's signature verifies with that key and its payload names the
//! component's manifest digest (`critical.image.docker-manifest-digest`). Keys are PEM public
//! keys (`cosign.pub`, or any SubjectPublicKeyInfo of a P-256 key).
//!
//! Fetching signatures from registries is [`crate::oci::ComponentStore::signatures`]; writing
//! them is [`crate::oci::push_signature`].

mod policy;

pub use policy::{SignatureOptions, TrustedKey, Verdict, VerifiedDigests, judge, keys_from_secret};

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde::{Deserialize, Serialize};

/// Media type of a cosign signature layer (the payload).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation of a signature layer holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The tag cosign stores the signatures of `manifest_digest` (`sha256:<hex>`) under.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

/// One signature as stored: the payload's bytes and the annotation's base64 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSignature {
    /// The payload layer's bytes.
    pub payload: Vec<u8>,
    /// The layer's [`SIGNATURE_ANNOTATION`].
    pub signature: String,
}

/// A cosign "simple signing" payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// What is signed.
    pub critical: Critical,
    /// Free-form claims (cosign writes `null`).
    #[serde(default)]
    pub optional: Option<serde_json::Value>,
}

/// The signed part of a [`Payload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    /// Where the signer pushed the image.
    pub identity: Identity,
    /// The image signed.
    pub image: Image,
    /// Always [`PAYLOAD_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `registry/repository` of the signed image.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The manifest digest signed (`sha256:<hex>`).
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload cosign writes for `repository` (`registry/repository`) at `manifest_digest`.
    pub fn new(repository: &str, manifest_digest: &str) -> Self {
        Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_owned(),
                },
                image: Image {
                    docker_manifest_digest: manifest_digest.to_owned(),
                },
                kind: PAYLOAD_TYPE.to_owned(),
            },
            optional: None,
        }
    }
}

/// Why a component's signatures were not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignatureError {
    /// No signature is stored for the component.
    #[error(
        "{image} ({digest}) has no signature (no {tag} manifest with signature layers in its repository) and this operator requires signed components: sign it with `cosign sign --key cosign.key {image}@{digest}` or `plugboard plugin sign`"
    )]
    Missing {
        /// The image as the spec names it.
        image: String,
        /// The manifest digest it resolved to.
        digest: String,
        /// The tag looked for.
        tag: String,
    },
    /// Signatures are stored, but none verifies with a trusted key for this digest.
    #[error(
        "no signature of {image} ({digest}) verifies with the operator's {keys} trusted key(s): {problems}; re-sign the component with a trusted key, or pin the digest that was signed"
    )]
    Invalid {
        /// The image as the spec names it.
        image: String,
        /// The manifest digest it resolved to.
        digest: String,
        /// How many keys were tried.
        keys: usize,
        /// What was wrong with each signature, joined.
        problems: String,
    },
    /// The trusted keys could not be read.
    #[error("the operator's signature keys cannot be used: {0}")]
    Keys(String),
}

impl SignatureError {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing { .. } => "SignatureMissing",
            SignatureError::Invalid { .. } => "SignatureInvalid",
            SignatureError::Keys(_) => "SignatureKeysInvalid",
        }
    }
}

/// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`, as `cosign.pub`).
pub fn parse_public_key(pem: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| format!("not a PEM ECDSA P-256 public key (-----BEGIN PUBLIC KEY-----): {e}"))
}

/// Reads a PEM private key: PKCS#8 (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey`
/// writes) or SEC1 (`-----BEGIN EC PRIVATE KEY-----`). Cosign's own encrypted key format is
/// not read: sign with cosign for those keys.
pub fn parse_private_key(pem: &str) -> Result<SigningKey, String> {
    let pem = pem.trim();
    if pem.contains("ENCRYPTED") {
        return Err(
            "this is an encrypted (cosign) private key; sign with `cosign sign --key`, or give an \
             unencrypted PKCS#8 PEM P-256 key"
                .into(),
        );
    }
    if let Ok(key) = SigningKey::from_pkcs8_pem(pem) {
        return Ok(key);
    }
    p256::SecretKey::from_sec1_pem(pem)
        .map(SigningKey::from)
        .map_err(|_| {
            "not a PEM ECDSA P-256 private key (PKCS#8 -----BEGIN PRIVATE KEY----- or SEC1 \
             -----BEGIN EC PRIVATE KEY-----)"
                .into()
        })
}

/// Signs `payload`: the base64 DER signature cosign stores in [`SIGNATURE_ANNOTATION`].
pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    let signature: Signature = key.sign(payload);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

/// Checks one stored signature: it verifies with one of `keys`, and its payload is a cosign
/// payload for `manifest_digest`. Returns what is wrong otherwise.
pub fn verify(
    keys: &[TrustedKey],
    stored: &StoredSignature,
    manifest_digest: &str,
) -> Result<(), String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(stored.signature.trim())
        .map_err(|_| "the signature annotation is not base64".to_owned())?;
    let signature =
        Signature::from_der(&der).map_err(|_| "the signature is not a DER ECDSA signature")?;
    if !keys
        .iter()
        .any(|k| k.key.verify(&stored.payload, &signature).is_ok())
    {
        return Err("the signature does not verify with any trusted key".into());
    }
    // Only a verified payload is read.
    let payload: Payload = serde_json::from_slice(&stored.payload)
        .map_err(|_| "the signed payload is not a cosign simple-signing payload".to_owned())?;
    if payload.critical.kind != PAYLOAD_TYPE {
        return Err(format!(
            "the signed payload's type is {:?}, not {PAYLOAD_TYPE:?}",
            bounded(&payload.critical.kind)
        ));
    }
    let signed = &payload.critical.image.docker_manifest_digest;
    if signed != manifest_digest {
        return Err(format!(
            "a trusted key signed {:?}, not this digest (was the tag re-pushed?)",
            bounded(signed)
        ));
    }
    Ok(())
}

/// At most 80 characters of signed text, for messages (callers quote it with `{:?}`, which
/// escapes control characters).
fn bounded(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod tests;
