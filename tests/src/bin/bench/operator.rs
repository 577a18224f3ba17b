//! The operator under measurement: the `plugboard-operator` binary (the host crate's `main.rs`
//! built by this crate) run as a process of its own, so that its CPU time and resident memory,
//! read from `/proc`, count nothing of the benchmark's own work.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use kube::config::{AuthInfo, Kubeconfig};
use plugboard_tests::scenario::{Scenario, TEST_LABEL};

/// Builds `plugboard-operator` in the benchmark's own profile (cargo does not rebuild a
/// sibling binary on `cargo run --bin bench`) and returns its path.
pub fn binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    sibling("plugboard-operator")
}

/// Builds this crate's binary `name` in the benchmark's own profile when run through cargo,
/// and returns its path beside the benchmark's.
pub fn sibling(name: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "plugboard-tests", "--bin", name]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status()?;
        if !status.success() {
            return Err(format!("building {name} failed: {status}").into());
        }
    }
    let path = std::env::current_exe()?
        .parent()
        .ok_or("the benchmark binary has no folder")?
        .join(name);
    if !path.exists() {
        return Err(format!(
            "{} is missing: run the benchmark through `cargo run` or build it first",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// A running operator process.
pub struct OperatorProcess {
    child: tokio::process::Child,
    pid: u32,
    /// Where it serves `/metrics`.
    metrics: SocketAddr,
}

/// The operator's own figures from its `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OperatorMetrics {
    /// Plugs in its cache (the sum of `plugboard_couplings`).
    pub plugs: f64,
    /// Live heap, MiB (`plugboard_heap_bytes{state="in_use"}`; NaN where not reported).
    pub heap_in_use: f64,
    /// Heap freed but kept by the allocator, MiB (`state="free"`).
    pub heap_free: f64,
    /// Times its memory pass gave free heap back (`plugboard_heap_releases_total`).
    pub heap_releases: f64,
}

impl OperatorMetrics {
    fn parse(text: &str) -> Self {
        let mut out = Self {
            plugs: 0.0,
            heap_in_use: f64::NAN,
            heap_free: f64::NAN,
            heap_releases: 0.0,
        };
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if series.starts_with("plugboard_couplings{") {
                out.plugs += value;
            } else if series == "plugboard_heap_bytes{state=\"in_use\"}" {
                out.heap_in_use = value / MIB;
            } else if series == "plugboard_heap_bytes{state=\"free\"}" {
                out.heap_free = value / MIB;
            } else if series == "plugboard_heap_releases_total" {
                out.heap_releases = value;
            }
        }
        out
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// A loopback port free now, for the operator's health and metrics server.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A kubeconfig for the scenario's operator ServiceAccount (the chart's RBAC).
pub async fn kubeconfig(sc: &Scenario, dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let config = sc.operator_config().await;
    let mut kubeconfig = Kubeconfig::read_from(sc.env.kubeconfig_path())?;
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(AuthInfo {
            token: config.auth_info.token.clone(),
            ..Default::default()
        });
    }
    let path = dir.join("operator.kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&kubeconfig)?)?;
    Ok(path)
}

impl OperatorProcess {
    /// Starts `plugboard run` for the scenario's objects, with its defaults except what the
    /// benchmark needs (loopback apparatuses, a plain-HTTP registry).
    pub fn start(
        bin: &Path,
        kubeconfig: &Path,
        sc: &Scenario,
        state: &Path,
        extra: &[String],
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let log = std::fs::File::create(state.join("operator.log"))?;
        let err = log.try_clone()?;
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = tokio::process::Command::new(bin)
            .arg("run")
            .args(["--selector", &format!("{TEST_LABEL}={}", sc.run)])
            .args(["--egress-allow", "127.0.0.0/8"])
            .args(["--instance", &format!("plugboard-{}", sc.run)])
            .arg("--cache-dir")
            .arg(state.join("cache"))
            .arg("--cache-key-file")
            .arg(state.join("key").join("cache.key"))
            .args(["--health-addr", &metrics.to_string()])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("the operator exited at once")?;
        Ok(Self {
            child,
            pid,
            metrics,
        })
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        crate::procs::cpu_seconds(self.pid)
    }

    fn status_kib(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .unwrap_or(f64::NAN)
    }

    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") / 1024.0
    }

    /// Anonymous resident memory now (heap, stacks; not the binary's pages), MiB.
    pub fn anon_rss_mib(&self) -> f64 {
        self.status_kib("RssAnon:") / 1024.0
    }

    /// Peak resident memory since the process started, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") / 1024.0
    }

    /// The operator's `/metrics` now (a plain HTTP/1.0 request to its health server).
    pub async fn metrics(&self) -> Result<OperatorMetrics, Box<dyn std::error::Error>> {
        let mut stream = tokio::net::TcpStream::connect(self.metrics).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .ok_or("the operator's /metrics answer has no body")?;
        Ok(OperatorMetrics::parse(body))
    }

    /// Stops the process (SIGKILL: nothing of its shutdown is measured).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
