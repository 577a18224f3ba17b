//! The operator's egress policy end to end: tenant-chosen endpoints and `host.send` targets
//! are judged on the addresses they resolve to, refused with a clear `EgressDenied` condition,
//! and redirects are never followed. Everything listens on loopback, which the default policy
//! refuses; the tests that need to reach it allow it explicitly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{ObjectMeta, PostParams};
use plugboard::crd::{Plug, Socket};
use plugboard::egress::EgressOptions;
use plugboard::oci::{self, RegistryAuth};
use plugboard_tests::recorder::{Recorder, Reply};
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{Scenario, plug_condition, socket_condition};
use serde_json::json;

fn ready_message(socket: &Socket) -> String {
    socket_condition(socket, "Ready").unwrap().message.clone()
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_refuses_a_loopback_apparatus_with_a_clear_condition() {
    let mut sc = Scenario::new("egress-default").await;
    // The operator's default: loopback refused.
    sc.options.egress = EgressOptions::default();
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    let socket = sc.wait_socket_reason(&ns, "db", "EgressDenied").await;
    let message = ready_message(&socket);
    let host = rec.url().trim_start_matches("http://").to_owned();
    assert!(
        message.contains(&format!(
            "refused to call apparatus at http://{host}/socket/created"
        )),
        "{message}"
    );
    assert!(
        message
            .contains("the operator's egress policy refuses 127.0.0.1: it is a loopback address"),
        "{message}"
    );
    assert!(message.contains("--egress-allow"), "{message}");
    assert!(rec.calls().is_empty(), "a refused endpoint was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_an_error_and_never_followed() {
    let mut sc = Scenario::new("egress-redirect").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let elsewhere = Recorder::start().await;
    rec.reply(
        "/socket/created",
        Reply::Redirect(format!("{}/stolen", elsewhere.url())),
    );
    rec.reply(
        "/socket/config",
        Reply::Redirect("/socket/other".to_owned()),
    );
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    let socket = sc.wait_socket_reason(&ns, "db", "ApparatusFailed").await;
    let message = ready_message(&socket);
    assert!(
        message.contains("event created got a redirect (302 status)"),
        "{message}"
    );
    assert!(message.contains("does not follow redirects"), "{message}");
    assert!(
        elsewhere.calls().is_empty(),
        "the redirect to another host was followed"
    );
    assert!(
        rec.calls().iter().all(|c| c.path == "/socket/created"),
        "a redirect was followed on the same host: {:?}",
        rec.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_rebound_to_a_denied_address_is_refused() {
    let mut sc = Scenario::new("egress-rebind").await;
    // Allow-list mode that lists the name: the name is allowed, but it resolves (through the
    // test-only static map, standing in for a rebinding DNS server) to loopback.
    sc.options.egress = EgressOptions {
        allow: vec!["apparatus.rebind.test".parse().unwrap()],
        deny_unlisted: true,
        static_hosts: HashMap::from([("apparatus.rebind.test".to_owned(), vec![loopback()])]),
        ..Default::default()
    };
    sc.start().await;
    let rec = Recorder::start().await;
    let port = rec.url().rsplit(':').next().unwrap().to_owned();
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("http://apparatus.rebind.test:{port}/socket")}}),
    )
    .await;
    let socket = sc.wait_socket_reason(&ns, "db", "EgressDenied").await;
    let message = ready_message(&socket);
    assert!(
        message.contains("refuses apparatus.rebind.test (127.0.0.1): it is a loopback address"),
        "{message}"
    );
    assert!(rec.calls().is_empty(), "the rebound name reached loopback");
}

/// Pushes the adversary component and puts it, pinned by digest, in the component cache at
/// `cache_dir` (the operator's `--cache-dir`): the registry listens on loopback, which the
/// policy under test refuses, and a cached pinned reference needs no registry.
async fn adversary_image(registry: &Registry, cache_dir: &std::path::Path) -> String {
    let path: PathBuf =
        tokio::task::spawn_blocking(|| plugboard_tests::plugins::component("adversary"))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}", plugboard_tests::error_chain(&e)));
    let bytes = std::fs::read(path).unwrap();
    let image = registry.image("plugboard/adversary:egress");
    let digest = oci::push_component(
        &image,
        &bytes,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap_or_else(|e| panic!("push {image}: {e}"));
    let pinned = registry.image(&format!("plugboard/adversary@{digest}"));
    let mut options = oci::StoreOptions::new(cache_dir.join("oci"));
    options.plain_http_hosts = registry.plain_http_hosts();
    options.egress =
        plugboard::egress::EgressPolicy::new(EgressOptions::default().allowing_loopback());
    oci::ComponentStore::open(options)
        .unwrap()
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap_or_else(|e| panic!("fetch {pinned}: {e}"));
    pinned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_send_to_a_denied_address_is_refused() {
    let registry = Registry::start().await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let image = adversary_image(&registry, cache.path()).await;
    let mut sc = Scenario::new("egress-wasm").await;
    sc.options.cache_dir = cache.path().to_owned();
    sc.options.plain_http_registries = registry.plain_http_hosts();
    // Default policy (loopback refused), plus a name that resolves to loopback.
    sc.options.egress = EgressOptions {
        static_hosts: HashMap::from([("hooks.rebind.test".to_owned(), vec![loopback()])]),
        ..Default::default()
    };
    sc.start().await;
    let rec = Recorder::start().await;
    let host = rec.url().trim_start_matches("http://").to_owned();
    let port = host.rsplit(':').next().unwrap().to_owned();
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({})).await;
    for (name, allowed, url, refused) in [
        // An address literal the spec allows: refused before sending.
        (
            "literal",
            host.clone(),
            format!("{}/probe", rec.url()),
            "refuses 127.0.0.1: it is a loopback address".to_owned(),
        ),
        // A name the spec allows, resolving to loopback: refused at connect time.
        (
            "name",
            format!("hooks.rebind.test:{port}"),
            format!("http://hooks.rebind.test:{port}/probe"),
            "refuses hooks.rebind.test (127.0.0.1): it is a loopback address".to_owned(),
        ),
    ] {
        sc.plug(
            &ns,
            name,
            json!({"socket": {"name": "db"}, "data": {"mode": "http", "url": url},
                   "apparatus": {"wasm": {"image": image, "allowedHosts": [allowed]}}}),
        )
        .await;
        let plug: Plug = sc.wait_plug_reason(&ns, name, "EgressDenied").await;
        let message = plug_condition(&plug, "Ready").unwrap().message.clone();
        assert!(message.contains(&refused), "{name}: {message}");
        assert!(
            message.contains("hook failed after a request it sent was refused"),
            "{name}: {message}"
        );
        assert!(message.contains("--egress-allow"), "{name}: {message}");
    }
    assert!(rec.calls().is_empty(), "a component reached loopback");

    // The cloud metadata address, with the URL read from a Secret: refused, and the guest's
    // message, which repeats the URL, reaches status without the Secret's value.
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    sc.grant(&ns, "default", "plugboard-sources", vec![rule])
        .await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("mode".to_owned(), "http".to_owned()),
                (
                    "url".to_owned(),
                    "http://169.254.169.254/latest/s3cr3t-token".to_owned(),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    sc.api::<Secret>(&ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    sc.plug(
        &ns,
        "metadata",
        json!({"socket": {"name": "db"}, "dataSecretName": "probe",
               "apparatus": {"wasm": {"image": image, "allowedHosts": ["169.254.169.254"]}}}),
    )
    .await;
    let plug: Plug = sc.wait_plug_reason(&ns, "metadata", "EgressDenied").await;
    let message = plug_condition(&plug, "Ready").unwrap().message.clone();
    assert!(
        message.contains("refuses 169.254.169.254: it is a link-local (cloud metadata) address"),
        "{message}"
    );
    assert!(!message.contains("s3cr3t-token"), "{message}");
    assert!(message.contains("[redacted]"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_on_a_denied_address_is_refused_and_gets_no_credentials() {
    use k8s_openapi::ByteString;

    let registry = Registry::start_with_auth("puller", "s3cret-pull")
        .await
        .unwrap();
    let image = registry.image("plugboard/denied:1");
    let mut sc = Scenario::new("egress-registry").await;
    let cache = tempfile::tempdir().unwrap();
    sc.options.cache_dir = cache.path().to_owned();
    sc.options.plain_http_registries = registry.plain_http_hosts();
    // The operator's default: loopback refused, registries included.
    sc.options.egress = EgressOptions::default();
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    // A readable pull secret: the credentials would be sent if the registry were reached.
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("registry-creds".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_owned(),
                ByteString(registry.docker_config_json()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    sc.api::<Secret>(&ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    sc.grant(&ns, "default", "read-pull-secret", vec![rule])
        .await;
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"wasm": {"image": image, "pullSecrets": [{"name": "registry-creds"}]}}}),
    )
    .await;

    let socket = sc.wait_socket_reason(&ns, "db", "EgressDenied").await;
    let message = ready_message(&socket);
    for expected in [
        format!("cannot pull {image}"),
        format!("registry {}", registry.host()),
        "refuses 127.0.0.1: it is a loopback address".to_owned(),
        "--egress-allow".to_owned(),
    ] {
        assert!(message.contains(&expected), "{expected:?} in {message}");
    }
    assert!(!message.contains("s3cret-pull"), "{message}");
    let warning = sc.wait_warning(&ns, "EgressDenied", Some("db")).await;
    let note = warning.message.unwrap_or_default();
    assert!(note.contains("refuses 127.0.0.1"), "{note}");

    // Nothing reached the registry. A request made afterwards is in its access log once
    // logged; any earlier one would be logged before it.
    registry
        .get_status("/v2/control/x/manifests/1")
        .await
        .unwrap();
    plugboard_tests::wait_for(
        "the control request in the access log",
        std::time::Duration::from_secs(10),
        || {
            let seen = registry.count_requests("/v2/control/");
            async move {
                if seen >= 1 {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        registry.count_requests("/v2/plugboard/denied"),
        0,
        "{}",
        registry.log()
    );
}
