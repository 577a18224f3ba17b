//! Builds `etcd`, `kube-apiserver` and `kube-controller-manager` from their Go modules, once per
//! machine.
//!
//! The Go wrapper module (`go/` beside this crate) is embedded in this crate, so any binary
//! that links it can build the control plane wherever it runs. Binaries are cached in a folder
//! named after the Kubernetes version and a hash of the module files and the Go version; a file
//! lock makes concurrent test processes wait for one build instead of racing.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::{Error, KUBERNETES_VERSION};

/// Environment variable naming the folder the binaries are cached in.
pub const CACHE_ENV: &str = "PLUGBOARD_CONTROLPLANE_CACHE";

const MODULE_FILES: [(&str, &str); 4] = [
    ("go.mod", include_str!("../go/go.mod")),
    ("go.sum", include_str!("../go/go.sum")),
    ("tools.go", include_str!("../go/tools.go")),
    ("etcd/main.go", include_str!("../go/etcd/main.go")),
];

const PACKAGES: [&str; 3] = [
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "./etcd",
];

/// Paths of the built control plane programs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `etcd` server.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager`.
    pub kube_controller_manager: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Self {
        Self {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
        }
    }

    fn all_present(&self) -> bool {
        [
            &self.etcd,
            &self.kube_apiserver,
            &self.kube_controller_manager,
        ]
        .iter()
        .all(|p| p.is_file())
    }
}

/// The folder binaries are cached in: `$PLUGBOARD_CONTROLPLANE_CACHE`, else
/// `$CARGO_TARGET_DIR/controlplane`, else `target/controlplane` of this workspace.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("controlplane");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/controlplane")
}

pub(crate) fn go_version() -> Result<String, Error> {
    let out = Command::new("go")
        .args(["env", "GOVERSION"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(Error::GoMissing)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cache_key(go_version: &str) -> String {
    let mut hash = Sha256::new();
    for (name, text) in MODULE_FILES {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
    }
    hash.update(go_version.as_bytes());
    hex::encode(&hash.finalize()[..6])
}

/// Returns the control plane programs, building them first if this machine has not yet.
///
/// The first build takes minutes (kube-apiserver is large) and prints what it builds on
/// stderr; later calls return at once.
pub fn ensure() -> Result<Binaries, Error> {
    let cache = cache_dir();
    let go = go_version()?;
    let key = cache_key(&go);
    let out_dir = cache.join(format!("{KUBERNETES_VERSION}-{key}"));
    let binaries = Binaries::in_dir(&out_dir);
    if binaries.all_present() {
        return Ok(binaries);
    }

    fs::create_dir_all(&cache).map_err(Error::io("create", &cache))?;
    let lock_path = cache.join("build.lock");
    let lock = fs::File::create(&lock_path).map_err(Error::io("create", &lock_path))?;
    lock.lock().map_err(Error::io("lock", &lock_path))?;
    // Another process may have finished the build while we waited for the lock.
    if binaries.all_present() {
        return Ok(binaries);
    }

    let src = cache.join(format!("src-{key}"));
    for (name, text) in MODULE_FILES {
        let path = src.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
        }
        fs::write(&path, text).map_err(Error::io("write", &path))?;
    }
    let staging = cache.join(format!("building-{key}"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(Error::io("remove", &staging))?;
    }
    fs::create_dir_all(&staging).map_err(Error::io("create", &staging))?;

    let started = Instant::now();
    let mut stderr = std::io::stderr();
    // Progress for people watching a first run; failures are reported through the error.
    let _ = writeln!(
        stderr,
        "plugboard-controlplane: building etcd, kube-apiserver and kube-controller-manager {KUBERNETES_VERSION} with {go} into {} (first run on this machine only; several minutes)",
        out_dir.display()
    );
    let output = Command::new("go")
        .arg("build")
        .args(["-trimpath", "-ldflags=-s -w", "-o"])
        .arg(format!("{}/", staging.display()))
        .args(PACKAGES)
        .current_dir(&src)
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .map_err(Error::GoMissing)?;
    finish_go_build(&output, &staging, &out_dir)?;
    let _ = writeln!(
        stderr,
        "plugboard-controlplane: built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(binaries)
}

/// Turns a finished `go build`/`go install` into its result: its output as the error when it
/// failed, else the staging folder moved into place at `dir` (replacing what was there).
pub(crate) fn finish_go_build(
    output: &std::process::Output,
    staging: &Path,
    dir: &Path,
) -> Result<(), Error> {
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(Error::GoBuild {
            status: output.status,
            output: text,
        });
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(Error::io("remove", dir))?;
    }
    fs::rename(staging, dir).map_err(Error::io("move into place", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_go_version() {
        assert_ne!(cache_key("go1.26.8"), cache_key("go1.26.9"));
        assert_eq!(cache_key("go1.26.8"), cache_key("go1.26.8"));
    }

    #[test]
    fn embedded_module_pins_the_kubernetes_version() {
        let go_mod = MODULE_FILES[0].1;
        assert!(go_mod.contains(&format!("k8s.io/kubernetes {KUBERNETES_VERSION}")));
    }
}
