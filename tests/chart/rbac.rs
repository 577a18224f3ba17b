//! The chart's RBAC is enough: its objects, rendered by `helm template` and applied to the
//! control plane, and then `plugboard run` with the container's arguments and environment from
//! the rendered Deployment and, for credentials, only a token of the chart's ServiceAccount.
//! That operator couples a Plug with templated resources and an HTTP apparatus to a Socket
//! whose hooks are a WebAssembly component pulled from a registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::config::{AuthInfo, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Api, Client};
use plugboard::crd::Plug;
use plugboard::oci::{self, RegistryAuth};
use plugboard_tests::recorder::Recorder;
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{DEADLINE, Scenario, TEST_LABEL};
use plugboard_tests::{error_chain, wait_for};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helm::{self, Manifests};

/// Server-side applies every rendered object but the Deployment (no kubelet would run it).
async fn apply(client: &Client, manifests: &Manifests) {
    let pp = PatchParams::apply("plugboard-chart-tests").force();
    for obj in &manifests.0 {
        if obj["kind"] == "Deployment" {
            continue;
        }
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", obj["apiVersion"].as_str().unwrap()),
        };
        let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap());
        let resource = ApiResource::from_gvk(&gvk);
        let name = obj["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(name, &pp, &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", gvk.kind));
    }
}

/// `512Mi` / `2Gi` in MiB.
fn mebibytes(quantity: &str) -> u64 {
    if let Some(n) = quantity.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = quantity.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("unexpected memory quantity {quantity}")
    }
}

/// The container's environment as the kubelet would give it to pod `pod` in namespace `ns`,
/// with each volume's mount path moved under `root`.
fn container_env(
    m: &Manifests,
    pod: &str,
    ns: &str,
    mounts: &[(String, PathBuf)],
) -> BTreeMap<String, String> {
    let c = m.container();
    let mut env = BTreeMap::new();
    for entry in c["env"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = entry["value"].as_str() {
            relocate(v, mounts)
        } else if let Some(field) = entry["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.name" => pod.to_owned(),
                "metadata.namespace" => ns.to_owned(),
                other => panic!("env {name}: unexpected field {other}"),
            }
        } else if let Some(r) = entry["valueFrom"].get("resourceFieldRef") {
            assert_eq!(r["resource"], "limits.memory", "env {name}");
            assert_eq!(r["divisor"], "1Mi", "env {name}");
            let limit = c["resources"]["limits"]["memory"].as_str().unwrap();
            mebibytes(limit).to_string()
        } else {
            panic!("env {name}: unexpected source {entry}")
        };
        env.insert(name, value);
    }
    env
}

fn relocate(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, local) in mounts {
        if let Some(rest) = value.strip_prefix(mount.as_str()) {
            return format!("{}{rest}", local.display());
        }
    }
    value.to_owned()
}

/// A kubeconfig with the admin kubeconfig's cluster and the token of `config` as its only
/// credential.
fn token_kubeconfig(admin: &Path, config: &kube::Config, dir: &Path) -> PathBuf {
    let mut kubeconfig = Kubeconfig::read_from(admin).unwrap();
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(AuthInfo {
            token: config.auth_info.token.clone(),
            ..Default::default()
        });
    }
    let path = dir.join("chart-serviceaccount.kubeconfig");
    // JSON is YAML.
    std::fs::write(&path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_service_account_alone_couples_resources_http_and_wasm_apparatuses() {
    let registry = Registry::start().await.unwrap();
    let component = tokio::task::spawn_blocking(|| plugboard_tests::plugins::component("recorder"))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let component = std::fs::read(component).unwrap();
    let image = registry.image("plugboard/recorder:1");
    oci::push_component(
        &image,
        &component,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap_or_else(|e| panic!("push {image}: {e}"));
    let rec = Recorder::start().await;
    let sc = Scenario::new("chart-rbac").await;
    let ns = sc.ns.name().to_owned();
    let state = tempfile::tempdir().unwrap();

    // The chart as a user would install it for this test: its operator manages only this
    // test's objects, may reach the loopback recorder and pull from the plain-HTTP registry.
    let values = state.path().join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_vec(&json!({
            "crds": {"install": false},
            "selector": format!("{TEST_LABEL}={}", sc.run),
            "egress": {"allow": ["127.0.0.0/8"]},
            "registries": {"plainHttp": registry.plain_http_hosts()},
        }))
        .unwrap(),
    )
    .unwrap();
    let release = sc.run.clone();
    let m = tokio::task::spawn_blocking({
        let (release, ns, values) = (release.clone(), ns.clone(), values.clone());
        move || helm::template(&release, &ns, &[&values])
    })
    .await
    .unwrap();
    apply(&sc.client(), &m).await;

    // A token of the chart's ServiceAccount, and nothing else.
    let account = m.pod_spec()["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = sc
        .env
        .service_account_config(&ns, &account)
        .await
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let as_operator = Client::try_from(config.clone()).unwrap();
    let plugs: Api<Plug> = Api::all(as_operator.clone());
    wait_for("the chart's RBAC to take effect", DEADLINE, || async {
        plugs
            .list_metadata(&Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // It is not an admin: it may not read Secrets.
    match Api::<Secret>::namespaced(as_operator, &ns)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the chart's ServiceAccount may list Secrets: {other:?}"),
    }
    assert!(config.auth_info.token.is_some() && config.auth_info.client_key_data.is_none());
    let kubeconfig = token_kubeconfig(sc.env.kubeconfig_path(), &config, state.path());

    // The container's command line and environment, its volumes moved into a local folder.
    let mounts: Vec<(String, PathBuf)> = m.container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let local = state
                .path()
                .join("volumes")
                .join(v["name"].as_str().unwrap());
            std::fs::create_dir_all(&local).unwrap();
            (v["mountPath"].as_str().unwrap().to_owned(), local)
        })
        .collect();
    let mut env = container_env(&m, &format!("{release}-0"), &ns, &mounts);
    // Not the pod's fixed port: other processes on this machine may hold it.
    let health = plugboard_controlplane::free_port().unwrap();
    env.insert(
        "PLUGBOARD_HEALTH_ADDR".into(),
        format!("127.0.0.1:{health}"),
    );
    let args: Vec<String> = m.args().into_iter().map(|a| relocate(a, &mounts)).collect();
    let log_path = state.path().join("operator.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let bin = env!("CARGO_BIN_EXE_plugboard-operator");
    let mut operator = tokio::process::Command::new(bin)
        .args(&args)
        .env_clear()
        .envs(&env)
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {bin}: {e}"));
    let log_tail = || plugboard_controlplane::process::log_tail(&log_path, 16 * 1024);

    // Hooks as a WebAssembly component, an HTTP apparatus, and templated resources.
    sc.grant_config_maps(&ns, "plugboard-configmaps").await;
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"wasm": {"image": image}}, "config": {"host": "db"}}),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({
            "socket": {"name": "db"},
            "apparatus": {"endpoint": format!("{}/plug", rec.url())},
            "config": {"database": "orders"},
            "resources": [{
                "when": ["coupled"],
                "template": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-env"},
                             "data": {"DATABASE_URL": "postgres://{{ socketConfig.host }}/{{ plugConfig.database }}"}}
            }]
        }),
    )
    .await;
    let ready = tokio::select! {
        plug = sc.wait::<Plug, _>(&ns, "app", "the Plug to be Ready", |p| {
            p.is_some_and(|p| plugboard_tests::scenario::plug_condition(p, "Ready")
                .is_some_and(|c| c.status == "True"))
        }) => plug,
        status = operator.wait() => panic!("the operator exited ({status:?}); its log ends:\n{}", log_tail()),
    };
    assert!(ready.is_some());
    let socket = sc.wait_socket_ready(&ns, "db").await;
    let apparatus = socket.status.unwrap().apparatus.unwrap();
    assert_eq!(apparatus.image, image);
    assert_eq!(
        apparatus.digest,
        format!("sha256:{}", hex::encode(Sha256::digest(&component)))
    );

    // The templated ConfigMap, written as the Plug's ServiceAccount.
    let cm = sc
        .wait::<ConfigMap, _>(&ns, "app-env", "the templated ConfigMap", |c| c.is_some())
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["DATABASE_URL"], "postgres://db/orders");
    // The HTTP apparatus's coupled hook saw the config the component's `config` hook made.
    let coupled: Vec<Value> = rec
        .calls()
        .into_iter()
        .filter(|c| c.path == "/plug/coupled")
        .map(|c| c.body)
        .collect();
    assert_eq!(coupled.len(), 1, "{coupled:?}");
    assert_eq!(coupled[0]["socketConfig"]["recorder.side"], "socket");
    assert_eq!(
        coupled[0]["socketConfig"]["recorder.plug"],
        format!("{ns}/app")
    );

    // And it never failed for want of a permission.
    let log = log_tail();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "{log}"
    );
    assert!(
        operator.try_wait().unwrap().is_none(),
        "the operator exited:\n{log}"
    );
    operator.start_kill().unwrap();
    let _ = operator.wait().await;
}
