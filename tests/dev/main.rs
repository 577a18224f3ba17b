//! `plugboard dev` end to end, through its library entry: a control plane, a registry, the
//! plugins built and pushed, the samples applied and coupled by the operator, then everything
//! stopped and removed. Its own test binary: it starts its own control plane, as a user's
//! `plugboard dev` does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and their helpers fail by panicking"
)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::ListParams;
use plugboard::apparatus::pod::OWNER_UID_LABEL;
use plugboard::crd::{Plug, Socket};
use plugboard::dev::{Args, NAMESPACE, Session};
use plugboard_tests::error_chain;
use sha2::{Digest as _, Sha256};

/// Generous: a first run on a machine pulls and compiles the components in a debug build.
const READY_TIMEOUT: Duration = Duration::from_secs(240);

fn ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_couples_every_sample_and_cleans_up() {
    let session = Session::start(&Args::default())
        .await
        .unwrap_or_else(|e| panic!("plugboard dev did not start: {}", error_chain(&e)));
    let report = session
        .wait_ready(READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let client = session.client();

    // Every way of running hooks is among the samples, and each coupled.
    let applied: Vec<(&str, &str)> = session
        .applied()
        .iter()
        .map(|(k, n)| (k.as_str(), n.as_str()))
        .collect();
    for sample in [
        ("Socket", "postgres"),
        ("Plug", "app"),
        ("Socket", "wasm-hooks"),
        ("Plug", "wasm-app"),
        ("Socket", "http-hooks"),
        ("Plug", "http-app"),
        ("Socket", "pod-hooks"),
        ("Plug", "pod-app"),
    ] {
        assert!(applied.contains(&sample), "{sample:?} not in {applied:?}");
    }
    let plugs = Api::<Plug>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(plugs.items.len(), 4);
    for plug in &plugs.items {
        let status = plug.status.clone().unwrap_or_default();
        assert!(ready(&status.conditions), "{:?}", plug.metadata.name);
        assert!(status.coupled_socket.is_some(), "{:?}", plug.metadata.name);
    }
    let sockets = Api::<Socket>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(sockets.items.len(), 4);
    for socket in &sockets.items {
        let status = socket.status.clone().unwrap_or_default();
        assert!(ready(&status.conditions), "{:?}", socket.metadata.name);
        assert_eq!(status.coupled_plug_count, 1, "{:?}", socket.metadata.name);
    }
    assert!(plugboard::status::all_ready(&report), "{report:?}");

    // The WebAssembly sample ran the pushed recorder component (status shows the digest of
    // the component itself).
    let (image, _) = session
        .images()
        .iter()
        .find(|(image, _)| image.ends_with("/plugboard/recorder:dev"))
        .cloned()
        .unwrap();
    let recorder = tokio::task::spawn_blocking(|| plugboard_tests::plugins::component("recorder"))
        .await
        .unwrap()
        .unwrap();
    let component_digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(recorder).unwrap()))
    );
    for socket in &sockets.items {
        if socket.metadata.name.as_deref() != Some("wasm-hooks") {
            continue;
        }
        let resolved = socket.status.clone().unwrap().apparatus.unwrap();
        assert_eq!(resolved.image, image);
        assert_eq!(resolved.digest, component_digest);
    }
    let wasm_app = plugs
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("wasm-app"))
        .unwrap();
    let resolved = wasm_app.status.clone().unwrap().apparatus.unwrap();
    assert_eq!(resolved.digest, component_digest);

    // The HTTP endpoint sample and the apparatus pod sample called the loopback apparatus.
    let calls = session.apparatus_calls();
    for hook in ["/http/socket/coupled", "/http/plug/coupled", "/pod/coupled"] {
        assert!(calls.iter().any(|c| c == hook), "{hook} not in {calls:?}");
    }
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(OWNER_UID_LABEL))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1, "one apparatus pod for pod-hooks");

    // The resources sample rendered its ConfigMap from both sides' configs.
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get("app-database")
        .await
        .unwrap();
    let data = config_map.data.unwrap();
    assert_eq!(data["database"], "app");
    assert_eq!(data["port"], "5432");

    // Stopping removes what it started: the control plane's and registry's folders go and
    // their ports close.
    let dir = session.control_plane_dir().to_owned();
    let registry = session.registry_host().to_owned();
    let apparatus = session.apparatus_url();
    assert!(dir.exists());
    session.stop().await;
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        tokio::net::TcpStream::connect(&registry).await.is_err(),
        "the registry at {registry} still answers"
    );
    let apparatus = apparatus.trim_start_matches("http://").to_owned();
    assert!(
        tokio::net::TcpStream::connect(&apparatus).await.is_err(),
        "the apparatus at {apparatus} still answers"
    );
}
