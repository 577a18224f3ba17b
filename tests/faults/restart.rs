//! The API server and etcd restarted in the middle of couplings, and the OCI registry restarted
//! during pulls: the operator (in this process) recovers by itself, without a restart of its
//! own, and nothing is lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::recorder::Recorder;
use plugboard_tests::scenario::{Scenario, TEST_LABEL, plug_condition};
use plugboard_tests::wait_for;
use rand::RngExt as _;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::{env_number, seeded_rng};

/// How many Plugs couple across the outages (environment variable, default 30).
const PLUGS_ENV: &str = "PLUGBOARD_FAULT_API_PLUGS";
/// Where in the operator's work an outage starts, in milliseconds after the phase's changes.
const OUTAGE_WINDOW_MS: std::ops::Range<u64> = 50..1500;
/// How many WASM Sockets pull across registry restarts (environment variable, default 6).
const REGISTRY_SOCKETS_ENV: &str = "PLUGBOARD_FAULT_REGISTRY_SOCKETS";
/// Registry outages per run.
const REGISTRY_OUTAGES: usize = 2;
/// How long a phase may take to converge after the API server is back. Generous on purpose (a
/// loaded machine): a watch opened while the API server starts can stay silent, and Plug changes
/// made meanwhile are noticed when that watch ends — the operator's watches end after 30 s (35 s
/// for a silent one), no longer kube-runtime's default 290 s. The figures print the actual time.
const CONVERGE: Duration = Duration::from_secs(330);

/// Retries `op` until the API server answers it (it may be down for a while).
async fn retrying<T, F, Fut>(what: &str, op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait_for(what, CONVERGE, op)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn object(run: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": kind,
           "metadata": {"name": name, "labels": {TEST_LABEL: run}}, "spec": spec})
}

/// Creates a Plug, retrying through outages; one created before an outage ate the answer counts.
async fn create_plug(plugs: &Api<Plug>, run: &str, name: &str, spec: Value) {
    let plug: Plug = serde_json::from_value(object(run, "Plug", name, spec)).unwrap();
    retrying(&format!("Plug {name} to be created"), || async {
        match plugs.create(&PostParams::default(), &plug).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// Restarts the API server and etcd after a random pause; returns the outage's length.
async fn outage(sc: &Scenario, rng: &mut StdRng, phase: &str) -> Option<Duration> {
    let pause = Duration::from_millis(rng.random_range(OUTAGE_WINDOW_MS));
    // The schedule of the fault, not synchronisation.
    tokio::time::sleep(pause).await;
    let took = sc.env.restart_api_server().await.unwrap();
    if let Some(took) = took {
        eprintln!(
            "  {phase}: API server and etcd restarted {} ms in, down {:.1} s",
            pause.as_millis(),
            took.as_secs_f64()
        );
    }
    took
}

/// Waits until the Plugs named are exactly those that exist, each Ready at its generation.
async fn wait_ready(plugs: &Api<Plug>, names: &BTreeSet<String>) {
    retrying("every Plug to be Ready", || async {
        let list = plugs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let have: BTreeSet<String> = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if &have != names {
            return Err(format!("{} Plugs, want {}", have.len(), names.len()));
        }
        let not_ready = list
            .items
            .iter()
            .filter(|p| {
                !plug_condition(p, "Ready").is_some_and(|c| {
                    c.status == "True" && c.observed_generation == p.metadata.generation
                })
            })
            .count();
        if not_ready == 0 {
            Ok(())
        } else {
            Err(format!("{not_ready} not Ready"))
        }
    })
    .await;
}

/// The Plug names in the recorder's calls to `path`.
fn hooked(rec: &Recorder, path: &str) -> BTreeSet<String> {
    rec.hook_calls()
        .into_iter()
        .filter(|c| c.path == path)
        .filter_map(|c| {
            c.body["plug"]["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_and_etcd_restarts_mid_coupling_lose_nothing() {
    let _serial = crate::SERIAL.lock().await;
    let n = env_number(PLUGS_ENV, 30);
    let mut rng = seeded_rng("api_server_and_etcd_restarts_mid_coupling_lose_nothing");
    let started = Instant::now();
    let mut sc = Scenario::new("faults-api").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let run = sc.run.clone();
    let rec = Recorder::start().await;
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    sc.wait_socket_ready(&ns, "db").await;
    let plugs = sc.api::<Plug>(&ns);
    let names: BTreeSet<String> = (0..n).map(|i| format!("app-{i:03}")).collect();
    let spec = |v: &str| {
        json!({"socket": {"name": "db"},
               "apparatus": {"endpoint": format!("{}/plug", rec.url())},
               "config": {"v": v}})
    };
    let mut outages = Vec::new();
    // From the API server being back to every Plug converged, per phase.
    let mut recovery = Vec::new();

    // 1. Couple across an outage.
    let create = futures::stream::iter(&names)
        .map(|name| create_plug(&plugs, &run, name, spec("1")))
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let ((), took) = tokio::join!(
        async {
            create.await;
        },
        outage(&sc, &mut rng, "couple")
    );
    outages.extend(took);
    let back = Instant::now();
    wait_ready(&plugs, &names).await;
    recovery.push(back.elapsed());
    let coupled = hooked(&rec, "/socket/coupled");
    assert_eq!(coupled, names, "every Plug's coupled hook ran");

    // 2. Update across an outage.
    let update = futures::stream::iter(&names)
        .map(|name| {
            let plugs = plugs.clone();
            async move {
                retrying(&format!("Plug {name} to be updated"), || async {
                    plugs
                        .patch(
                            name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"config": {"v": "2"}}})),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let (_, took) = tokio::join!(update, outage(&sc, &mut rng, "update"));
    outages.extend(took);
    let back = Instant::now();
    wait_ready(&plugs, &names).await;
    recovery.push(back.elapsed());
    let delivered: BTreeSet<String> = rec
        .hook_calls()
        .into_iter()
        .filter(|c| c.path == "/socket/updated" || c.path == "/socket/coupled")
        .filter(|c| c.body["plugConfig"]["v"] == json!("2"))
        .filter_map(|c| {
            c.body["plug"]["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        delivered, names,
        "every Plug's new config reached the apparatus"
    );

    // 3. Delete across an outage: every Plug decouples and goes.
    let delete = futures::stream::iter(&names)
        .map(|name| {
            let plugs = plugs.clone();
            async move {
                retrying(&format!("Plug {name} to be deleted"), || async {
                    match plugs.delete(name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                })
                .await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let (_, took) = tokio::join!(delete, outage(&sc, &mut rng, "decouple"));
    outages.extend(took);
    let back = Instant::now();
    wait_ready(&plugs, &BTreeSet::new()).await;
    recovery.push(back.elapsed());
    assert_eq!(
        hooked(&rec, "/socket/decoupled"),
        names,
        "every Plug's decoupled hook ran"
    );
    assert_eq!(
        hooked(&rec, "/plug/deleted"),
        names,
        "every Plug's deleted hook ran"
    );
    retrying("the Socket to be deleted", || async {
        sc.api::<Socket>(&ns)
            .delete("db", &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let sockets = sc.api::<Socket>(&ns);
    retrying("the Socket to be gone", || async {
        match sockets.get_opt("db").await {
            Ok(None) => Ok(()),
            Ok(Some(s)) => Err(format!(
                "still there: {:?}",
                s.status.map(|s| s.conditions).unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;

    let calls = rec.hook_calls();
    let count = |path: &str| calls.iter().filter(|c| c.path == path).count();
    let m = sc.metrics();
    eprintln!(
        "FIGURES api-restart: {n} Plugs coupled, updated and deleted across {} API server + etcd \
         restarts (down {:?} s, converged {:?} s after it was back), {:.1} s; socket hooks coupled {}, updated {}, decoupled {}; \
         {} plug reconciles, operator restarts 0; lost: 0",
        outages.len(),
        outages
            .iter()
            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        recovery
            .iter()
            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        started.elapsed().as_secs_f64(),
        count("/socket/coupled"),
        count("/socket/updated"),
        count("/socket/decoupled"),
        m.plug_reconciles,
    );
    // The operator recovered on its own: it is the same one that started.
    sc.ns.clone().delete().await.ok();
}

/// The bytes of plugin `name`'s component (built or found in the cache).
pub(crate) async fn component(name: &str) -> Vec<u8> {
    let name = name.to_owned();
    let path = tokio::task::spawn_blocking(move || plugboard_tests::plugins::component(&name))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", plugboard_tests::error_chain(&e)));
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_restarts_during_pulls_lose_nothing() {
    use plugboard::oci::{self, RegistryAuth};
    use plugboard_tests::registry::Registry;
    use sha2::{Digest as _, Sha256};

    let _serial = crate::SERIAL.lock().await;
    let k = env_number(REGISTRY_SOCKETS_ENV, 6);
    let mut rng = seeded_rng("registry_restarts_during_pulls_lose_nothing");
    let started = Instant::now();
    let mut registry = Registry::start().await.unwrap();
    let bytes = component("recorder").await;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let mut images = Vec::new();
    for i in 0..k {
        let image = registry.image(&format!("plugboard/hooks-{i}:1"));
        oci::push_component(
            &image,
            &bytes,
            &RegistryAuth::Anonymous,
            &registry.plain_http_hosts(),
        )
        .await
        .unwrap_or_else(|e| panic!("push {image}: {e}"));
        images.push(image);
    }
    let mut sc = Scenario::new("faults-registry").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    let rec = Recorder::start().await;
    let pulls_before = registry.count_requests("/manifests/");

    // Each Socket pulls its component while the registry goes down and comes back, twice.
    let create = async {
        for (i, image) in images.iter().enumerate() {
            sc.socket(
                &ns,
                &format!("db-{i}"),
                json!({"apparatus": {"wasm": {"image": image}}}),
            )
            .await;
            sc.plug(
                &ns,
                &format!("app-{i}"),
                json!({"socket": {"name": format!("db-{i}")},
                       "apparatus": {"endpoint": format!("{}/plug", rec.url())}}),
            )
            .await;
        }
    };
    let mut downs = Vec::new();
    let chaos = async {
        for _ in 0..REGISTRY_OUTAGES {
            // The schedule of the fault (when it starts, how long it lasts), not synchronisation.
            tokio::time::sleep(Duration::from_millis(rng.random_range(OUTAGE_WINDOW_MS))).await;
            registry.stop_server();
            let down = Duration::from_millis(rng.random_range(500..2500));
            tokio::time::sleep(down).await;
            registry.start_server().await.unwrap();
            eprintln!("  registry down {} ms, restarted", down.as_millis());
            downs.push(down);
        }
    };
    tokio::join!(create, chaos);
    for i in 0..k {
        let plug = sc.wait_plug_ready(&ns, &format!("app-{i}")).await;
        assert!(plug.status.is_some());
        let socket = sc.wait_socket_ready(&ns, &format!("db-{i}")).await;
        let apparatus = socket.status.and_then(|s| s.apparatus).unwrap();
        assert_eq!(
            apparatus.digest, digest,
            "Socket db-{i} runs the pushed component"
        );
    }
    let coupled: BTreeSet<String> = hooked(&rec, "/plug/coupled");
    let want: BTreeSet<String> = (0..k).map(|i| format!("app-{i}")).collect();
    assert_eq!(
        coupled, want,
        "every Plug coupled with its Socket's component"
    );
    eprintln!(
        "FIGURES registry-restart: {k} WASM Sockets pulled and coupled across {} registry \
         restarts (down {:?} ms), {} manifest requests, {:.1} s; operator restarts 0; lost: 0",
        downs.len(),
        downs.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        registry.count_requests("/manifests/") - pulls_before,
        started.elapsed().as_secs_f64(),
    );
    sc.ns.clone().delete().await.ok();
}
