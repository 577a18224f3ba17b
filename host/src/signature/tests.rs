use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

fn trusted(seed: u8) -> TrustedKey {
    let pem = signing_key(seed)
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    TrustedKey::from_pem(format!("key {seed}"), &pem).unwrap()
}

fn signed(seed: u8, digest: &str) -> StoredSignature {
    let payload = serde_json::to_vec(&Payload::new("r.example/hooks", digest)).unwrap();
    StoredSignature {
        signature: sign(&signing_key(seed), &payload),
        payload,
    }
}

#[test]
fn the_payload_is_cosigns_simple_signing_format() {
    let json = serde_json::to_value(Payload::new("r.example/hooks", DIGEST)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "r.example/hooks"},
                "image": {"docker-manifest-digest": DIGEST},
                "type": "cosign container image signature",
            },
            "optional": null,
        })
    );
    assert_eq!(
        signature_tag(DIGEST),
        format!("sha256-{}.sig", &DIGEST[7..])
    );
}

#[test]
fn a_signature_by_a_trusted_key_for_this_digest_verifies() {
    let keys = [trusted(2), trusted(1)];
    assert_eq!(verify(&keys, &signed(1, DIGEST), DIGEST), Ok(()));
    assert_eq!(
        judge(&keys, true, "r/x:1", DIGEST, Some(&[signed(1, DIGEST)])).unwrap(),
        Verdict::Verified
    );
}

#[test]
fn an_untrusted_key_does_not_verify() {
    let why = verify(&[trusted(2)], &signed(1, DIGEST), DIGEST).unwrap_err();
    assert!(
        why.contains("does not verify with any trusted key"),
        "{why}"
    );
}

#[test]
fn a_signature_of_another_digest_is_named_as_such() {
    let why = verify(&[trusted(1)], &signed(1, OTHER), DIGEST).unwrap_err();
    assert!(
        why.contains(OTHER) && why.contains("not this digest"),
        "{why}"
    );
}

#[test]
fn a_tampered_payload_does_not_verify() {
    let mut stored = signed(1, OTHER);
    stored.payload = serde_json::to_vec(&Payload::new("r.example/hooks", DIGEST)).unwrap();
    assert!(verify(&[trusted(1)], &stored, DIGEST).is_err());
}

#[test]
fn malformed_signatures_are_explained() {
    let mut stored = signed(1, DIGEST);
    stored.signature = "%%%".into();
    assert!(
        verify(&[trusted(1)], &stored, DIGEST)
            .unwrap_err()
            .contains("base64")
    );
    stored.signature = "aGVsbG8=".into();
    assert!(
        verify(&[trusted(1)], &stored, DIGEST)
            .unwrap_err()
            .contains("DER")
    );
}

#[test]
fn a_signed_non_cosign_payload_is_refused() {
    let payload = br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"x"},"type":"something else"}}"#.to_vec();
    let stored = StoredSignature {
        signature: sign(&signing_key(1), &payload),
        payload,
    };
    assert!(
        verify(&[trusted(1)], &stored, "x")
            .unwrap_err()
            .contains("type")
    );
}

#[test]
fn the_policy_table() {
    let keys = [trusted(1)];
    // Unsigned: refused when required, run otherwise.
    let missing = judge(&keys, true, "r/x:1", DIGEST, None).unwrap_err();
    assert_eq!(missing.reason(), "SignatureMissing");
    assert!(missing.to_string().contains("cosign sign --key"));
    assert_eq!(
        judge(&keys, true, "r/x:1", DIGEST, Some(&[]))
            .unwrap_err()
            .reason(),
        "SignatureMissing"
    );
    assert_eq!(
        judge(&keys, false, "r/x:1", DIGEST, None).unwrap(),
        Verdict::Unsigned
    );
    // A bad signature is refused either way, and every signature's problem is listed.
    for required in [true, false] {
        let invalid = judge(
            &keys,
            required,
            "r/x:1",
            DIGEST,
            Some(&[signed(2, DIGEST), signed(1, OTHER)]),
        )
        .unwrap_err();
        assert_eq!(invalid.reason(), "SignatureInvalid");
        let text = invalid.to_string();
        assert!(
            text.contains("signature 1:") && text.contains("signature 2:"),
            "{text}"
        );
    }
    // One good signature among bad ones is enough.
    assert_eq!(
        judge(
            &keys,
            true,
            "r/x:1",
            DIGEST,
            Some(&[signed(2, DIGEST), signed(1, DIGEST)])
        )
        .unwrap(),
        Verdict::Verified
    );
}

#[test]
fn private_keys_are_read_from_pkcs8_and_sec1_but_not_cosigns_encrypted_format() {
    let key = signing_key(3);
    let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    assert_eq!(parse_private_key(&pkcs8).unwrap(), key);
    let sec1 = p256::SecretKey::from(&key)
        .to_sec1_pem(LineEnding::LF)
        .unwrap();
    assert_eq!(parse_private_key(&sec1).unwrap(), key);
    let cosign = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
    assert!(
        parse_private_key(cosign)
            .unwrap_err()
            .contains("cosign sign")
    );
    assert!(parse_private_key("hello").is_err());
    assert!(parse_public_key("hello").is_err());
}

#[test]
fn secrets_give_every_pem_public_key_and_refuse_none() {
    let pem = signing_key(1)
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let keys = keys_from_secret(
        "ns/keys",
        [
            ("cosign.pub".to_owned(), pem.into_bytes()),
            ("README".to_owned(), b"not a key".to_vec()),
            ("binary".to_owned(), vec![0xff, 0xfe]),
        ],
    )
    .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].source, "Secret ns/keys key cosign.pub");
    let none = keys_from_secret("ns/keys", [("a".to_owned(), b"b".to_vec())]).unwrap_err();
    assert_eq!(none.reason(), "SignatureKeysInvalid");
}

#[test]
fn verified_digests_are_remembered_per_key_set() {
    let verified = VerifiedDigests::default();
    let keys = [trusted(1), trusted(2)];
    assert!(!verified.contains(DIGEST, &keys));
    verified.insert(DIGEST, &keys);
    assert!(verified.contains(DIGEST, &[trusted(2), trusted(1)]));
    assert!(!verified.contains(DIGEST, &[trusted(1)]));
    assert!(!verified.contains(OTHER, &keys));
}
