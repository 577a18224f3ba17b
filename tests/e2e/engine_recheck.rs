//! Change detection end to end: the periodic re-check of a coupled Plug notices a changed
//! source Secret and fires `updated` once, and stops with a condition when the apparatus
//! `config` hook answers differently every time.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use plugboard_tests::recorder::{Recorder, Reply};
use plugboard_tests::scenario::{Scenario, plug_condition};
use plugboard_tests::wait_for;
use serde_json::{Value, json};

use crate::engine::{ready_message, rule};

/// The re-check period these tests run the operator with.
const RECHECK: Duration = Duration::from_secs(2);

fn endpoint(rec: &Recorder, prefix: &str) -> Value {
    json!({"endpoint": format!("{}{prefix}", rec.url())})
}

fn calls_to(rec: &Recorder, path: &str) -> Vec<Value> {
    rec.calls()
        .into_iter()
        .filter(|c| c.path == path)
        .map(|c| c.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_source_secret_fires_updated_once_within_the_recheck_delay() {
    let mut sc = Scenario::new("engine-recheck").await;
    sc.options.recheck = RECHECK;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant(
        &ns,
        "default",
        "plugboard-secrets",
        vec![rule("", &["secrets"], &["get"])],
    )
    .await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("app-creds".into()),
            ..Default::default()
        },
        string_data: Some([("password".to_owned(), "first".to_owned())].into()),
        ..Default::default()
    };
    let secrets = sc.api::<Secret>(&ns);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/plug"),
               "configSecretName": "app-creds"}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    rec.clear();

    let edited = Instant::now();
    secrets
        .patch(
            "app-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "second"}})),
        )
        .await
        .unwrap();
    // The documented delay is one re-check period (±10%); allow for a busy machine.
    wait_for("the updated hook", RECHECK * 5, || async {
        if calls_to(&rec, "/plug/updated").is_empty() {
            Err(format!("hooks so far: {:?}", rec.hook_calls()))
        } else {
            Ok(())
        }
    })
    .await
    .unwrap();
    eprintln!(
        "a Secret edit fired updated after {:.1} s (re-check every {} s)",
        edited.elapsed().as_secs_f64(),
        RECHECK.as_secs()
    );

    // Several more re-checks see the same Secret: nothing more fires. Each re-check asks the
    // Plug's apparatus for its config, so those calls count the passes.
    let seen = calls_to(&rec, "/plug/config").len();
    wait_for("three more re-checks", RECHECK * 10, || async {
        let now = calls_to(&rec, "/plug/config").len();
        if now >= seen + 3 {
            Ok(())
        } else {
            Err(format!("{} config calls since the update", now - seen))
        }
    })
    .await
    .unwrap();
    // Let the pass in progress finish.
    sc.wait_reconciled(sc.metrics(), true, false).await;
    let plug_updated = calls_to(&rec, "/plug/updated");
    let socket_updated = calls_to(&rec, "/socket/updated");
    assert_eq!(plug_updated.len(), 1, "{:?}", rec.hook_calls());
    assert_eq!(socket_updated.len(), 1, "{:?}", rec.hook_calls());
    assert_eq!(socket_updated[0]["plugConfig"]["password"], "second");
    sc.wait_plug_ready(&ns, "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_config_hook_stops_with_a_condition_and_fires_no_updated() {
    let mut sc = Scenario::new("engine-flapping").await;
    sc.options.recheck = RECHECK;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/plug")}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;

    // From now on the Plug's config hook answers differently on every call.
    rec.reply("/plug/config", Reply::Counter("generation".into()));
    rec.clear();
    let flapping = sc.wait_plug_reason(&ns, "app", "ConfigFlapping").await;
    let ready = plug_condition(&flapping, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(!ready_message(&flapping).is_empty());
    assert_eq!(plug_condition(&flapping, "Stalled").unwrap().status, "True");
    assert!(
        calls_to(&rec, "/plug/config").len() >= 2,
        "flapping is judged by calling config again: {:?}",
        rec.calls()
    );

    // Poke the Plug and let it reconcile: still no updated hook anywhere.
    let before = sc.metrics();
    sc.patch::<plugboard::crd::Plug>(&ns, "app", json!({"metadata": {"labels": {"poke": "1"}}}))
        .await;
    sc.wait_reconciled(before, true, false).await;
    let still = sc.wait_plug_reason(&ns, "app", "ConfigFlapping").await;
    assert!(still.status.unwrap().coupled_socket.is_some());
    assert!(
        calls_to(&rec, "/plug/updated").is_empty(),
        "{:?}",
        rec.hook_calls()
    );
    assert!(
        calls_to(&rec, "/socket/updated").is_empty(),
        "{:?}",
        rec.hook_calls()
    );
}
