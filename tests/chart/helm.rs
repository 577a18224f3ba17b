//! `helm`, built from its Go module once per machine, and the rendered chart as JSON values.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use plugboard_controlplane::gotools::{self, GoTool};
use serde_json::Value;

/// The Helm CLI the chart tests run.
pub const HELM: GoTool = GoTool {
    name: "helm",
    package: "helm.sh/helm/v3/cmd/helm",
    version: "v3.22.0",
};

/// The chart under test.
pub fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/plugboard")
}

/// A values file of the chart's `ci/` folder.
pub fn ci_values(name: &str) -> PathBuf {
    chart().join("ci").join(name)
}

fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        gotools::ensure(HELM).unwrap_or_else(|e| panic!("{}", plugboard_tests::error_chain(&e)))
    })
}

/// What a `helm` run printed.
#[derive(Debug)]
pub struct Output {
    /// Whether it exited 0.
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `helm args…` with its configuration, cache and data folders in the test's temporary
/// folder (never the user's).
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let output = Command::new(binary())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("failed to run helm: {e}"));
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// [`run`] on a blocking thread, for async tests.
pub async fn run_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || run(args))
        .await
        .unwrap()
}

/// `helm template` arguments: release `release` in `namespace`, with `values` files in order.
pub fn template_args(release: &str, namespace: &str, values: &[&Path]) -> Vec<String> {
    let mut args = vec![
        "template".to_owned(),
        release.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.to_owned(),
    ];
    for file in values {
        args.push("--values".to_owned());
        args.push(file.display().to_string());
    }
    args
}

/// Renders the chart; panics with helm's message if it fails.
pub fn template(release: &str, namespace: &str, values: &[&Path]) -> Manifests {
    let out = run(template_args(release, namespace, values));
    assert!(out.ok, "helm template failed:\n{}", out.stderr);
    Manifests::parse(&out.stdout)
}

/// The objects a render produced.
#[derive(Debug, Clone)]
pub struct Manifests(pub Vec<Value>);

impl Manifests {
    /// Parses helm's multi-document output (documents holding only comments are skipped).
    pub fn parse(yaml: &str) -> Self {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
            .unwrap_or_else(|e| panic!("helm's output is not YAML: {e}\n{yaml}"));
        Manifests(docs.into_iter().filter(|d| d.is_object()).collect())
    }

    /// The objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind`; panics unless there is exactly one.
    pub fn one(&self, kind: &str) -> &Value {
        match self.of_kind(kind).as_slice() {
            [one] => one,
            other => panic!("expected one {kind}, rendered {}", other.len()),
        }
    }

    /// The Deployment's pod spec.
    pub fn pod_spec(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    /// The operator container.
    pub fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "one container: the operator");
        &containers[0]
    }

    /// The container's environment entry `name`, if set.
    pub fn env(&self, name: &str) -> Option<&Value> {
        self.container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
    }

    /// The literal value of environment variable `name`; panics if it is unset or not literal.
    pub fn env_value(&self, name: &str) -> &str {
        self.env(name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("env {name} has no literal value: {:?}", self.env(name)))
    }

    /// The container's arguments.
    pub fn args(&self) -> Vec<&str> {
        self.container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }
}
