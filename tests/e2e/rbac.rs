//! The control plane enforces RBAC for real: a ServiceAccount can do only what it is granted.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use plugboard_tests::{env, wait_for};

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn service_account_needs_rbac_to_create_a_config_map() {
    let env = env().await;
    let ns = env.namespace("rbac").await.unwrap();
    let sa_client = env
        .service_account_client(ns.name(), "tester")
        .await
        .unwrap();
    let as_sa: Api<ConfigMap> = Api::namespaced(sa_client, ns.name());

    match as_sa
        .create(&PostParams::default(), &config_map("denied"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains(&format!("system:serviceaccount:{}:tester", ns.name())),
                "{}",
                status.message
            );
        }
        other => panic!("expected Forbidden before any grant, got {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-writer".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["create".into(), "get".into()],
            ..Default::default()
        }]),
    };
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("tester-writes-configmaps".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "configmap-writer".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "tester".into(),
            namespace: Some(ns.name().to_owned()),
            ..Default::default()
        }]),
    };
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // The authorizer reads RBAC objects from an informer, so the grant takes effect shortly
    // after it is stored.
    let created = wait_for("the grant to take effect", Duration::from_secs(30), || {
        let as_sa = as_sa.clone();
        async move {
            as_sa
                .create(&PostParams::default(), &config_map("allowed"))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
    .unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("allowed"));
    // It may do what it was granted and nothing more.
    match as_sa.delete("allowed", &Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("delete was never granted, got {other:?}"),
    }
}
