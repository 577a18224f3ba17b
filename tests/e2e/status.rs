//! `plugboard status`: the couplings of a cluster read back for people, as the shipped binary
//! prints them (table and JSON) with a kubeconfig of the test control plane.

use std::process::Command;

use plugboard_tests::scenario::Scenario;
use serde_json::{Value, json};

/// Runs `plugboard status ARGS…` against the test cluster and returns its stdout.
fn status(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_plugboard-operator"))
        .arg("status")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("PLUGBOARD_STATUS_NAMESPACE")
        .env_remove("PLUGBOARD_STATUS_OUTPUT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "plugboard status {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The cells of the table row whose SOCKET or PLUG column is `name` (`└ name` for a Plug).
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| {
            cells.first() == Some(&name) || cells.first() == Some(&format!("└ {name}").as_str())
        })
        .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_coupled_and_a_waiting_plug_as_table_and_json() {
    let mut sc = Scenario::new("status").await;
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({"config": {"host": "db.example"}}))
        .await;
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;
    sc.plug(&ns, "waiting", json!({"socket": {"name": "missing"}}))
        .await;
    sc.wait_plug_ready(&ns, "app").await;
    // The Socket's Plug list (and with it its reason) is rewritten at most once a second.
    sc.wait::<plugboard::crd::Socket, _>(&ns, "db", "the Socket to count its Plug", |s| {
        s.is_some_and(|s| {
            plugboard_tests::scenario::socket_condition(s, "Coupled")
                .is_some_and(|c| c.reason == "SocketCoupled")
        })
    })
    .await;
    sc.wait_plug_reason(&ns, "waiting", "SocketNotCreated")
        .await;
    let kubeconfig = sc.env.kubeconfig_path().to_owned();

    let table = status(&kubeconfig, &["-n", &ns]);
    let header = row(&table, "SOCKET");
    assert_eq!(
        header,
        [
            "SOCKET",
            "PLUG",
            "READY",
            "REASON",
            "LAST HOOK",
            "AGE",
            "MESSAGE"
        ],
        "{table}"
    );
    let socket = row(&table, "db");
    assert_eq!(socket[1..4], ["-", "True", "SocketCoupled"], "{table}");
    assert!(socket[4].starts_with("Socket"), "{table}");
    let app = row(&table, "app");
    assert_eq!(app[..3], ["└ app", "True", "CouplingSucceeded"], "{table}");
    assert!(app[3].starts_with("PlugCoupled "), "{table}");
    let missing = row(&table, "missing");
    assert_eq!(missing.last(), Some(&"no such Socket"), "{table}");
    let waiting = row(&table, "waiting");
    assert_eq!(
        waiting[..3],
        ["└ waiting", "False", "SocketNotCreated"],
        "{table}"
    );
    assert!(waiting[3].starts_with("PlugCreated "), "{table}");
    // The table lists the Socket first, then its Plug; then the missing Socket's Plug.
    let order: Vec<usize> = ["db", "└ app", "missing", "└ waiting"]
        .iter()
        .map(|name| table.find(&format!("{name} ")).unwrap())
        .collect();
    assert!(order.is_sorted(), "{table}");

    let text = status(&kubeconfig, &["-n", &ns, "-o", "json"]);
    let json: Value = serde_json::from_str(&text).unwrap();
    let sockets = json["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 2, "{text}");
    assert_eq!(sockets[0]["name"], "db");
    assert_eq!(sockets[0]["socket"]["ready"], "True");
    assert_eq!(sockets[0]["plugs"][0]["name"], "app");
    assert_eq!(sockets[0]["plugs"][0]["lastHook"]["hook"], "PlugCoupled");
    assert_eq!(sockets[1]["name"], "missing");
    assert_eq!(sockets[1]["socket"], Value::Null);
    assert_eq!(sockets[1]["plugs"][0]["reason"], "SocketNotCreated");
    assert!(
        sockets[1]["plugs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{text}"
    );

    // All namespaces: the same rows, with the namespace in front.
    let all = status(&kubeconfig, &["-A"]);
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with(&ns) && l.contains("└ app") && l.contains("True")),
        "{all}"
    );
}
