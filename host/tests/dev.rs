//! `plugboard dev`, the README's way to try plugboard, works: it starts a real control plane,
//! installs the CRDs and stores the sample Socket and Plug.
#![allow(clippy::expect_used, reason = "tests fail by panicking")]

use std::process::Command;

#[test]
fn dev_starts_a_control_plane_and_stores_the_samples() {
    let out = Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(["dev", "--exit"])
        .output()
        .expect("plugboard runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "plugboard dev failed:\n{stdout}\n{stderr}"
    );
    // The sample Socket and Plug were read back from the API server.
    assert!(stdout.contains("postgres"), "{stdout}");
    assert!(stdout.contains("app "), "{stdout}");
    // The operator ran and coupled them.
    assert!(stdout.contains("CouplingSucceeded"), "{stdout}");
    // The stored Socket shows the default the API server filled in.
    assert!(stdout.contains("serviceAccountName: default"), "{stdout}");
    assert!(
        stderr.contains("control plane ready at https://127.0.0.1:"),
        "{stderr}"
    );
}
