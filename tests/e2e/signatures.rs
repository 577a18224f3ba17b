//! Cosign signatures of components end to end: signed with cosign itself (built from its Go
//! module) or with `plugboard plugin sign`, stored in a real registry, verified by the operator
//! before a component runs.

use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{ObjectMeta, PostParams};
use plugboard::oci::{self, RegistryAuth};
use plugboard::signature::{SignatureOptions, TrustedKey};
use plugboard_controlplane::gotools::GoTool;
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{Scenario, plug_condition};
use serde_json::json;

use crate::plugin::{ORAS, go_tool, plugboard, plugboard_push, run, text};
use crate::wasm::component;

/// cosign, for signing the way its users do.
const COSIGN: GoTool = GoTool {
    name: "cosign",
    package: "github.com/sigstore/cosign/v2/cmd/cosign",
    version: "v2.6.5",
};

const COSIGN_PASSWORD: &str = "correct horse battery staple";

/// `cosign sign` of `image@digest` with the key pair in `dir`, without a transparency log.
async fn cosign_sign(cosign: &Path, dir: &Path, reference: &str) {
    run(
        cosign,
        &[
            "sign",
            "--key",
            "cosign.key",
            "--tlog-upload=false",
            "--allow-insecure-registry",
            "--allow-http-registry",
            "--yes",
            reference,
        ],
        dir,
        &[("COSIGN_PASSWORD", COSIGN_PASSWORD)],
    )
    .await;
}

/// Re-pushes other content under `image` (`repository:tag`, last signed at `signed`) and copies
/// the old signature to the new digest's signature tag: what an attacker with push access but
/// without the key can do.
async fn tamper(registry: &Registry, dir: &Path, repository: &str, tag: &str, signed: &str) {
    let oras = go_tool(ORAS).await;
    let image = format!("{repository}:{tag}");
    let forged = oci::push_component(
        &image,
        &component("adversary").await,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let signature = format!(
        "{repository}:{}",
        plugboard::signature::signature_tag(signed)
    );
    run(
        &oras,
        &[
            "tag",
            "--plain-http",
            &signature,
            &plugboard::signature::signature_tag(&forged),
        ],
        dir,
        &[],
    )
    .await;
}

fn plug_spec(image: &str) -> serde_json::Value {
    json!({"socket": {"name": "db"}, "apparatus": {"wasm": {"image": image}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_required_signatures_a_cosign_signed_component_runs_and_unsigned_or_tampered_ones_are_refused()
 {
    let registry = Registry::start().await.unwrap();
    let cosign = go_tool(COSIGN).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run(
        &cosign,
        &["generate-key-pair"],
        dir,
        &[("COSIGN_PASSWORD", COSIGN_PASSWORD)],
    )
    .await;
    let recorder = component("recorder").await;
    let repository = registry.image("plugboard/hooks");

    let signed = plugboard_push(dir, &recorder, &format!("{repository}:signed")).await;
    cosign_sign(&cosign, dir, &format!("{repository}@{signed}")).await;
    let unsigned = format!("{repository}:unsigned");
    oci::push_component(
        &unsigned,
        &recorder,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let tampered = plugboard_push(dir, &recorder, &format!("{repository}:tampered")).await;
    cosign_sign(&cosign, dir, &format!("{repository}@{tampered}")).await;
    tamper(&registry, dir, &repository, "tampered", &tampered).await;

    // `plugin verify` agrees with cosign's signature.
    let verified = run(
        plugboard(),
        &[
            "plugin",
            "verify",
            &format!("{repository}:signed"),
            "--key",
            "cosign.pub",
            "--plain-http",
        ],
        dir,
        &[],
    )
    .await;
    assert!(text(verified).ends_with("signature verified"));

    let mut sc = Scenario::new("signatures-required").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.options.signatures = SignatureOptions {
        keys: vec![TrustedKey::from_file(&dir.join("cosign.pub")).unwrap()],
        key_secrets: Vec::new(),
        required: true,
    };
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({})).await;
    for name in ["signed", "unsigned", "tampered"] {
        sc.plug(&ns, name, plug_spec(&format!("{repository}:{name}")))
            .await;
    }
    sc.wait_plug_ready(&ns, "signed").await;

    let message = |p: &plugboard::crd::Plug| plug_condition(p, "Ready").unwrap().message.clone();
    let missing = sc
        .wait_plug_reason(&ns, "unsigned", "SignatureMissing")
        .await;
    assert!(
        message(&missing).contains("has no signature") && message(&missing).contains("cosign sign"),
        "{}",
        message(&missing)
    );
    let event = sc
        .wait_warning(&ns, "SignatureMissing", Some("unsigned"))
        .await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("has no signature")
    );

    let invalid = sc
        .wait_plug_reason(&ns, "tampered", "SignatureInvalid")
        .await;
    assert!(
        message(&invalid).contains(&format!("signed \"{tampered}\", not this digest")),
        "{}",
        message(&invalid)
    );
    sc.wait_warning(&ns, "SignatureInvalid", Some("tampered"))
        .await;
    eprintln!(
        "refused:\n  unsigned: {}\n  tampered: {}",
        message(&missing),
        message(&invalid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_sign_signatures_verify_with_cosign_and_keys_come_from_a_secret() {
    let registry = Registry::start().await.unwrap();
    let cosign = go_tool(COSIGN).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let openssl = Path::new("openssl");
    run(
        openssl,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "key.pem",
        ],
        dir,
        &[],
    )
    .await;
    run(
        openssl,
        &["pkey", "-in", "key.pem", "-pubout", "-out", "key.pub"],
        dir,
        &[],
    )
    .await;
    let recorder = component("recorder").await;
    let repository = registry.image("plugboard/hooks");
    let signed = plugboard_push(dir, &recorder, &format!("{repository}:signed")).await;
    let tag = run(
        plugboard(),
        &[
            "plugin",
            "sign",
            &format!("{repository}:signed"),
            "--key",
            "key.pem",
            "--plain-http",
        ],
        dir,
        &[],
    )
    .await;
    assert_eq!(
        text(tag),
        format!(
            "{repository}:{}",
            plugboard::signature::signature_tag(&signed)
        )
    );
    // cosign accepts plugboard's signature.
    run(
        &cosign,
        &[
            "verify",
            "--key",
            "key.pub",
            "--insecure-ignore-tlog",
            "--allow-insecure-registry",
            "--allow-http-registry",
            &format!("{repository}@{signed}"),
        ],
        dir,
        &[],
    )
    .await;
    // Keys but no requirement: unsigned components run, tampered ones do not.
    oci::push_component(
        &format!("{repository}:unsigned"),
        &recorder,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let tampered = plugboard_push(dir, &recorder, &format!("{repository}:tampered")).await;
    run(
        plugboard(),
        &[
            "plugin",
            "sign",
            &format!("{repository}@{tampered}"),
            "--key",
            "key.pem",
            "--plain-http",
        ],
        dir,
        &[],
    )
    .await;
    tamper(&registry, dir, &repository, "tampered", &tampered).await;

    let mut sc = Scenario::new("signatures-secret").await;
    let ns = sc.ns.name().to_owned();
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.options.signatures = SignatureOptions {
        keys: Vec::new(),
        key_secrets: vec![(ns.clone(), "signing-keys".into())],
        required: false,
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("signing-keys".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "cosign.pub".to_owned(),
                ByteString(std::fs::read(dir.join("key.pub")).unwrap()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    sc.api::<Secret>(&ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // The operator reads the key Secret as itself: grant it exactly that (the chart grants
    // nothing on Secrets but writing result Secrets).
    sc.grant(
        &ns,
        "plugboard-operator",
        "signing-keys-reader",
        vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec!["signing-keys".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }],
    )
    .await;
    sc.start().await;
    sc.socket(&ns, "db", json!({})).await;
    for name in ["signed", "unsigned", "tampered"] {
        sc.plug(&ns, name, plug_spec(&format!("{repository}:{name}")))
            .await;
    }
    sc.wait_plug_ready(&ns, "signed").await;
    sc.wait_plug_ready(&ns, "unsigned").await;
    let invalid = sc
        .wait_plug_reason(&ns, "tampered", "SignatureInvalid")
        .await;
    let message = plug_condition(&invalid, "Ready").unwrap().message.clone();
    assert!(message.contains("not this digest"), "{message}");
}
