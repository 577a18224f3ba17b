//! The Plug and Socket API as the real API server serves it: defaults, schema and CEL
//! validation, status subresource, printer columns.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Api, Resource as _};
use plugboard::crd::{Plug, ResourceAction, Socket};
use plugboard_tests::env;
use serde_json::{Value, json};

/// Creates an object from raw JSON, as `kubectl apply` would send it, bypassing the Rust types.
async fn create_raw<K: kube::Resource<DynamicType = ()>>(
    ns: &str,
    body: Value,
) -> Result<DynamicObject, kube::Error> {
    let env = env().await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.client(), ns, &ApiResource::erase::<K>(&()));
    let obj: DynamicObject = serde_json::from_value(body).expect("test JSON is an object");
    api.create(&PostParams::default(), &obj).await
}

fn rejection(result: Result<DynamicObject, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        Ok(obj) => panic!("the API server accepted an invalid object: {obj:?}"),
        Err(other) => panic!("expected a rejection by the API server, got {other}"),
    }
}

fn plug(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug", "metadata": {"name": name}, "spec": spec})
}

fn socket(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Socket", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn socket_and_plug_are_stored_with_their_defaults() {
    let env = env().await;
    let ns = env.namespace("api-defaults").await.unwrap();
    create_raw::<Socket>(
        ns.name(),
        socket(
            "db",
            json!({
                "interface": {"config": {"plug": {"database": {"required": true}}}},
                "config": {"hostname": "db.example"},
                "resources": [{
                    "when": ["coupled"],
                    "template": {"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "{{ plug.metadata.name }}"},
                                 "data": {"nested": "kept as written"}}
                }]
            }),
        ),
    )
    .await
    .unwrap();
    create_raw::<Plug>(
        ns.name(),
        plug(
            "app",
            json!({"socket": {"name": "db"}, "config": {"database": "app"}}),
        ),
    )
    .await
    .unwrap();

    let sockets: Api<Socket> = ns.api();
    let plugs: Api<Plug> = ns.api();
    let s = sockets.get("db").await.unwrap();
    let p = plugs.get("app").await.unwrap();

    assert_eq!(p.spec.socket.name, "db");
    assert_eq!(p.spec.socket.namespace, None);
    assert_eq!(p.spec.side.config["database"], "app");
    // Defaults applied by the API server from the generated schema.
    assert_eq!(p.spec.side.service_account_name, "default");
    assert_eq!(s.spec.side.service_account_name, "default");
    assert_eq!(s.spec.side.resources[0].action, ResourceAction::Apply);
    // Free-form templates survive pruning.
    assert_eq!(
        s.spec.side.resources[0].template.as_ref().unwrap()["data"]["nested"],
        "kept as written"
    );
    let interface = s.spec.interface.as_ref().unwrap();
    assert!(interface.config.as_ref().unwrap().plug.as_ref().unwrap()["database"].required);
}

#[tokio::test]
async fn plug_without_socket_name_is_rejected() {
    let env = env().await;
    let ns = env.namespace("api-socket-name").await.unwrap();
    let status = rejection(create_raw::<Plug>(ns.name(), plug("p", json!({"socket": {}}))).await);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.socket.name: Required value"),
        "{}",
        status.message
    );

    let status =
        rejection(create_raw::<Plug>(ns.name(), plug("p", json!({"socket": {"name": ""}}))).await);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.socket.name"),
        "{}",
        status.message
    );

    let status = rejection(create_raw::<Plug>(ns.name(), plug("p", json!({}))).await);
    assert!(
        status.message.contains("spec.socket: Required value"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn unknown_resource_action_and_lifecycle_point_are_rejected() {
    let env = env().await;
    let ns = env.namespace("api-do").await.unwrap();
    let status = rejection(
        create_raw::<Socket>(
            ns.name(),
            socket("s", json!({"resources": [{"do": "explode", "when": ["coupled"], "stringTemplate": "x"}]})),
        )
        .await,
    );
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status
            .message
            .contains(r#"spec.resources[0].do: Unsupported value: "explode""#),
        "{}",
        status.message
    );

    let status = rejection(
        create_raw::<Plug>(
            ns.name(),
            plug("p", json!({"socket": {"name": "s"}, "resources": [{"when": ["sometimes"], "stringTemplate": "x"}]})),
        )
        .await,
    );
    assert!(
        status
            .message
            .contains(r#"spec.resources[0].when[0]: Unsupported value: "sometimes""#),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn resource_without_any_template_is_rejected() {
    let env = env().await;
    let ns = env.namespace("api-template").await.unwrap();
    let status = rejection(
        create_raw::<Socket>(
            ns.name(),
            socket("s", json!({"resources": [{"when": ["coupled"]}]})),
        )
        .await,
    );
    assert!(
        status.message.contains(
            "a resource needs one of template, templates, stringTemplate or stringTemplates"
        ),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn apparatus_takes_exactly_one_form() {
    let env = env().await;
    let ns = env.namespace("api-apparatus").await.unwrap();
    let both = json!({
        "endpoint": "http://hooks.example",
        "wasm": {"image": "registry.example/hooks:1"}
    });
    let status = rejection(
        create_raw::<Socket>(ns.name(), socket("both", json!({"apparatus": both}))).await,
    );
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status
            .message
            .contains("apparatus takes either the HTTP form"),
        "{}",
        status.message
    );

    let status =
        rejection(create_raw::<Socket>(ns.name(), socket("none", json!({"apparatus": {}}))).await);
    assert!(
        status
            .message
            .contains("apparatus needs an endpoint or containers"),
        "{}",
        status.message
    );

    let status = rejection(
        create_raw::<Socket>(
            ns.name(),
            socket(
                "podless",
                json!({"apparatus": {"endpoint": "http://x", "idleTimeout": 5}}),
            ),
        )
        .await,
    );
    assert!(
        status.message.contains("need containers"),
        "{}",
        status.message
    );

    let status = rejection(
        create_raw::<Plug>(
            ns.name(),
            plug("digest", json!({"socket": {"name": "s"}, "apparatus": {"wasm": {"image": "r.example/x@sha256:short"}}})),
        )
        .await,
    );
    assert!(
        status.message.contains("spec.apparatus.wasm.image"),
        "{}",
        status.message
    );

    // Each form alone is accepted.
    create_raw::<Socket>(
        ns.name(),
        socket(
            "http",
            json!({"apparatus": {"endpoint": "http://hooks.example/socket"}}),
        ),
    )
    .await
    .unwrap();
    create_raw::<Socket>(
        ns.name(),
        socket("pod", json!({"apparatus": {"containers": [{"name": "hooks", "image": "hooks:1"}], "idleTimeout": 30}})),
    )
    .await
    .unwrap();
    let digest = format!("registry.example/hooks:1@sha256:{}", "a".repeat(64));
    create_raw::<Plug>(
        ns.name(),
        plug("wasm", json!({"socket": {"name": "s"}, "apparatus": {"wasm": {
            "image": digest, "limits": {"timeout": "2s", "memory": "64Mi"}, "allowedHosts": ["api.example:443"]}}})),
    )
    .await
    .unwrap();
    let p: Plug = ns.api::<Plug>().get("wasm").await.unwrap();
    let wasm = p.spec.side.apparatus.unwrap().wasm.unwrap();
    assert_eq!(wasm.image, digest);
    assert_eq!(wasm.limits.unwrap().memory.as_deref(), Some("64Mi"));
}

#[tokio::test]
async fn status_is_a_subresource_and_printer_columns_show_it() {
    let env = env().await;
    let ns = env.namespace("api-status").await.unwrap();
    create_raw::<Plug>(ns.name(), plug("app", json!({"socket": {"name": "db"}})))
        .await
        .unwrap();
    let plugs: Api<Plug> = ns.api();
    let status = json!({"status": {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "SocketNotCreated", "message": "waiting",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Coupled", "status": "False", "reason": "SocketNotCreated", "message": "waiting",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
    }});
    plugs
        .patch_status("app", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    // A spec write does not touch status, and a status write did not touch spec.
    let spec_change = json!({"spec": {"config": {"k": "v"}}});
    let after = plugs
        .patch("app", &PatchParams::default(), &Patch::Merge(&spec_change))
        .await
        .unwrap();
    assert_eq!(after.status.as_ref().unwrap().conditions.len(), 2);
    assert_eq!(after.metadata.generation, Some(2));

    // What `kubectl get plugs` shows: the server-side table built from the printer columns.
    let url = format!(
        "{}?fieldSelector=metadata.name=app",
        Plug::url_path(&(), Some(ns.name()))
    );
    let request = http::Request::get(url)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: Value = env.client().request(request).await.unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Socket", "Ready", "Reason", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[1], "db");
    assert_eq!(cells[2], "False");
    assert_eq!(cells[3], "SocketNotCreated");
}

#[tokio::test]
async fn crds_carry_names_categories_and_status() {
    let env = env().await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    let plug = crds.get("plugs.plugboard.dev").await.unwrap();
    assert_eq!(
        plug.spec.names.short_names.as_deref(),
        Some(&["plug".to_owned()][..])
    );
    assert_eq!(
        plug.spec.names.categories.as_deref(),
        Some(&["plugboard".to_owned()][..])
    );
    assert_eq!(plug.spec.scope, "Namespaced");
    let version = &plug.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let socket = crds.get("sockets.plugboard.dev").await.unwrap();
    assert_eq!(
        socket.spec.names.short_names.as_deref(),
        Some(&["sock".to_owned()][..])
    );
}
