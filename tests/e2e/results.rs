//! The result Secret `<plug>-plugboard-result` is the Plug's own: a Secret of that name that
//! someone else created is never overwritten or deleted, and the Plug says what to do.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use plugboard::crd::Plug;
use plugboard_tests::recorder::Recorder;
use plugboard_tests::scenario::{Scenario, plug_condition};
use serde_json::json;

/// Creates Secret `name` directly, as another user would.
async fn foreign_secret(sc: &Scenario, ns: &str, name: &str) -> Secret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("owner".to_owned(), "someone-else".to_owned())].into()),
            ..Default::default()
        },
        string_data: Some([("keep".to_owned(), "mine".to_owned())].into()),
        ..Default::default()
    };
    sc.api::<Secret>(ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap()
}

/// Asserts that `before` is unchanged: same object, same version, same data, no plugboard
/// field manager and no owner.
async fn assert_intact(sc: &Scenario, ns: &str, before: &Secret) {
    let name = before.metadata.name.clone().unwrap();
    let now = sc.api::<Secret>(ns).get(&name).await.unwrap();
    assert_eq!(now.metadata.uid, before.metadata.uid, "{name} was replaced");
    assert_eq!(
        now.metadata.resource_version, before.metadata.resource_version,
        "{name} was modified"
    );
    let data = now.data.unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data["keep"].0, b"mine");
    assert!(now.metadata.owner_references.is_none());
    let managers: Vec<String> = now
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert!(
        managers.iter().all(|m| !m.starts_with("plugboard")),
        "{managers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_with_the_result_name_is_left_intact() {
    let mut sc = Scenario::new("result-foreign").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())},
               "result": {"url": "postgres://db.example/app"}}),
    )
    .await;
    let plug_spec = json!({"socket": {"name": "db"},
                           "apparatus": {"endpoint": format!("{}/plug", rec.url())},
                           "result": {"user": "app"}});

    // A Secret of the result's name, created by someone else before the Plug.
    let taken = foreign_secret(&sc, &ns, "app-plugboard-result").await;
    sc.plug(&ns, "app", plug_spec.clone()).await;
    let plug: Plug = sc.wait_plug_reason(&ns, "app", "ResourceNotOwned").await;
    let message = plug_condition(&plug, "Ready").unwrap().message.clone();
    assert!(
        message.contains(&format!(
            "Secret {ns}/app-plugboard-result exists but does not belong to Plug {ns}/app"
        )),
        "{message}"
    );
    assert!(
        message.contains("delete or rename that Secret"),
        "{message}"
    );
    let warning = sc.wait_warning(&ns, "ResourceNotOwned", Some("app")).await;
    assert!(
        warning
            .message
            .unwrap_or_default()
            .contains("app-plugboard-result"),
    );
    assert_intact(&sc, &ns, &taken).await;

    // Decoupling (the Plug's deletion) leaves it in place too.
    sc.api::<Plug>(&ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "app", "the Plug to be gone", |p| p.is_none())
        .await;
    assert_intact(&sc, &ns, &taken).await;

    // Once the owner of the name moves it away, the Plug writes its own.
    let moved = foreign_secret(&sc, &ns, "app2-plugboard-result").await;
    sc.plug(&ns, "app2", plug_spec).await;
    sc.wait_plug_reason(&ns, "app2", "ResourceNotOwned").await;
    assert_intact(&sc, &ns, &moved).await;
    sc.api::<Secret>(&ns)
        .delete("app2-plugboard-result", &DeleteParams::default())
        .await
        .unwrap();
    let plug = sc.wait_plug_ready(&ns, "app2").await;
    let own = sc
        .api::<Secret>(&ns)
        .get("app2-plugboard-result")
        .await
        .unwrap();
    assert_eq!(
        own.metadata.owner_references.unwrap()[0].uid,
        plug.metadata.uid.unwrap()
    );
    assert_eq!(own.data.unwrap()["plug.user"].0, b"app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_secret_exists_only_while_there_are_results() {
    let mut sc = Scenario::new("result-only").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let secrets = sc.api::<Secret>(&ns);
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(&ns, "bare", json!({"socket": {"name": "db"}}))
        .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "result": {"user": "app"}}),
    )
    .await;

    // No results on either side: Ready, and no Secret was written.
    let bare = sc.wait_plug_ready(&ns, "bare").await;
    assert!(bare.status.unwrap().result.is_none());
    assert!(
        secrets
            .get_opt("bare-plugboard-result")
            .await
            .unwrap()
            .is_none()
    );

    // Results: the Secret holds them and belongs to the Plug.
    let app = sc.wait_plug_ready(&ns, "app").await;
    let result = app.status.clone().unwrap().result.unwrap();
    assert_eq!(result.secret_name, "app-plugboard-result");
    let secret = secrets.get(&result.secret_name).await.unwrap();
    assert_eq!(secret.data.unwrap()["plug.user"].0, b"app");
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].uid,
        app.metadata.uid.unwrap()
    );

    // The results go away: so does the Secret, and status no longer names it.
    let patched: Plug = sc
        .patch(&ns, "app", json!({"spec": {"result": null}}))
        .await;
    let generation = patched.metadata.generation;
    sc.wait::<Plug, _>(&ns, "app", "the Plug to drop its result", |p| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.observed_generation == generation
                && s.result.is_none()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    assert!(
        secrets
            .get_opt("app-plugboard-result")
            .await
            .unwrap()
            .is_none()
    );
}
