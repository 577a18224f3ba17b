//! Impersonation opt-in: plugboard acts as a ServiceAccount only once it carries the label
//! `plugboard.dev/impersonation=allowed`, and stops at the next reconcile when it no longer does.

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::recorder::Recorder;
use plugboard_tests::scenario::{Scenario, deferred_condition, plug_condition, socket_condition};
use serde_json::{Value, json};

fn endpoint(rec: &Recorder, prefix: &str) -> Value {
    json!({"endpoint": format!("{}{prefix}", rec.url())})
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn paths_under(rec: &Recorder, prefix: &str) -> Vec<String> {
    rec.calls()
        .into_iter()
        .map(|c| c.path)
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// Creates ServiceAccount `ns/name` without the opt-in, and lets it read and write ConfigMaps.
async fn service_account(sc: &Scenario, ns: &str, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    sc.api::<ServiceAccount>(ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: ["get", "create", "patch", "delete"]
            .map(str::to_owned)
            .to_vec(),
        ..Default::default()
    };
    sc.grant(ns, name, &format!("{name}-config-maps"), vec![rule])
        .await;
}

async fn settings(sc: &Scenario, ns: &str, database: &str) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..Default::default()
        },
        data: Some([("database".to_owned(), database.to_owned())].into()),
        ..Default::default()
    };
    sc.api::<ConfigMap>(ns)
        .patch(
            "settings",
            &PatchParams::apply("plugboard-tests").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
}

async fn config_map_value(sc: &Scenario, ns: &str, name: &str, key: &str) -> Option<String> {
    sc.api::<ConfigMap>(ns)
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|cm| cm.data)
        .and_then(|d| d.get(key).cloned())
}

/// A Plug acting as ServiceAccount `builder`: config from ConfigMap `settings`, and a
/// ConfigMap `app-env` made from it when coupled.
fn plug_spec(rec: &Recorder) -> Value {
    json!({
        "socket": {"name": "db"},
        "serviceAccountName": "builder",
        "apparatus": endpoint(rec, "/plug"),
        "configConfigMapName": "settings",
        "resources": [{
            "when": ["coupled", "updated"],
            "template": config_map("app-env", json!({"database": "{{ plugConfig.database }}"}))
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_acts_as_its_service_account_only_once_it_has_opted_in() {
    let mut sc = Scenario::new("optin-plug").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    service_account(&sc, &ns, "builder").await;
    settings(&sc, &ns, "orders").await;
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.wait_socket_ready(&ns, "db").await;
    sc.plug(&ns, "app", plug_spec(&rec)).await;

    let refused = sc
        .wait_plug_reason(&ns, "app", "ServiceAccountNotAllowed")
        .await;
    let ready = plug_condition(&refused, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains(&format!("ServiceAccount {ns}/builder has not opted in")),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains(&format!(
            "kubectl label serviceaccount builder -n {ns} plugboard.dev/impersonation=allowed"
        )),
        "{}",
        ready.message
    );
    let event = sc
        .wait_warning(&ns, "ServiceAccountNotAllowed", Some("app"))
        .await;
    assert!(event.message.unwrap_or_default().contains("builder"));
    // Nothing ran for the Plug: no hook (not even `created`), no source read into a config, no
    // object written.
    assert!(paths_under(&rec, "/plug").is_empty(), "{:?}", rec.calls());
    assert!(paths_under(&rec, "/socket/coupled").is_empty());
    assert!(!refused.status.as_ref().unwrap().created);
    assert!(refused.status.as_ref().unwrap().coupled_socket.is_none());
    assert_eq!(
        config_map_value(&sc, &ns, "app-env", "database").await,
        None
    );

    // A ServiceAccount that does not exist says so.
    sc.plug(
        &ns,
        "ghost",
        json!({"socket": {"name": "db"}, "serviceAccountName": "nobody"}),
    )
    .await;
    let ghost = sc
        .wait_plug_reason(&ns, "ghost", "ServiceAccountNotAllowed")
        .await;
    let message = &plug_condition(&ghost, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("ServiceAccount {ns}/nobody does not exist")),
        "{message}"
    );

    // Opting in lets it couple, as that ServiceAccount.
    sc.opt_in(&ns, "builder").await;
    sc.wait_plug_ready(&ns, "app").await;
    assert_eq!(
        config_map_value(&sc, &ns, "app-env", "database")
            .await
            .as_deref(),
        Some("orders")
    );
    assert!(paths_under(&rec, "/plug/coupled").len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_opt_in_stops_plugboard_acting_as_the_service_account() {
    let mut sc = Scenario::new("optin-revoke").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    service_account(&sc, &ns, "builder").await;
    sc.opt_in(&ns, "builder").await;
    settings(&sc, &ns, "orders").await;
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.plug(&ns, "app", plug_spec(&rec)).await;
    sc.wait_plug_ready(&ns, "app").await;

    // The coupled Plug is re-checked only every two minutes; the ServiceAccount watch is what
    // wakes it here.
    sc.opt_out(&ns, "builder").await;
    let stalled = sc
        .wait_plug_reason(&ns, "app", "ServiceAccountNotAllowed")
        .await;
    assert!(
        plug_condition(&stalled, "Stalled").is_some_and(|c| c.status == "True"),
        "{stalled:#?}"
    );
    // The coupling is left as it is (undoing it would mean acting as the ServiceAccount): the
    // Plug still names its Socket, and the Socket still lists it.
    let coupled = stalled.status.as_ref().unwrap().coupled_socket.as_ref();
    assert_eq!(coupled.map(|c| c.name.as_str()), Some("db"));
    // The Socket's list is rewritten at most once a second (amortised over couplings).
    sc.wait::<Socket, _>(&ns, "db", "the Socket to list the Plug", |s| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.coupled_plug_count == 1)
    })
    .await;

    // A source change is not read as the ServiceAccount any more, so nothing updates. (Calls
    // before the refusal, of reconciles already running when the label went, are forgotten:
    // a Plug has one reconcile at a time, and every one after the refusal checks first.)
    rec.clear();
    settings(&sc, &ns, "orders-v2").await;
    for _ in 0..3 {
        let before = sc.metrics();
        sc.wait_reconciled(before, true, false).await;
    }
    assert!(
        paths_under(&rec, "/plug").is_empty() && paths_under(&rec, "/socket").is_empty(),
        "{:?}",
        rec.calls()
    );
    assert_eq!(
        config_map_value(&sc, &ns, "app-env", "database")
            .await
            .as_deref(),
        Some("orders")
    );
    let still = sc.api::<Plug>(&ns).get("app").await.unwrap();
    assert_eq!(
        plug_condition(&still, "Ready").map(|c| c.reason.as_str()),
        Some("ServiceAccountNotAllowed")
    );

    // Opting in again resumes: the change is read and `updated` runs.
    sc.opt_in(&ns, "builder").await;
    sc.wait_plug_ready(&ns, "app").await;
    assert_eq!(paths_under(&rec, "/plug/updated").len(), 1);
    assert_eq!(
        config_map_value(&sc, &ns, "app-env", "database")
            .await
            .as_deref(),
        Some("orders-v2")
    );
    sc.api::<Plug>(&ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "app", "the Plug to be gone", |p| p.is_none())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_deferred_resources_need_the_opt_in_too() {
    let mut sc = Scenario::new("optin-others").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    service_account(&sc, &ns, "keeper").await;
    sc.socket(
        &ns,
        "db",
        json!({
            "serviceAccountName": "keeper",
            "apparatus": endpoint(&rec, "/socket"),
            "resources": [{"when": ["created"], "template": config_map("db-made", json!({"k": "v"}))}],
        }),
    )
    .await;
    sc.deferred(
        &ns,
        "later",
        json!({"serviceAccountName": "keeper", "resource": config_map("deferred-made", json!({"k": "v"}))}),
    )
    .await;

    let socket = sc
        .wait_socket_reason(&ns, "db", "ServiceAccountNotAllowed")
        .await;
    let message = &socket_condition(&socket, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("ServiceAccount {ns}/keeper has not opted in")),
        "{message}"
    );
    sc.wait_warning(&ns, "ServiceAccountNotAllowed", Some("db"))
        .await;
    let dr = sc
        .wait_deferred_reason(&ns, "later", "ServiceAccountNotAllowed")
        .await;
    let message = &deferred_condition(&dr, "Ready").unwrap().message;
    assert!(
        message.contains("plugboard.dev/impersonation=allowed"),
        "{message}"
    );
    sc.wait_warning(&ns, "ServiceAccountNotAllowed", Some("later"))
        .await;
    assert!(paths_under(&rec, "/socket").is_empty(), "{:?}", rec.calls());
    assert_eq!(config_map_value(&sc, &ns, "db-made", "k").await, None);
    assert_eq!(config_map_value(&sc, &ns, "deferred-made", "k").await, None);

    sc.opt_in(&ns, "keeper").await;
    sc.wait_socket_ready(&ns, "db").await;
    sc.wait_deferred_reason(&ns, "later", "ResourceCreated")
        .await;
    assert_eq!(
        config_map_value(&sc, &ns, "db-made", "k").await.as_deref(),
        Some("v")
    );
    assert_eq!(
        config_map_value(&sc, &ns, "deferred-made", "k")
            .await
            .as_deref(),
        Some("v")
    );
}
