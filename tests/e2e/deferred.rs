//! DeferredResource end to end: an object created after a delay or once other objects exist,
//! as the DeferredResource's ServiceAccount, deleted with it, and never touching an object it
//! did not create.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use plugboard::crd::DeferredResource;
use plugboard_tests::scenario::{Scenario, deferred_condition};
use serde_json::{Value, json};

const OWNER_UID_LABEL: &str = "plugboard.dev/owner-uid";

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

async fn config_map_opt(sc: &Scenario, ns: &str, name: &str) -> Option<ConfigMap> {
    sc.api::<ConfigMap>(ns).get_opt(name).await.unwrap()
}

/// Checks that `cm` was created by plugboard for `dr`: owner label, ownerReference, field
/// manager.
fn assert_created_by(cm: &ConfigMap, dr: &DeferredResource) {
    let uid = dr.uid().unwrap();
    assert_eq!(cm.labels().get(OWNER_UID_LABEL), Some(&uid), "{cm:#?}");
    assert_eq!(
        cm.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("plugboard")
    );
    let refs = cm.owner_references();
    assert!(
        refs.iter()
            .any(|r| r.uid == uid && r.kind == "DeferredResource"),
        "{refs:?}"
    );
    let managers: Vec<_> = cm
        .managed_fields()
        .iter()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert_eq!(managers, ["plugboard"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_delay_the_object_appears_only_after_the_delay() {
    let mut sc = Scenario::new("dr-delay").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "deferred-config-maps").await;
    sc.deferred(
        &ns,
        "later",
        json!({"timeout": 5, "resource": config_map("delayed", json!({"k": "v"}))}),
    )
    .await;

    let waiting = sc.wait_deferred_reason(&ns, "later", "Waiting").await;
    let before = sc.metrics();
    assert!(
        config_map_opt(&sc, &ns, "delayed").await.is_none(),
        "created before the delay passed"
    );
    let message = &deferred_condition(&waiting, "Ready").unwrap().message;
    assert!(
        message.contains("(5 s after the DeferredResource was created) before creating ConfigMap"),
        "{message}"
    );
    assert_eq!(
        deferred_condition(&waiting, "Reconciling").unwrap().status,
        "True"
    );

    let ready = sc
        .wait_deferred_reason(&ns, "later", "ResourceCreated")
        .await;
    assert_eq!(deferred_condition(&ready, "Ready").unwrap().status, "True");
    assert!(deferred_condition(&ready, "Reconciling").is_none());
    let cm = config_map_opt(&sc, &ns, "delayed").await.unwrap();
    assert_created_by(&cm, &ready);
    let waited = cm
        .metadata
        .creation_timestamp
        .clone()
        .unwrap()
        .0
        .as_second()
        - ready
            .metadata
            .creation_timestamp
            .clone()
            .unwrap()
            .0
            .as_second();
    assert!(waited >= 5, "created {waited} s after the DeferredResource");
    let recorded = ready.status.clone().unwrap().resource.unwrap();
    assert_eq!(recorded.name, "delayed");
    assert_eq!(recorded.uid, cm.uid().unwrap());
    assert!(recorded.created);

    // The wait is one timer, not a loop: a handful of reconciles, not hundreds.
    let reconciles = sc.metrics().deferred_reconciles - before.deferred_reconciles;
    assert!(reconciles < 10, "{reconciles} reconciles while waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_wait_for_the_object_appears_once_the_named_objects_exist() {
    let mut sc = Scenario::new("dr-wait-for").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "deferred-config-maps").await;
    sc.deferred(
        &ns,
        "after-db",
        json!({
            "waitFor": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "db-ready"},
                {"version": "v1", "kind": "ConfigMap", "name": "cache-ready"},
            ],
            "resource": config_map("app-config", json!({"db": "up"})),
        }),
    )
    .await;

    let waiting = sc.wait_deferred_reason(&ns, "after-db", "Waiting").await;
    let message = &deferred_condition(&waiting, "Ready").unwrap().message;
    assert_eq!(
        message,
        &format!(
            "waiting for ConfigMap {ns}/db-ready (v1) to exist before creating ConfigMap {ns}/app-config"
        )
    );
    sc.create_config_map(&ns, "db-ready", &[("owner", "test")])
        .await;
    sc.wait::<DeferredResource, _>(&ns, "after-db", "the wait to move on", |d| {
        d.and_then(|d| deferred_condition(d, "Ready"))
            .is_some_and(|c| c.message.contains("cache-ready"))
    })
    .await;
    assert!(config_map_opt(&sc, &ns, "app-config").await.is_none());

    sc.create_config_map(&ns, "cache-ready", &[("owner", "test")])
        .await;
    let ready = sc
        .wait_deferred_reason(&ns, "after-db", "ResourceCreated")
        .await;
    let cm = config_map_opt(&sc, &ns, "app-config").await.unwrap();
    assert_created_by(&cm, &ready);
    assert_eq!(cm.data.unwrap()["db"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_it_deletes_what_it_created_and_never_a_foreign_object() {
    let mut sc = Scenario::new("dr-delete").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "deferred-config-maps").await;
    sc.create_config_map(&ns, "shared", &[("owner", "someone")])
        .await;
    sc.deferred(
        &ns,
        "makes",
        json!({"resource": config_map("made", json!({"k": "v"}))}),
    )
    .await;
    sc.deferred(
        &ns,
        "adopts",
        json!({"resource": config_map("shared", json!({"owner": "plugboard"}))}),
    )
    .await;

    let makes = sc
        .wait_deferred_reason(&ns, "makes", "ResourceCreated")
        .await;
    assert_created_by(&config_map_opt(&sc, &ns, "made").await.unwrap(), &makes);
    let adopts = sc
        .wait_deferred_reason(&ns, "adopts", "ResourceCreated")
        .await;
    let message = &deferred_condition(&adopts, "Ready").unwrap().message;
    assert!(
        message.contains(&format!(
            "ConfigMap {ns}/shared already existed; plugboard did not create it"
        )),
        "{message}"
    );
    assert!(!adopts.status.clone().unwrap().resource.unwrap().created);

    let drs = sc.api::<DeferredResource>(&ns);
    for name in ["makes", "adopts"] {
        drs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["makes", "adopts"] {
        sc.wait::<DeferredResource, _>(&ns, name, &format!("{name} to be gone"), |d| d.is_none())
            .await;
    }
    // Deleted by the finalizer before the DeferredResource went, not later by the garbage
    // collector.
    assert!(config_map_opt(&sc, &ns, "made").await.is_none());
    let shared = config_map_opt(&sc, &ns, "shared").await.unwrap();
    assert_eq!(shared.data.clone().unwrap()["owner"], "someone");
    assert!(shared.labels().get(OWNER_UID_LABEL).is_none());
    assert!(shared.owner_references().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_spec_is_reported_and_the_operator_keeps_working() {
    let mut sc = Scenario::new("dr-empty").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "deferred-config-maps").await;
    sc.deferred(&ns, "empty", json!({})).await;

    let invalid = sc.wait_deferred_reason(&ns, "empty", "InvalidSpec").await;
    let ready = deferred_condition(&invalid, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("spec.resource is required"),
        "{}",
        ready.message
    );
    assert_eq!(
        deferred_condition(&invalid, "Stalled").unwrap().status,
        "True"
    );
    let event = sc.wait_warning(&ns, "InvalidSpec", Some("empty")).await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("spec.resource is required")
    );
    let before = sc.metrics();

    // Others are served meanwhile, and the broken one recovers with its spec.
    sc.deferred(
        &ns,
        "fine",
        json!({"resource": config_map("fine", json!({}))}),
    )
    .await;
    sc.wait_deferred_reason(&ns, "fine", "ResourceCreated")
        .await;
    assert!(config_map_opt(&sc, &ns, "fine").await.is_some());
    let reconciles = sc.metrics().deferred_reconciles - before.deferred_reconciles;
    assert!(reconciles < 20, "{reconciles} reconciles: a hot loop?");

    sc.patch::<DeferredResource>(
        &ns,
        "empty",
        json!({"spec": {"resource": config_map("fixed", json!({}))}}),
    )
    .await;
    let fixed = sc
        .wait_deferred_reason(&ns, "empty", "ResourceCreated")
        .await;
    assert!(deferred_condition(&fixed, "Stalled").is_none());
    assert!(config_map_opt(&sc, &ns, "fixed").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_without_rbac_is_named_in_a_forbidden_condition() {
    let mut sc = Scenario::new("dr-forbidden").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.deferred(
        &ns,
        "denied",
        json!({"resource": config_map("nope", json!({}))}),
    )
    .await;

    let denied = sc
        .wait_deferred_reason(&ns, "denied", "ResourceForbidden")
        .await;
    let message = &deferred_condition(&denied, "Ready").unwrap().message;
    assert!(
        message.starts_with(&format!(
            "ServiceAccount {ns}/default is not allowed to get configmaps in namespace {ns} (ConfigMap {ns}/nope)"
        )),
        "{message}"
    );
    sc.wait_warning(&ns, "ResourceForbidden", Some("denied"))
        .await;
    assert!(config_map_opt(&sc, &ns, "nope").await.is_none());

    // RBAC granted later is picked up without touching the DeferredResource.
    sc.grant_config_maps(&ns, "deferred-config-maps").await;
    sc.wait_deferred_reason(&ns, "denied", "ResourceCreated")
        .await;
    assert!(config_map_opt(&sc, &ns, "nope").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_is_reported_by_name() {
    let mut sc = Scenario::new("dr-unknown").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.deferred(
        &ns,
        "widget",
        json!({"resource": {"apiVersion": "example.com/v1", "kind": "Widget",
                            "metadata": {"name": "w"}}}),
    )
    .await;
    let unknown = sc.wait_deferred_reason(&ns, "widget", "UnknownKind").await;
    let message = &deferred_condition(&unknown, "Ready").unwrap().message;
    assert!(
        message.contains("kind \"Widget\" in apiVersion \"example.com/v1\""),
        "{message}"
    );
}
