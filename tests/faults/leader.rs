//! The operator process as production runs it: two replicas with leader election (exactly one
//! leads; the standby takes over when the leader is SIGKILLed, and no hook runs twice for one
//! transition), the health and metrics server, and a graceful SIGTERM that lets the hook in
//! flight finish, releases the Lease and exits 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use k8s_openapi::api::coordination::v1::Lease;
use plugboard::crd::Plug;
use plugboard_tests::operator::{
    OperatorProcess, free_port, grant_leader_election, operator_kubeconfig,
};
use plugboard_tests::recorder::{RecordedCall, Recorder, Reply};
use plugboard_tests::scenario::{DEADLINE, Scenario};
use plugboard_tests::wait_for;
use serde_json::json;

/// The Lease the tests' operators compete for (in the test's namespace).
const LEASE: &str = "plugboard";

/// `GET http://127.0.0.1:<port><path>` with hyper: the status and body.
async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to :{port}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Waits until `GET path` answers `status` with a body starting with `body`.
async fn wait_http(port: u16, path: &str, status: u16, body: &str) -> String {
    wait_for(
        &format!(":{port}{path} to answer {status} {body}"),
        DEADLINE,
        || async {
            let (got, text) = get(port, path).await?;
            if got == status && text.starts_with(body) {
                Ok(text)
            } else {
                Err(format!("{got} {text}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The sum of every sample of `family` (a name without labels, e.g. `plugboard_leader`) whose
/// labels contain all of `labels` (`key="value"` strings).
fn sample_sum(metrics: &str, family: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, rest) = match series.split_once('{') {
                Some((name, rest)) => (name, rest),
                None => (series, ""),
            };
            (name == family && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The Lease's holder, `None` when it is missing or released.
async fn holder(sc: &Scenario) -> Option<String> {
    sc.api::<Lease>(sc.ns.name())
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// An operator with leader election on the test namespace's Lease and a health port.
fn elected(
    sc: &Scenario,
    kubeconfig: PathBuf,
    state: &std::path::Path,
    identity: &str,
    lease_seconds: u64,
) -> (OperatorProcess, u16) {
    let dir = state.join(identity);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut op = OperatorProcess::new(
        PathBuf::from(env!("CARGO_BIN_EXE_plugboard-operator")),
        kubeconfig,
        &dir,
        &sc.run,
        "operator.log",
    );
    op.args = [
        "--leader-elect",
        "--leader-elect-namespace",
        sc.ns.name(),
        "--leader-elect-lease",
        LEASE,
        "--leader-elect-lease-seconds",
        &lease_seconds.to_string(),
        "--leader-elect-identity",
        identity,
        "--health-addr",
        &format!("127.0.0.1:{port}"),
    ]
    .map(String::from)
    .to_vec();
    (op, port)
}

/// The hook calls to `path`, counted by Plug name.
fn count_by_plug(calls: &[RecordedCall], path: &str) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for call in calls.iter().filter(|c| c.path == path) {
        let name = call.body["plug"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *by.entry(name).or_default() += 1;
    }
    by
}

/// Shows the operators' logs when a test fails.
struct ShowLogs(Vec<PathBuf>);

impl Drop for ShowLogs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.0 {
                eprintln!(
                    "operator log ({}) ends:\n{}",
                    log.display(),
                    plugboard_controlplane::process::log_tail(log, 16 * 1024)
                );
            }
        }
    }
}

async fn couple(sc: &Scenario, rec: &Recorder, names: &[String]) {
    let ns = sc.ns.name();
    for name in names {
        sc.plug(
            ns,
            name,
            json!({"socket": {"name": "db"},
                   "apparatus": {"endpoint": format!("{}/plug", rec.url())}}),
        )
        .await;
    }
    for name in names {
        sc.wait_plug_ready(ns, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_elect_one_leader_and_the_standby_takes_over_without_rerunning_hooks() {
    let _serial = crate::SERIAL.lock().await;
    let lease_seconds = 8;
    let timing = plugboard::leader::Timing::from_lease_seconds(lease_seconds);
    let sc = Scenario::new("faults-leader").await;
    let ns = sc.ns.name().to_owned();
    let rec = Recorder::start().await;
    let state = tempfile::tempdir().unwrap();
    let kubeconfig = operator_kubeconfig(&sc, state.path()).await;
    grant_leader_election(&sc).await;
    let (mut a, port_a) = elected(
        &sc,
        kubeconfig.clone(),
        state.path(),
        "operator-a",
        lease_seconds,
    );
    let (mut b, port_b) = elected(&sc, kubeconfig, state.path(), "operator-b", lease_seconds);
    let _show = ShowLogs(vec![a.log.clone(), b.log.clone()]);
    a.start();
    b.start();

    // Exactly one leads: the Lease names it, its /readyz says leader, the other's standby.
    let first = wait_for("a leader", DEADLINE, || async {
        holder(&sc).await.ok_or_else(|| "no holder yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let ((leader, leader_port), (standby, standby_port)) = if first == "operator-a" {
        ((&mut a, port_a), (&mut b, port_b))
    } else {
        assert_eq!(first, "operator-b");
        ((&mut b, port_b), (&mut a, port_a))
    };
    wait_http(leader_port, "/readyz", 200, "leader").await;
    wait_http(standby_port, "/readyz", 200, "standby").await;

    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    sc.wait_socket_ready(&ns, "db").await;
    let before: Vec<String> = (0..5).map(|i| format!("app-{i}")).collect();
    couple(&sc, &rec, &before).await;
    // Only the leader reconciled.
    let (_, standby_metrics) = get(standby_port, "/metrics").await.unwrap();
    assert_eq!(sample_sum(&standby_metrics, "plugboard_leader", &[]), 0.0);
    assert_eq!(
        sample_sum(&standby_metrics, "plugboard_reconciles_total", &[]),
        0.0,
        "the standby reconciled:\n{standby_metrics}"
    );
    let (_, leader_metrics) = get(leader_port, "/metrics").await.unwrap();
    assert_eq!(sample_sum(&leader_metrics, "plugboard_leader", &[]), 1.0);

    // SIGKILL the leader: the standby takes the lease once it has seen no renewal for the
    // lease duration (polling every retry period).
    leader.kill().await;
    let killed = Instant::now();
    let standby_id = if first == "operator-a" {
        "operator-b"
    } else {
        "operator-a"
    };
    wait_for("the standby to take the lease", DEADLINE, || async {
        match holder(&sc).await {
            Some(h) if h == standby_id => Ok(()),
            other => Err(format!("held by {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let takeover = killed.elapsed();
    eprintln!(
        "  takeover {:.1} s after SIGKILL (lease {} s, retry {:.1} s)",
        takeover.as_secs_f64(),
        lease_seconds,
        timing.retry_period.as_secs_f64()
    );
    // The standby's wait starts when it saw the leader's last renewal (at most one retry
    // period, with jitter, before the kill) and it notices expiry at its next retry.
    let bound = timing.lease_duration + timing.retry_period * 3;
    assert!(
        takeover <= bound,
        "the standby took {takeover:?} to take over, more than {bound:?}"
    );
    wait_http(standby_port, "/readyz", 200, "leader").await;
    standby.assert_alive();

    // Couplings continue under the new leader.
    let after: Vec<String> = (5..10).map(|i| format!("app-{i}")).collect();
    couple(&sc, &rec, &after).await;
    // It starts by reconciling everything it finds: nothing already done runs again.
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    for name in &all {
        sc.wait_plug_ready(&ns, name).await;
    }
    let calls = rec.hook_calls();
    for path in ["/socket/coupled", "/plug/coupled"] {
        let counts = count_by_plug(&calls, path);
        for name in &all {
            assert_eq!(
                counts.get(name).copied().unwrap_or(0),
                1,
                "{path} for Plug {name} ran {:?} times",
                counts.get(name)
            );
        }
    }
    let created = calls.iter().filter(|c| c.path == "/socket/created").count();
    assert_eq!(created, 1, "the Socket's created hook ran {created} times");
    let plug: Plug = sc.api::<Plug>(&ns).get("app-0").await.unwrap();
    assert!(plug.status.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_hook_in_flight_finish_releases_the_lease_and_exits_0() {
    let _serial = crate::SERIAL.lock().await;
    let grace = 20;
    let sc = Scenario::new("faults-sigterm").await;
    let ns = sc.ns.name().to_owned();
    let rec = Recorder::start().await;
    let state = tempfile::tempdir().unwrap();
    let kubeconfig = operator_kubeconfig(&sc, state.path()).await;
    grant_leader_election(&sc).await;
    let (mut op, port) = elected(&sc, kubeconfig, state.path(), "operator-a", 15);
    op.args
        .extend(["--shutdown-grace-seconds".into(), grace.to_string()]);
    let _show = ShowLogs(vec![op.log.clone()]);
    op.start();
    wait_http(port, "/readyz", 200, "leader").await;
    assert_eq!(holder(&sc).await.as_deref(), Some("operator-a"));

    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    sc.wait_socket_ready(&ns, "db").await;
    // The Plug's coupled hook is held in flight.
    rec.reply("/plug/coupled", Reply::Gate);
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"},
               "apparatus": {"endpoint": format!("{}/plug", rec.url())}}),
    )
    .await;
    wait_for("the coupled hook to be in flight", DEADLINE, || async {
        let n = count_by_plug(&rec.hook_calls(), "/plug/coupled").len();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} calls"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let terminated = Instant::now();
    let log = op.log.clone();
    let exit = tokio::spawn(async move {
        let status = op.terminate(Duration::from_secs(grace + 10)).await;
        (status, op)
    });
    // It is shutting down, the hook still held: it waits for the hook instead of exiting.
    wait_for("the operator to start shutting down", DEADLINE, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("shutting down") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !exit.is_finished(),
        "the operator exited with a hook in flight"
    );
    rec.open_gate();
    let (status, _op) = exit.await.unwrap();
    let took = terminated.elapsed();
    eprintln!(
        "  exited {status} {:.1} s after SIGTERM",
        took.as_secs_f64()
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    assert!(
        took < Duration::from_secs(grace + 5),
        "took {took:?} to exit, grace {grace} s"
    );
    // The reconcile that held the hook finished: the coupling is recorded.
    let plug: Plug = sc.api::<Plug>(&ns).get("app").await.unwrap();
    let coupled = plug.status.as_ref().and_then(|s| s.coupled_socket.as_ref());
    assert!(
        coupled.is_some_and(|c| c.name == "db"),
        "the Plug's coupling was not recorded before exit: {:?}",
        plug.status
    );
    // The lease was released: a standby would take it at once.
    assert_eq!(holder(&sc).await, None, "the lease was not released");
    let lease = sc.api::<Lease>(&ns).get(LEASE).await.unwrap();
    assert!(lease.spec.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_are_served() {
    use plugboard::oci::{self, RegistryAuth};
    use plugboard_tests::registry::Registry;

    let _serial = crate::SERIAL.lock().await;
    let registry = Registry::start().await.unwrap();
    let mut images = BTreeMap::new();
    for name in ["recorder", "adversary"] {
        let bytes = crate::restart::component(name).await;
        let image = registry.image(&format!("plugboard/{name}:1"));
        oci::push_component(
            &image,
            &bytes,
            &RegistryAuth::Anonymous,
            &registry.plain_http_hosts(),
        )
        .await
        .unwrap_or_else(|e| panic!("push {image}: {e}"));
        images.insert(name, image);
    }
    let sc = Scenario::new("faults-metrics").await;
    let ns = sc.ns.name().to_owned();
    let rec = Recorder::start().await;
    let state = tempfile::tempdir().unwrap();
    let kubeconfig = operator_kubeconfig(&sc, state.path()).await;
    grant_leader_election(&sc).await;
    let (mut op, port) = elected(&sc, kubeconfig, state.path(), "operator-a", 15);
    op.args.extend([
        "--plain-http-registry".into(),
        registry.plain_http_hosts().join(","),
    ]);
    let _show = ShowLogs(vec![op.log.clone()]);
    op.start();
    wait_http(port, "/healthz", 200, "ok").await;
    wait_http(port, "/readyz", 200, "leader").await;

    // An HTTP coupling, a WebAssembly one, and a Plug whose component traps.
    sc.socket(
        &ns,
        "db",
        json!({"apparatus": {"endpoint": format!("{}/socket", rec.url())}}),
    )
    .await;
    sc.socket(
        &ns,
        "wasm-db",
        json!({"apparatus": {"wasm": {"image": images["recorder"]}}}),
    )
    .await;
    sc.plug(
        &ns,
        "app",
        json!({"socket": {"name": "db"},
               "apparatus": {"endpoint": format!("{}/plug", rec.url())}}),
    )
    .await;
    sc.plug(&ns, "wasm-app", json!({"socket": {"name": "wasm-db"}}))
        .await;
    sc.plug(
        &ns,
        "trap",
        json!({"socket": {"name": "db"}, "data": {"mode": "trap"},
               "apparatus": {"wasm": {"image": images["adversary"]}}}),
    )
    .await;
    sc.wait_plug_ready(&ns, "app").await;
    sc.wait_plug_ready(&ns, "wasm-app").await;
    sc.wait_plug_reason(&ns, "trap", "HookTrapped").await;

    let metrics = wait_for("the trap to be counted", DEADLINE, || async {
        let (status, text) = get(port, "/metrics").await?;
        if status == 200 && sample_sum(&text, "plugboard_guest_traps_total", &[]) > 0.0 {
            Ok(text)
        } else {
            Err(format!("{status}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for (family, labels) in [
        ("plugboard_reconciles_total", &["kind=\"Plug\""][..]),
        ("plugboard_reconciles_total", &["kind=\"Socket\""]),
        (
            "plugboard_reconcile_errors_total",
            &["kind=\"Plug\"", "reason=\"HookTrapped\""],
        ),
        ("plugboard_couplings", &[]),
        (
            "plugboard_hook_duration_seconds_count",
            &["apparatus=\"http\"", "hook=\"coupled\""],
        ),
        (
            "plugboard_hook_duration_seconds_count",
            &["apparatus=\"wasm\"", "hook=\"coupled\""],
        ),
        (
            "plugboard_api_writes_total",
            &["verb=\"apply\"", "resource=\"plugs/status\""],
        ),
        (
            "plugboard_api_writes_total",
            &["verb=\"create\"", "resource=\"events\""],
        ),
        ("plugboard_component_pulls_total", &["result=\"ok\""]),
        ("plugboard_component_compiles_total", &[]),
        ("plugboard_component_compile_seconds_count", &[]),
        ("plugboard_guest_traps_total", &["kind=\"trap\""]),
        ("plugboard_leader", &[]),
    ] {
        assert!(
            sample_sum(&metrics, family, labels) > 0.0,
            "{family}{labels:?} is zero or missing in:\n{metrics}"
        );
    }
    // Served, zero here (no apparatus pods in this test).
    assert!(metrics.contains("# TYPE plugboard_apparatus_pods_running gauge"));
    assert!(metrics.contains("# TYPE plugboard_component_cache_hits_total counter"));
    let ready = sample_sum(&metrics, "plugboard_couplings", &[]);
    assert!(ready >= 2.0, "couplings by state: {ready}");
    let (status, _) = get(port, "/nowhere").await.unwrap();
    assert_eq!(status, 404);
}
