//! The operator as a separate `plugboard run` process (the `plugboard-operator` binary, built
//! from the host crate's `main.rs`), as the chart runs it: with the ServiceAccount and RBAC the
//! chart gives it, SIGKILLed or SIGTERMed by the tests.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use kube::config::{AuthInfo, Kubeconfig};

use crate::scenario::{Scenario, TEST_LABEL};

/// One `plugboard run` process, started again after each kill, its output appended to `log`.
#[derive(Debug)]
pub struct OperatorProcess {
    /// The operator binary (`env!("CARGO_BIN_EXE_plugboard-operator")` in a test).
    pub bin: PathBuf,
    /// A kubeconfig holding the operator ServiceAccount's token (see [`operator_kubeconfig`]).
    pub kubeconfig: PathBuf,
    /// Its component cache and cache key live here, and survive restarts.
    pub state: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// The test's run label: the operator manages only objects carrying it.
    pub run: String,
    /// Flags added to every start.
    pub args: Vec<String>,
    /// The running process.
    pub child: Option<tokio::process::Child>,
    /// How many times it was started.
    pub starts: usize,
    /// How many times it was SIGKILLed.
    pub kills: usize,
}

impl OperatorProcess {
    /// A process not yet started; its cache, key and log live in `state`.
    pub fn new(bin: PathBuf, kubeconfig: PathBuf, state: &Path, run: &str, log: &str) -> Self {
        Self {
            bin,
            kubeconfig,
            state: state.to_owned(),
            log: state.join(log),
            run: run.to_owned(),
            args: Vec::new(),
            child: None,
            starts: 0,
            kills: 0,
        }
    }

    /// Starts `plugboard run` for this test's objects.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("failed to open {}: {e}", self.log.display()));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("failed to open {}: {e}", self.log.display()));
        let child = tokio::process::Command::new(&self.bin)
            .arg("run")
            .args(["--selector", &format!("{TEST_LABEL}={}", self.run)])
            // The recorder apparatus listens on loopback, which the default policy refuses.
            .args(["--egress-allow", "127.0.0.0/8"])
            .args(["--http-timeout", "5"])
            .args(["--instance", &format!("plugboard-{}", self.run)])
            .arg("--cache-dir")
            .arg(self.state.join("cache"))
            .arg("--cache-key-file")
            .arg(self.state.join("key").join("cache.key"))
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,plugboard=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // A failing test must not leave the operator running.
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.starts += 1;
    }

    /// Panics if the operator has exited by itself: it must only ever die by our hand.
    pub fn assert_alive(&mut self) {
        let Some(child) = self.child.as_mut() else {
            panic!("the operator was not started");
        };
        if let Some(status) = child.try_wait().ok().flatten() {
            panic!(
                "the operator exited by itself ({status}); its log ends:\n{}",
                self.log_tail()
            );
        }
    }

    /// SIGKILL: no shutdown, no flushing, whatever it was doing is cut off.
    pub async fn kill(&mut self) {
        self.assert_alive();
        let Some(mut child) = self.child.take() else {
            panic!("the operator was not started");
        };
        child
            .start_kill()
            .unwrap_or_else(|e| panic!("failed to SIGKILL the operator: {e}"));
        let status = child
            .wait()
            .await
            .unwrap_or_else(|e| panic!("failed to wait for the operator: {e}"));
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
        self.kills += 1;
        self.note(&format!("---- SIGKILL {} ----\n", self.kills));
    }

    /// SIGTERM, as the kubelet sends it, then waits up to `within` for the process to exit;
    /// panics if it does not.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.assert_alive();
        let Some(mut child) = self.child.take() else {
            panic!("the operator was not started");
        };
        let pid = child
            .id()
            .unwrap_or_else(|| panic!("the operator has no pid"));
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("failed to run kill: {e}"));
        assert!(sent.success(), "kill -TERM {pid} failed: {sent}");
        self.note("---- SIGTERM ----\n");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => status.unwrap_or_else(|e| panic!("failed to wait for the operator: {e}")),
            Err(_) => panic!(
                "the operator did not exit within {} s of SIGTERM; its log ends:\n{}",
                within.as_secs(),
                self.log_tail()
            ),
        }
    }

    fn note(&self, line: &str) {
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        plugboard_controlplane::process::log_tail(&self.log, 16 * 1024)
    }
}

/// A kubeconfig file for the operator's ServiceAccount (the admin kubeconfig's cluster with
/// the ServiceAccount's token), granted the chart's ClusterRole rules.
pub async fn operator_kubeconfig(sc: &Scenario, dir: &Path) -> PathBuf {
    let config = sc.operator_config().await;
    let mut kubeconfig = Kubeconfig::read_from(sc.env.kubeconfig_path())
        .unwrap_or_else(|e| panic!("failed to read the test kubeconfig: {e}"));
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(AuthInfo {
            token: config.auth_info.token.clone(),
            ..Default::default()
        });
    }
    let path = dir.join("operator.kubeconfig");
    // JSON is YAML.
    let json = serde_json::to_vec(&kubeconfig)
        .unwrap_or_else(|e| panic!("failed to encode the kubeconfig: {e}"));
    std::fs::write(&path, json)
        .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    path
}

/// A loopback TCP port nothing listens on right now, for an operator's `--health-addr`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// The operator's leader-election rules as the Helm chart ships them.
const LEADER_ELECTION_RULES: &str =
    include_str!("../../charts/plugboard/files/leader-election-rules.yaml");

/// Grants ServiceAccount `plugboard-operator` of the test's namespace the chart's leader-election
/// Role there (where the tests put the Lease), once that grant is in force.
pub async fn grant_leader_election(sc: &Scenario) {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    use kube::api::{ObjectMeta, Patch, PatchParams};

    let ns = sc.ns.name();
    let rules: Vec<PolicyRule> = serde_saphyr::from_str(LEADER_ELECTION_RULES)
        .unwrap_or_else(|e| panic!("the chart's leader-election rules do not parse: {e}"));
    let name = "plugboard-leader-election";
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        rules: Some(rules),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "plugboard-operator".into(),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        }]),
    };
    let pp = PatchParams::apply("plugboard-tests").force();
    sc.api::<Role>(ns)
        .patch(name, &pp, &Patch::Apply(&role))
        .await
        .unwrap_or_else(|e| panic!("failed to create the leader-election Role: {e}"));
    sc.api::<RoleBinding>(ns)
        .patch(name, &pp, &Patch::Apply(&binding))
        .await
        .unwrap_or_else(|e| panic!("failed to bind the leader-election Role: {e}"));
    let config = sc
        .env
        .service_account_config(ns, "plugboard-operator")
        .await
        .unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)));
    let client = kube::Client::try_from(config)
        .unwrap_or_else(|e| panic!("failed to create the operator's client: {e}"));
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, ns);
    crate::wait_for(
        "the leader-election grant to take effect",
        crate::scenario::DEADLINE,
        || async {
            leases
                .get_opt("plugboard-grant-probe")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
