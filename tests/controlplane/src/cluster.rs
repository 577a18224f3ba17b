//! Starting and stopping one control plane.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::Error;
use crate::binaries::{self, Binaries};
use crate::pki::{self, Pki};
use crate::process::Supervised;

/// How long the API server may take to report ready.
const API_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the controller manager may take to create the `default` ServiceAccount.
const CONTROLLERS_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at starting, in case a free port was taken between choosing and binding it.
const START_ATTEMPTS: usize = 3;

/// Options of [`ControlPlane::start`].
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneOptions {
    /// Folder for state, logs, credentials and the kubeconfig. A fresh temporary folder when
    /// unset; it is removed when the control plane stops unless `keep_dir` is set.
    pub dir: Option<PathBuf>,
    /// Keep the folder after stopping.
    pub keep_dir: bool,
}

/// A running `etcd` + `kube-apiserver` + `kube-controller-manager` on loopback.
///
/// Dropping it stops the processes; so does this process exiting.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    kubeconfig_path: PathBuf,
    kubeconfig_text: String,
    // Stopped in reverse start order when dropped.
    processes: Vec<Supervised>,
    startup: Duration,
    /// What [`ControlPlane::restart_api_server`] needs to start etcd and the API server again
    /// exactly as before.
    binaries: Binaries,
    pki: Pki,
    etcd_port: u16,
    peer_port: u16,
    api_port: u16,
    /// How many times etcd and the API server were restarted (names their new log files).
    restarts: u32,
}

/// A free loopback port below Linux's ephemeral range (32768–60999), so a process restarted on
/// the same port (the fault-injection tests restart the API server and etcd) can never find it
/// taken by an outgoing connection's automatically chosen local port.
pub fn free_port() -> Result<u16, Error> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20000;
    const COUNT: u32 = 12000;
    // Successive picks in one process differ; processes start at different offsets.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % COUNT;
        let Ok(port) = u16::try_from(FIRST + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind", "127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("read address of", "127.0.0.1:0"))?
        .port();
    Ok(port)
}

/// A kubeconfig for `server` authenticating with a bearer token.
pub(crate) fn kubeconfig_yaml(server: &str, ca_cert: &Path, user: &str, token: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: plugboard
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: plugboard
  context:
    cluster: plugboard
    user: {user}
current-context: plugboard
"#,
        ca = ca_cert.display(),
    )
}

impl ControlPlane {
    /// Builds the programs if needed and starts a control plane, returning once the API server
    /// is ready and the controller manager has created the `default` ServiceAccount.
    pub async fn start(options: ControlPlaneOptions) -> Result<Self, Error> {
        let binaries = tokio::task::spawn_blocking(binaries::ensure)
            .await
            .map_err(|e| Error::Io {
                action: "build",
                path: binaries::cache_dir(),
                source: std::io::Error::other(e),
            })??;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&binaries, &options).await {
                Ok(cp) => return Ok(cp),
                // A port taken between choosing and binding it shows as an early exit.
                Err(e @ Error::ProcessExited { .. }) => {
                    tracing::warn!(error = %e, "control plane failed to start, retrying");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(Error::NotReady {
            what: "the control plane".into(),
            seconds: 0,
            log_tail: String::new(),
        }))
    }

    async fn start_once(binaries: &Binaries, options: &ControlPlaneOptions) -> Result<Self, Error> {
        let started = Instant::now();
        let dir = match &options.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
                dir.clone()
            }
            None => tempfile::Builder::new()
                .prefix("plugboard-controlplane-")
                .tempdir()
                .map_err(Error::io("create", std::env::temp_dir()))?
                .keep(),
        };
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).map_err(Error::io("create", &logs))?;
        let pki = pki::generate(&dir)?;
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let cleanup = (!options.keep_dir).then_some(dir.as_path());

        // The folder goes when this process does, not when etcd stops: etcd may be restarted.
        // A program that only waits holds the removal (stopped last: processes stop in reverse).
        let processes = vec![
            Supervised::spawn(
                "cleanup",
                Path::new("sleep"),
                ["infinity"],
                logs.join("cleanup.log"),
                cleanup,
            )?,
            spawn_etcd(binaries, &dir, etcd_port, peer_port, "etcd.log")?,
            Supervised::spawn(
                "kube-apiserver",
                &binaries.kube_apiserver,
                apiserver_args(&dir, &pki, etcd_port, api_port),
                logs.join("kube-apiserver.log"),
                None,
            )?,
        ];

        let kubeconfig_text =
            kubeconfig_yaml(&server, &pki.ca_cert, "plugboard-admin", &pki.admin_token);
        let kubeconfig_path = dir.join("kubeconfig");
        fs::write(&kubeconfig_path, &kubeconfig_text)
            .map_err(Error::io("write", &kubeconfig_path))?;

        let mut cp = ControlPlane {
            dir,
            server,
            kubeconfig_path,
            kubeconfig_text,
            processes,
            startup: Duration::ZERO,
            binaries: binaries.clone(),
            pki: pki.clone(),
            etcd_port,
            peer_port,
            api_port,
            restarts: 0,
        };
        let client = cp.client().await?;
        cp.wait_api_ready(&client).await?;

        let kcm = Supervised::spawn(
            "kube-controller-manager",
            &binaries.kube_controller_manager,
            [
                format!("--kubeconfig={}", cp.kubeconfig_path.display()),
                "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token"
                    .to_owned(),
                format!(
                    "--service-account-private-key-file={}",
                    pki.sa_key.display()
                ),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                "--leader-elect=false".to_owned(),
                "--secure-port=0".to_owned(),
            ],
            logs.join("kube-controller-manager.log"),
            None,
        )?;
        cp.processes.push(kcm);
        cp.wait_controllers_ready(&client).await?;
        cp.startup = started.elapsed();
        tracing::info!(
            server = %cp.server,
            dir = %cp.dir.display(),
            seconds = cp.startup.as_secs_f64(),
            "control plane ready"
        );
        Ok(cp)
    }

    fn check_alive(&mut self) -> Result<(), Error> {
        for p in &mut self.processes {
            if let Some(status) = p.exited() {
                return Err(Error::ProcessExited {
                    name: p.name,
                    status,
                    log_tail: p.log_tail(),
                });
            }
        }
        Ok(())
    }

    fn api_log_tail(&self) -> String {
        self.processes
            .iter()
            .find(|p| p.name == "kube-apiserver")
            .map(Supervised::log_tail)
            .unwrap_or_default()
    }

    async fn wait_api_ready(&mut self, client: &Client) -> Result<(), Error> {
        let deadline = Instant::now() + API_READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let request = http_get("/readyz");
            if let Ok(body) = client.request_text(request).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: "kube-apiserver /readyz".into(),
                    seconds: API_READY_TIMEOUT.as_secs(),
                    log_tail: self.api_log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_controllers_ready(&mut self, client: &Client) -> Result<(), Error> {
        let deadline = Instant::now() + CONTROLLERS_READY_TIMEOUT;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        loop {
            self.check_alive()?;
            if let Ok(Some(_)) = sas.get_opt("default").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: "kube-controller-manager (the default ServiceAccount)".into(),
                    seconds: CONTROLLERS_READY_TIMEOUT.as_secs(),
                    log_tail: self
                        .processes
                        .iter()
                        .find(|p| p.name == "kube-controller-manager")
                        .map(Supervised::log_tail)
                        .unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the API server and etcd and starts them again on the same ports, with the same
    /// data folder and credentials (a control plane outage that loses nothing), then waits until
    /// the API server is ready. Clients keep working across it once it is back; watches end
    /// and must be re-established by their owners. Returns how long the outage lasted.
    pub async fn restart_api_server(&mut self) -> Result<Duration, Error> {
        let started = Instant::now();
        // Stop the API server first (it would otherwise fail its etcd health checks), then etcd.
        for name in ["kube-apiserver", "etcd"] {
            if let Some(i) = self.processes.iter().position(|p| p.name == name) {
                let mut p = self.processes.remove(i);
                p.stop();
            }
        }
        self.restarts += 1;
        let n = self.restarts;
        let logs = self.dir.join("logs");
        let etcd = spawn_etcd(
            &self.binaries,
            &self.dir,
            self.etcd_port,
            self.peer_port,
            &format!("etcd.{n}.log"),
        )?;
        let api = Supervised::spawn(
            "kube-apiserver",
            &self.binaries.kube_apiserver,
            apiserver_args(&self.dir, &self.pki, self.etcd_port, self.api_port),
            logs.join(format!("kube-apiserver.{n}.log")),
            None,
        )?;
        // Keep the stop order: the controller manager (last) before the API server before etcd.
        let at = self
            .processes
            .iter()
            .position(|p| p.name == "kube-controller-manager")
            .unwrap_or(self.processes.len());
        self.processes.insert(at, api);
        self.processes.insert(at, etcd);
        let client = self.client().await?;
        self.wait_api_ready(&client).await?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            restarts = n,
            "API server and etcd restarted"
        );
        Ok(started.elapsed())
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The folder holding state, logs (`logs/`) and credentials.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig file (for `kubectl --kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// How long the last start took (build excluded).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// An admin client configuration.
    pub async fn config(&self) -> Result<Config, Error> {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_text)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A new admin client. Clients belong to the async runtime that creates them, so create one
    /// per runtime (per test).
    pub async fn client(&self) -> Result<Client, Error> {
        let config = self.config().await?;
        Client::try_from(config).map_err(Error::kube("create a client"))
    }

    /// Stops every process (also done on drop).
    pub fn stop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.stop();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn http_get(path: &'static str) -> http::Request<Vec<u8>> {
    let mut request = http::Request::new(Vec::new());
    *request.uri_mut() = http::Uri::from_static(path);
    request
}

/// Starts etcd with its data in `dir/etcd` (kept across restarts).
fn spawn_etcd(
    binaries: &Binaries,
    dir: &Path,
    etcd_port: u16,
    peer_port: u16,
    log: &str,
) -> Result<Supervised, Error> {
    Supervised::spawn(
        "etcd",
        &binaries.etcd,
        [
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            "--name=plugboard".to_owned(),
        ],
        dir.join("logs").join(log),
        None,
    )
}

fn apiserver_args(dir: &Path, pki: &Pki, etcd_port: u16, api_port: u16) -> Vec<String> {
    vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={api_port}"),
        format!("--cert-dir={}", dir.join("certs").display()),
        format!("--tls-cert-file={}", pki.serving_cert.display()),
        format!("--tls-private-key-file={}", pki.serving_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        format!("--token-auth-file={}", pki.token_file.display()),
        "--authorization-mode=RBAC".to_owned(),
        "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        format!("--service-account-key-file={}", pki.sa_pub.display()),
        format!(
            "--service-account-signing-key-file={}",
            pki.sa_key.display()
        ),
        // The `kubernetes` Service would point at a loopback address, which is not allowed.
        "--endpoint-reconciler-type=none".to_owned(),
        "--allow-privileged=true".to_owned(),
        "--enable-priority-and-fairness=false".to_owned(),
        // `/debug/pprof` (cluster-admin only) for the benchmark's profile of the API server.
        "--profiling=true".to_owned(),
    ]
}
