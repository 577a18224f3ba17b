//! Apparatus pods end to end: started when a hook needs one (as the owner's ServiceAccount),
//! awaited by watching, reached at their IP or through the API server's pod proxy, and deleted
//! when idle. There is no kubelet here: a [`FakeKubelet`] writes the pods' status, and the
//! apparatus process is a loopback [`Recorder`] whose port is the pod's `containerPort`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt as _};
use plugboard::apparatus::pod::{LAST_USED_ANNOTATION, OWNER_UID_LABEL, SPEC_HASH_ANNOTATION};
use plugboard::crd::Plug;
use plugboard_tests::kubelet::{FakeKubelet, PodFate};
use plugboard_tests::recorder::{Recorder, Reply};
use plugboard_tests::scenario::{DEADLINE, Scenario, plug_condition};
use plugboard_tests::wait_for;
use serde_json::{Value, json};

/// A Plug or Socket apparatus served by a pod whose container listens where `rec` does.
fn pod_apparatus(rec: &Recorder, endpoint: &str, idle_seconds: u32, image: &str) -> Value {
    json!({
        "endpoint": endpoint,
        "idleTimeout": idle_seconds,
        "containers": [{
            "name": "hooks",
            "image": image,
            "ports": [{"name": "container", "containerPort": rec.addr().port()}],
        }],
    })
}

const IMAGE: &str = "registry.example/hooks:1";

/// Lets ServiceAccount `service_account` create pods in `ns`: what a user grants the
/// ServiceAccount of a Plug or Socket with an apparatus pod.
async fn grant_pods(sc: &Scenario, ns: &str, service_account: &str) {
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["pods".into()]),
        verbs: vec!["create".into()],
        ..Default::default()
    };
    sc.grant(
        ns,
        service_account,
        &format!("{service_account}-apparatus-pods"),
        vec![rule],
    )
    .await;
}

/// The pods in `ns` that carry plugboard's apparatus label.
async fn apparatus_pods(sc: &Scenario, ns: &str) -> Vec<Pod> {
    sc.api::<Pod>(ns)
        .list(&ListParams::default().labels(OWNER_UID_LABEL))
        .await
        .unwrap()
        .items
}

/// The apparatus pods of the owner with `uid`.
async fn pods_of(sc: &Scenario, ns: &str, uid: &str) -> Vec<Pod> {
    sc.api::<Pod>(ns)
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .unwrap()
        .items
}

/// Waits until the owner with `uid` has no apparatus pod.
async fn wait_no_pods(sc: &Scenario, ns: &str, uid: &str, what: &str) {
    wait_for(what, DEADLINE, || async {
        let pods = pods_of(sc, ns, uid).await;
        if pods.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
            ))
        }
    })
    .await
    .unwrap();
}

fn hook_paths(rec: &Recorder) -> Vec<String> {
    rec.hook_calls().into_iter().map(|c| c.path).collect()
}

fn first_call(rec: &Recorder, path: &str) -> plugboard_tests::recorder::RecordedCall {
    rec.calls()
        .into_iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("no call to {path}: {:?}", hook_paths(rec)))
}

fn ready_message(plug: &Plug) -> String {
    plug_condition(plug, "Ready").unwrap().message.clone()
}

async fn uid_of(sc: &Scenario, ns: &str, name: &str) -> String {
    sc.api::<Plug>(ns).get(name).await.unwrap().uid().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_starts_on_first_hook_and_serves_hooks_in_order() {
    let mut sc = Scenario::new("pods-first").await;
    let ns = sc.ns.name().to_owned();
    let kubelet = FakeKubelet::start(sc.client(), &ns);
    grant_pods(&sc, &ns, "default").await;
    sc.start().await;
    let rec = Recorder::start().await;
    rec.reply("/socket/config", Reply::Json(json!({"port": 5432})));

    sc.socket(
        &ns,
        "db",
        json!({"apparatus": pod_apparatus(&rec, "/socket", 600, IMAGE),
               "config": {"host": "db.example"}}),
    )
    .await;
    let socket = sc.wait_socket_ready(&ns, "db").await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": pod_apparatus(&rec, "/plug", 600, IMAGE),
               "config": {"database": "app"}}),
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
    // The reference's bodies; the socket apparatus's `config` reply is merged into its config.
    let created = first_call(&rec, "/plug/created").body;
    assert_eq!(created["version"], json!("1"));
    assert_eq!(created["plug"]["metadata"]["name"], "app");
    assert!(created.get("socket").is_none(), "{created}");
    let config = first_call(&rec, "/plug/config").body;
    assert_eq!(config["version"], json!(1));
    assert_eq!(config["socket"]["metadata"]["name"], "db");
    let coupled = first_call(&rec, "/socket/coupled").body;
    assert_eq!(coupled["plugConfig"], json!({"database": "app"}));
    assert_eq!(
        coupled["socketConfig"],
        json!({"host": "db.example", "port": "5432"})
    );
    assert!(
        rec.calls().iter().all(|c| c.forwarded_for.is_none()),
        "reached directly, not through a proxy"
    );

    // One pod per owner, made as described, each ready before its first call.
    let pods = apparatus_pods(&sc, &ns).await;
    assert_eq!(pods.len(), 2, "{pods:#?}");
    for (owner_uid, kind, prefix) in [
        (socket.uid().unwrap(), "Socket", "/socket"),
        (plug.uid().unwrap(), "Plug", "/plug"),
    ] {
        let pod = pods
            .iter()
            .find(|p| p.labels().get(OWNER_UID_LABEL) == Some(&owner_uid))
            .unwrap_or_else(|| panic!("no pod for the {kind}"));
        assert_eq!(pod.labels()["app.kubernetes.io/managed-by"], "plugboard");
        assert!(pod.annotations().contains_key(SPEC_HASH_ANNOTATION));
        assert!(pod.annotations().contains_key(LAST_USED_ANNOTATION));
        let reference = &pod.owner_references()[0];
        assert_eq!(
            (reference.kind.as_str(), reference.uid.as_str()),
            (kind, owner_uid.as_str())
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert_eq!(
            spec.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        assert_eq!(
            spec.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .allow_privilege_escalation,
            Some(false)
        );
        assert!(spec.affinity.is_none(), "no hard-coded architecture");
        let seen = kubelet
            .pods()
            .into_iter()
            .find(|p| p.name == pod.name_any())
            .unwrap();
        let ready = seen.ready.expect("the kubelet made it ready");
        let first = rec
            .calls()
            .into_iter()
            .find(|c| c.path.starts_with(prefix))
            .unwrap();
        assert!(
            first.received >= ready,
            "{kind} apparatus called before its pod was ready"
        );
        eprintln!(
            "{kind} apparatus pod: kubelet saw it → wrote Ready {:?}; Ready → first call received {:?} \
             (created-to-first-call on loopback {:?})",
            ready - seen.seen,
            first.received - ready,
            first.received - seen.seen,
        );
    }

    // Concurrent couplings share the Socket's one pod.
    let socket_pod = pods_of(&sc, &ns, &socket.uid().unwrap()).await[0].uid();
    for name in ["b1", "b2", "b3"] {
        sc.plug(&ns, name, json!({"socket": {"name": "db"}})).await;
    }
    for name in ["b1", "b2", "b3"] {
        sc.wait_plug_ready(&ns, name).await;
    }
    let coupled = rec
        .hook_calls()
        .iter()
        .filter(|c| c.path == "/socket/coupled")
        .count();
    assert_eq!(coupled, 4);
    let socket_pods = pods_of(&sc, &ns, &socket.uid().unwrap()).await;
    assert_eq!(socket_pods.len(), 1);
    assert_eq!(socket_pods[0].uid(), socket_pod);
    assert_eq!(kubelet.pods().len(), 2, "{:?}", kubelet.pods());
    assert_eq!(sc.metrics().apparatus_pods_created, 2);
    assert!(kubelet.errors().is_empty(), "{:?}", kubelet.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure_ends_as_apparatus_not_ready_and_a_new_image_replaces_the_pod() {
    let mut sc = Scenario::new("pods-pull").await;
    let ns = sc.ns.name().to_owned();
    let kubelet = FakeKubelet::start(sc.client(), &ns);
    kubelet.set_fate(PodFate::ImagePullFailure);
    grant_pods(&sc, &ns, "default").await;
    sc.start().await;
    let rec = Recorder::start().await;
    sc.socket(&ns, "db", json!({})).await;
    let missing = "registry.example/missing:1";
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": pod_apparatus(&rec, "/hooks", 600, missing)}),
    )
    .await;
    let plug = sc.wait_plug_reason(&ns, "app", "ApparatusNotReady").await;
    let message = ready_message(&plug);
    let pod = kubelet.pods()[0].name.clone();
    assert!(
        message.contains(&format!(
            "apparatus pod {ns}/{pod} is not ready: ErrImagePull"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("failed to pull and unpack image \"{missing}\"")),
        "{message}"
    );
    assert_eq!(plug_condition(&plug, "Stalled").unwrap().status, "True");
    eprintln!("image pull failure: {message}");
    let events: Api<Event> = sc.api(&ns);
    wait_for("a Warning Event ApparatusNotReady", DEADLINE, || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ApparatusNotReady"))
            .ok_or_else(|| "none yet".to_owned())
    })
    .await
    .unwrap();
    // Retries look at the same pod again; they start no new one and call nothing.
    let before = sc.metrics();
    sc.wait_reconciled(before, true, false).await;
    sc.wait_reconciled(sc.metrics(), true, false).await;
    assert_eq!(kubelet.pods().len(), 1, "{:?}", kubelet.pods());
    assert!(rec.calls().is_empty(), "{:?}", rec.calls());

    // A new image is a new pod; the old one goes.
    kubelet.set_fate(PodFate::Ready);
    sc.patch::<Plug>(
        &ns,
        "app",
        json!({"spec": {"apparatus": pod_apparatus(&rec, "/hooks", 600, IMAGE)}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    assert_eq!(hook_paths(&rec), ["/hooks/created", "/hooks/coupled"]);
    let uid = plug.uid().unwrap();
    wait_for("only the new pod to remain", DEADLINE, || async {
        let names: Vec<String> = pods_of(&sc, &ns, &uid)
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        if names.len() == 1 && names[0] != pod {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pod_is_deleted_and_the_next_hook_starts_a_new_one() {
    let mut sc = Scenario::new("pods-idle").await;
    let ns = sc.ns.name().to_owned();
    let kubelet = FakeKubelet::start(sc.client(), &ns);
    grant_pods(&sc, &ns, "default").await;
    sc.start().await;
    let rec = Recorder::start().await;
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": pod_apparatus(&rec, "/hooks", 1, IMAGE),
               "config": {"database": "v1"}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    let uid = uid_of(&sc, &ns, "app").await;
    wait_no_pods(&sc, &ns, &uid, "the idle apparatus pod to be deleted").await;
    let first = kubelet.pods()[0].clone();
    let last_call = rec.calls().last().unwrap().received;
    let gone = wait_for("the kubelet to see the pod go", DEADLINE, || async {
        kubelet.pods()[0].gone.ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap();
    assert!(
        gone - last_call >= Duration::from_secs(1),
        "deleted {:?} after its last call, before idleTimeout",
        gone - last_call
    );
    eprintln!(
        "idle pod deleted {:?} after its last call (idleTimeout 1 s)",
        gone - last_call
    );

    // A change fires `updated`, which needs the apparatus again: a new pod.
    sc.patch::<Plug>(&ns, "app", json!({"spec": {"config": {"database": "v2"}}}))
        .await;
    wait_for("the updated hook", DEADLINE, || async {
        if hook_paths(&rec).contains(&"/hooks/updated".to_owned()) {
            Ok(())
        } else {
            Err(format!("{:?}", hook_paths(&rec)))
        }
    })
    .await
    .unwrap();
    let pods = kubelet.pods();
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert_ne!(pods[1].uid, first.uid);
    assert!(first_call(&rec, "/hooks/updated").received >= pods[1].ready.unwrap());
    assert_eq!(sc.metrics().apparatus_pods_created, 2);
    assert!(sc.metrics().apparatus_pods_deleted >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_deletion_survives_an_operator_restart() {
    let mut sc = Scenario::new("pods-restart").await;
    let ns = sc.ns.name().to_owned();
    let kubelet = FakeKubelet::start(sc.client(), &ns);
    grant_pods(&sc, &ns, "default").await;
    sc.start().await;
    let rec = Recorder::start().await;
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        // The idle timeout leaves the old operator ample time to stop first, even on a loaded
        // machine: the deletion under test is the new operator's.
        json!({"socket": {"name": "db"}, "apparatus": pod_apparatus(&rec, "/hooks", 20, IMAGE)}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    let uid = uid_of(&sc, &ns, "app").await;
    sc.restart().await;
    let pods = pods_of(&sc, &ns, &uid).await;
    assert_eq!(pods.len(), 1, "the pod outlived the old operator");
    assert!(
        pods[0].metadata.deletion_timestamp.is_none(),
        "the old operator deleted the pod before it stopped: {:?}",
        pods[0].metadata
    );
    let pod_uid = pods[0].uid();

    // The new operator knows of the pod only from the pod itself.
    wait_no_pods(&sc, &ns, &uid, "the new operator to delete the idle pod").await;
    let metrics = sc.metrics();
    assert!(metrics.apparatus_pods_deleted >= 1, "{metrics:?}");
    assert_eq!(
        metrics.apparatus_pods_created, 0,
        "the new operator reused the pod"
    );
    let seen = kubelet.pods();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(Some(seen[0].uid.clone()), pod_uid);
    let last_call = rec.calls().last().unwrap().received;
    let gone = wait_for("the kubelet to see the pod go", DEADLINE, || async {
        kubelet.pods()[0].gone.ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap();
    assert!(
        gone - last_call >= Duration::from_secs(4),
        "{:?}",
        gone - last_call
    );
}

/// Creates a pod as an admin, retrying while the namespace's `default` ServiceAccount (which
/// pods need) does not exist yet.
async fn foreign_pod(sc: &Scenario, ns: &str, pod: Value) -> Pod {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let api = sc.api::<Pod>(ns);
    wait_for("a foreign pod to be created", DEADLINE, || async {
        api.create(&PostParams::default(), &pod)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_plugboard_did_not_create_are_never_touched() {
    let mut sc = Scenario::new("pods-foreign").await;
    let ns = sc.ns.name().to_owned();
    let _kubelet = FakeKubelet::start(sc.client(), &ns);
    grant_pods(&sc, &ns, "default").await;
    let container = json!([{"name": "c", "image": "registry.example/other:1"}]);
    // Named like the Plug (what the reference's idle timer deleted, BUG-8) and like the
    // reference's apparatus pod.
    let mut foreign = Vec::new();
    for name in ["app", "app-apparatus"] {
        foreign.push(
            foreign_pod(
                &sc,
                &ns,
                json!({"metadata": {"name": name, "labels": {"app": "mine"}},
                       "spec": {"containers": container}}),
            )
            .await,
        );
    }
    sc.start().await;
    let rec = Recorder::start().await;
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": pod_apparatus(&rec, "/hooks", 1, IMAGE)}),
    )
    .await;
    let uid = uid_of(&sc, &ns, "app").await;
    // Labelled as the Plug's apparatus pod, but not created by plugboard (no ownerReference).
    let impostor = foreign_pod(
        &sc,
        &ns,
        json!({"metadata": {"name": "impostor", "labels": {
                   OWNER_UID_LABEL: uid, "app.kubernetes.io/managed-by": "plugboard"}},
               "spec": {"containers": container}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    wait_for(
        "plugboard's own pod to go idle and be deleted",
        DEADLINE,
        || async {
            let left: Vec<String> = pods_of(&sc, &ns, &uid)
                .await
                .iter()
                .map(|p| p.name_any())
                .collect();
            if left == ["impostor"] {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await
    .unwrap();
    // Deleting the Plug runs its deleted hook (in a new pod) and deletes that pod.
    sc.api::<Plug>(&ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    sc.wait::<Plug, _>(&ns, "app", "the Plug to be gone", |p| p.is_none())
        .await;
    assert!(hook_paths(&rec).contains(&"/hooks/deleted".to_owned()));
    let left: Vec<String> = pods_of(&sc, &ns, &uid)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(left, ["impostor"]);

    let api = sc.api::<Pod>(&ns);
    for before in &foreign {
        let now = api.get(&before.name_any()).await.unwrap();
        assert_eq!(now.uid(), before.uid());
        assert_eq!(
            now.resource_version(),
            before.resource_version(),
            "pod {} was changed",
            before.name_any()
        );
    }
    let now = api.get("impostor").await.unwrap();
    assert_eq!(now.uid(), impostor.uid());
    assert!(
        !now.annotations().contains_key(LAST_USED_ANNOTATION),
        "plugboard used a pod it did not create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_whose_service_account_may_not_create_pods_is_forbidden_until_granted() {
    let mut sc = Scenario::new("pods-forbidden").await;
    let ns = sc.ns.name().to_owned();
    let _kubelet = FakeKubelet::start(sc.client(), &ns);
    // A ServiceAccount that opted in but may not create pods.
    sc.opt_in(&ns, "hooks").await;
    sc.start().await;
    let rec = Recorder::start().await;
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "serviceAccountName": "hooks",
               "apparatus": pod_apparatus(&rec, "/hooks", 600, IMAGE)}),
    )
    .await;
    let plug = sc.wait_plug_reason(&ns, "app", "ApparatusForbidden").await;
    let message = ready_message(&plug);
    assert!(
        message.contains(&format!(
            "ServiceAccount {ns}/hooks may not create the apparatus pod of Plug {ns}/app"
        )),
        "{message}"
    );
    assert!(message.contains("grant it `create` on pods"), "{message}");
    assert!(
        message.contains("cannot create resource \"pods\""),
        "{message}"
    );
    assert_eq!(plug_condition(&plug, "Stalled").unwrap().status, "True");
    assert!(apparatus_pods(&sc, &ns).await.is_empty());
    eprintln!("forbidden: {message}");

    grant_pods(&sc, &ns, "hooks").await;
    sc.wait_plug_ready(&ns, "app").await;
    assert_eq!(hook_paths(&rec), ["/hooks/created", "/hooks/coupled"]);
    let pods = apparatus_pods(&sc, &ns).await;
    assert_eq!(
        pods[0]
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("hooks")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_finishes_though_no_apparatus_pod_can_start_in_it() {
    let mut sc = Scenario::new("pods-nsdel").await;
    // The tenant lives in a namespace of its own: the operator's ServiceAccount lives in the
    // scenario's, which must outlive this deletion.
    let tenant = sc.namespace("pods-nsdel-tenant").await;
    let ns = tenant.name().to_owned();
    let _kubelet = FakeKubelet::start(sc.client(), &ns);
    grant_pods(&sc, &ns, "default").await;
    sc.start().await;
    let rec = Recorder::start().await;
    sc.socket(&ns, "db", json!({})).await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": pod_apparatus(&rec, "/hooks", 1, IMAGE)}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    let uid = uid_of(&sc, &ns, "app").await;
    wait_no_pods(&sc, &ns, &uid, "the idle apparatus pod to be deleted").await;

    // The Plug's decoupled and deleted hooks would need a pod, which a namespace being deleted
    // refuses: they are skipped rather than holding the namespace forever.
    let namespaces: Api<Namespace> = Api::all(sc.client());
    let started = Instant::now();
    tenant.delete().await.unwrap();
    wait_for(&format!("namespace {ns} to be gone"), DEADLINE, || async {
        match namespaces.get_opt(&ns).await {
            Ok(None) => Ok(()),
            Ok(Some(n)) => Err(format!("{:?}", n.status)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap();
    eprintln!("namespace deleted in {:?}", started.elapsed());
    assert_eq!(hook_paths(&rec), ["/hooks/created", "/hooks/coupled"]);
}

/// An address of this machine that is not loopback: the API server refuses to proxy to
/// loopback pod IPs (`address not allowed`), so the proxied pod must be reported at one.
/// `PLUGBOARD_TEST_POD_IP` overrides it.
fn non_loopback_ip() -> IpAddr {
    if let Some(ip) = std::env::var("PLUGBOARD_TEST_POD_IP")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return ip
            .parse()
            .unwrap_or_else(|e| panic!("PLUGBOARD_TEST_POD_IP={ip} is not an IP address: {e}"));
    }
    // Connecting a UDP socket sends nothing; it only picks the source address of the route.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let ip = socket
        .connect("203.0.113.1:9")
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .unwrap_or_else(|e| {
            panic!(
                "the API server proxy test needs a non-loopback IPv4 address on this machine \
                 (kube-apiserver refuses to proxy to loopback pod IPs) and found none: {e}; \
                 set PLUGBOARD_TEST_POD_IP"
            )
        });
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address found (got {ip}); set PLUGBOARD_TEST_POD_IP"
    );
    ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_proxy_reaches_the_pod() {
    let ip = non_loopback_ip();
    let mut sc = Scenario::new("pods-proxy").await;
    sc.options.pods.via_api_server = true;
    let ns = sc.ns.name().to_owned();
    let kubelet = FakeKubelet::start_at(sc.client(), &ns, ip);
    grant_pods(&sc, &ns, "default").await;
    sc.start().await;
    let rec = Recorder::start_on(ip).await;
    rec.reply("/hooks/config", Reply::Json(json!({"region": "eu"})));
    sc.socket(&ns, "db", json!({})).await;
    let started = Instant::now();
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"}, "apparatus": pod_apparatus(&rec, "/hooks", 600, IMAGE)}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    assert_eq!(hook_paths(&rec), ["/hooks/created", "/hooks/coupled"]);
    // Every call came through the API server's proxy.
    for call in rec.calls() {
        assert!(
            call.forwarded_for.is_some(),
            "{} reached the pod directly",
            call.path
        );
    }
    let coupled = first_call(&rec, "/hooks/coupled").body;
    assert_eq!(coupled["plugConfig"], json!({"region": "eu"}));
    let seen = &kubelet.pods()[0];
    eprintln!(
        "through the API server proxy: Plug created → Ready in {:?}; pod Ready → first call {:?}",
        started.elapsed(),
        first_call(&rec, "/hooks/created").received - seen.ready.unwrap()
    );
}
