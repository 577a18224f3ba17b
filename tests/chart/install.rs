//! `helm install` of the chart into the real control plane, in a namespace that enforces the
//! `restricted` Pod Security Standard.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use plugboard_tests::env;
use serde_json::json;

use crate::helm;

/// A Pod made from the Deployment's pod template, created as a server-side dry run: admission
/// (the Pod Security Standard included) judges it, nothing is stored.
async fn admit_pod(pods: &Api<Pod>, template: serde_json::Value) -> Result<Pod, kube::Error> {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plugboard-admission-check", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .unwrap();
    pods.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &pod,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_and_its_pod_meets_the_restricted_pod_security_standard() {
    let env = env().await;
    let ns = env.namespace("chart-install").await.unwrap();
    let ns = ns.name().to_owned();
    Api::<Namespace>::all(env.client())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .unwrap();
    let release = ns.clone();
    let fullname = format!("{release}-plugboard");
    let install = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "install",
            &release,
            &helm::chart().display().to_string(),
            "--namespace",
            &ns,
            "--kubeconfig",
            &env.kubeconfig_path().display().to_string(),
            // The test control plane has the CRDs already (installed outside Helm).
            "--set",
            "crds.install=false",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    // Bad values fail the install before anything is created.
    let out = helm::run_async(install(&["--set", "log.level=loud"])).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("/log/level"), "{}", out.stderr);
    let sas: Api<ServiceAccount> = Api::namespaced(env.client(), &ns);
    assert!(sas.get_opt(&fullname).await.unwrap().is_none());

    let out = helm::run_async(install(&[])).await;
    assert!(out.ok, "helm install failed:\n{}{}", out.stdout, out.stderr);
    // NOTES.txt tells how to check the release.
    for line in [
        "Check that it works",
        &format!("kubectl -n {ns} rollout status deployment/{fullname}"),
        &format!("kubectl -n {ns} get lease {fullname}"),
        &format!("kubectl -n {ns} port-forward service/{fullname}-metrics 8080"),
        "/metrics | grep '^plugboard_'",
    ] {
        assert!(
            out.stdout.contains(line),
            "NOTES lack {line:?}:\n{}",
            out.stdout
        );
    }

    // Everything it rendered is stored.
    let client = env.client();
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get(&fullname)
        .await
        .unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    sas.get(&fullname).await.unwrap();
    Api::<ClusterRole>::all(client.clone())
        .get(&fullname)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .get(&fullname)
        .await
        .unwrap();
    let election = format!("{fullname}-leader-election");
    Api::<Role>::namespaced(client.clone(), &ns)
        .get(&election)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .get(&election)
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .get(&format!("{fullname}-metrics"))
        .await
        .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .get(&fullname)
        .await
        .unwrap();
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(&fullname)
        .await
        .unwrap();

    // The pod the Deployment makes is admitted under `restricted`; the same pod with one
    // hardening setting undone is not, so the namespace does enforce it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let template = serde_json::to_value(&deployment.spec.unwrap().template).unwrap();
    admit_pod(&pods, template.clone())
        .await
        .unwrap_or_else(|e| panic!("the chart's pod is not admitted: {e}"));
    let mut weakened = template;
    weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    match admit_pod(&pods, weakened).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("PodSecurity"), "{}", status.message);
        }
        other => panic!("a pod allowing privilege escalation was admitted: {other:?}"),
    }

    // Uninstalling removes the cluster-scoped objects too.
    let out = helm::run_async(vec![
        "uninstall".to_owned(),
        release.clone(),
        "--namespace".to_owned(),
        ns.clone(),
        "--kubeconfig".to_owned(),
        env.kubeconfig_path().display().to_string(),
    ])
    .await;
    assert!(out.ok, "helm uninstall failed:\n{}", out.stderr);
    assert!(
        Api::<ClusterRole>::all(client)
            .get_opt(&fullname)
            .await
            .unwrap()
            .is_none()
    );
}
