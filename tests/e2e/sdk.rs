//! What `plugboard-sdk` promises, kept end to end: each hook error kind behaves as documented,
//! one apparatus couples the same as a WebAssembly component and as an HTTP apparatus, and the
//! debug endpoints send every hook to the author's machine.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use plugboard::crd::{Plug, Socket};
use plugboard_plugin_greeter::Greeter;
use plugboard_sdk::server::Server;
use plugboard_tests::recorder::Recorder;
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{DEADLINE, Scenario, plug_condition};
use serde_json::json;

use crate::wasm::{component, push};

/// Calls the recorder saw at `path`.
fn count(rec: &Recorder, path: &str) -> usize {
    rec.calls().iter().filter(|c| c.path == path).count()
}

/// Waits until the recorder saw at least `n` calls at `path`.
async fn wait_calls(rec: &Recorder, path: &str, n: usize) {
    plugboard_tests::wait_for(&format!("{n} calls at {path}"), DEADLINE, || async {
        let seen = count(rec, path);
        if seen >= n {
            Ok(())
        } else {
            Err(format!("{seen} so far"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn condition_status(plug: &Plug, type_: &str) -> Option<String> {
    plug_condition(plug, type_).map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_error_kinds_behave_as_documented() {
    let registry = Registry::start().await.unwrap();
    let image = push(
        &registry,
        "plugboard/adversary:kinds",
        &component("adversary").await,
    )
    .await;
    let mut sc = Scenario::new("hook-kinds").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    // A stalled Plug is looked at again every second: often enough to see that the hook is not.
    sc.options.recheck = std::time::Duration::from_secs(1);
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({})).await;
    let plug = |mode: &str, message: &str| {
        json!({"socket": {"name": "db"},
               "data": {"mode": mode, "hooks": "created", "message": message,
                        "report": format!("{}/{mode}", rec.url())},
               "apparatus": {"wasm": {"image": image, "allowedHosts": [rec.addr().to_string()]}}})
    };

    // invalid-input: Stalled, a Warning Event, and no further call while nothing changes.
    sc.plug(&ns, "invalid", plug("invalid-input", "use another mode"))
        .await;
    let p = sc
        .wait_plug_reason(&ns, "invalid", "HookInvalidInput")
        .await;
    assert_eq!(condition_status(&p, "Stalled").as_deref(), Some("True"));
    let message = plug_condition(&p, "Ready").unwrap().message.clone();
    assert!(
        message.contains("(invalid input): use another mode"),
        "{message}"
    );
    sc.wait_warning(&ns, "HookInvalidInput", Some("invalid"))
        .await;
    for _ in 0..3 {
        let before = sc.metrics();
        sc.wait_reconciled(before, true, false).await;
    }
    assert_eq!(
        count(&rec, "/invalid-input"),
        1,
        "called again with the same inputs"
    );
    // A spec change calls it again.
    sc.patch::<Plug>(
        &ns,
        "invalid",
        json!({"spec": {"data": {"message": "still wrong"}}}),
    )
    .await;
    sc.wait::<Plug, _>(&ns, "invalid", "the second answer in status", |p| {
        p.and_then(|p| plug_condition(p, "Ready"))
            .is_some_and(|c| c.message.contains("still wrong"))
    })
    .await;
    assert_eq!(count(&rec, "/invalid-input"), 2);

    // retry-later: not Stalled, Reconciling says it will retry, no Warning Event; called again.
    sc.plug(
        &ns,
        "later",
        plug("retry-later", "the database is starting"),
    )
    .await;
    let p = sc.wait_plug_reason(&ns, "later", "HookRetryLater").await;
    assert_ne!(condition_status(&p, "Stalled").as_deref(), Some("True"));
    let reconciling = plug_condition(&p, "Reconciling").unwrap();
    assert_eq!(reconciling.status, "True");
    assert!(
        reconciling.message.contains("the database is starting")
            && reconciling.message.contains("calls the hook again"),
        "{}",
        reconciling.message
    );
    wait_calls(&rec, "/retry-later", 3).await;
    assert!(sc.warning_events(&ns, "HookRetryLater").await.is_empty());

    // failed: Stalled with a Warning Event, and called again with backoff.
    sc.plug(&ns, "failing", plug("failed", "the quota is exhausted"))
        .await;
    let p = sc.wait_plug_reason(&ns, "failing", "HookFailed").await;
    assert_eq!(condition_status(&p, "Stalled").as_deref(), Some("True"));
    sc.wait_warning(&ns, "HookFailed", Some("failing")).await;
    wait_calls(&rec, "/failed", 3).await;
    eprintln!(
        "calls: invalid-input {}, retry-later {}, failed {}",
        count(&rec, "/invalid-input"),
        count(&rec, "/retry-later"),
        count(&rec, "/failed")
    );
}

/// A Socket `greetings` and a Plug `web` coupling to it in `ns`, both served by `apparatus`,
/// with results that show the configs the greeter computed.
async fn greet(
    sc: &Scenario,
    ns: &str,
    socket_apparatus: serde_json::Value,
    plug_apparatus: serde_json::Value,
) {
    sc.socket(
        ns,
        "greetings",
        json!({"apparatus": socket_apparatus, "data": {"language": "fr"},
               "resultTemplate": {"greeting": "{{ socketConfig.greeting }}",
                                  "audience": "{{ socketConfig.audience }}"}}),
    )
    .await;
    sc.plug(
        ns,
        "web",
        json!({"socket": {"name": "greetings"}, "apparatus": plug_apparatus,
               "resultTemplate": {"greetedBy": "{{ plugConfig['greeted-by'] }}"}}),
    )
    .await;
}

/// What a coupling ended as: the Plug's conditions (type, status, reason) and its result
/// Secret, with `ns` replaced by `<ns>`.
async fn outcome(
    sc: &Scenario,
    ns: &str,
) -> (Vec<(String, String, String)>, BTreeMap<String, String>) {
    let plug = sc.wait_plug_ready(ns, "web").await;
    let status = plug.status.unwrap();
    let conditions = status
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect();
    let secret = sc
        .api::<Secret>(ns)
        .get(&status.result.unwrap().secret_name)
        .await
        .unwrap();
    let results = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).replace(ns, "<ns>")))
        .collect();
    (conditions, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apparatus_couples_the_same_as_wasm_and_over_http() {
    let registry = Registry::start().await.unwrap();
    let image = push(
        &registry,
        "plugboard/greeter:1",
        &component("greeter").await,
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(Server::new().serve::<Greeter>(listener));

    let mut sc = Scenario::new("sdk-wasm").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.start().await;
    let wasm_ns = sc.ns.name().to_owned();
    let http_ns = sc.namespace("sdk-http").await.name().to_owned();
    let wasm = json!({"wasm": {"image": image}});
    greet(&sc, &wasm_ns, wasm.clone(), wasm).await;
    greet(
        &sc,
        &http_ns,
        json!({"endpoint": format!("{server}/socket")}),
        json!({"endpoint": format!("{server}/plug")}),
    )
    .await;

    let as_wasm = outcome(&sc, &wasm_ns).await;
    let as_http = outcome(&sc, &http_ns).await;
    assert_eq!(as_wasm.1["socket.greeting"], "Bonjour, web!");
    assert_eq!(as_wasm.1["socket.audience"], "<ns>/web");
    assert_eq!(as_wasm.1["plug.greetedBy"], "<ns>/greetings");
    assert_eq!(
        as_wasm, as_http,
        "the same apparatus couples the same both ways"
    );

    // The same invalid input is the same condition both ways (422 over HTTP).
    for ns in [&wasm_ns, &http_ns] {
        sc.patch::<Socket>(
            ns,
            "greetings",
            json!({"spec": {"data": {"language": "xx"}}}),
        )
        .await;
    }
    for ns in [&wasm_ns, &http_ns] {
        let p = sc.wait_plug_reason(ns, "web", "HookInvalidInput").await;
        assert_eq!(
            condition_status(&p, "Stalled").as_deref(),
            Some("True"),
            "{ns}"
        );
    }
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_endpoint_receives_every_socket_hook_instead_of_the_spec_apparatus() {
    let rec = Recorder::start().await;
    let mut sc = Scenario::new("debug-endpoint").await;
    sc.options.debug_socket_endpoint = Some(format!("{}/laptop", rec.url()));
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    // The spec names a component no registry has: with the debug endpoint it is never pulled.
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"wasm": {"image": "registry.invalid/nothing:1"}}}),
    )
    .await;
    // A Socket without an apparatus is not called.
    sc.socket(&ns, "plain", json!({})).await;
    rec.reply(
        "/laptop/config",
        plugboard_tests::recorder::Reply::Json(json!({"host": "laptop"})),
    );
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;
    sc.plug(&ns, "other", json!({"socket": {"name": "plain"}}))
        .await;
    sc.wait_plug_ready(&ns, "app").await;
    sc.wait_plug_ready(&ns, "other").await;
    let paths: Vec<String> = rec.calls().into_iter().map(|c| c.path).collect();
    for hook in ["/laptop/created", "/laptop/config", "/laptop/coupled"] {
        assert!(paths.iter().any(|p| p == hook), "{hook} not in {paths:?}");
    }
    let coupled = rec
        .calls()
        .into_iter()
        .find(|c| c.path == "/laptop/coupled")
        .unwrap();
    assert_eq!(coupled.body["socketConfig"]["host"], "laptop");
    assert_eq!(coupled.body["plug"]["metadata"]["name"], "app", "{paths:?}");
    assert!(
        rec.calls()
            .iter()
            .all(|c| c.body["socket"]["metadata"]["name"] != "plain"),
        "the Socket without an apparatus was called"
    );
}
