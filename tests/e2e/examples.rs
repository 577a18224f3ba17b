//! The example plugins of `plugins/` doing their real work end to end: `clients` (Rust) and
//! `clients-py` (the same plugin in Python, built with componentize-py) keep a loopback
//! client-registry service in step with the Plugs coupled to their Socket.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{DeleteParams, PostParams};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::clients_api::ClientsApi;
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{DEADLINE, Scenario, plug_condition, socket_condition};
use serde_json::{Value, json};

use crate::wasm::{component, push};

const TOKEN: &str = "registry-admin-token";

async fn python_component(name: &str) -> Vec<u8> {
    let name = name.to_owned();
    let path = tokio::task::spawn_blocking(move || plugboard_tests::python::component(&name))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", plugboard_tests::error_chain(&e)));
    std::fs::read(path).unwrap()
}

/// A `clients` Socket named `sso` running `image`, whose API token comes from a Secret the
/// namespace's ServiceAccount may read, and whose component may reach `allowed`.
async fn sso_socket(
    sc: &Scenario,
    ns: &str,
    name: &str,
    image: &str,
    api: &ClientsApi,
    allowed: &str,
) {
    sc.socket(
        ns,
        name,
        json!({
            "apparatus": {"wasm": {"image": image, "allowedHosts": [allowed],
                                   "limits": {"memory": "128Mi", "timeout": "10s"}}},
            "interface": {"config": {
                "plug": {"clientId": {"required": true}, "redirectUris": {}},
                "socket": {"apiUrl": {"required": true}, "apiToken": {"required": true}},
            }},
            "config": {"apiUrl": api.url()},
            "configSecretName": "sso-admin",
        }),
    )
    .await;
}

/// Waits for the Socket's created hooks — the component's first use, which compiles it: an
/// 18 MiB Python component takes minutes to compile on a busy 2-core machine.
async fn wait_first_use(sc: &Scenario, ns: &str, name: &str) {
    let api = sc.api::<Socket>(ns);
    plugboard_tests::wait_for(
        &format!("Socket {ns}/{name} to be Ready"),
        std::time::Duration::from_secs(900),
        || async {
            let socket = api.get_opt(name).await.map_err(|e| e.to_string())?;
            let ready = socket.as_ref().and_then(|s| socket_condition(s, "Ready"));
            match ready {
                Some(c) if c.status == "True" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap();
}

async fn admin_secret(sc: &Scenario, ns: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sso-admin"},
        "stringData": {"apiToken": TOKEN},
    }))
    .unwrap();
    sc.api::<Secret>(ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        resource_names: Some(vec!["sso-admin".into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    sc.grant(ns, "default", "read-sso-admin", vec![rule]).await;
}

async fn wait_clients(api: &ClientsApi, what: &str, expected: &Value) {
    plugboard_tests::wait_for(what, DEADLINE, || async {
        let clients = serde_json::to_value(api.clients()).unwrap();
        if &clients == expected {
            Ok(())
        } else {
            Err(clients.to_string())
        }
    })
    .await
    .unwrap();
}

/// Couple, update (rename), refuse a taken id, decouple — and refuse a host not allowed.
async fn clients_plugin_keeps_the_registry_in_step(prefix: &str, bytes: Vec<u8>) {
    let registry = Registry::start().await.unwrap();
    let image = push(&registry, &format!("plugboard/{prefix}:1"), &bytes).await;
    let mut sc = Scenario::new(prefix).await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.start().await;
    let api = ClientsApi::start(TOKEN).await;
    let ns = sc.ns.name().to_owned();
    admin_secret(&sc, &ns).await;
    sso_socket(&sc, &ns, "sso", &image, &api, &api.host_port()).await;
    wait_first_use(&sc, &ns, "sso").await;

    sc.plug(
        &ns,
        "web",
        json!({"socket": {"name": "sso"},
               "config": {"clientId": "web", "redirectUris": "https://web.example/cb"}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "web").await;
    let owner = format!("{ns}/web");
    wait_clients(
        &api,
        "the client registered on coupled",
        &json!({"web": {"clientId": "web", "redirectUris": ["https://web.example/cb"], "owner": owner}}),
    )
    .await;

    // A rename is an update: the new client is registered and the old one removed.
    sc.patch::<Plug>(
        &ns,
        "web",
        json!({"spec": {"config": {"clientId": "web-v2",
                                   "redirectUris": "https://web.example/cb,https://web.example/cb2"}}}),
    )
    .await;
    wait_clients(
        &api,
        "the client renamed and updated on updated",
        &json!({"web-v2": {"clientId": "web-v2",
                           "redirectUris": ["https://web.example/cb", "https://web.example/cb2"],
                           "owner": owner}}),
    )
    .await;

    // Another Plug asking for the same id is told what to fix; the registry is untouched.
    sc.plug(
        &ns,
        "thief",
        json!({"socket": {"name": "sso"}, "config": {"clientId": "web-v2"}}),
    )
    .await;
    let refused = sc
        .wait::<Plug, _>(&ns, "thief", "the taken clientId refused", |p| {
            p.and_then(|p| plug_condition(p, "Ready")).is_some_and(|c| {
                c.message
                    .contains(&format!("already registered by {owner}"))
            })
        })
        .await
        .unwrap();
    assert_eq!(
        plug_condition(&refused, "Ready").map(|c| c.status.as_str()),
        Some("False")
    );
    assert_eq!(api.clients()["web-v2"]["owner"], owner.as_str());

    // Deleting the Plugs decouples them: the registry is empty again.
    for name in ["thief", "web"] {
        sc.api::<Plug>(&ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in ["thief", "web"] {
        sc.wait::<Plug, _>(&ns, name, "the Plug gone", |p| p.is_none())
            .await;
    }
    wait_clients(&api, "every client removed on decoupled", &json!({})).await;

    // A Socket whose allowedHosts do not name the API: the hook is refused before any request.
    let before = api.requests().len();
    sso_socket(&sc, &ns, "sso-closed", &image, &api, "sso.example.com:443").await;
    sc.plug(
        &ns,
        "closed",
        json!({"socket": {"name": "sso-closed"}, "config": {"clientId": "closed"}}),
    )
    .await;
    sc.wait::<Plug, _>(&ns, "closed", "the API refused by allowedHosts", |p| {
        p.and_then(|p| plug_condition(p, "Ready"))
            .is_some_and(|c| c.message.contains("allowedHosts"))
    })
    .await;
    assert_eq!(api.requests().len(), before, "no request reached the API");
    assert!(api.clients().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_plugin_in_rust_registers_updates_and_removes_clients() {
    clients_plugin_keeps_the_registry_in_step("ex-clients", component("clients").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_plugin_in_python_registers_updates_and_removes_clients() {
    clients_plugin_keeps_the_registry_in_step(
        "ex-clients-py",
        python_component("clients-py").await,
    )
    .await;
}

/// The database example's sample Socket (plugins/database/samples/socket.yaml) with `image`.
fn database_socket_spec(image: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/database/samples/socket.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut socket: Value = serde_saphyr::from_str(&text).unwrap();
    socket["spec"]["apparatus"]["wasm"]["image"] = json!(image);
    socket["spec"].take()
}

fn secret_text(secret: &Secret, key: &str) -> String {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("no {key} in Secret {:?}", secret.metadata.name));
    String::from_utf8(bytes.0.clone()).unwrap()
}

async fn result_secret(sc: &Scenario, ns: &str, plug: &str) -> Secret {
    sc.api::<Secret>(ns)
        .get(&format!("{plug}-plugboard-result"))
        .await
        .unwrap()
}

/// Each Plug gets its own database, user and password; the password is stable across operator
/// restarts and updates; decoupling removes the credentials and runs the drop Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_plugin_gives_every_plug_distinct_stable_credentials() {
    use k8s_openapi::api::batch::v1::Job;

    let registry = Registry::start().await.unwrap();
    let image = push(
        &registry,
        "plugboard/database:1",
        &component("database").await,
    )
    .await;
    let mut sc = Scenario::new("ex-database").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let rules = [("", "secrets"), ("batch", "jobs")]
        .map(|(group, resource)| PolicyRule {
            api_groups: Some(vec![group.into()]),
            resources: Some(vec![resource.into()]),
            verbs: ["get", "list", "watch", "create", "patch", "delete"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        })
        .to_vec();
    sc.grant(&ns, "default", "database-socket", rules).await;
    sc.socket(&ns, "postgres", database_socket_spec(&image))
        .await;
    sc.plug(&ns, "shop", json!({"socket": {"name": "postgres"}}))
        .await;
    sc.plug(
        &ns,
        "billing",
        json!({"socket": {"name": "postgres"}, "data": {"database": "billing"}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "shop").await;
    sc.wait_plug_ready(&ns, "billing").await;

    let shop = result_secret(&sc, &ns, "shop").await;
    let billing = result_secret(&sc, &ns, "billing").await;
    let shop_db = secret_text(&shop, "socket.database");
    assert!(
        shop_db.starts_with(&format!("{}_shop_", ns.replace('-', "_"))),
        "{shop_db}"
    );
    assert_eq!(secret_text(&shop, "socket.user"), shop_db);
    assert_eq!(secret_text(&billing, "socket.database"), "billing");
    assert_eq!(
        secret_text(&shop, "socket.host"),
        "postgres.databases.svc.cluster.local"
    );
    assert_eq!(secret_text(&shop, "socket.port"), "5432");
    let shop_password = secret_text(&shop, "socket.password");
    let billing_password = secret_text(&billing, "socket.password");
    assert!(shop_password.len() >= 16, "{shop_password}");
    assert_ne!(
        shop_password, billing_password,
        "every Plug has its own password"
    );

    // Next to the server: the coupling's Secret holds the same credentials, and the create Job
    // reads them from it.
    let plug_object_name = |db: &str| -> String { format!("db-{}", db.replace('_', "-")) };
    let shop_object = plug_object_name(&shop_db);
    let shop_secret = sc.api::<Secret>(&ns).get(&shop_object).await.unwrap();
    assert_eq!(secret_text(&shop_secret, "password"), shop_password);
    assert_eq!(secret_text(&shop_secret, "database"), shop_db);
    let create = sc
        .api::<Job>(&ns)
        .get(&format!("{shop_object}-create"))
        .await
        .unwrap();
    let job_text = serde_json::to_string(&create.spec).unwrap();
    assert!(
        job_text.contains(&format!("CREATE DATABASE \\\"{shop_db}\\\"")),
        "{job_text}"
    );
    assert!(
        job_text.contains(&shop_object),
        "the Job reads the coupling's Secret"
    );

    // An operator restart and an update render everything again: same password.
    sc.restart().await;
    sc.patch::<Plug>(&ns, "shop", json!({"spec": {"data": {"team": "web"}}}))
        .await;
    plugboard_tests::wait_for("the update to be applied", DEADLINE, || async {
        let plug = sc
            .api::<Plug>(&ns)
            .get("shop")
            .await
            .map_err(|e| e.to_string())?;
        let status = plug.status.clone().unwrap_or_default();
        if status.observed_generation == plug.metadata.generation
            && plug_condition(&plug, "Ready").is_some_and(|c| c.status == "True")
        {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await
    .unwrap();
    let shop_after = result_secret(&sc, &ns, "shop").await;
    assert_eq!(secret_text(&shop_after, "socket.password"), shop_password);
    let shop_secret = sc.api::<Secret>(&ns).get(&shop_object).await.unwrap();
    assert_eq!(secret_text(&shop_secret, "password"), shop_password);

    // Decoupling removes the credentials and drops the database; the other Plug keeps its own.
    sc.api::<Plug>(&ns)
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "shop", "the Plug gone", |p| p.is_none())
        .await;
    sc.wait::<Secret, _>(&ns, &shop_object, "the coupling's Secret removed", |s| {
        s.is_none()
    })
    .await;
    sc.wait::<Job, _>(
        &ns,
        &format!("{shop_object}-create"),
        "the create Job removed",
        |j| j.is_none(),
    )
    .await;
    let drop = sc
        .wait::<Job, _>(&ns, &format!("{shop_object}-drop"), "the drop Job", |j| {
            j.is_some()
        })
        .await
        .unwrap();
    let drop_text = serde_json::to_string(&drop.spec).unwrap();
    assert!(
        drop_text.contains(&format!("DROP DATABASE IF EXISTS \\\"{shop_db}\\\"")),
        "{drop_text}"
    );
    let billing_after = result_secret(&sc, &ns, "billing").await;
    assert_eq!(
        secret_text(&billing_after, "socket.password"),
        billing_password
    );
}
