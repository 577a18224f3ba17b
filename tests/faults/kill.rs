//! The operator, a separate `plugboard run` process, is SIGKILLed at random points while many
//! Plugs couple, update and decouple, and started again each time. Afterwards every coupling
//! has converged, every transition's hook ran at least once, the recorded hooks agree with the
//! objects' state, no templated object outlives its Plug and every finalizer was released.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::operator::{OperatorProcess, operator_kubeconfig};
use plugboard_tests::recorder::{RecordedCall, Recorder};
use plugboard_tests::scenario::{DEADLINE, Scenario, plug_condition};
use plugboard_tests::wait_for;
use rand::RngExt as _;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::{env_number, seeded_rng};

/// How many Plugs couple (environment variable; default [`DEFAULT_PLUGS`]).
const PLUGS_ENV: &str = "PLUGBOARD_FAULT_PLUGS";
/// 100 Plugs take about a minute here, kills and restarts included.
const DEFAULT_PLUGS: usize = 100;
/// Multiplies the SIGKILLs per phase (environment variable; default 1: two while coupling, one
/// in each other phase, five in all).
const KILLS_ENV: &str = "PLUGBOARD_FAULT_KILLS";
/// A finalizer the test puts on Plugs it deletes, so that the garbage collector cannot delete
/// their objects: whatever is gone while it holds, plugboard deleted.
const HOLD: &str = "plugboard.dev/test-hold";
/// Where in the operator's work a kill lands: this long after the phase's changes start (or
/// after the previous restart), in milliseconds.
const KILL_WINDOW_MS: std::ops::Range<u64> = 100..3000;
/// How long a phase may take to converge after its last restart.
const CONVERGE: Duration = Duration::from_secs(240);

/// Kills the operator `kills` times, each after a random pause, starting it again right away.
async fn chaos(op: &mut OperatorProcess, rng: &mut StdRng, kills: usize, phase: &str) {
    for _ in 0..kills {
        let pause = Duration::from_millis(rng.random_range(KILL_WINDOW_MS));
        // The schedule of the fault, not synchronisation.
        tokio::time::sleep(pause).await;
        op.kill().await;
        eprintln!(
            "  {phase}: SIGKILL {} after {} ms, restarted",
            op.kills,
            pause.as_millis()
        );
        op.start();
    }
}

fn plug_spec(rec: &Recorder, v: &str) -> Value {
    json!({
        "socket": {"name": "db"},
        "apparatus": {"endpoint": format!("{}/plug", rec.url())},
        "config": {"v": v},
        "resources": [{
            "when": ["coupled", "updated"],
            "template": {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "cm-{{ plug.metadata.name }}"},
                         "data": {"v": "{{ plugConfig.v }}"}}
        }]
    })
}

/// The hook calls to `path`, by Plug name.
fn calls_by_plug(calls: &[RecordedCall], path: &str) -> BTreeMap<String, Vec<RecordedCall>> {
    let mut by = BTreeMap::<String, Vec<RecordedCall>>::new();
    for call in calls.iter().filter(|c| c.path == path) {
        let name = call.body["plug"]["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} names no Plug: {}", call.body))
            .to_owned();
        by.entry(name).or_default().push(call.clone());
    }
    by
}

/// Waits until exactly the Plugs in `expected` exist, each Ready at its current generation with
/// its ConfigMap holding the expected `v`; every other test ConfigMap is gone.
async fn wait_converged(sc: &Scenario, ns: &str, expected: &BTreeMap<String, String>) {
    let plugs = sc.api::<Plug>(ns);
    let cms = sc.api::<ConfigMap>(ns);
    let label = ListParams::default().labels("app.kubernetes.io/managed-by=plugboard");
    wait_for("every coupling to converge", CONVERGE, || async {
        let list = plugs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut not_ready = Vec::new();
        for plug in &list.items {
            let name = plug.metadata.name.clone().unwrap_or_default();
            if !expected.contains_key(&name) {
                return Err(format!("unexpected Plug {name} still exists"));
            }
            let ready = plug_condition(plug, "Ready").is_some_and(|c| {
                c.status == "True" && c.observed_generation == plug.metadata.generation
            });
            if !ready {
                not_ready.push(name);
            }
        }
        if list.items.len() != expected.len() {
            return Err(format!("{} of {} Plugs", list.items.len(), expected.len()));
        }
        if !not_ready.is_empty() {
            return Err(format!(
                "{} not Ready: {:?}",
                not_ready.len(),
                &not_ready[..not_ready.len().min(5)]
            ));
        }
        // The Socket's record of its couplings agrees.
        let socket = sc
            .api::<Socket>(ns)
            .get("db")
            .await
            .map_err(|e| e.to_string())?;
        let listed: BTreeSet<String> = socket
            .status
            .iter()
            .flat_map(|s| s.coupled_plugs.iter().map(|p| p.name.clone()))
            .collect();
        let want: BTreeSet<String> = expected.keys().cloned().collect();
        if listed != want {
            return Err(format!(
                "the Socket lists {} coupled Plugs, want {}",
                listed.len(),
                want.len()
            ));
        }
        let maps = cms.list(&label).await.map_err(|e| e.to_string())?;
        let seen: BTreeMap<String, String> = maps
            .items
            .iter()
            .map(|cm| {
                let name = cm.metadata.name.clone().unwrap_or_default();
                let v = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get("v"))
                    .cloned()
                    .unwrap_or_default();
                (name.trim_start_matches("cm-").to_owned(), v)
            })
            .collect();
        if &seen != expected {
            let diff: Vec<_> = expected
                .iter()
                .filter(|(k, v)| seen.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}: want {v}, have {:?}", seen.get(k)))
                .chain(
                    seen.keys()
                        .filter(|k| !expected.contains_key(*k))
                        .map(|k| format!("{k}: orphaned")),
                )
                .take(5)
                .collect();
            return Err(format!("ConfigMaps differ: {diff:?}"));
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Holds `names` with the test's finalizer and deletes them.
async fn hold_and_delete(sc: &Scenario, ns: &str, names: &[String]) {
    let plugs = sc.api::<Plug>(ns);
    futures::stream::iter(names)
        .map(|name| {
            let plugs = plugs.clone();
            async move {
                let hold = json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
                                  "metadata": {"name": name, "finalizers": [HOLD]}});
                plugs
                    .patch(
                        name,
                        &PatchParams::apply("plugboard-tests"),
                        &Patch::Apply(hold),
                    )
                    .await
                    .unwrap();
                plugs.delete(name, &DeleteParams::default()).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Waits until plugboard has released every Plug in `names` (only the test's finalizer holds
/// them) and their ConfigMaps are gone, then lets them go and waits until they are.
async fn wait_released_then_gone(sc: &Scenario, ns: &str, names: &[String]) {
    let plugs = sc.api::<Plug>(ns);
    let cms = sc.api::<ConfigMap>(ns);
    let wanted: BTreeSet<&String> = names.iter().collect();
    wait_for(
        "plugboard to release the deleted Plugs",
        CONVERGE,
        || async {
            let list = plugs
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let held: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.name.as_ref().is_some_and(|n| wanted.contains(n)))
                .filter(|p| {
                    p.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f.as_str() != HOLD)
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if !held.is_empty() {
                return Err(format!(
                    "{} still held by plugboard: {:?}",
                    held.len(),
                    &held[..held.len().min(5)]
                ));
            }
            let maps = cms
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let left: Vec<String> = maps
                .items
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .filter(|n| {
                    n.strip_prefix("cm-")
                        .is_some_and(|p| wanted.contains(&p.to_owned()))
                })
                .collect();
            if !left.is_empty() {
                return Err(format!("ConfigMaps of released Plugs remain: {left:?}"));
            }
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let release = |name: &String| {
        json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
               "metadata": {"name": name, "finalizers": []}})
    };
    for name in names {
        plugs
            .patch(
                name,
                &PatchParams::apply("plugboard-tests"),
                &Patch::Apply(release(name)),
            )
            .await
            .unwrap();
    }
    wait_for("the deleted Plugs to be gone", DEADLINE, || async {
        let list = plugs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let left = list
            .items
            .iter()
            .filter(|p| p.metadata.name.as_ref().is_some_and(|n| wanted.contains(n)))
            .count();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} remain"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// No Ready Plug without a `coupled` call, no released Plug without `decoupled`.
fn assert_recorded(rec: &Recorder, coupled: &BTreeMap<String, String>, decoupled: &[String]) {
    let calls = rec.hook_calls();
    let socket_coupled = calls_by_plug(&calls, "/socket/coupled");
    let plug_coupled = calls_by_plug(&calls, "/plug/coupled");
    let updated: BTreeMap<_, _> = calls_by_plug(&calls, "/socket/updated");
    let socket_decoupled = calls_by_plug(&calls, "/socket/decoupled");
    let plug_decoupled = calls_by_plug(&calls, "/plug/decoupled");
    for (name, v) in coupled {
        assert!(
            socket_coupled.contains_key(name),
            "Plug {name} is coupled without a /socket/coupled call"
        );
        assert!(
            plug_coupled.contains_key(name),
            "Plug {name} is coupled without a /plug/coupled call"
        );
        // The config it is coupled with reached the apparatus, by `coupled` or `updated`.
        let delivered = socket_coupled[name]
            .iter()
            .chain(updated.get(name).into_iter().flatten())
            .any(|c| c.body["plugConfig"]["v"] == json!(v));
        assert!(
            delivered,
            "Plug {name}'s config v={v} never reached the Socket's apparatus"
        );
    }
    for name in decoupled {
        let (Some(first_coupled), Some(first_decoupled)) = (
            socket_coupled.get(name).and_then(|c| c.first()),
            socket_decoupled.get(name).and_then(|c| c.first()),
        ) else {
            panic!("Plug {name} was released without /socket/coupled then /socket/decoupled");
        };
        assert!(
            first_coupled.received <= first_decoupled.received,
            "Plug {name}: decoupled before coupled"
        );
        assert!(
            plug_decoupled.contains_key(name),
            "Plug {name} was released without a /plug/decoupled call"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sigkilled_at_random_points_loses_nothing() {
    let _serial = crate::SERIAL.lock().await;
    let n = env_number(PLUGS_ENV, DEFAULT_PLUGS);
    let m = env_number(KILLS_ENV, 1);
    let mut rng = seeded_rng("operator_sigkilled_at_random_points_loses_nothing");
    let started = Instant::now();
    let sc = Scenario::new("faults-kill").await;
    let ns = sc.ns.name().to_owned();
    let rec = Recorder::start().await;
    sc.grant(
        &ns,
        "default",
        "plugboard-configmaps",
        vec![k8s_openapi::api::rbac::v1::PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: [
                "get", "list", "watch", "create", "update", "patch", "delete",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        }],
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let mut op = OperatorProcess::new(
        PathBuf::from(env!("CARGO_BIN_EXE_plugboard-operator")),
        operator_kubeconfig(&sc, state.path()).await,
        state.path(),
        &sc.run,
        "operator.log",
    );
    // On failure, show what the operator said.
    struct ShowLog(PathBuf);
    impl Drop for ShowLog {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "operator log ({}) ends:\n{}",
                    self.0.display(),
                    plugboard_controlplane::process::log_tail(&self.0, 16 * 1024)
                );
            }
        }
    }
    let _show = ShowLog(op.log.clone());
    op.start();
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    sc.wait_socket_ready(&ns, "db").await;

    let names: Vec<String> = (0..n).map(|i| format!("app-{i:03}")).collect();
    let mut expected: BTreeMap<String, String> =
        names.iter().map(|n| (n.clone(), "1".into())).collect();

    // 1. Couple: create every Plug while the operator is killed twice.
    let phase = Instant::now();
    let create = futures::stream::iter(&names)
        .map(|name| sc.plug(&ns, name, plug_spec(&rec, "1")))
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    tokio::join!(create, chaos(&mut op, &mut rng, 2 * m, "couple"));
    wait_converged(&sc, &ns, &expected).await;
    assert_recorded(&rec, &expected, &[]);
    eprintln!(
        "  couple: {n} Plugs converged in {:.1} s",
        phase.elapsed().as_secs_f64()
    );

    // 2. Update: change every other Plug's config while the operator is killed once.
    let phase = Instant::now();
    let changed: Vec<String> = names.iter().step_by(2).cloned().collect();
    let plugs = sc.api::<Plug>(&ns);
    let update = futures::stream::iter(&changed)
        .map(|name| {
            let plugs = plugs.clone();
            async move {
                plugs
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"config": {"v": "2"}}})),
                    )
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    tokio::join!(update, chaos(&mut op, &mut rng, m, "update"));
    for name in &changed {
        expected.insert(name.clone(), "2".into());
    }
    wait_converged(&sc, &ns, &expected).await;
    assert_recorded(&rec, &expected, &[]);
    eprintln!(
        "  update: {} Plugs converged in {:.1} s",
        changed.len(),
        phase.elapsed().as_secs_f64()
    );

    // 3. Decouple: delete every third Plug while the operator is killed once.
    let phase = Instant::now();
    let deleted: Vec<String> = names.iter().step_by(3).cloned().collect();
    tokio::join!(
        hold_and_delete(&sc, &ns, &deleted),
        chaos(&mut op, &mut rng, m, "decouple")
    );
    wait_released_then_gone(&sc, &ns, &deleted).await;
    for name in &deleted {
        expected.remove(name);
    }
    wait_converged(&sc, &ns, &expected).await;
    assert_recorded(&rec, &expected, &deleted);
    eprintln!(
        "  decouple: {} Plugs released in {:.1} s",
        deleted.len(),
        phase.elapsed().as_secs_f64()
    );

    // 4. Tear down: delete the rest while the operator is killed once more.
    let phase = Instant::now();
    let rest: Vec<String> = expected.keys().cloned().collect();
    tokio::join!(
        hold_and_delete(&sc, &ns, &rest),
        chaos(&mut op, &mut rng, m, "teardown")
    );
    wait_released_then_gone(&sc, &ns, &rest).await;
    assert_recorded(&rec, &BTreeMap::new(), &names);
    sc.api::<Socket>(&ns)
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    sc.wait::<Socket, _>(&ns, "db", "the Socket to be gone", |s| s.is_none())
        .await;
    let orphans = sc
        .api::<ConfigMap>(&ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=plugboard"))
        .await
        .unwrap();
    assert!(
        orphans.items.is_empty(),
        "orphaned objects: {:?}",
        orphans
            .items
            .iter()
            .map(|c| &c.metadata.name)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "  teardown: {} Plugs released in {:.1} s",
        rest.len(),
        phase.elapsed().as_secs_f64()
    );
    op.assert_alive();

    let calls = rec.hook_calls();
    let count = |path: &str| calls.iter().filter(|c| c.path == path).count();
    let (coupled, updated, decoupled) = (
        count("/socket/coupled"),
        count("/socket/updated"),
        count("/socket/decoupled"),
    );
    eprintln!(
        "FIGURES operator-kill: {n} Plugs, {} SIGKILLs survived ({} starts), {:.1} s; \
         socket hooks: coupled {coupled} (>= {n}), updated {updated} (changed {}), decoupled {decoupled} (>= {n}); \
         repeated by kills: {} coupled, {} decoupled; lost: 0 couplings, 0 hooks, 0 orphaned objects, 0 finalizers",
        op.kills,
        op.starts,
        started.elapsed().as_secs_f64(),
        changed.len(),
        coupled - n,
        decoupled - n,
    );
    sc.ns.clone().delete().await.unwrap();
}
