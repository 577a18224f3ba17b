//! `plugboard plugin` against a real registry, checked with another OCI client (`oras`): the
//! CNCF wasm artifact layout it pushes, components pushed by oras that it pulls, inspects and
//! couples.

use std::path::{Path, PathBuf};

use plugboard_controlplane::gotools::{self, GoTool};
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::Scenario;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::wasm::component;

/// The OCI registry client the interoperability tests compare with.
pub(crate) const ORAS: GoTool = GoTool {
    name: "oras",
    package: "oras.land/oras/cmd/oras",
    version: "v1.3.6",
};

/// The path of `tool`, built on first use.
pub(crate) async fn go_tool(tool: GoTool) -> PathBuf {
    tokio::task::spawn_blocking(move || gotools::ensure(tool))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("building {}: {e}", tool.name))
}

/// Runs `program` with `args` in `dir` with `env`; returns stdout, panicking with the output
/// when it fails.
pub(crate) async fn run(
    program: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
) -> Vec<u8> {
    let output = command(program, args, dir, env).await;
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{}{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `program` and returns its output, whatever its status.
pub(crate) async fn command(
    program: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        // Neither the machine's Docker credentials nor its cosign settings.
        .env("DOCKER_CONFIG", dir)
        .env("HOME", dir)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", program.display()))
}

/// The `plugboard` command.
pub(crate) fn plugboard() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_plugboard-operator"))
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap().trim().to_owned()
}

/// `plugboard plugin push` of `bytes` (written to `dir`) to `reference`; returns the digest.
pub(crate) async fn plugboard_push(dir: &Path, bytes: &[u8], reference: &str) -> String {
    let file = dir.join("component.wasm");
    std::fs::write(&file, bytes).unwrap();
    text(
        run(
            plugboard(),
            &[
                "plugin",
                "push",
                file.to_str().unwrap(),
                reference,
                "--plain-http",
            ],
            dir,
            &[],
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_push_writes_the_cncf_wasm_layout_that_oras_reads() {
    let registry = Registry::start().await.unwrap();
    let oras = go_tool(ORAS).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let bytes = component("recorder").await;
    let image = registry.image("plugboard/recorder:1");
    let digest = plugboard_push(dir, &bytes, &image).await;

    // The manifest, as oras sees it: one application/wasm layer, the wasm config.
    let manifest = run(
        &oras,
        &["manifest", "fetch", "--plain-http", &image],
        dir,
        &[],
    )
    .await;
    assert_eq!(
        sha256(&manifest),
        digest,
        "the printed digest is the manifest's"
    );
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], sha256(&bytes));

    // The config lists the component's world, imports and exports.
    let repository = registry.image("plugboard/recorder");
    let config_ref = format!(
        "{repository}@{}",
        manifest["config"]["digest"].as_str().unwrap()
    );
    let config = run(
        &oras,
        &[
            "blob",
            "fetch",
            "--plain-http",
            "--output",
            "-",
            &config_ref,
        ],
        dir,
        &[],
    )
    .await;
    let config: Value = serde_json::from_slice(&config).unwrap();
    eprintln!("config of {image}: {config:#}");
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["layerDigests"], json!([sha256(&bytes)]));
    assert!(config["created"].as_str().is_some_and(|c| c.ends_with('Z')));
    let component = &config["component"];
    assert_eq!(component["target"], "plugboard:apparatus/apparatus@0.1.0");
    assert_eq!(
        component["exports"],
        json!(["plugboard:apparatus/hooks@0.1.0"])
    );
    let imports: Vec<&str> = component["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"plugboard:apparatus/host@0.1.0"),
        "{imports:?}"
    );

    // The layer oras downloads is the component.
    let layer_ref = format!("{repository}@{}", sha256(&bytes));
    let layer = run(
        &oras,
        &["blob", "fetch", "--plain-http", "--output", "-", &layer_ref],
        dir,
        &[],
    )
    .await;
    assert_eq!(layer, bytes);

    // inspect by reference: world, contract, SDK version, digests, and the operator can run it.
    let shown = run(
        plugboard(),
        &["plugin", "inspect", &image, "--plain-http", "--json"],
        dir,
        &[],
    )
    .await;
    let shown: Value = serde_json::from_slice(&shown).unwrap();
    assert_eq!(shown["world"], "plugboard:apparatus/apparatus@0.1.0");
    assert_eq!(shown["contractVersion"], "0.1.0");
    assert_eq!(shown["sdkVersion"], plugboard_sdk_version());
    assert_eq!(shown["digest"], sha256(&bytes));
    assert_eq!(shown["manifestDigest"], digest);
    assert_eq!(shown["size"], bytes.len());
    assert_eq!(shown["exports"], component["exports"]);
    assert_eq!(shown["imports"], component["imports"]);
    assert_eq!(shown["runnable"], true, "{shown:#}");

    // pull writes the verified component.
    let out = dir.join("pulled.wasm");
    let pulled = run(
        plugboard(),
        &[
            "plugin",
            "pull",
            &image,
            "-o",
            out.to_str().unwrap(),
            "--plain-http",
        ],
        dir,
        &[],
    )
    .await;
    assert_eq!(text(pulled), digest);
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

/// The version `plugboard-sdk` embeds (the workspace's).
fn plugboard_sdk_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_inspect_of_files_says_what_the_operator_can_run() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let recorder = dir.join("recorder.wasm");
    std::fs::write(&recorder, component("recorder").await).unwrap();
    let shown = text(
        run(
            plugboard(),
            &["plugin", "inspect", recorder.to_str().unwrap()],
            dir,
            &[],
        )
        .await,
    );
    eprintln!("{shown}");
    for line in [
        "world:      plugboard:apparatus/apparatus@0.1.0",
        "contract:   plugboard:apparatus@0.1.0",
        &format!("sdk:        plugboard-sdk {}", plugboard_sdk_version()),
        "exports:    plugboard:apparatus/hooks@0.1.0",
        "runnable:   yes",
    ] {
        assert!(shown.contains(line), "{line:?} missing from:\n{shown}");
    }

    // A component of another contract version: described, and not runnable here.
    let other = dir.join("other.wasm");
    std::fs::write(
        &other,
        wat::parse_str(
            r#"(component (instance $hooks) (export "plugboard:apparatus/hooks@0.2.0" (instance $hooks)))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let shown = text(
        run(
            plugboard(),
            &["plugin", "inspect", other.to_str().unwrap()],
            dir,
            &[],
        )
        .await,
    );
    assert!(
        shown.contains("contract:   plugboard:apparatus@0.2.0"),
        "{shown}"
    );
    assert!(
        shown.contains("sdk:        unknown (no plugboard-sdk-version section)"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "runnable:   no: the component does not implement plugboard:apparatus/hooks@0.1.0"
        ),
        "{shown}"
    );

    // A core module is refused with advice.
    let core = dir.join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let out = command(
        plugboard(),
        &["plugin", "inspect", core.to_str().unwrap()],
        dir,
        &[],
    )
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("this is a core module"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_pushed_with_oras_is_pulled_inspected_and_couples() {
    let registry = Registry::start().await.unwrap();
    let oras = go_tool(ORAS).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let bytes = component("recorder").await;
    std::fs::write(dir.join("recorder.wasm"), &bytes).unwrap();
    std::fs::write(
        dir.join("config.json"),
        json!({"architecture": "wasm", "os": "wasip2", "layerDigests": [sha256(&bytes)]})
            .to_string(),
    )
    .unwrap();
    let image = registry.image("plugboard/from-oras:1");
    run(
        &oras,
        &[
            "push",
            "--plain-http",
            "--config",
            "config.json:application/vnd.wasm.config.v0+json",
            &image,
            "recorder.wasm:application/wasm",
        ],
        dir,
        &[],
    )
    .await;

    let shown = run(
        plugboard(),
        &["plugin", "inspect", &image, "--plain-http", "--json"],
        dir,
        &[],
    )
    .await;
    let shown: Value = serde_json::from_slice(&shown).unwrap();
    assert_eq!(shown["world"], "plugboard:apparatus/apparatus@0.1.0");
    assert_eq!(shown["digest"], sha256(&bytes));
    assert_eq!(shown["runnable"], true);
    let out = dir.join("pulled.wasm");
    run(
        plugboard(),
        &[
            "plugin",
            "pull",
            &image,
            "-o",
            out.to_str().unwrap(),
            "--plain-http",
        ],
        dir,
        &[],
    )
    .await;
    assert_eq!(std::fs::read(&out).unwrap(), bytes);

    // A Socket whose apparatus is the oras-pushed component couples a Plug.
    let mut sc = Scenario::new("plugin-oras").await;
    sc.options.plain_http_registries = registry.plain_http_hosts();
    sc.start().await;
    let ns = sc.ns.name().to_owned();
    sc.socket(&ns, "db", json!({"apparatus": {"wasm": {"image": image}}}))
        .await;
    sc.plug(&ns, "app", json!({"socket": {"name": "db"}})).await;
    sc.wait_plug_ready(&ns, "app").await;
    let socket = sc.wait_socket_ready(&ns, "db").await;
    assert_eq!(
        socket.status.unwrap().apparatus.unwrap().digest,
        sha256(&bytes)
    );
}
