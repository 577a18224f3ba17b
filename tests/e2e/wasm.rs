//! WebAssembly apparatuses end to end: components compiled from `plugins/`, pushed to a real
//! OCI registry, pulled and run in-process by the operator, with every failure a condition.

use std::path::PathBuf;

use plugboard::crd::{Plug, Socket};
use plugboard::oci::{self, RegistryAuth};
use plugboard_tests::recorder::Recorder;
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{Scenario, plug_condition, socket_condition};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The bytes of a plugin built into a component (`plugins/<name>`).
pub(crate) async fn component(name: &str) -> Vec<u8> {
    let name = name.to_owned();
    let path: PathBuf =
        tokio::task::spawn_blocking(move || plugboard_tests::plugins::component(&name))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}", plugboard_tests::error_chain(&e)));
    std::fs::read(path).unwrap()
}

/// Pushes a component to `registry` as `repo_tag`; returns the image reference.
pub(crate) async fn push(registry: &Registry, repo_tag: &str, bytes: &[u8]) -> String {
    let image = registry.image(repo_tag);
    oci::push_component(
        &image,
        bytes,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap_or_else(|e| panic!("push {image}: {e}"));
    image
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A scenario whose operator may pull from `registry` over plain HTTP, with its own cache and
/// cache key file (the scenario's, kept across restarts).
async fn scenario(prefix: &str, registry: &Registry) -> Scenario {
    let mut sc = Scenario::new(prefix).await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.start().await;
    sc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_socket_couples_a_plug_and_a_new_digest_takes_effect_without_restart() {
    let registry = Registry::start().await.unwrap();
    let recorder_bytes = component("recorder").await;
    let image = push(&registry, "plugboard/hooks:1", &recorder_bytes).await;
    let sc = scenario("wasm-couple", &registry).await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"wasm": {"image": image}}, "config": {"host": "db"}}),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": {"endpoint": format!("{}/plug", rec.url())},
               "data": {"region": "eu"}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    let socket = sc.wait_socket_ready(&ns, "db").await;
    let apparatus = socket.status.unwrap().apparatus.unwrap();
    assert_eq!(apparatus.image, image);
    assert_eq!(
        apparatus.digest,
        sha256(&recorder_bytes),
        "status shows the digest the tag resolved to"
    );

    // The component's `config` hook contributed to the Socket's config, with the right inputs,
    // and the coupled hooks ran (the Plug's, recorded over HTTP, saw that config).
    let coupled: Vec<_> = rec
        .calls()
        .into_iter()
        .filter(|c| c.path == "/plug/coupled")
        .collect();
    assert_eq!(coupled.len(), 1);
    let socket_config = &coupled[0].body["socketConfig"];
    assert_eq!(socket_config["host"], "db");
    assert_eq!(socket_config["recorder.side"], "socket");
    assert_eq!(socket_config["recorder.plug"], format!("{ns}/app"));
    assert_eq!(socket_config["recorder.plugData.region"], "eu");

    // Push another component under the same tag: the next hook uses it, no restart.
    let adversary_bytes = component("adversary").await;
    push(&registry, "plugboard/hooks:1", &adversary_bytes).await;
    sc.patch::<Socket>(&ns, "db", json!({"metadata": {"labels": {"poke": "1"}}}))
        .await;
    sc.wait::<Socket, _>(&ns, "db", "the new digest in status", |s| {
        s.and_then(|s| s.status.as_ref())
            .and_then(|st| st.apparatus.as_ref())
            .is_some_and(|a| a.digest == sha256(&adversary_bytes))
    })
    .await;
    sc.patch::<Plug>(&ns, "app", json!({"metadata": {"labels": {"poke": "1"}}}))
        .await;
    plugboard_tests::wait_for(
        "the updated hook with the new component's config",
        plugboard_tests::scenario::DEADLINE,
        || async {
            let updated: Vec<_> = rec
                .calls()
                .into_iter()
                .filter(|c| c.path == "/plug/updated")
                .collect();
            match updated.last() {
                Some(call) if call.body["socketConfig"].get("recorder.side").is_none() => Ok(()),
                _ => Err(format!("{} updated calls", updated.len())),
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_socket_hooks_run_in_order_with_their_inputs() {
    let registry = Registry::start().await.unwrap();
    let image = push(
        &registry,
        "plugboard/recorder:1",
        &component("recorder").await,
    )
    .await;
    let sc = scenario("wasm-order", &registry).await;
    let rec = Recorder::start().await;
    let host = rec.url().trim_start_matches("http://").to_owned();
    let ns = sc.ns.name().to_owned();
    // The recorder reports each hook over HTTP: only because the spec allows that host.
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"wasm": {"image": image, "allowedHosts": [host]}},
               "data": {"report": format!("{}/wasm", rec.url())}, "config": {"host": "db"}}),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "config": {"database": "app"}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    sc.patch::<Plug>(
        &ns,
        "app",
        json!({"spec": {"config": {"database": "app2"}}}),
    )
    .await;
    sc.wait::<Plug, _>(&ns, "app", "Ready at generation 2", |p| {
        p.is_some_and(|p| {
            plug_condition(p, "Ready")
                .is_some_and(|c| c.status == "True" && c.observed_generation == Some(2))
        })
    })
    .await;
    sc.api::<Plug>(&ns)
        .delete("app", &Default::default())
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "app", "the Plug to be gone", |p| p.is_none())
        .await;
    sc.api::<Socket>(&ns)
        .delete("db", &Default::default())
        .await
        .unwrap();
    sc.wait::<Socket, _>(&ns, "db", "the Socket to be gone", |s| s.is_none())
        .await;

    let reports: Vec<serde_json::Value> = rec.calls().into_iter().map(|c| c.body).collect();
    let hooks: Vec<&str> = reports
        .iter()
        .map(|r| r["hook"].as_str().unwrap())
        .collect();
    assert_eq!(
        hooks,
        ["created", "coupled", "updated", "decoupled", "deleted"]
    );
    assert!(reports.iter().all(|r| r["side"] == "socket"));
    assert_eq!(reports[0]["socket"], format!("{ns}/db"));
    assert_eq!(reports[0]["plug"], "-", "created sees only its owner");
    assert_eq!(reports[1]["plug"], format!("{ns}/app"));
    assert_eq!(reports[1]["plugConfig"], json!({"database": "app"}));
    assert_eq!(reports[1]["socketConfig"]["host"], "db");
    assert_eq!(reports[2]["plugConfig"], json!({"database": "app2"}));
    assert_eq!(reports[3]["plugConfig"], json!({"database": "app2"}));
    assert_eq!(reports[4]["plug"], "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_reuses_compiled_components() {
    let registry = Registry::start().await.unwrap();
    let image = push(
        &registry,
        "plugboard/recorder:1",
        &component("recorder").await,
    )
    .await;
    let mut sc = scenario("wasm-restart", &registry).await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({"apparatus": {"wasm": {"image": image}}}))
        .await;
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;
    sc.wait_plug_ready(&ns, "app").await;
    let first = sc.metrics();
    // The first operator compiled it (two concurrent first uses may both count).
    assert!(first.wasm_compiles >= 1, "{first:?}");

    // Same cache folder, new process state: the component must load without compiling.
    sc.restart().await;
    let before = sc.metrics();
    sc.patch::<Plug>(&ns, "app", json!({"metadata": {"labels": {"poke": "1"}}}))
        .await;
    sc.wait_reconciled(before, true, true).await;
    plugboard_tests::wait_for(
        "the component to be loaded",
        plugboard_tests::scenario::DEADLINE,
        || async {
            let m = sc.metrics();
            if m.wasm_compiles + m.wasm_cache_loads > 0 {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        },
    )
    .await
    .unwrap();
    let after = sc.metrics();
    assert_eq!(
        after.wasm_compiles, 0,
        "the restarted operator recompiled: {after:?}"
    );
    // The Plug's and the Socket's reconciles may each load it once, concurrently.
    assert!(after.wasm_cache_loads >= 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_failures_are_clear_conditions_and_leave_others_alone() {
    let registry = Registry::start().await.unwrap();
    let recorder_bytes = component("recorder").await;
    let adversary = push(
        &registry,
        "plugboard/adversary:1",
        &component("adversary").await,
    )
    .await;
    let good = push(&registry, "plugboard/recorder:1", &recorder_bytes).await;
    let other_version = wat::parse_str(
        r#"(component (instance $hooks) (export "plugboard:apparatus/hooks@0.2.0" (instance $hooks)))"#,
    )
    .unwrap();
    let other_version = push(&registry, "plugboard/other:1", &other_version).await;
    let not_wasm = registry.image("plugboard/image:1");
    oci::push_artifact(
        &not_wasm,
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        b"not a component",
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let wrong_digest = format!(
        "{}@sha256:{}",
        registry.image("plugboard/recorder:1"),
        "0".repeat(64)
    );
    let missing = registry.image("plugboard/missing:1");

    let sc = scenario("wasm-failures", &registry).await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({})).await;
    let plug = |image: &str, data: serde_json::Value| {
        json!({"socket": {"name": "db"}, "data": data,
               "apparatus": {"wasm": {"image": image, "limits": {"timeout": "300ms", "memory": "32Mi"}}}})
    };
    for (name, image, data) in [
        ("spin", adversary.as_str(), json!({"mode": "spin"})),
        ("hog", adversary.as_str(), json!({"mode": "hog"})),
        ("panic", adversary.as_str(), json!({"mode": "panic"})),
        ("fs", adversary.as_str(), json!({"mode": "fs"})),
        (
            "env",
            adversary.as_str(),
            json!({"mode": "env", "var": "PATH"}),
        ),
        (
            "socket",
            adversary.as_str(),
            json!({"mode": "socket", "addr": "127.0.0.1:6443"}),
        ),
        (
            "http",
            adversary.as_str(),
            json!({"mode": "http", "url": "http://127.0.0.1:6443/"}),
        ),
        (
            "flood",
            adversary.as_str(),
            json!({"mode": "flood", "megabytes": "8"}),
        ),
        ("missing", missing.as_str(), json!({})),
        ("wrong-digest", wrong_digest.as_str(), json!({})),
        ("not-wasm", not_wasm.as_str(), json!({})),
        ("other-version", other_version.as_str(), json!({})),
        ("healthy", good.as_str(), json!({})),
    ] {
        sc.plug(&ns, name, plug(image, data)).await;
    }
    let message = |p: &Plug| plug_condition(p, "Ready").unwrap().message.clone();
    let mut report = Vec::new();
    for (name, reason, says) in [
        ("spin", "HookTimeout", "300 ms deadline"),
        ("hog", "HookOutOfMemory", "memory cap of 32 MiB"),
        ("panic", "HookTrapped", "panic"),
        ("fs", "HookFailed", "fs: open /etc/passwd"),
        ("env", "HookFailed", "0 variables visible"),
        ("socket", "HookFailed", "access-denied"),
        (
            "http",
            "HookFailed",
            "not in spec.apparatus.wasm.allowedHosts",
        ),
        ("flood", "HookFailed", "flood: stdout failed"),
        ("missing", "ImageNotFound", "plugboard/missing"),
        ("wrong-digest", "ImageNotFound", "sha256:0000"),
        (
            "not-wasm",
            "NotWasm",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            "other-version",
            "IncompatibleComponent",
            "plugboard:apparatus/hooks@0.2.0",
        ),
    ] {
        let p = sc.wait_plug_reason(&ns, name, reason).await;
        assert!(message(&p).contains(says), "{name}: {}", message(&p));
        assert_eq!(
            plug_condition(&p, "Stalled").unwrap().status,
            "True",
            "{name}"
        );
        report.push(format!("  {name}: {reason}: {}", message(&p)));
    }
    eprintln!("WebAssembly failures as conditions:\n{}", report.join("\n"));
    // The operator is unharmed: a healthy component couples alongside.
    let healthy = sc.wait_plug_ready(&ns, "healthy").await;
    assert_eq!(
        healthy.status.unwrap().apparatus.unwrap().digest,
        sha256(&recorder_bytes)
    );
    let socket = sc.api::<Socket>(&ns).get("db").await.unwrap();
    assert!(socket_condition(&socket, "Ready").is_some_and(|c| c.status == "True"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_are_read_as_the_owner_service_account() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::rbac::v1::PolicyRule;
    use kube::api::{ObjectMeta, PostParams};

    let registry = Registry::start_with_auth("puller", "s3cret-pull")
        .await
        .unwrap();
    let image = registry.image("plugboard/private:1");
    oci::push_component(
        &image,
        &component("recorder").await,
        &RegistryAuth::Basic {
            username: "puller".into(),
            password: "s3cret-pull".into(),
        },
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let sc = scenario("wasm-pull-secret", &registry).await;
    let ns = sc.ns.name().to_owned();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("registry-creds".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_owned(),
                ByteString(registry.docker_config_json()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    sc.api::<Secret>(&ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"wasm": {"image": image, "pullSecrets": [{"name": "registry-creds"}]}}}),
    )
    .await;

    // The Socket's ServiceAccount may not read the pull secret yet: a clear condition.
    let denied = sc
        .wait::<Socket, _>(&ns, "db", "the pull secret to be refused", |s| {
            s.and_then(|s| socket_condition(s, "Ready"))
                .is_some_and(|c| c.reason == "SourceUnavailable")
        })
        .await
        .unwrap();
    let message = socket_condition(&denied, "Ready").unwrap().message.clone();
    assert!(message.contains("registry-creds"), "{message}");
    assert!(
        message.contains(&format!("ServiceAccount {ns}/default")),
        "{message}"
    );
    assert!(!message.contains("s3cret-pull"));

    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        resource_names: Some(vec!["registry-creds".into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    sc.grant(&ns, "default", "read-pull-secret", vec![rule])
        .await;
    let socket = sc.wait_socket_ready(&ns, "db").await;
    assert!(
        socket
            .status
            .unwrap()
            .apparatus
            .unwrap()
            .digest
            .starts_with("sha256:")
    );
}
