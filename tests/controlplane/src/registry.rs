//! A real OCI registry for tests and `plugboard dev`: the CNCF distribution server, built from
//! its Go module ([`REGISTRY_TOOL`], through [`gotools::ensure`], cached like the control
//! plane), on loopback over plain HTTP, with its storage in a temporary directory and,
//! optionally, htpasswd basic authentication.
//!
//! ```no_run
//! # async fn demo() -> Result<(), plugboard_controlplane::registry::RegistryError> {
//! use plugboard_controlplane::registry::Registry;
//!
//! let registry = Registry::start().await?;
//! let image = registry.image("hooks:1"); // 127.0.0.1:PORT/hooks:1
//! // push with plugboard::oci::push_component(&image, …, &registry.plain_http_hosts())
//! # Ok(())
//! # }
//! ```
//!
//! The server runs under the same kind of `sh` supervisor as the control plane: its standard
//! input is a pipe from this process, so when this process exits for any reason (a panic, a
//! kill) the pipe closes and the supervisor stops the server and deletes its directory.
//! Dropping a [`Registry`] does the same at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::gotools::{self, GoTool};
use crate::process::Supervised;

/// The CNCF distribution registry server, built from its Go module on first use.
pub const REGISTRY_TOOL: GoTool = GoTool {
    name: "registry",
    package: "github.com/distribution/distribution/v3/cmd/registry",
    version: "v3.1.2",
};

/// bcrypt cost of the htpasswd file. The server checks the password on every request; at
/// bcrypt's default cost of 12 that takes about a second each.
const BCRYPT_COST: u32 = 4;

/// How long the server may take to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How many ports to try when another process takes the chosen one first.
const START_ATTEMPTS: u32 = 3;

static REGISTRIES: AtomicU64 = AtomicU64::new(0);

/// Why a test registry could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The server could not be built from its Go module.
    #[error("failed to build the registry server from its Go module")]
    Build(#[source] crate::Error),
    /// A file, directory or process operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file, directory or program.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The htpasswd entry could not be hashed.
    #[error("failed to hash the test registry's password")]
    Bcrypt(#[from] bcrypt::BcryptError),
    /// The server exited or did not answer while starting.
    #[error("the test registry did not start: {problem}; last log lines:\n{log_tail}")]
    Start {
        /// What happened.
        problem: String,
        /// The end of the server's log.
        log_tail: String,
    },
}

impl RegistryError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
        let path = path.to_owned();
        move |source| RegistryError::Io {
            action,
            path,
            source,
        }
    }
}

/// A running registry on `127.0.0.1`. Dropping it stops the server and deletes its storage.
#[derive(Debug)]
pub struct Registry {
    host: String,
    dir: PathBuf,
    log: PathBuf,
    credentials: Option<(String, String)>,
    config_path: PathBuf,
    /// The access logs of servers stopped by [`Registry::stop_server`].
    earlier_logs: String,
    /// Restarts so far (names the log files of later servers).
    restarts: u32,
    server: Supervised,
    /// The server program.
    binary: PathBuf,
    /// Holds the directory: its supervisor deletes it when this process or the `Registry`
    /// goes, not when the server stops, so the server can be restarted with its storage.
    cleanup: Supervised,
}

impl Registry {
    /// Starts a registry that anyone may pull from and push to.
    pub async fn start() -> Result<Registry, RegistryError> {
        Registry::launch(None).await
    }

    /// Starts a registry that requires these basic-auth credentials for every request.
    pub async fn start_with_auth(
        username: &str,
        password: &str,
    ) -> Result<Registry, RegistryError> {
        Registry::launch(Some((username.to_owned(), password.to_owned()))).await
    }

    async fn launch(credentials: Option<(String, String)>) -> Result<Registry, RegistryError> {
        let binary = binary().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut registry = Registry::spawn(&binary, credentials.clone())?;
            match registry.wait_ready().await {
                Ok(()) => return Ok(registry),
                Err(e) => {
                    let taken = matches!(&e, RegistryError::Start { log_tail, .. }
                        if log_tail.contains("address already in use"));
                    if !taken || attempt >= START_ATTEMPTS {
                        return Err(e);
                    }
                    registry.stop();
                }
            }
        }
    }

    fn spawn(
        binary: &Path,
        credentials: Option<(String, String)>,
    ) -> Result<Registry, RegistryError> {
        let dir = tempfile::Builder::new()
            .prefix("plugboard-registry-")
            .tempdir()
            .map_err(RegistryError::io(
                "create a directory in",
                &std::env::temp_dir(),
            ))?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let n = REGISTRIES.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let secret = format!("plugboard-test-{}-{n}-{nanos}", std::process::id());
        let auth = match &credentials {
            None => String::new(),
            Some((username, password)) => {
                let htpasswd = dir.path().join("htpasswd");
                let entry = format!("{username}:{}\n", bcrypt::hash(password, BCRYPT_COST)?);
                std::fs::write(&htpasswd, entry).map_err(RegistryError::io("write", &htpasswd))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: plugboard-test\n    path: {:?}\n",
                    htpasswd.display().to_string()
                )
            }
        };
        let storage = dir.path().join("storage");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {:?}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {host}\n  secret: {secret}\n{auth}",
            storage.display().to_string()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(RegistryError::io("write", &config_path))?;
        let log = dir.path().join("registry.log");
        let cleanup = Supervised::spawn(
            "cleanup",
            Path::new("sleep"),
            ["infinity"],
            dir.path().join("cleanup.log"),
            Some(dir.path()),
        )
        .map_err(|e| RegistryError::Start {
            problem: e.to_string(),
            log_tail: String::new(),
        })?;
        // From here on that supervisor deletes the directory when it stops.
        let dir = dir.keep();
        let server = spawn_server(binary, &config_path, &log)?;
        Ok(Registry {
            host,
            dir,
            log,
            credentials,
            config_path,
            earlier_logs: String::new(),
            restarts: 0,
            server,
            binary: binary.to_owned(),
            cleanup,
        })
    }

    /// Stops the server, keeping its storage: pulls and pushes fail until
    /// [`Registry::start_server`] (a registry outage).
    pub fn stop_server(&mut self) {
        self.server.stop();
        let last = std::fs::read_to_string(&self.log).unwrap_or_default();
        self.earlier_logs.push_str(&last);
    }

    /// Starts the server again after [`Registry::stop_server`], on the same port with the same
    /// storage and credentials, and waits until it answers.
    pub async fn start_server(&mut self) -> Result<(), RegistryError> {
        if self.server.exited().is_none() {
            return Ok(());
        }
        self.restarts += 1;
        self.log = self.dir.join(format!("registry.{}.log", self.restarts));
        self.server = spawn_server(&self.binary, &self.config_path, &self.log)?;
        self.wait_ready().await
    }

    /// Waits until `GET /v2/` answers (200, or 401 with authentication on).
    async fn wait_ready(&mut self) -> Result<(), RegistryError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.server.exited() {
                return Err(self.start_error(format!("the server exited ({status})")));
            }
            match self.get_status("/v2/").await {
                Ok(200 | 401) => return Ok(()),
                Ok(_) | Err(_) if started.elapsed() > READY_TIMEOUT => {
                    return Err(self
                        .start_error(format!("GET /v2/ did not answer within {READY_TIMEOUT:?}")));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn start_error(&self, problem: String) -> RegistryError {
        RegistryError::Start {
            problem,
            log_tail: self.server.log_tail(),
        }
    }

    /// The status code of an anonymous `GET path`.
    pub async fn get_status(&self, path: &str) -> std::io::Result<u16> {
        let mut stream = tokio::net::TcpStream::connect(&self.host).await?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        // "HTTP/1.x NNN"
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP status line"))
    }

    /// `127.0.0.1:PORT`, the registry part of references.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `127.0.0.1:PORT/<repository_and_tag>`.
    pub fn image(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.host)
    }

    /// The allow-list of plain-HTTP registries that admits this one.
    pub fn plain_http_hosts(&self) -> Vec<String> {
        vec![self.host.clone()]
    }

    /// A `.dockerconfigjson` with this registry's credentials (an empty `auths` without
    /// authentication).
    pub fn docker_config_json(&self) -> Vec<u8> {
        use base64::Engine as _;
        let auths = match &self.credentials {
            None => serde_json::json!({}),
            Some((username, password)) => {
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                serde_json::json!({ format!("http://{}", self.host): { "auth": auth } })
            }
        };
        serde_json::json!({ "auths": auths })
            .to_string()
            .into_bytes()
    }

    /// Where the server keeps the blob with `digest` (`sha256:…`): tests alter it to play a
    /// registry that serves wrong content.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or(hex))
            .join(hex)
            .join("data")
    }

    /// The server's log (access log and warnings) so far, across restarts.
    pub fn log(&self) -> String {
        let current = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{}{current}", self.earlier_logs)
    }

    /// How many requests the access log shows whose request line contains `needle` (for
    /// example `"GET /v2/hooks/blobs/sha256:…`).
    pub fn count_requests(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Stops the server (and deletes its directory) now; dropping does the same.
    pub fn stop(&mut self) {
        self.server.stop();
        self.cleanup.stop();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The registry server program, built first if this machine has not yet (a few minutes, once).
pub async fn binary() -> Result<PathBuf, RegistryError> {
    tokio::task::spawn_blocking(|| gotools::ensure(REGISTRY_TOOL))
        .await
        .map_err(|e| {
            RegistryError::Build(crate::Error::Io {
                action: "build",
                path: PathBuf::from(REGISTRY_TOOL.package),
                source: std::io::Error::other(e),
            })
        })?
        .map_err(RegistryError::Build)
}

/// Starts the registry server with `config_path`, its output in `log`. Tracing export is off:
/// the server would otherwise look for an OpenTelemetry collector.
fn spawn_server(
    binary: &Path,
    config_path: &Path,
    log: &Path,
) -> Result<Supervised, RegistryError> {
    Supervised::spawn(
        "registry",
        Path::new("env"),
        [
            std::ffi::OsStr::new("OTEL_TRACES_EXPORTER=none"),
            binary.as_os_str(),
            std::ffi::OsStr::new("serve"),
            config_path.as_os_str(),
        ],
        log.to_owned(),
        None,
    )
    .map_err(|e| RegistryError::Start {
        problem: e.to_string(),
        log_tail: String::new(),
    })
}

/// A port that was free a moment ago, below the ephemeral range (see
/// [`crate::free_port`]): the registry restarts on the same port.
fn free_port() -> Result<u16, RegistryError> {
    crate::free_port().map_err(|e| RegistryError::Io {
        action: "find a free port on",
        path: Path::new("127.0.0.1").to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}
