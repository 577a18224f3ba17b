//! `plugboard dev`, the README's first command, works as a user runs it: the binary starts a
//! real control plane and registry, applies every sample and exits once they are all coupled,
//! printing the status table.
#![allow(clippy::expect_used, reason = "tests fail by panicking")]

use std::process::Command;

#[test]
fn dev_couples_every_sample_and_prints_the_status_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(["dev", "--exit-when-ready"])
        .output()
        .expect("plugboard runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "plugboard dev failed:\n{stdout}\n{stderr}"
    );
    // One row per sample Socket and Plug, each Ready: the WebAssembly component, the HTTP
    // endpoint, the apparatus pod and the templated resources.
    for (socket, plug) in [
        ("wasm-hooks", "wasm-app"),
        ("http-hooks", "http-app"),
        ("pod-hooks", "pod-app"),
        ("postgres", "app"),
    ] {
        let socket_row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{socket} ")))
            .unwrap_or_else(|| panic!("no row for Socket {socket}:\n{stdout}"));
        assert!(socket_row.contains(" True "), "{socket_row}");
        let plug_row = stdout
            .lines()
            .find(|l| l.contains(&format!("└ {plug} ")))
            .unwrap_or_else(|| panic!("no row for Plug {plug}:\n{stdout}"));
        assert!(
            plug_row.contains(" True ") && plug_row.contains("CouplingSucceeded"),
            "{plug_row}"
        );
    }
}
