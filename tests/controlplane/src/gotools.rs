//! Go programs the tests and `plugboard dev` use beside the control plane (a registry, `helm`,
//! OCI clients), built from their Go modules with `go install module/cmd@version`, once per
//! machine.
//!
//! Each tool is cached under [`binaries::cache_dir`]`/tools/<name>-<version>-<go>`; a file lock
//! per tool makes concurrent processes wait for one build instead of racing.

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::Error;
use crate::binaries::{cache_dir, finish_go_build, go_version};

/// A Go program pinned to a module version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoTool {
    /// Short name, used for the cache folder and messages.
    pub name: &'static str,
    /// The `main` package to install, e.g. `helm.sh/helm/v3/cmd/helm`.
    pub package: &'static str,
    /// The module version, e.g. `v3.22.0`.
    pub version: &'static str,
}

impl GoTool {
    /// The name of the installed program: the last element of the package path.
    pub fn binary_name(&self) -> &'static str {
        self.package.rsplit('/').next().unwrap_or(self.package)
    }
}

/// Returns the path of `tool`, building it first if this machine has not yet.
///
/// The first build of a tool takes a minute or more and prints what it builds on stderr; later
/// calls return at once.
pub fn ensure(tool: GoTool) -> Result<PathBuf, Error> {
    let go = go_version()?;
    let tools = cache_dir().join("tools");
    let dir = tools.join(format!("{}-{}-{go}", tool.name, tool.version));
    let binary = dir.join(tool.binary_name());
    if binary.is_file() {
        return Ok(binary);
    }

    fs::create_dir_all(&tools).map_err(Error::io("create", &tools))?;
    let lock_path = tools.join(format!("{}.lock", tool.name));
    let lock = fs::File::create(&lock_path).map_err(Error::io("create", &lock_path))?;
    lock.lock().map_err(Error::io("lock", &lock_path))?;
    // Another process may have finished the build while we waited for the lock.
    if binary.is_file() {
        return Ok(binary);
    }

    let staging = tools.join(format!("building-{}", tool.name));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(Error::io("remove", &staging))?;
    }
    fs::create_dir_all(&staging).map_err(Error::io("create", &staging))?;

    let started = Instant::now();
    let mut stderr = std::io::stderr();
    // Progress for people watching a first run; failures are reported through the error.
    let _ = writeln!(
        stderr,
        "plugboard-controlplane: building {} {} with {go} into {} (first run on this machine only)",
        tool.name,
        tool.version,
        dir.display()
    );
    let output = Command::new("go")
        .args(["install", "-trimpath", "-ldflags=-s -w"])
        .arg(format!("{}@{}", tool.package, tool.version))
        .current_dir(&tools)
        .env("GOBIN", &staging)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .output()
        .map_err(Error::GoMissing)?;
    finish_go_build(&output, &staging, &dir)?;
    let _ = writeln!(
        stderr,
        "plugboard-controlplane: built {} in {:.0} s",
        tool.name,
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_name_is_the_last_package_element() {
        let tool = GoTool {
            name: "helm",
            package: "helm.sh/helm/v3/cmd/helm",
            version: "v3.22.0",
        };
        assert_eq!(tool.binary_name(), "helm");
    }
}
