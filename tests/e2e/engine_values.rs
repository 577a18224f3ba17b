//! Values flowing through the engine end to end: vars read from other objects, results that
//! arrive later, generated credentials, template errors, and a Socket's own faults.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::scenario::{Scenario, plug_condition, socket_condition};
use serde_json::json;

use crate::engine::{
    READ_WRITE, config_map, data, ready_message, rule, secret_value, wait_config_map,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vars_read_config_map_and_deployment_fields_and_wait_for_missing_targets() {
    let mut sc = Scenario::new("engine-vars").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant(
        &ns,
        "default",
        "plugboard-vars",
        vec![
            rule("", &["configmaps"], READ_WRITE),
            rule("apps", &["deployments"], &["get"]),
        ],
    )
    .await;
    sc.create_config_map(&ns, "db-endpoint", &[("host", "db.internal")])
        .await;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [
                    {"name": "api", "image": "registry.example/api:1.2"},
                    {"name": "sidecar", "image": "registry.example/proxy:9"}
                ]}
            }
        }
    }))
    .unwrap();
    sc.api::<Deployment>(&ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    sc.socket(&ns, "db", json!({})).await;
    let var = |name: &str, api_version: &str, kind: &str, object: &str, path: &str| {
        json!({"name": name, "objref": {"apiVersion": api_version, "kind": kind, "name": object},
               "fieldref": {"fieldPath": path}})
    };
    sc.plug(
        &ns,
        "app",
        json!({
            "socket": {"name": "db"},
            "vars": [
                var("host", "v1", "ConfigMap", "db-endpoint", "data.host"),
                var("image", "apps/v1", "Deployment", "api", "$.spec.template.spec.containers[0].image"),
                var("dotted", "apps/v1", "Deployment", "api", "spec.template.spec.containers.1.image"),
                var("late", "v1", "ConfigMap", "late", "data.value")
            ],
            "configTemplate": {
                "host": "{{ vars.host }}",
                "image": "{{ vars.image }}",
                "dotted": "{{ vars.dotted }}",
                "late": "{{ vars.late }}"
            },
            "resources": [{"when": ["coupled"], "template": config_map("vars-out", json!({
                "host": "{{ plugConfig.host }}",
                "image": "{{ plugConfig.image }}",
                "dotted": "{{ plugConfig.dotted }}",
                "late": "{{ plugConfig.late }}"
            }))}]
        }),
    )
    .await;

    // A var whose object does not exist yet keeps the coupling waiting, and says which.
    let pending = sc.wait_plug_reason(&ns, "app", "VarPending").await;
    let message = ready_message(&pending);
    eprintln!("pending: {message}");
    assert!(message.contains("late"), "{message}");
    assert_eq!(plug_condition(&pending, "Ready").unwrap().status, "False");
    assert!(pending.status.unwrap().coupled_socket.is_none());

    sc.create_config_map(&ns, "late", &[("value", "arrived")])
        .await;
    sc.wait_plug_ready(&ns, "app").await;
    let out = wait_config_map(&sc, &ns, "vars-out").await;
    assert_eq!(data(&out, "host"), "db.internal");
    assert_eq!(data(&out, "image"), "registry.example/api:1.2");
    assert_eq!(data(&out, "dotted"), "registry.example/proxy:9");
    assert_eq!(data(&out, "late"), "arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_result_from_a_job_status_completes_the_coupling() {
    let mut sc = Scenario::new("engine-delayed").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant(
        &ns,
        "default",
        "plugboard-jobs",
        vec![rule("batch", &["jobs"], READ_WRITE)],
    )
    .await;
    sc.socket(
        &ns,
        "db",
        json!({
            "interface": {"result": {"socket": {"done": {"required": true}}}},
            "resources": [{"when": ["coupled"], "template": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "migrate-{{ plug.metadata.name }}"},
                "spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "migrate", "image": "busybox:1.36",
                                    "args": ["migrate", "{{ plug.metadata.name }}"]}]
                }}}
            }}],
            "resultVars": [{
                "name": "done",
                "objref": {"apiVersion": "batch/v1", "kind": "Job", "name": "migrate-app"},
                "fieldref": {"fieldPath": "status.succeeded"}
            }],
            "resultTemplate": {"done": "{{ resultVars.done }}"}
        }),
    )
    .await;
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;

    let pending = sc.wait_plug_reason(&ns, "app", "ResultPending").await;
    let message = ready_message(&pending);
    eprintln!("pending: {message}");
    assert!(message.contains("done"), "{message}");
    let jobs = sc.api::<Job>(&ns);
    let job = jobs.get("migrate-app").await.unwrap();
    assert!(
        job.status.as_ref().and_then(|s| s.succeeded).is_none(),
        "{job:#?}"
    );

    // What a Job controller would write when the Job's pod succeeds (there is none here).
    jobs.patch_status(
        "migrate-app",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"succeeded": 1}})),
    )
    .await
    .unwrap();
    let plug = sc.wait_plug_ready(&ns, "app").await;
    let secret = sc
        .api::<Secret>(&ns)
        .get(&plug.status.unwrap().result.unwrap().secret_name)
        .await
        .unwrap();
    assert_eq!(secret_value(&secret, "socket.done"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_password_is_stable_per_coupling_and_differs_between_plugs() {
    let mut sc = Scenario::new("engine-password").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"resultTemplate": {
            "password": "{{ \"db\" | password }}",
            "rev": "{{ plugConfig.rev }}"
        }}),
    )
    .await;
    for name in ["a", "b"] {
        sc.plug(
            &ns,
            name,
            json!({"socket": {"name": "db"}, "config": {"rev": "1"}}),
        )
        .await;
    }
    let secrets = sc.api::<Secret>(&ns);
    let mut passwords = Vec::new();
    for name in ["a", "b"] {
        sc.wait_plug_ready(&ns, name).await;
        let secret = secrets
            .get(&format!("{name}-plugboard-result"))
            .await
            .unwrap();
        passwords.push(secret_value(&secret, "socket.password"));
    }
    let (a, b) = (&passwords[0], &passwords[1]);
    assert!(a.chars().count() >= 20, "too short: {} chars", a.len());
    assert_ne!(a, b, "two couplings got the same password");
    assert!(
        secrets
            .get_opt("db-plugboard-seed")
            .await
            .unwrap()
            .is_some(),
        "the per-Socket key lives in its Secret"
    );

    // A new operator process re-renders the result after an update: same password.
    sc.restart().await;
    sc.patch::<Plug>(&ns, "a", json!({"spec": {"config": {"rev": "2"}}}))
        .await;
    let rerendered = sc
        .wait::<Secret, _>(&ns, "a-plugboard-result", "the re-rendered result", |s| {
            s.is_some_and(|s| secret_value(s, "socket.rev") == "2")
        })
        .await
        .unwrap();
    assert_eq!(&secret_value(&rerendered, "socket.password"), a);
    sc.wait_plug_ready(&ns, "a").await;
    let socket = sc.api::<Socket>(&ns).get("db").await.unwrap();
    let plug = sc.api::<Plug>(&ns).get("a").await.unwrap();
    for text in [
        serde_json::to_string(&plug).unwrap(),
        serde_json::to_string(&socket).unwrap(),
    ] {
        assert!(!text.contains(a.as_str()), "the password leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_error_names_the_field_line_and_variable() {
    let mut sc = Scenario::new("engine-template-error").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"},
               "configTemplate": {"url": "postgres://{{ plug.metadata.name }}\n/{{ no_such_thing }}"}}),
    )
    .await;
    let invalid = sc.wait_plug_reason(&ns, "app", "TemplateInvalid").await;
    let message = ready_message(&invalid);
    eprintln!("invalid: {message}");
    assert!(message.contains("spec.configTemplate.url"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("no_such_thing"), "{message}");
    assert_eq!(plug_condition(&invalid, "Ready").unwrap().status, "False");
    assert!(invalid.status.unwrap().coupled_socket.is_none());
    let event = sc.wait_warning(&ns, "TemplateInvalid", Some("Plug")).await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("spec.configTemplate.url")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_violating_its_own_interface_is_not_ready_and_its_plugs_say_why() {
    let mut sc = Scenario::new("engine-socket-fault").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({
            "interface": {"config": {"socket": {"host": {"required": true}}}},
            "config": {"port": "5432"}
        }),
    )
    .await;
    let socket = sc.wait_socket_reason(&ns, "db", "ConfigInvalid").await;
    let condition = socket_condition(&socket, "Ready").unwrap();
    assert_eq!(condition.status, "False");
    assert!(condition.message.contains("host"), "{}", condition.message);
    sc.wait_warning(&ns, "ConfigInvalid", Some("Socket")).await;

    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;
    let waiting = sc.wait_plug_reason(&ns, "app", "SocketNotReady").await;
    let message = ready_message(&waiting);
    eprintln!("waiting: {message}");
    assert!(message.contains("ConfigInvalid"), "{message}");
    assert!(waiting.status.unwrap().coupled_socket.is_none());

    // Fixing the Socket is enough.
    sc.patch::<Socket>(&ns, "db", json!({"spec": {"config": {"host": "db"}}}))
        .await;
    sc.wait_socket_ready(&ns, "db").await;
    sc.wait_plug_ready(&ns, "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_at_update_changes_the_object_in_place() {
    let mut sc = Scenario::new("engine-reapply").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    sc.socket(&ns, "db", json!({"config": {"host": "db"}}))
        .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "config": {"database": "orders"},
               "resources": [{"when": ["coupled", "updated"],
                              "template": config_map("both", json!({"url": "{{ socketConfig.host }}/{{ plugConfig.database }}"}))}]}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    let first = wait_config_map(&sc, &ns, "both").await;
    assert_eq!(data(&first, "url"), "db/orders");
    sc.patch::<Plug>(
        &ns,
        "app",
        json!({"spec": {"config": {"database": "billing"}}}),
    )
    .await;
    let again = sc
        .wait::<ConfigMap, _>(&ns, "both", "the re-rendered ConfigMap", |c| {
            c.is_some_and(|c| c.data.as_ref().is_some_and(|d| d["url"] == "db/billing"))
        })
        .await
        .unwrap();
    assert_eq!(
        first.metadata.uid, again.metadata.uid,
        "apply replaced the object"
    );
}
