//! `plugboard plan`: what a reconcile would do, shown and not done.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{ObjectMeta, PostParams};
use plugboard::crd::Plug;
use plugboard_tests::scenario::{Scenario, TEST_LABEL};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_steps_configs_and_resources_masks_secrets_and_changes_nothing() {
    let mut sc = Scenario::new("plan").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("db-admin".into()),
            ..Default::default()
        },
        string_data: Some([("password".to_owned(), "s3cr3t-admin-value".to_owned())].into()),
        ..Default::default()
    };
    sc.api::<Secret>(&ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let read = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into(), "configmaps".into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    sc.grant(&ns, "default", "plan-reads", vec![read]).await;
    sc.socket(
        &ns,
        "db",
        json!({"config": {"host": "db.example"}, "configSecretName": "db-admin",
               "resultTemplate": {"password": "{{ 'db' | password }}"}}),
    )
    .await;
    sc.wait_socket_ready(&ns, "db").await;

    let plug: Plug = serde_json::from_value(json!({
        "apiVersion": "plugboard.dev/v1alpha1",
        "kind": "Plug",
        "metadata": {"name": "app", "namespace": ns, "labels": {TEST_LABEL: sc.run}},
        "spec": {
            "socket": {"name": "db"},
            "config": {"database": "app"},
            "resources": [{"when": ["coupled"], "template": {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "{{ plug.metadata.name }}-conn"},
                "data": {"host": "{{ socketConfig.host }}",
                         "admin": "{{ socketConfig.password }}"}}}],
        }
    }))
    .unwrap();
    let report = plugboard::controller::plan(
        sc.client(),
        sc.env.config().clone(),
        Default::default(),
        plug,
    )
    .await
    .unwrap_or_else(|e| panic!("{}", e.message()))
    .to_string();

    assert!(report.contains("(new)"), "{report}");
    assert!(report.contains("step: created"), "{report}");
    assert!(report.contains("step: coupled"), "{report}");
    assert!(
        report.contains(&format!("apply v1 ConfigMap {ns}/app-conn")),
        "{report}"
    );
    assert!(report.contains("host: db.example"), "{report}");
    // Values read from Secrets and generated passwords never show.
    assert!(!report.contains("s3cr3t-admin-value"), "{report}");
    assert!(report.contains("password: ******"), "{report}");
    // Nothing was done: no Plug, no ConfigMap, no seed Secret.
    assert!(sc.api::<Plug>(&ns).get_opt("app").await.unwrap().is_none());
    assert!(
        sc.api::<ConfigMap>(&ns)
            .get_opt("app-conn")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sc.api::<Secret>(&ns)
            .get_opt("db-plugboard-seed")
            .await
            .unwrap()
            .is_none()
    );
}
