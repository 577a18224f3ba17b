//! Deletion always finishes and never interrupts a coupling: WebAssembly couplings outlive a
//! registry outage (the component the status recorded runs from the cache), a namespace with
//! coupled Plugs and Sockets goes away with its registry gone, and a Socket deleted while a
//! Plug's `coupled` hook is in flight waits for that Plug to decouple.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use plugboard::crd::{Plug, Socket};
use plugboard_tests::recorder::{Recorder, Reply};
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{DEADLINE, Scenario, plug_condition, socket_condition};
use plugboard_tests::wait_for;
use serde_json::json;

use crate::wasm::{component, push};

/// The hooks the recorder component reported to `rec` under `path`, in order.
fn reported(rec: &Recorder, path: &str) -> Vec<String> {
    rec.calls()
        .into_iter()
        .filter(|c| c.path == path)
        .map(|c| c.body["hook"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// A Socket `db` and Plugs `names` in `ns`, all WebAssembly (the recorder component, tag
/// `image`) reporting their hooks to `rec` under `/socket` and `/<plug name>`; waits until
/// every Plug is Ready.
async fn couple_wasm(sc: &Scenario, ns: &str, image: &str, rec: &Recorder, names: &[&str]) {
    let host = rec.url().trim_start_matches("http://").to_owned();
    let apparatus = json!({"wasm": {"image": image, "allowedHosts": [host]}});
    sc.socket(
        ns,
        "db",
        json!({"apparatus": apparatus, "data": {"report": format!("{}/socket", rec.url())}}),
    )
    .await;
    for name in names {
        sc.plug(
            ns,
            name,
            json!({"socket": {"name": "db"}, "apparatus": apparatus,
                   "data": {"report": format!("{}/{name}", rec.url())}}),
        )
        .await;
    }
    for name in names {
        sc.wait_plug_ready(ns, name).await;
    }
}

fn ready(condition: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>) -> bool {
    condition.is_some_and(|c| c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_leaves_wasm_couplings_ready() {
    let mut registry = Registry::start().await.unwrap();
    let image = push(
        &registry,
        "plugboard/recorder:1",
        &component("recorder").await,
    )
    .await;
    let mut sc = Scenario::new("td-outage").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    // Re-checks resolve the tag again (and run the `config` hooks) every half second.
    sc.options.recheck = Duration::from_millis(500);
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    couple_wasm(&sc, &ns, &image, &rec, &["app"]).await;
    let digest = sc
        .wait_plug_ready(&ns, "app")
        .await
        .status
        .and_then(|s| s.apparatus)
        .map(|a| a.digest)
        .unwrap();

    registry.stop();
    let before = sc.metrics();
    // The Socket is looked at again too (its apparatus is resolved on every reconcile).
    sc.patch::<Socket>(&ns, "db", json!({"metadata": {"labels": {"poke": "1"}}}))
        .await;
    wait_for("several re-checks with the registry down", DEADLINE, || {
        let now = sc.metrics();
        async move {
            if now.plug_reconciles >= before.plug_reconciles + 4
                && now.socket_reconciles > before.socket_reconciles
            {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        }
    })
    .await
    .unwrap();

    let plug: Plug = sc.api(&ns).get("app").await.unwrap();
    assert!(
        ready(plug_condition(&plug, "Ready")),
        "the coupling flipped: {:?}",
        plug.status
    );
    assert_eq!(
        plug.status.and_then(|s| s.apparatus).map(|a| a.digest),
        Some(digest.clone()),
        "the recorded digest is kept"
    );
    let socket: Socket = sc.api(&ns).get("db").await.unwrap();
    assert!(
        ready(socket_condition(&socket, "Ready")),
        "the Socket flipped: {:?}",
        socket.status
    );
    assert_eq!(
        socket.status.and_then(|s| s.apparatus).map(|a| a.digest),
        Some(digest)
    );
    // Nothing ran again: the re-checks found the same inputs.
    assert_eq!(reported(&rec, "/app"), ["created", "coupled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_finishes_with_wasm_couplings_and_the_registry_gone() {
    let mut registry = Registry::start().await.unwrap();
    let image = push(
        &registry,
        "plugboard/recorder:1",
        &component("recorder").await,
    )
    .await;
    let mut sc = Scenario::new("td-nsdel").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    // The tenant lives in a namespace of its own: the operator's ServiceAccount lives in the
    // scenario's, which must outlive this deletion.
    let tenant = sc.namespace("td-nsdel-tenant").await;
    let ns = tenant.name().to_owned();
    sc.start().await;
    let rec = Recorder::start().await;
    couple_wasm(&sc, &ns, &image, &rec, &["app", "other"]).await;
    registry.stop();

    // A Plug deleted on its own with the registry gone: its hooks and the Socket's run from
    // the cached components, nothing is passed over.
    sc.api::<Plug>(&ns)
        .delete("app", &Default::default())
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "app", "the Plug to be gone", |p| p.is_none())
        .await;
    assert_eq!(
        reported(&rec, "/app"),
        ["created", "coupled", "decoupled", "deleted"]
    );
    assert_eq!(
        reported(&rec, "/socket"),
        ["created", "coupled", "coupled", "decoupled"]
    );

    // The namespace with the other coupling goes, registry still gone.
    let namespaces: Api<Namespace> = Api::all(sc.client());
    tenant.delete().await.unwrap();
    wait_for(&format!("namespace {ns} to be gone"), DEADLINE, || async {
        match namespaces.get_opt(&ns).await {
            Ok(None) => Ok(()),
            Ok(Some(n)) => Err(format!("{:?}", n.status)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap();
    // Whatever ran, ran from the cache (the registry is gone): the `coupled` hooks are never
    // repeated, and nothing is left half done.
    let other = reported(&rec, "/other");
    assert_eq!(&other[..2], ["created", "coupled"], "{other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_deleted_during_a_coupled_hook_waits_for_the_decoupled_hooks() {
    let mut sc = Scenario::new("td-midcouple").await;
    // The held hook must not time out while the test looks.
    sc.options.http.request_timeout = Duration::from_secs(120);
    sc.start().await;
    let rec = Recorder::start().await;
    rec.reply("/plug/coupled", Reply::Gate);
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": {"endpoint": format!("{}/plug", rec.url())}}),
    )
    .await;
    let paths = || -> Vec<String> { rec.hook_calls().into_iter().map(|c| c.path).collect() };
    wait_for("the Plug's coupled hook to be in flight", DEADLINE, || {
        let seen = paths();
        async move {
            if seen.iter().any(|p| p == "/plug/coupled") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        }
    })
    .await
    .unwrap();

    sc.api::<Socket>(&ns)
        .delete("db", &Default::default())
        .await
        .unwrap();
    // The Socket says it waits for the Plug, and its deleted hook has not run.
    let socket = sc.wait_socket_reason(&ns, "db", "Deleting").await;
    let message = socket_condition(&socket, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains(&format!("{ns}/app")), "{message}");
    assert!(
        !paths().iter().any(|p| p == "/socket/deleted"),
        "{:?}",
        paths()
    );

    rec.open_gate();
    sc.wait::<Socket, _>(&ns, "db", "the Socket to be gone", |s| s.is_none())
        .await;
    let seen = paths();
    let at = |path: &str| {
        seen.iter()
            .position(|p| p == path)
            .unwrap_or_else(|| panic!("no {path}: {seen:?}"))
    };
    assert!(at("/plug/coupled") < at("/plug/decoupled"), "{seen:?}");
    assert!(at("/plug/decoupled") < at("/socket/decoupled"), "{seen:?}");
    assert!(at("/socket/decoupled") < at("/socket/deleted"), "{seen:?}");
    let plug: Plug = sc.api(&ns).get("app").await.unwrap();
    let status = plug.status.unwrap_or_default();
    assert!(status.coupled_socket.is_none(), "{status:?}");
    assert!(status.coupling_socket.is_none(), "{status:?}");
}
