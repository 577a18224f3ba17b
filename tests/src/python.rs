//! Builds the Python plugins in `plugins/` (folders with an `app.py`) into WebAssembly
//! components with [componentize-py](https://github.com/bytecodealliance/componentize-py), once
//! per machine.
//!
//! ```no_run
//! let clients = plugboard_tests::python::component("clients-py").unwrap();
//! ```
//!
//! componentize-py is installed from PyPI into a virtual environment in the plugin cache
//! ([`plugins::cache_dir`](crate::plugins::cache_dir)) with the machine's `python3`; it embeds
//! CPython in the component, so components are large (about 18 MiB). A component is cached in
//! a folder named after a hash of the plugin's `app.py`, the WIT it is built against and the
//! componentize-py version; a file lock makes concurrent test processes wait for one build.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// The componentize-py release plugins are built with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The contract version Python plugins are built against (`wit/<version>/`).
pub const WIT_VERSION: &str = "0.1.0";

/// Why a Python plugin could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// There is no Python plugin of that name.
    #[error("no Python plugin `{0}` (a folder of plugins/ with an app.py)")]
    UnknownPlugin(String),
    /// A program could not be started.
    #[error("failed to run `{program}` (is Python 3 with venv installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program failed.
    #[error("`{command}` failed ({status}); its output:\n{output}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its combined output.
        output: String,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

fn run(mut command: Command) -> Result<(), Error> {
    let line = format!("{command:?}");
    let output = command.output().map_err(|source| Error::Spawn {
        program: line.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(Error::Failed {
        command: line,
        status: output.status,
        output: text,
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn cache_key(app: &[u8], wit: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [app, wit, COMPONENTIZE_PY_VERSION.as_bytes()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex::encode(&hash.finalize()[..8])
}

/// Returns the component built from `plugins/<name>/app.py`, building it first (and installing
/// componentize-py first of all) if this machine has not yet.
pub fn component(name: &str) -> Result<PathBuf, Error> {
    let root = workspace_root();
    let plugin = root.join("plugins").join(name);
    let app_path = plugin.join("app.py");
    if !app_path.is_file() {
        return Err(Error::UnknownPlugin(name.to_owned()));
    }
    let wit_dir = root.join("wit").join(WIT_VERSION);
    let wit_path = wit_dir.join("apparatus.wit");
    let app = fs::read(&app_path).map_err(io("read", &app_path))?;
    let wit = fs::read(&wit_path).map_err(io("read", &wit_path))?;

    let cache = crate::plugins::cache_dir().join("python");
    let out = cache
        .join(format!("{name}-{}", cache_key(&app, &wit)))
        .join(format!("{name}.wasm"));
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(&cache).map_err(io("create", &cache))?;
    let lock_path = cache.join("build.lock");
    let lock = fs::File::create(&lock_path).map_err(io("create", &lock_path))?;
    lock.lock().map_err(io("lock", &lock_path))?;
    if out.is_file() {
        return Ok(out);
    }

    let mut stderr = std::io::stderr();
    let venv = cache.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let tool = venv.join("bin").join("componentize-py");
    if !tool.is_file() {
        let started = Instant::now();
        let _ = writeln!(
            stderr,
            "plugboard-tests: installing componentize-py {COMPONENTIZE_PY_VERSION} from PyPI into {}",
            venv.display()
        );
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run(create)?;
        let mut install = Command::new(venv.join("bin").join("pip"));
        install
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"));
        run(install)?;
        let _ = writeln!(
            stderr,
            "plugboard-tests: installed componentize-py in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let started = Instant::now();
    let Some(out_dir) = out.parent() else {
        return Err(Error::UnknownPlugin(name.to_owned()));
    };
    let staging = cache.join(format!("building-{name}"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    }
    fs::create_dir_all(&staging).map_err(io("create", &staging))?;
    let mut build = Command::new(&tool);
    build
        .arg("-d")
        .arg(&wit_dir)
        .args(["-w", "apparatus", "componentize", "app", "-p"])
        .arg(&plugin)
        .arg("-o")
        .arg(staging.join(format!("{name}.wasm")))
        // componentize-py writes its bindings and caches beside the app otherwise.
        .current_dir(&staging)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run(build)?;
    if out_dir.exists() {
        fs::remove_dir_all(out_dir).map_err(io("remove", out_dir))?;
    }
    fs::rename(&staging, out_dir).map_err(io("move into place", out_dir))?;
    let _ = writeln!(
        stderr,
        "plugboard-tests: built Python plugin {name} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_follows_the_app_and_the_contract() {
        let key = cache_key(b"app", b"wit");
        assert_eq!(key, cache_key(b"app", b"wit"));
        assert_ne!(key, cache_key(b"app2", b"wit"));
        assert_ne!(key, cache_key(b"app", b"wit2"));
        // The boundary between the parts counts.
        assert_ne!(cache_key(b"ap", b"pwit"), cache_key(b"app", b"wit"));
    }
}
