//! The operator's signature policy: trusted keys (from files or Secrets), whether signatures
//! are required, and the verdict on one component's stored signatures.
//!
//! | keys | required | unsigned component | bad signature | good signature |
//! | --- | --- | --- | --- | --- |
//! | none | no | runs (nothing is checked) | runs | runs |
//! | some | no | runs | refused (`SignatureInvalid`) | runs |
//! | some | yes | refused (`SignatureMissing`) | refused (`SignatureInvalid`) | runs |
//!
//! With keys but without `required`, a signature that is present must verify: a signature that
//! does not verify means the component or its signature was tampered with, which is never a
//! reason to run it.

use std::collections::HashSet;
use std::sync::Mutex;

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::EncodePublicKey as _;
use sha2::{Digest as _, Sha256};

use super::{SignatureError, StoredSignature, parse_public_key, verify};

/// A public key signatures are checked against, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The file or `Secret namespace/name key` it was read from, for messages.
    pub source: String,
    /// The key.
    pub key: VerifyingKey,
}

impl TrustedKey {
    /// Reads the PEM public key in `pem`, naming it `source`.
    pub fn from_pem(source: impl Into<String>, pem: &str) -> Result<Self, SignatureError> {
        let source = source.into();
        parse_public_key(pem)
            .map(|key| TrustedKey {
                source: source.clone(),
                key,
            })
            .map_err(|e| SignatureError::Keys(format!("{source}: {e}")))
    }

    /// Reads the PEM public key file at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SignatureError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| SignatureError::Keys(format!("cannot read {}: {e}", path.display())))?;
        Self::from_pem(path.display().to_string(), &pem)
    }
}

/// The keys in a Secret's data: every value that holds a PEM public key (`cosign.pub`, say).
/// A Secret with none is an error, so that a wrong Secret is not silently an empty key set.
pub fn keys_from_secret(
    secret: &str,
    data: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<Vec<TrustedKey>, SignatureError> {
    let mut keys = Vec::new();
    for (name, value) in data {
        let Ok(text) = std::str::from_utf8(&value) else {
            continue;
        };
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            keys.push(TrustedKey::from_pem(
                format!("Secret {secret} key {name}"),
                text,
            )?);
        }
    }
    if keys.is_empty() {
        return Err(SignatureError::Keys(format!(
            "Secret {secret} holds no PEM public key (-----BEGIN PUBLIC KEY-----)"
        )));
    }
    Ok(keys)
}

/// How the operator treats component signatures.
#[derive(Debug, Clone, Default)]
pub struct SignatureOptions {
    /// Keys read from files at start.
    pub keys: Vec<TrustedKey>,
    /// Secrets (`namespace`, `name`) read, as the operator, at every verification whose
    /// digest is not yet known to verify: every PEM public key in their data is trusted.
    pub key_secrets: Vec<(String, String)>,
    /// Refuse components without a valid signature.
    pub required: bool,
}

impl SignatureOptions {
    /// Whether anything is checked at all.
    pub fn enabled(&self) -> bool {
        self.required || !self.keys.is_empty() || !self.key_secrets.is_empty()
    }
}

/// What the stored signatures of a component amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A signature verifies with a trusted key for this digest.
    Verified,
    /// There is no signature and none is required.
    Unsigned,
}

/// Judges the signatures stored for `image` at `digest` (`None`: no signature manifest) by
/// the table in the module's docs.
pub fn judge(
    keys: &[TrustedKey],
    required: bool,
    image: &str,
    digest: &str,
    stored: Option<&[StoredSignature]>,
) -> Result<Verdict, SignatureError> {
    let stored = stored.unwrap_or_default();
    if stored.is_empty() {
        return if required {
            Err(SignatureError::Missing {
                image: image.to_owned(),
                digest: digest.to_owned(),
                tag: super::signature_tag(digest),
            })
        } else {
            Ok(Verdict::Unsigned)
        };
    }
    if keys.is_empty() {
        return Err(SignatureError::Keys("no trusted key is configured".into()));
    }
    let mut problems = Vec::new();
    for (i, signature) in stored.iter().enumerate() {
        match verify(keys, signature, digest) {
            Ok(()) => return Ok(Verdict::Verified),
            Err(problem) => problems.push(format!("signature {}: {problem}", i + 1)),
        }
    }
    Err(SignatureError::Invalid {
        image: image.to_owned(),
        digest: digest.to_owned(),
        keys: keys.len(),
        problems: problems.join("; "),
    })
}

/// The most (digest, key set) pairs remembered as verified; the set is cleared past it.
const MAX_VERIFIED: usize = 4096;

/// Digests known to verify with a key set, so that a tag resolved on every reconcile pass does
/// not fetch its signature every time. Only successes are remembered.
#[derive(Debug, Default)]
pub struct VerifiedDigests {
    known: Mutex<HashSet<(String, [u8; 32])>>,
}

impl VerifiedDigests {
    /// Whether `digest` verified with exactly `keys` before.
    pub fn contains(&self, digest: &str, keys: &[TrustedKey]) -> bool {
        self.lock()
            .contains(&(digest.to_owned(), fingerprint(keys)))
    }

    /// Remembers that `digest` verified with `keys`.
    pub fn insert(&self, digest: &str, keys: &[TrustedKey]) {
        let mut known = self.lock();
        if known.len() >= MAX_VERIFIED {
            known.clear();
        }
        known.insert((digest.to_owned(), fingerprint(keys)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, [u8; 32])>> {
        // A set of strings: no invariant a panicking holder could break halfway.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A hash of the keys' DER encodings, order-independent.
fn fingerprint(keys: &[TrustedKey]) -> [u8; 32] {
    let mut ders: Vec<Vec<u8>> = keys
        .iter()
        .filter_map(|k| k.key.to_public_key_der().ok())
        .map(|d| d.as_bytes().to_vec())
        .collect();
    ders.sort();
    let mut hash = Sha256::new();
    for der in ders {
        hash.update((der.len() as u64).to_le_bytes());
        hash.update(der);
    }
    hash.finalize().into()
}
