//! Templated resources end to end: what plugboard applies, where, as whom, when, and what it
//! deletes at decouple. The shared helpers here serve `engine_values` and `engine_recheck` too.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::scenario::{Scenario, plug_condition};
use serde_json::{Value, json};

/// A finalizer the tests put on a Plug to keep it after plugboard has released it.
const HOLD: &str = "plugboard.dev/test-hold";

/// Every verb a ServiceAccount needs to apply, recreate and delete objects.
pub(crate) const READ_WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// An RBAC rule on `resources` of API group `group` (`""` is the core group).
pub(crate) fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

/// The message of a Plug's Ready condition.
pub(crate) fn ready_message(plug: &Plug) -> String {
    plug_condition(plug, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// A ConfigMap manifest with `data`.
pub(crate) fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// Waits until ConfigMap `ns/name` exists and returns it.
pub(crate) async fn wait_config_map(sc: &Scenario, ns: &str, name: &str) -> ConfigMap {
    sc.wait::<ConfigMap, _>(ns, name, &format!("ConfigMap {ns}/{name}"), |c| c.is_some())
        .await
        .unwrap()
}

/// Waits until ConfigMap `ns/name` is gone.
pub(crate) async fn wait_config_map_gone(sc: &Scenario, ns: &str, name: &str) {
    sc.wait::<ConfigMap, _>(
        ns,
        name,
        &format!("ConfigMap {ns}/{name} to be gone"),
        |c| c.is_none(),
    )
    .await;
}

/// A value of a ConfigMap's `data`.
pub(crate) fn data<'a>(cm: &'a ConfigMap, key: &str) -> &'a str {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("ConfigMap has no data.{key}: {cm:#?}"))
}

/// A value of a Secret, as text.
pub(crate) fn secret_value(secret: &Secret, key: &str) -> String {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("Secret has no {key}"));
    String::from_utf8(bytes.0.clone()).unwrap()
}

/// Asserts that plugboard created the object for `owner` (`<Kind>`, namespace, name, UID) with
/// server-side apply: field manager `plugboard`, the owner's labels and annotation, and an
/// ownerReference to the owner. Returns the coupling label.
pub(crate) fn assert_applied_for(
    meta: &ObjectMeta,
    kind: &str,
    owner_ns: &str,
    owner_name: &str,
    owner_uid: &str,
) -> Option<String> {
    let what = format!("{:?}", meta.name);
    let managers: Vec<(String, String)> = meta
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("plugboard".to_owned(), "Apply".to_owned())),
        "{what}: managed fields {managers:?}"
    );
    let labels = meta.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("plugboard.dev/owner-uid").map(String::as_str),
        Some(owner_uid),
        "{what}: {labels:?}"
    );
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("plugboard"),
        "{what}: {labels:?}"
    );
    let annotations = meta.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("plugboard.dev/owner"),
        Some(&format!("{kind} {owner_ns}/{owner_name}")),
        "{what}: {annotations:?}"
    );
    let owners = meta.owner_references.clone().unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == kind && o.name == owner_name && o.uid == owner_uid),
        "{what}: ownerReferences {owners:?}"
    );
    labels.get("plugboard.dev/coupling").cloned()
}

fn uid(meta: &ObjectMeta) -> String {
    meta.uid.clone().unwrap()
}

/// A Job manifest running `args` once.
fn job(name: &str, args: &[&str]) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "args": args}]
        }}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupled_resources_land_in_each_owners_namespace_applied_by_plugboard() {
    let mut sc = Scenario::new("engine-land").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let other = sc.namespace("engine-land-plugs").await;
    let other = other.name().to_owned();
    sc.grant_config_maps(&other, "plugboard-configmaps").await;
    sc.grant(
        &ns,
        "default",
        "plugboard-socket",
        vec![
            rule("", &["configmaps"], READ_WRITE),
            rule("batch", &["jobs"], READ_WRITE),
        ],
    )
    .await;

    let socket = sc
        .socket(
            &ns,
            "db",
            json!({
                "config": {"host": "db.example"},
                "validation": {"allow": {"namespaces": [other]}},
                "resources": [{
                    "when": ["coupled"],
                    "template": job("create-{{ plugConfig.database }}",
                                    &["createdb", "{{ plugConfig.database }}"])
                }],
                "resultResources": [{
                    "template": config_map("result-{{ plug.metadata.name }}",
                                           json!({"user": "{{ plugResult.user }}"}))
                }]
            }),
        )
        .await;
    let plug = sc
        .plug(
            &other,
            "app",
            json!({
                "socket": {"name": "db", "namespace": ns},
                "config": {"database": "orders"},
                "result": {"user": "orders-user"},
                "resources": [{
                    "when": ["coupled"],
                    "template": config_map("app-env", json!({
                        "DATABASE_URL": "postgres://{{ socketConfig.host }}/{{ plugConfig.database }}"
                    }))
                }]
            }),
        )
        .await;
    sc.wait_plug_ready(&other, "app").await;

    // Plug side: in the Plug's namespace, from both configs.
    let env = wait_config_map(&sc, &other, "app-env").await;
    assert_eq!(data(&env, "DATABASE_URL"), "postgres://db.example/orders");
    let plug_coupling =
        assert_applied_for(&env.metadata, "Plug", &other, "app", &uid(&plug.metadata));

    // Socket side: in the Socket's namespace, from the Plug's config.
    let job = sc
        .wait::<Job, _>(&ns, "create-orders", "the Socket's Job", |j| j.is_some())
        .await
        .unwrap();
    let args = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args, ["createdb", "orders"]);
    let socket_coupling =
        assert_applied_for(&job.metadata, "Socket", &ns, "db", &uid(&socket.metadata));
    assert!(plug_coupling.is_some(), "no coupling label: {env:#?}");
    assert_eq!(
        plug_coupling, socket_coupling,
        "both sides name the same coupling"
    );
    assert!(
        sc.api::<Job>(&other)
            .get_opt("create-orders")
            .await
            .unwrap()
            .is_none(),
        "the Socket's Job landed in the Plug's namespace"
    );

    // The Socket's result resources see the Plug's result.
    let result = wait_config_map(&sc, &ns, "result-app").await;
    assert_eq!(data(&result, "user"), "orders-user");
    assert_applied_for(
        &result.metadata,
        "Socket",
        &ns,
        "db",
        &uid(&socket.metadata),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_only_resources_wait_for_an_update_and_recreate_replaces_the_object() {
    let mut sc = Scenario::new("engine-when").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({
            "socket": {"name": "db"},
            "config": {"v": "1"},
            "resources": [
                {"when": ["updated"],
                 "template": config_map("on-update", json!({"v": "{{ plugConfig.v }}"}))},
                {"when": ["coupled", "updated"], "do": "recreate",
                 "template": config_map("recreated", json!({"v": "{{ plugConfig.v }}"}))}
            ]
        }),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    let first = wait_config_map(&sc, &ns, "recreated").await;
    assert_eq!(data(&first, "v"), "1");
    assert!(
        sc.api::<ConfigMap>(&ns)
            .get_opt("on-update")
            .await
            .unwrap()
            .is_none(),
        "a `when: [updated]` resource was applied at coupling"
    );

    sc.patch::<Plug>(&ns, "app", json!({"spec": {"config": {"v": "2"}}}))
        .await;
    let updated = sc
        .wait::<ConfigMap, _>(&ns, "on-update", "the updated-only ConfigMap", |c| {
            c.is_some_and(|c| c.data.as_ref().is_some_and(|d| d["v"] == "2"))
        })
        .await
        .unwrap();
    assert_eq!(data(&updated, "v"), "2");
    let second = sc
        .wait::<ConfigMap, _>(&ns, "recreated", "the recreated ConfigMap", |c| {
            c.is_some_and(|c| c.data.as_ref().is_some_and(|d| d["v"] == "2"))
        })
        .await
        .unwrap();
    assert_ne!(
        uid(&first.metadata),
        uid(&second.metadata),
        "recreate kept the old object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_string_template_applies_nothing_and_every_document_is_applied() {
    let mut sc = Scenario::new("engine-docs").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    sc.socket(&ns, "db", json!({})).await;
    let conditional = "{% if plugConfig.enabled == \"yes\" %}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conditional\n{% endif %}\n";
    let documents = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: doc-a\ndata:\n  db: \"{{ plugConfig.database }}\"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: doc-b\n---\n# the last one\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: doc-c\n";
    sc.plug(
        &ns,
        "app",
        json!({
            "socket": {"name": "db"},
            "config": {"enabled": "no", "database": "orders"},
            "resources": [
                {"when": ["coupled", "updated"], "stringTemplate": conditional},
                {"when": ["coupled"], "stringTemplate": documents}
            ]
        }),
    )
    .await;
    let plug = sc.wait_plug_ready(&ns, "app").await;
    for name in ["doc-a", "doc-b", "doc-c"] {
        let cm = wait_config_map(&sc, &ns, name).await;
        assert_applied_for(&cm.metadata, "Plug", &ns, "app", &uid(&plug.metadata));
    }
    assert_eq!(
        data(&wait_config_map(&sc, &ns, "doc-a").await, "db"),
        "orders"
    );
    assert!(
        sc.api::<ConfigMap>(&ns)
            .get_opt("conditional")
            .await
            .unwrap()
            .is_none(),
        "a blank render applied something"
    );

    // The same template applies once its condition holds.
    sc.patch::<Plug>(&ns, "app", json!({"spec": {"config": {"enabled": "yes"}}}))
        .await;
    wait_config_map(&sc, &ns, "conditional").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_naming_another_namespace_is_refused() {
    let mut sc = Scenario::new("engine-xns").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let other = sc.namespace("engine-xns-target").await;
    let other = other.name().to_owned();
    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    sc.socket(&ns, "db", json!({})).await;
    let mut escaping = config_map("escaping", json!({"k": "v"}));
    escaping["metadata"]["namespace"] = json!(other);
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "resources": [{"when": ["coupled"], "template": escaping}]}),
    )
    .await;
    let refused = sc.wait_plug_reason(&ns, "app", "ResourceInvalid").await;
    let message = ready_message(&refused);
    eprintln!("refused: {message}");
    assert!(message.contains(&format!("must be {ns}")), "{message}");
    assert!(message.contains(&other), "{message}");
    assert_eq!(plug_condition(&refused, "Ready").unwrap().status, "False");
    sc.wait_warning(&ns, "ResourceInvalid", Some("Plug")).await;
    assert!(
        sc.api::<ConfigMap>(&other)
            .get_opt("escaping")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sc.api::<ConfigMap>(&ns)
            .get_opt("escaping")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decouple_deletes_what_was_applied_except_retained_and_never_touches_others() {
    let mut sc = Scenario::new("engine-decouple").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    // Someone else's object with the name of a Plug resource.
    sc.create_config_map(&ns, "foreign", &[("owner", "someone else")])
        .await;
    sc.socket(
        &ns,
        "db",
        json!({
            "resources": [
                {"when": ["coupled"],
                 "template": config_map("socket-for-{{ plug.metadata.name }}", json!({}))},
                {"when": ["coupled"], "retainWhenDecoupled": true,
                 "template": config_map("socket-kept-{{ plug.metadata.name }}", json!({}))}
            ]
        }),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({
            "socket": {"name": "db"},
            "resources": [
                {"when": ["coupled"], "template": config_map("plug-side", json!({}))},
                {"when": ["coupled"], "retainWhenDecoupled": true,
                 "template": config_map("plug-kept", json!({}))},
                // No `when`: never applied, but deleted at decouple, if it were plugboard's.
                {"template": config_map("foreign", json!({}))}
            ]
        }),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    for name in [
        "plug-side",
        "plug-kept",
        "socket-for-app",
        "socket-kept-app",
    ] {
        wait_config_map(&sc, &ns, name).await;
    }

    // The test's own finalizer keeps the deleted Plug, and with it the garbage collector away
    // from the Plug's objects (they name it in ownerReferences): whatever goes, plugboard deleted.
    let plugs = sc.api::<Plug>(&ns);
    let hold = |finalizers: &[&str]| {
        json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
               "metadata": {"name": "app", "finalizers": finalizers}})
    };
    let as_test = PatchParams::apply("plugboard-tests");
    plugs
        .patch("app", &as_test, &Patch::Apply(hold(&[HOLD])))
        .await
        .unwrap();
    plugs.delete("app", &DeleteParams::default()).await.unwrap();
    // plugboard releases its finalizer once decoupling is done.
    sc.wait::<Plug, _>(&ns, "app", "plugboard to release the Plug", |p| {
        p.is_some_and(|p| {
            p.metadata
                .finalizers
                .iter()
                .flatten()
                .all(|f| f.as_str() == HOLD)
        })
    })
    .await;
    wait_config_map_gone(&sc, &ns, "plug-side").await;
    wait_config_map_gone(&sc, &ns, "socket-for-app").await;
    for name in ["plug-kept", "socket-kept-app"] {
        let kept = sc.api::<ConfigMap>(&ns).get_opt(name).await.unwrap();
        assert!(kept.is_some(), "retained {name} was deleted");
    }
    let foreign = sc.api::<ConfigMap>(&ns).get("foreign").await.unwrap();
    assert_eq!(data(&foreign, "owner"), "someone else");
    let warning = sc.wait_warning(&ns, "ResourceNotOwned", Some("Plug")).await;
    assert!(
        warning.message.unwrap_or_default().contains("foreign"),
        "the Warning names the object"
    );

    plugs
        .patch("app", &as_test, &Patch::Apply(hold(&[])))
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "app", "the Plug to be gone", |p| p.is_none())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_socket_deletes_the_old_couplings_objects_but_keeps_retained_ones() {
    let mut sc = Scenario::new("engine-switch").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    sc.socket(&ns, "a", json!({})).await;
    sc.socket(&ns, "b", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({
            "socket": {"name": "a"},
            "resources": [
                {"when": ["coupled"],
                 "template": config_map("for-{{ socket.metadata.name }}", json!({}))},
                {"when": ["coupled"], "retainWhenDecoupled": true,
                 "template": config_map("kept-for-{{ socket.metadata.name }}", json!({}))}
            ]
        }),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    wait_config_map(&sc, &ns, "for-a").await;
    wait_config_map(&sc, &ns, "kept-for-a").await;

    sc.patch::<Plug>(&ns, "app", json!({"spec": {"socket": {"name": "b"}}}))
        .await;
    wait_config_map(&sc, &ns, "for-b").await;
    wait_config_map(&sc, &ns, "kept-for-b").await;
    wait_config_map_gone(&sc, &ns, "for-a").await;
    assert!(
        sc.api::<ConfigMap>(&ns)
            .get_opt("kept-for-a")
            .await
            .unwrap()
            .is_some(),
        "a retained resource was deleted at decouple"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_permissions_bound_sources_and_resources() {
    const SECRET: &str = "Very-s3cret-value-17";
    let mut sc = Scenario::new("engine-rbac").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("app-creds".into()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("user".to_owned(), "orders".to_owned()),
                ("password".to_owned(), SECRET.to_owned()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    sc.api::<Secret>(&ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({
            "socket": {"name": "db"},
            "configSecretName": "app-creds",
            "resources": [{"when": ["coupled"],
                           "template": config_map("app-env", json!({"user": "{{ plugConfig.user }}"}))}]
        }),
    )
    .await;

    // The operator may read every Secret; the Plug's ServiceAccount may not.
    let denied = sc.wait_plug_reason(&ns, "app", "SourceUnavailable").await;
    let message = ready_message(&denied);
    eprintln!("denied: {message}");
    assert!(
        message.contains(&format!("Secret {ns}/app-creds")),
        "{message}"
    );
    assert!(
        message.contains(&format!("ServiceAccount {ns}/default")),
        "{message}"
    );

    sc.grant(
        &ns,
        "default",
        "plugboard-secrets",
        vec![rule("", &["secrets"], &["get"])],
    )
    .await;
    let forbidden = sc.wait_plug_reason(&ns, "app", "ResourceForbidden").await;
    let message = ready_message(&forbidden);
    eprintln!("forbidden: {message}");
    assert!(
        message.contains(&format!("ServiceAccount {ns}/default")),
        "{message}"
    );
    assert!(
        sc.api::<ConfigMap>(&ns)
            .get_opt("app-env")
            .await
            .unwrap()
            .is_none()
    );

    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    let plug = sc.wait_plug_ready(&ns, "app").await;
    let env = wait_config_map(&sc, &ns, "app-env").await;
    assert_eq!(data(&env, "user"), "orders");

    let socket = sc.api::<Socket>(&ns).get("db").await.unwrap();
    let events = sc
        .api::<Event>(&ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    for text in [
        serde_json::to_string(&plug).unwrap(),
        serde_json::to_string(&socket).unwrap(),
        serde_json::to_string(&events).unwrap(),
    ] {
        assert!(!text.contains(SECRET), "a Secret value leaked: {text}");
    }
}
