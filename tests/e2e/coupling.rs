//! The coupling lifecycle end to end: a real control plane, the operator in-process, and a
//! loopback HTTP apparatus that records every hook call.

use std::collections::BTreeSet;
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::recorder::{Recorder, Reply};
use plugboard_tests::scenario::{DEADLINE, Scenario, plug_condition, socket_condition};
use plugboard_tests::wait_for;
use serde_json::{Value, json};

fn hook_paths(rec: &Recorder) -> Vec<String> {
    rec.hook_calls().into_iter().map(|c| c.path).collect()
}

fn calls_to(rec: &Recorder, path: &str) -> Vec<Value> {
    rec.calls()
        .into_iter()
        .filter(|c| c.path == path)
        .map(|c| c.body)
        .collect()
}

fn endpoint(rec: &Recorder, prefix: &str) -> Value {
    json!({"endpoint": format!("{}{prefix}", rec.url())})
}

/// Waits until the recorder has seen `n` calls to `path`.
async fn wait_calls(rec: &Recorder, path: &str, n: usize) {
    wait_for(&format!("{n} calls to {path}"), DEADLINE, || async {
        let seen = calls_to(rec, path).len();
        if seen >= n {
            Ok(())
        } else {
            Err(format!("{seen} calls; hooks so far: {:?}", hook_paths(rec)))
        }
    })
    .await
    .unwrap();
}

/// Lets ServiceAccount `default` in `ns` read Secrets and ConfigMaps, as a user would grant it.
async fn grant_reads(sc: &Scenario, ns: &str) {
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into(), "configmaps".into()]),
        verbs: vec!["get".into()],
        ..Default::default()
    };
    sc.grant(ns, "default", "plugboard-sources", vec![rule])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_first_then_plug_couples_with_hooks_in_order() {
    let mut sc = Scenario::new("couple-socket-first").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": endpoint(&rec, "/socket"), "config": {"host": "db.example"},
               "result": {"url": "postgres://db.example/app"}}),
    )
    .await;
    let socket = sc.wait_socket_ready(&ns, "db").await;
    let before = sc.metrics();
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/plug"),
               "config": {"database": "app"}, "result": {"user": "app"}}),
    )
    .await;
    let plug = sc.wait_plug_ready(&ns, "app").await;
    assert_eq!(
        hook_paths(&rec),
        [
            "/socket/created",
            "/plug/created",
            "/plug/coupled",
            "/socket/coupled"
        ]
    );

    let status = plug.status.clone().unwrap();
    assert_eq!(
        status.coupled_socket.as_ref().unwrap().uid,
        socket.metadata.uid.clone().unwrap()
    );
    assert_eq!(
        plug_condition(&plug, "Coupled").unwrap().reason,
        "CouplingSucceeded"
    );
    let socket = sc
        .wait::<Socket, _>(&ns, "db", "the Socket to list the Plug", |s| {
            s.is_some_and(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.coupled_plug_count == 1)
            })
        })
        .await
        .unwrap();
    let socket_status = socket.status.clone().unwrap();
    assert_eq!(
        socket_status.coupled_plugs[0].uid,
        plug.metadata.uid.clone().unwrap()
    );
    assert_eq!(
        socket_condition(&socket, "Coupled").unwrap().message,
        "1 plug coupled"
    );

    // Results live in a Secret owned by the Plug, not in status.
    let result = status.result.unwrap();
    let secret = sc
        .api::<Secret>(&ns)
        .get(&result.secret_name)
        .await
        .unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["plug.user"].0, b"app");
    assert_eq!(data["socket.url"].0, b"postgres://db.example/app");
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].uid,
        plug.metadata.uid.clone().unwrap()
    );
    let status_text = serde_json::to_string(&plug.status).unwrap();
    assert!(
        !status_text.contains("postgres://"),
        "results leaked into status: {status_text}"
    );

    // Each transition is a Normal Event on its object (the reference's reasons and messages).
    let events = wait_for("the lifecycle Events", DEADLINE, || async {
        let list = sc
            .api::<Event>(&ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let normal: BTreeSet<(String, String)> = list
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Normal"))
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect();
        if normal.len() >= 4 {
            Ok(normal)
        } else {
            Err(format!("{normal:?}"))
        }
    })
    .await
    .unwrap();
    for (reason, message) in [
        ("SocketCreated", format!("socket db/{ns} created")),
        ("PlugCreated", format!("plug app/{ns} created")),
        ("PlugCoupled", format!("plug app/{ns} coupled")),
        ("SocketCoupled", format!("socket db/{ns} coupled")),
    ] {
        assert!(
            events.contains(&(reason.to_owned(), message.clone())),
            "{reason}: {events:?}"
        );
    }

    let after = sc.metrics();
    eprintln!(
        "one coupling: {} plug reconciles, {} object writes ({} status, {} finalizer, {} secret), {} events",
        after.plug_reconciles - before.plug_reconciles,
        after.object_writes() - before.object_writes(),
        after.status_writes - before.status_writes,
        after.finalizer_writes - before.finalizer_writes,
        after.secret_writes - before.secret_writes,
        after.events - before.events,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_plug_is_woken_by_its_socket_appearing() {
    let mut sc = Scenario::new("couple-plug-first").await;
    // No timer may wake the Plug: only the watch on Sockets can.
    sc.options.retry = std::time::Duration::from_secs(3600);
    sc.options.result_poll = std::time::Duration::from_secs(3600);
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/plug")}),
    )
    .await;
    let waiting = sc.wait_plug_reason(&ns, "app", "SocketNotCreated").await;
    assert!(
        plug_condition(&waiting, "Ready")
            .unwrap()
            .message
            .contains(&format!("waiting for Socket {ns}/db")),
        "{waiting:?}"
    );
    assert_eq!(hook_paths(&rec), ["/plug/created"]);

    let created = Instant::now();
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.wait_plug_ready(&ns, "app").await;
    eprintln!(
        "waiting Plug coupled {:.0} ms after its Socket was created",
        created.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(
        hook_paths(&rec),
        [
            "/plug/created",
            "/socket/created",
            "/plug/coupled",
            "/socket/coupled"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_plugs_on_one_socket_couple_exactly_once() {
    const N: usize = 100;
    let mut sc = Scenario::new("couple-hundred").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.wait_socket_ready(&ns, "db").await;
    let before = sc.metrics();
    let started = Instant::now();
    futures::stream::iter(0..N)
        .map(|i| {
            let sc = &sc;
            let ns = &ns;
            async move {
                sc.plug(ns, &format!("app-{i}"), json!({"socket": {"name": "db"}}))
                    .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let plugs: Api<Plug> = sc.api(&ns);
    wait_for("all Plugs to be Ready", DEADLINE * 3, || async {
        let list = plugs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .filter(|p| plug_condition(p, "Ready").is_some_and(|c| c.status == "True"))
            .count();
        if ready == N {
            Ok(())
        } else {
            Err(format!("{ready}/{N} Ready"))
        }
    })
    .await
    .unwrap();
    let coupled_in = started.elapsed();
    let socket = sc
        .wait::<Socket, _>(&ns, "db", "the Socket to list every Plug", |s| {
            s.is_some_and(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.coupled_plug_count == N as i32)
            })
        })
        .await
        .unwrap();
    let listed: BTreeSet<String> = socket
        .status
        .unwrap()
        .coupled_plugs
        .into_iter()
        .map(|p| p.uid)
        .collect();
    assert_eq!(listed.len(), N, "each Plug listed exactly once");

    let coupled = calls_to(&rec, "/socket/coupled");
    let uids: BTreeSet<String> = coupled
        .iter()
        .map(|b| b["plug"]["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        coupled.len(),
        N,
        "the Socket's coupled hook ran once per Plug"
    );
    assert_eq!(uids, listed);
    assert!(calls_to(&rec, "/socket/updated").is_empty());

    let after = sc.metrics();
    eprintln!(
        "{N} Plugs coupled in {:.1} s: {} plug reconciles, {} socket reconciles, {} object writes ({:.2} per coupling)",
        coupled_in.as_secs_f64(),
        after.plug_reconciles - before.plug_reconciles,
        after.socket_reconciles - before.socket_reconciles,
        after.object_writes() - before.object_writes(),
        (after.object_writes() - before.object_writes()) as f64 / N as f64,
    );
}

/// Couples Plug `app` to Socket `db` (both with recorded apparatuses) and clears the record.
async fn coupled_pair(sc: &mut Scenario, rec: &Recorder, plug_config: Value) -> String {
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": endpoint(rec, "/socket"), "config": {"host": "db"}}),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(rec, "/plug"), "config": plug_config}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    sc.wait::<Socket, _>(&ns, "db", "the Socket to list the Plug", |s| {
        s.is_some_and(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.coupled_plug_count == 1)
        })
    })
    .await;
    rec.clear();
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_config_change_fires_updated_once_and_labels_fire_nothing() {
    let mut sc = Scenario::new("couple-update").await;
    let rec = Recorder::start().await;
    let ns = coupled_pair(&mut sc, &rec, json!({"database": "app"})).await;

    sc.patch::<Plug>(
        &ns,
        "app",
        json!({"spec": {"config": {"database": "app2"}}}),
    )
    .await;
    wait_calls(&rec, "/socket/updated", 1).await;
    sc.wait::<Plug, _>(&ns, "app", "Ready at generation 2", |p| {
        p.is_some_and(|p| {
            plug_condition(p, "Ready")
                .is_some_and(|c| c.status == "True" && c.observed_generation == Some(2))
        })
    })
    .await;
    let updated = calls_to(&rec, "/plug/updated");
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["plugConfig"]["database"], "app2");

    // Labels and annotations are not inputs: a reconcile runs and fires nothing.
    let before = sc.metrics();
    sc.patch::<Plug>(
        &ns,
        "app",
        json!({"metadata": {"labels": {"tier": "gold"}, "annotations": {"note": "x"}}}),
    )
    .await;
    sc.wait_reconciled(before, true, false).await;
    assert_eq!(hook_paths(&rec), ["/plug/updated", "/socket/updated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_fires_nothing_and_writes_nothing() {
    let mut sc = Scenario::new("couple-restart").await;
    let rec = Recorder::start().await;
    let ns = coupled_pair(&mut sc, &rec, json!({"database": "app"})).await;
    sc.restart().await;
    sc.wait_reconciled(Default::default(), true, true).await;
    // Let the new operator see every object at least once more before judging.
    let seen = sc.metrics();
    sc.patch::<Plug>(&ns, "app", json!({"metadata": {"labels": {"poke": "1"}}}))
        .await;
    sc.wait_reconciled(seen, true, true).await;
    assert!(hook_paths(&rec).is_empty(), "{:?}", hook_paths(&rec));
    let m = sc.metrics();
    assert_eq!(
        m.object_writes(),
        0,
        "a restarted operator rewrote state: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_change_fires_updated_once_per_coupled_plug() {
    let mut sc = Scenario::new("couple-socket-change").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": endpoint(&rec, "/socket"), "config": {"host": "a"}}),
    )
    .await;
    for i in 0..3 {
        sc.plug(
            &ns,
            &format!("app-{i}"),
            json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/plug")}),
        )
        .await;
    }
    for i in 0..3 {
        sc.wait_plug_ready(&ns, &format!("app-{i}")).await;
    }
    rec.clear();
    sc.patch::<Socket>(&ns, "db", json!({"spec": {"config": {"host": "b"}}}))
        .await;
    wait_calls(&rec, "/socket/updated", 3).await;
    // Poke every object and let the operator settle: nothing more may fire.
    let before = sc.metrics();
    sc.patch::<Socket>(&ns, "db", json!({"metadata": {"labels": {"poke": "1"}}}))
        .await;
    // A Socket's labels do not concern its Plugs (they are not woken by them): poke them too.
    for i in 0..3 {
        sc.patch::<Plug>(
            &ns,
            &format!("app-{i}"),
            json!({"metadata": {"labels": {"poke": "1"}}}),
        )
        .await;
    }
    sc.wait_reconciled(before, true, true).await;
    let socket_updated = calls_to(&rec, "/socket/updated");
    let plugs: BTreeSet<&str> = socket_updated
        .iter()
        .map(|b| b["plug"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(socket_updated.len(), 3, "{:?}", hook_paths(&rec));
    assert_eq!(plugs, BTreeSet::from(["app-0", "app-1", "app-2"]));
    assert_eq!(calls_to(&rec, "/plug/updated").len(), 3);
    assert!(
        socket_updated
            .iter()
            .all(|b| b["socketConfig"]["host"] == "b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_deletion_decouples_then_deletes_and_cleans_up() {
    let mut sc = Scenario::new("couple-delete-plug").await;
    let rec = Recorder::start().await;
    let ns = coupled_pair(&mut sc, &rec, json!({})).await;
    // A result, so that there is a result Secret to clean up (none is written without one).
    sc.patch::<Plug>(&ns, "app", json!({"spec": {"result": {"user": "app"}}}))
        .await;
    let secret_name = "app-plugboard-result";
    sc.wait::<Secret, _>(&ns, secret_name, "the result Secret", |s| s.is_some())
        .await;
    sc.wait::<Plug, _>(&ns, "app", "the Plug to name its result Secret", |p| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.result.as_ref())
            .is_some_and(|r| r.secret_name == secret_name)
    })
    .await;
    // The update's hooks ran before the Secret was written.
    rec.clear();
    sc.api::<Plug>(&ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "app", "the Plug to be gone", |p| p.is_none())
        .await;
    assert_eq!(
        hook_paths(&rec),
        ["/plug/decoupled", "/socket/decoupled", "/plug/deleted"]
    );
    assert!(
        sc.api::<Secret>(&ns)
            .get_opt(secret_name)
            .await
            .unwrap()
            .is_none()
    );
    sc.wait::<Socket, _>(&ns, "db", "the Socket to be empty", |s| {
        s.is_some_and(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.coupled_plugs.is_empty())
                && socket_condition(s, "Coupled").is_some_and(|c| c.reason == "SocketEmpty")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_deletion_decouples_every_plug_and_leaves_them_waiting() {
    let mut sc = Scenario::new("couple-delete-socket").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    for name in ["a", "b"] {
        sc.plug(
            &ns,
            name,
            json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/plug")}),
        )
        .await;
    }
    sc.wait_plug_ready(&ns, "a").await;
    sc.wait_plug_ready(&ns, "b").await;
    rec.clear();

    sc.api::<Socket>(&ns)
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    sc.wait::<Socket, _>(&ns, "db", "the Socket to be gone", |s| s.is_none())
        .await;
    let hooks = hook_paths(&rec);
    assert_eq!(
        hooks.last().map(String::as_str),
        Some("/socket/deleted"),
        "{hooks:?}"
    );
    assert_eq!(calls_to(&rec, "/plug/decoupled").len(), 2, "{hooks:?}");
    assert_eq!(calls_to(&rec, "/socket/decoupled").len(), 2, "{hooks:?}");
    for name in ["a", "b"] {
        let plug = sc.wait_plug_reason(&ns, name, "SocketNotCreated").await;
        assert!(plug.status.unwrap().coupled_socket.is_none());
    }

    // The Plugs were kept and couple again when a Socket comes back.
    rec.clear();
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.wait_plug_ready(&ns, "a").await;
    sc.wait_plug_ready(&ns, "b").await;
    assert_eq!(calls_to(&rec, "/socket/coupled").len(), 2);
    assert_eq!(hook_paths(&rec)[0], "/socket/created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_socket_decouples_then_couples() {
    let mut sc = Scenario::new("couple-switch").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "a", json!({"apparatus": endpoint(&rec, "/a")}))
        .await;
    sc.socket(&ns, "b", json!({"apparatus": endpoint(&rec, "/b")}))
        .await;
    sc.wait_socket_ready(&ns, "b").await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "a"}, "apparatus": endpoint(&rec, "/plug")}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    rec.clear();
    sc.patch::<Plug>(&ns, "app", json!({"spec": {"socket": {"name": "b"}}}))
        .await;
    let plug = sc
        .wait::<Plug, _>(&ns, "app", "the Plug coupled to b", |p| {
            p.is_some_and(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.coupled_socket.as_ref())
                    .is_some_and(|c| c.name == "b")
                    && plug_condition(p, "Ready").is_some_and(|c| c.status == "True")
            })
        })
        .await
        .unwrap();
    assert_eq!(
        hook_paths(&rec),
        [
            "/plug/decoupled",
            "/a/decoupled",
            "/plug/coupled",
            "/b/coupled"
        ]
    );
    assert_eq!(plug.status.unwrap().coupled_socket.unwrap().namespace, ns);
    sc.wait::<Socket, _>(&ns, "a", "Socket a to be empty", |s| {
        s.is_some_and(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.coupled_plug_count == 0)
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_plug_is_refused_admitted_by_selector_and_decoupled_when_label_goes() {
    let mut sc = Scenario::new("couple-xns").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    let other = sc.namespace("couple-xns-plugs").await;
    let other = other.name().to_owned();
    sc.socket(&ns, "db", json!({"apparatus": endpoint(&rec, "/socket")}))
        .await;
    sc.plug(
        &other,
        "app",
        json!({"socket": {"name": "db", "namespace": ns}}),
    )
    .await;

    let refused = sc.wait_plug_reason(&other, "app", "CouplingRefused").await;
    let message = &plug_condition(&refused, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("own namespace {ns} only")),
        "{message}"
    );
    assert_eq!(plug_condition(&refused, "Stalled").unwrap().status, "True");
    let event = sc.wait_warning(&other, "CouplingRefused", None).await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("spec.validation.allow")
    );

    let team = format!("team-{ns}");
    let namespaces: Api<Namespace> = Api::all(sc.client());
    namespaces
        .patch(
            &other,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": team}}})),
        )
        .await
        .unwrap();
    sc.patch::<Socket>(
        &ns,
        "db",
        json!({"spec": {"validation": {"allow": {"namespaceSelector": {"matchLabels": {"team": team}}}}}}),
    )
    .await;
    sc.wait_plug_ready(&other, "app").await;
    assert_eq!(calls_to(&rec, "/socket/coupled").len(), 1);

    namespaces
        .patch(
            &other,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .unwrap();
    let refused = sc.wait_plug_reason(&other, "app", "CouplingRefused").await;
    assert!(refused.status.unwrap().coupled_socket.is_none());
    assert_eq!(calls_to(&rec, "/socket/decoupled").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_requires_defaults_and_drops_unknown_keys() {
    let mut sc = Scenario::new("couple-interface").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({
            "apparatus": endpoint(&rec, "/socket"),
            "interface": {"config": {
                "plug": {"database": {"required": true}, "port": {"default": "5432"}},
                "socket": {"host": {"required": true}}
            }},
            "config": {"host": "db.example", "internal": "dropped"}
        }),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "config": {"database": "", "extra": "x"}}),
    )
    .await;
    let invalid = sc.wait_plug_reason(&ns, "app", "ConfigInvalid").await;
    let message = &plug_condition(&invalid, "Ready").unwrap().message;
    assert!(
        message.contains("plug config is missing required property: database"),
        "{message}"
    );
    sc.wait_warning(&ns, "ConfigInvalid", None).await;
    assert!(calls_to(&rec, "/socket/coupled").is_empty());

    sc.patch::<Plug>(&ns, "app", json!({"spec": {"config": {"database": "app"}}}))
        .await;
    sc.wait_plug_ready(&ns, "app").await;
    let coupled = calls_to(&rec, "/socket/coupled");
    assert_eq!(coupled.len(), 1);
    assert_eq!(
        coupled[0]["plugConfig"],
        json!({"database": "app", "port": "5432"})
    );
    assert_eq!(coupled[0]["socketConfig"], json!({"host": "db.example"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_read_as_the_service_account_and_results_may_arrive_later() {
    let mut sc = Scenario::new("couple-delayed").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("db-results".into()),
            ..Default::default()
        },
        data: Some([("other".to_owned(), "x".to_owned())].into()),
        ..Default::default()
    };
    sc.api::<ConfigMap>(&ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    sc.socket(
        &ns,
        "db",
        json!({
            "apparatus": endpoint(&rec, "/socket"),
            "interface": {"result": {"socket": {"url": {"required": true}}}},
            "resultConfigMapName": "db-results"
        }),
    )
    .await;
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;

    // The Socket's ServiceAccount may not read the ConfigMap yet.
    let denied = sc.wait_plug_reason(&ns, "app", "SourceUnavailable").await;
    let message = &plug_condition(&denied, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("ConfigMap {ns}/db-results")),
        "{message}"
    );
    assert!(
        message.contains(&format!("ServiceAccount {ns}/default")),
        "{message}"
    );
    assert!(message.contains("forbidden"), "{message}");

    grant_reads(&sc, &ns).await;
    let pending = sc.wait_plug_reason(&ns, "app", "ResultPending").await;
    let message = &plug_condition(&pending, "Ready").unwrap().message;
    assert!(
        message.contains("socket result is missing required property: url"),
        "{message}"
    );
    assert_eq!(
        plug_condition(&pending, "Reconciling").unwrap().status,
        "True"
    );
    assert_eq!(
        calls_to(&rec, "/socket/coupled").len(),
        1,
        "coupled hooks ran before results"
    );

    sc.api::<ConfigMap>(&ns)
        .patch(
            "db-results",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"url": "postgres://db"}})),
        )
        .await
        .unwrap();
    let plug = sc.wait_plug_ready(&ns, "app").await;
    let secret = sc
        .api::<Secret>(&ns)
        .get(&plug.status.unwrap().result.unwrap().secret_name)
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["socket.url"].0, b"postgres://db");
    assert_eq!(
        calls_to(&rec, "/socket/coupled").len(),
        1,
        "waiting never re-ran hooks"
    );
}

fn keys(body: &Value) -> BTreeSet<String> {
    body.as_object().unwrap().keys().cloned().collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_apparatus_receives_the_reference_wire_protocol() {
    let mut sc = Scenario::new("couple-wire").await;
    sc.start().await;
    let rec = Recorder::start().await;
    rec.reply(
        "/socket/config",
        Reply::Json(
            json!({"port": 5432, "tls": true, "big": 1000000, "ratio": 0.5,
                           "nested": {"b": 2, "a": "x"}, "list": [1, 2], "none": null}),
        ),
    );
    let ns = sc.ns.name().to_owned();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": endpoint(&rec, "/socket/"), "data": {"sd": "2"}}),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/plug"),
               "data": {"pd": "1"}, "config": {"database": "app"}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;

    let calls = rec.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.content_type.as_deref() == Some("application/json"))
    );
    let first = |path: &str| calls.iter().find(|c| c.path == path).unwrap().body.clone();

    let created = first("/plug/created");
    assert_eq!(keys(&created), set(&["version", "plug"]));
    assert_eq!(created["version"], json!("1"));
    assert_eq!(created["plug"]["metadata"]["name"], "app");
    assert_eq!(created["plug"]["spec"]["socket"]["name"], "db");
    let socket_created = first("/socket/created");
    assert_eq!(keys(&socket_created), set(&["version", "socket"]));

    // `config` carries version as a number, both objects and both data maps, no vars.
    let config = first("/plug/config");
    assert_eq!(
        keys(&config),
        set(&["version", "plug", "socket", "plugData", "socketData"])
    );
    assert_eq!(config["version"], json!(1));
    assert_eq!(config["plugData"], json!({"pd": "1"}));
    assert_eq!(config["socketData"], json!({"sd": "2"}));
    assert_eq!(config["socket"]["metadata"]["name"], "db");

    // The endpoint's trailing slash is stripped exactly once.
    let coupled = first("/socket/coupled");
    assert_eq!(
        keys(&coupled),
        set(&["version", "plug", "socket", "plugConfig", "socketConfig"])
    );
    assert_eq!(coupled["version"], json!("1"));
    assert_eq!(coupled["plugConfig"], json!({"database": "app"}));
    assert_eq!(
        coupled["socketConfig"],
        json!({"port": "5432", "tls": "true", "big": "1e+06", "ratio": "0.5",
               "nested": "map[a:x b:2]", "list": "[1 2]", "none": "<nil>"})
    );
    assert_eq!(first("/plug/coupled"), coupled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apparatus_failures_end_as_clear_conditions_and_recover() {
    let mut sc = Scenario::new("couple-failures").await;
    sc.start().await;
    let rec = Recorder::start().await;
    rec.reply("/p500/created", Reply::Status(500));
    rec.reply("/hang/created", Reply::Hang);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "p500",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/p500")}),
    )
    .await;
    sc.plug(
        &ns,
        "hang",
        json!({"socket": {"name": "db"}, "apparatus": endpoint(&rec, "/hang")}),
    )
    .await;
    sc.plug(
        &ns,
        "down",
        json!({"socket": {"name": "db"}, "apparatus": {"endpoint": format!("http://127.0.0.1:{closed}")}}),
    )
    .await;
    sc.plug(&ns, "healthy", json!({"socket": {"name": "db"}}))
        .await;

    let message = |p: &Plug| plug_condition(p, "Ready").unwrap().message.clone();
    let p500 = sc.wait_plug_reason(&ns, "p500", "ApparatusFailed").await;
    assert!(
        message(&p500).contains("created failed with 500 status from POST"),
        "{}",
        message(&p500)
    );
    assert!(
        message(&p500).contains("/p500/created"),
        "{}",
        message(&p500)
    );
    let hang = sc.wait_plug_reason(&ns, "hang", "ApparatusFailed").await;
    assert!(
        message(&hang).contains("/hang/created"),
        "{}",
        message(&hang)
    );
    let down = sc.wait_plug_reason(&ns, "down", "ApparatusFailed").await;
    assert!(
        message(&down).contains(&format!("127.0.0.1:{closed}")),
        "{}",
        message(&down)
    );
    for p in [&p500, &hang, &down] {
        assert_eq!(plug_condition(p, "Stalled").unwrap().status, "True");
    }
    sc.wait_warning(&ns, "ApparatusFailed", None).await;
    // The operator is unharmed and other couplings go on.
    sc.wait_plug_ready(&ns, "healthy").await;
    eprintln!(
        "apparatus failure messages:\n  500: {}\n  hang: {}\n  refused: {}",
        message(&p500),
        message(&hang),
        message(&down)
    );

    // Fixing the apparatus is enough: the retry picks it up.
    rec.reply("/p500/created", Reply::Json(json!({})));
    sc.wait_plug_ready(&ns, "p500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_decouple_keeps_the_finalizer_until_forced() {
    let mut sc = Scenario::new("couple-force").await;
    let rec = Recorder::start().await;
    let ns = coupled_pair(&mut sc, &rec, json!({})).await;
    rec.reply("/plug/decoupled", Reply::Status(500));
    sc.api::<Plug>(&ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let stuck = sc.wait_plug_reason(&ns, "app", "DecoupleFailed").await;
    assert!(stuck.metadata.deletion_timestamp.is_some());
    let message = &plug_condition(&stuck, "Ready").unwrap().message;
    assert!(
        message.contains("plugboard.dev/force-decouple=true"),
        "{message}"
    );
    assert!(
        message.contains("decoupled failed with 500 status"),
        "{message}"
    );
    sc.wait_warning(&ns, "DecoupleFailed", None).await;

    sc.patch::<Plug>(
        &ns,
        "app",
        json!({"metadata": {"annotations": {"plugboard.dev/force-decouple": "true"}}}),
    )
    .await;
    sc.wait::<Plug, _>(&ns, "app", "the forced Plug to be gone", |p| p.is_none())
        .await;
    // The Socket side still ran, and the Socket no longer lists the Plug.
    assert!(!calls_to(&rec, "/socket/decoupled").is_empty());
    sc.wait::<Socket, _>(&ns, "db", "the Socket to be empty", |s| {
        s.is_some_and(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.coupled_plug_count == 0)
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_decouple_is_removed_once_a_plug_has_switched_sockets() {
    let mut sc = Scenario::new("couple-force-clear").await;
    let rec = Recorder::start().await;
    let ns = coupled_pair(&mut sc, &rec, json!({})).await;
    sc.socket(&ns, "db2", json!({"apparatus": endpoint(&rec, "/socket2")}))
        .await;
    sc.wait_socket_ready(&ns, "db2").await;
    // The decouple from `db` fails, so only the force gets the Plug across.
    rec.reply("/plug/decoupled", Reply::Status(500));
    sc.patch::<Plug>(
        &ns,
        "app",
        json!({
            "metadata": {"annotations": {"plugboard.dev/force-decouple": "true"}},
            "spec": {"socket": {"name": "db2"}},
        }),
    )
    .await;
    let plug = sc
        .wait::<Plug, _>(
            &ns,
            "app",
            "the Plug to couple to db2 and lose its force annotation",
            |p| {
                p.is_some_and(|p| {
                    let coupled = p
                        .status
                        .as_ref()
                        .and_then(|s| s.coupled_socket.as_ref())
                        .is_some_and(|c| c.name == "db2");
                    coupled && !p.annotations().contains_key("plugboard.dev/force-decouple")
                })
            },
        )
        .await
        .unwrap();
    assert!(plug.metadata.deletion_timestamp.is_none());
    assert!(!calls_to(&rec, "/socket/decoupled").is_empty());
    sc.wait_warning(&ns, "DecoupleFailed", None).await;
    sc.wait_plug_ready(&ns, "app").await;

    // The force is spent: the next failing decouple (deleting the Plug) stops and says why.
    sc.api::<Plug>(&ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let stuck = sc.wait_plug_reason(&ns, "app", "DecoupleFailed").await;
    assert!(stuck.metadata.deletion_timestamp.is_some());
    assert!(
        !stuck
            .annotations()
            .contains_key("plugboard.dev/force-decouple")
    );
    sc.patch::<Plug>(
        &ns,
        "app",
        json!({"metadata": {"annotations": {"plugboard.dev/force-decouple": "true"}}}),
    )
    .await;
    sc.wait::<Plug, _>(&ns, "app", "the forced Plug to be gone", |p| p.is_none())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_stay_out_of_status_and_events() {
    const SECRET: &str = "s3cr3t-Value-42";
    let mut sc = Scenario::new("couple-secret").await;
    sc.start().await;
    let rec = Recorder::start().await;
    let ns = sc.ns.name().to_owned();
    grant_reads(&sc, &ns).await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("db-creds".into()),
            ..Default::default()
        },
        string_data: Some([("password".to_owned(), SECRET.to_owned())].into()),
        ..Default::default()
    };
    sc.api::<Secret>(&ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    sc.socket(
        &ns,
        "db",
        json!({
            "apparatus": endpoint(&rec, "/socket"),
            "interface": {"config": {"socket": {"password": {"required": true}, "user": {"required": true}}}},
            "configSecretName": "db-creds",
            "resultSecretName": "db-creds",
        }),
    )
    .await;
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;
    // A failure that involves the Secret's config names keys only.
    let invalid = sc.wait_plug_reason(&ns, "app", "ConfigInvalid").await;
    assert!(
        plug_condition(&invalid, "Ready")
            .unwrap()
            .message
            .contains("user")
    );
    sc.patch::<Socket>(&ns, "db", json!({"spec": {"config": {"user": "app"}}}))
        .await;
    let plug = sc.wait_plug_ready(&ns, "app").await;
    // The hook did receive the value: it is the apparatus's to use.
    assert_eq!(
        calls_to(&rec, "/socket/coupled")[0]["socketConfig"]["password"],
        SECRET
    );

    let socket = sc.api::<Socket>(&ns).get("db").await.unwrap();
    let events = sc
        .api::<Event>(&ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    for text in [
        serde_json::to_string(&plug).unwrap(),
        serde_json::to_string(&socket).unwrap(),
        serde_json::to_string(&events).unwrap(),
    ] {
        assert!(!text.contains(SECRET), "a Secret value leaked: {text}");
    }
}
