//! Fairness: a few apparatuses that never answer do not stall the couplings of others.

use std::time::{Duration, Instant};

use plugboard::crd::Plug;
use plugboard_tests::recorder::{Recorder, Reply};
use plugboard_tests::scenario::{Scenario, plug_condition};
use plugboard_tests::wait_for;
use serde_json::json;

/// How long a call to a hanging apparatus waits before it fails: far longer than a healthy
/// coupling takes, so a healthy Plug that waited for the hanging calls would show it.
const HANG_TIMEOUT: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hanging_apparatuses_do_not_delay_a_healthy_coupling() {
    let mut sc = Scenario::new("fair-hang").await;
    sc.options.http.request_timeout = HANG_TIMEOUT;
    sc.options.http.retries = 0;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let healthy = Recorder::start().await;
    let hanging = Recorder::start().await;
    for hook in ["/config", "/created", "/coupled"] {
        hanging.reply(hook, Reply::Hang);
    }
    sc.socket(&ns, "db", json!({})).await;
    sc.wait_socket_ready(&ns, "db").await;

    // What coupling costs on its own.
    let started = Instant::now();
    sc.plug(
        &ns,
        "alone",
        json!({"socket": {"name": "db"},
               "apparatus": {"endpoint": format!("{}/alone", healthy.url())}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "alone").await;
    let alone = started.elapsed();

    // Four Plugs whose apparatus never answers, each with a Socket of its own, all hanging in
    // a call at once.
    for i in 0..4 {
        sc.socket(&ns, &format!("slow-{i}"), json!({})).await;
        sc.plug(
            &ns,
            &format!("stuck-{i}"),
            json!({"socket": {"name": format!("slow-{i}")},
                   "apparatus": {"endpoint": format!("{}/stuck-{i}", hanging.url())}}),
        )
        .await;
    }
    wait_for("four hanging calls", HANG_TIMEOUT / 2, || async {
        let prefixes: std::collections::BTreeSet<String> = hanging
            .calls()
            .into_iter()
            .filter_map(|c| c.path.split('/').nth(1).map(str::to_owned))
            .collect();
        if prefixes.len() == 4 {
            Ok(())
        } else {
            Err(format!("calls from {prefixes:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // A healthy Plug couples meanwhile, at about its own cost.
    let started = Instant::now();
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"},
               "apparatus": {"endpoint": format!("{}/app", healthy.url())}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    let beside = started.elapsed();
    eprintln!("coupling alone took {alone:?}, beside four hanging apparatuses {beside:?}");
    assert!(
        beside < HANG_TIMEOUT / 3,
        "the healthy Plug took {beside:?} to couple beside four hanging apparatuses (alone: \
         {alone:?}); it waited for the hanging calls"
    );
    // The hanging calls were still hanging all along: none of them has failed or coupled.
    let plugs = sc.api::<Plug>(&ns);
    for i in 0..4 {
        let stuck = plugs.get(&format!("stuck-{i}")).await.unwrap();
        assert!(
            plug_condition(&stuck, "Ready").is_none_or(|c| c.status != "True"),
            "stuck-{i} is Ready"
        );
    }
    assert!(
        hanging.calls().len() >= 4,
        "the hanging apparatuses were called"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_the_operator_cannot_read_does_not_stop_the_others() {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};

    let mut sc = Scenario::new("fair-invalid").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({})).await;
    // Admitted by the API server's schema (an integer), unreadable as the `u32` it is: the
    // operator's watch of Plugs would fail as a whole on it.
    let resource = ApiResource::erase::<Plug>(&());
    let raw: kube::Api<DynamicObject> = kube::Api::namespaced_with(sc.client(), &ns, &resource);
    let mut bad = DynamicObject::new("unreadable", &resource).within(&ns);
    bad.metadata.labels = Some(
        [(
            plugboard_tests::scenario::TEST_LABEL.to_owned(),
            sc.run.clone(),
        )]
        .into(),
    );
    bad.data = json!({"spec": {"socket": {"name": "db"},
        "apparatus": {"idleTimeout": 5_000_000_000u64, "containers": [{
            "name": "apparatus", "image": "example.invalid/apparatus:1",
            "ports": [{"name": "container", "containerPort": 8080}]}]}}});
    raw.create(&PostParams::default(), &bad)
        .await
        .expect("the API server admits the Plug");
    assert!(
        sc.api::<Plug>(&ns).get("unreadable").await.is_err(),
        "the Plug cannot be read as a Plug"
    );
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;
    sc.wait_plug_ready(&ns, "app").await;
    // The unreadable one is reported.
    let events: kube::Api<Event> = kube::Api::namespaced(sc.client(), &ns);
    wait_for(
        "an InvalidObject Event",
        Duration::from_secs(30),
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some("InvalidObject")
                        && e.involved_object.name.as_deref() == Some("unreadable")
                })
                .map(|_| ())
                .ok_or_else(|| format!("{} events", list.items.len()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Leave no unreadable Plug behind for other tests' cluster-wide reads.
    raw.delete("unreadable", &Default::default())
        .await
        .expect("the unreadable Plug is deleted");
}
