//! Builds the plugins in `plugins/` of this source tree into WebAssembly components, once per
//! machine, for the tests and `plugboard dev`.
//!
//! ```no_run
//! let recorder = plugboard_controlplane::plugins::component("recorder").unwrap();
//! let bytes = std::fs::read(recorder).unwrap();
//! ```
//!
//! Every plugin is a workspace member that also compiles natively (its unit tests run with the
//! rest of the workspace); here they are built for `wasm32-wasip2` with the `wasm-plugin`
//! profile into a target dir of their own, so the workspace's native build is untouched.
//!
//! # Toolchains
//!
//! With rustup's `wasm32-wasip2` target installed (`rustup target add wasm32-wasip2`), a plain
//! `cargo build --target wasm32-wasip2` is used. Without it (rustup cannot download targets on
//! every machine), Debian's Rust is downloaded with `apt-get download` into the cache, extracted
//! with `dpkg -x` (not installed), and drives a `-Zbuild-std` build that links with rustup's
//! `wasm-component-ld`; see `shared/notes/wasm-toolchain.md` for where this recipe comes from.
//!
//! # Cache
//!
//! Components are cached under `$PLUGBOARD_WASM_CACHE`, else `$CARGO_TARGET_DIR/wasm`, else
//! `target/wasm` of this workspace, in a folder named after a hash of the sources that shape
//! them (`plugins/`, `sdk/`, `wit/`, the workspace manifest and lock file) and of the
//! toolchain. A file lock makes concurrent test processes wait for one build; cargo's own
//! target dir in the cache keeps a rebuild after a source change to seconds.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use sha2::{Digest, Sha256};

/// Environment variable naming the folder components and toolchains are cached in.
pub const CACHE_ENV: &str = "PLUGBOARD_WASM_CACHE";

/// The target plugins are built for; it emits components directly.
pub const TARGET: &str = "wasm32-wasip2";

/// The cargo profile plugins are built with (defined in the workspace manifest).
pub const PROFILE: &str = "wasm-plugin";

/// Debian packages of the fallback toolchain, before the versioned ones are looked up.
const DEBIAN_PACKAGES: [&str; 5] = [
    "rustc-web",
    "rust-web-src",
    "cargo-web",
    "libstd-rust-web-dev",
    "wasi-libc",
];

/// The versioned Debian packages as of Rust 1.96, used when `apt-cache depends` says nothing.
const DEBIAN_VERSIONED_FALLBACK: [&str; 2] = ["libstd-rust-web-1.96", "libllvm22"];

/// Why plugins could not be built into components.
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
    /// There is no plugin of that name.
    #[error("no plugin `{name}`: the plugins are {known:?}")]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// The plugins in `plugins/`.
        known: Vec<String>,
    },
    /// A plugin's package is not named after its folder.
    #[error("{} must name its package `{expected}`", manifest.display())]
    PackageName {
        /// The plugin's `Cargo.toml`.
        manifest: PathBuf,
        /// The name it must have.
        expected: String,
    },
    /// A program could not be started.
    #[error("failed to run `{program}` ({hint})")]
    Spawn {
        /// The program.
        program: String,
        /// What to install.
        hint: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}); its output:\n{output}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },
    /// rustup's toolchain has no `wasm-component-ld`, which the Debian fallback links with.
    #[error(
        "no `wasm-component-ld` in {}: the fallback build links with rustup's (Rust 1.95 or newer); install Rust with rustup, or add the target with `rustup target add {TARGET}`",
        dir.display()
    )]
    NoComponentLinker {
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// apt knows no packages, so Debian's Rust cannot be downloaded.
    #[error(
        "apt cannot find Debian's Rust (`{package}`): run `apt-get update` once, or install the target with `rustup target add {TARGET}`"
    )]
    AptListsMissing {
        /// The package apt could not find.
        package: String,
    },
    /// cargo succeeded but a component is missing.
    #[error("cargo built no component at {}", path.display())]
    MissingOutput {
        /// Where it should be.
        path: PathBuf,
    },
}

impl Error {
    fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// The components of every plugin, as built by [`build`].
#[derive(Debug, Clone)]
pub struct Components {
    dir: PathBuf,
    names: Vec<String>,
    toolchain: String,
}

impl Components {
    /// The folder holding `<name>.wasm` for each plugin.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plugins' names (their folder names in `plugins/`), sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The toolchain the components were built with.
    pub fn toolchain(&self) -> &str {
        &self.toolchain
    }

    fn all_present(&self) -> bool {
        self.names
            .iter()
            .all(|n| self.dir.join(format!("{n}.wasm")).is_file())
    }

    /// The component of a plugin.
    pub fn path(&self, name: &str) -> Result<PathBuf, Error> {
        if self.names.iter().any(|n| n == name) {
            Ok(self.dir.join(format!("{name}.wasm")))
        } else {
            Err(Error::UnknownPlugin {
                name: name.to_owned(),
                known: self.names.clone(),
            })
        }
    }
}

/// Returns the component built from `plugins/<name>`, building every plugin first if this
/// machine has not yet built the current sources.
///
/// The first build on a machine takes minutes (without rustup's `wasm32-wasip2` it also
/// downloads Debian's Rust and compiles the standard library) and prints progress on stderr;
/// later calls in the same process return at once.
pub fn component(name: &str) -> Result<PathBuf, Error> {
    static BUILT: Mutex<Option<Components>> = Mutex::new(None);
    // Holding the lock while building makes this process's other threads wait for the build.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let components = match &*built {
        Some(components) => components,
        None => built.insert(build()?),
    };
    components.path(name)
}

/// Builds every plugin, or finds them built in the cache.
pub fn build() -> Result<Components, Error> {
    let workspace = workspace_root();
    let cache = cache_dir();
    let names = plugin_names(&workspace)?;
    let sources = sources_hash(&workspace)?;

    if let Some(toolchain) = Toolchain::detect(&cache)? {
        let components = toolchain.components(&cache, &sources, &names);
        if components.all_present() {
            return Ok(components);
        }
    }

    fs::create_dir_all(&cache).map_err(Error::io("create", &cache))?;
    let lock_path = cache.join("build.lock");
    let lock = fs::File::create(&lock_path).map_err(Error::io("create", &lock_path))?;
    lock.lock().map_err(Error::io("lock", &lock_path))?;

    let toolchain = match Toolchain::detect(&cache)? {
        Some(toolchain) => toolchain,
        None => Toolchain::install_debian(&cache)?,
    };
    // Another process may have built the same sources while we waited for the lock.
    let components = toolchain.components(&cache, &sources, &names);
    if components.all_present() {
        return Ok(components);
    }
    toolchain.build(&workspace, &cache, &components)?;
    Ok(components)
}

/// The folder everything is cached in: `$PLUGBOARD_WASM_CACHE`, else `$CARGO_TARGET_DIR/wasm`,
/// else `target/wasm` of this workspace.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("wasm");
    }
    workspace_root().join("target/wasm")
}

/// The workspace this crate was built from (it lives in `<workspace>/tests/controlplane`): the
/// plugins are built from its sources, so a binary using this module must run where it was
/// built.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn package_name(plugin: &str) -> String {
    format!("plugboard-plugin-{plugin}")
}

/// The plugins: folders of `plugins/` with a `Cargo.toml` whose package is named after them.
fn plugin_names(workspace: &Path) -> Result<Vec<String>, Error> {
    let dir = workspace.join("plugins");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
        let entry = entry.map_err(Error::io("list", &dir))?;
        let manifest = entry.path().join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(&manifest).map_err(Error::io("read", &manifest))?;
        let expected = package_name(&name);
        if !text.contains(&format!("name = \"{expected}\"")) {
            return Err(Error::PackageName { manifest, expected });
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// A hash of everything in the workspace that shapes the components.
fn sources_hash(workspace: &Path) -> Result<String, Error> {
    let mut files = Vec::new();
    for dir in ["plugins", "sdk", "wit"] {
        collect_files(&workspace.join(dir), &mut files)?;
    }
    files.push(workspace.join("Cargo.toml"));
    files.push(workspace.join("Cargo.lock"));
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        let text = fs::read(&file).map_err(Error::io("read", &file))?;
        let relative = file.strip_prefix(workspace).unwrap_or(&file);
        hash.update(relative.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(&text);
    }
    Ok(hex::encode(hash.finalize()))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Build output and editor or VCS state do not shape the components.
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(Error::io("inspect", &path))?;
        if kind.is_dir() {
            collect_files(&path, files)?;
        } else if kind.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// How components are built on this machine.
#[derive(Debug)]
enum Toolchain {
    /// rustup with the `wasm32-wasip2` target installed.
    Rustup {
        /// `rustc -vV`.
        version: String,
    },
    /// Debian's Rust extracted into the cache, linking with rustup's `wasm-component-ld`.
    Debian {
        /// The extracted packages' root (holds `usr/`).
        root: PathBuf,
        /// rustup's host tools (`wasm-component-ld`, `gcc-ld/wasm-ld`).
        rustup_bin: PathBuf,
        /// The packages and both compilers' `rustc -vV`.
        version: String,
    },
}

impl Toolchain {
    /// The toolchain to use, or `None` when it is the Debian one and it is not downloaded yet.
    fn detect(cache: &Path) -> Result<Option<Toolchain>, Error> {
        let rustup_version = output_text(Command::new("rustc").arg("-vV"), RUST_HINT)?;
        if rustup_has_target()? {
            return Ok(Some(Toolchain::Rustup {
                version: rustup_version,
            }));
        }
        let debian = debian_dir(cache);
        let marker = debian.join("installed");
        let Ok(packages) = fs::read_to_string(&marker) else {
            return Ok(None);
        };
        let root = debian.join("root");
        let debian_version = output_text(
            Command::new(root.join("usr/bin/rustc"))
                .arg("-vV")
                .env("LD_LIBRARY_PATH", debian_library_path(&root)),
            "the Debian Rust in the cache is broken: delete it to download it again",
        )?;
        Ok(Some(Toolchain::Debian {
            rustup_bin: rustup_bin(&rustup_version)?,
            root,
            version: format!("{packages}\n{debian_version}\n{rustup_version}"),
        }))
    }

    fn label(&self) -> &'static str {
        match self {
            Toolchain::Rustup { .. } => "rustup",
            Toolchain::Debian { .. } => "debian",
        }
    }

    fn describe(&self) -> String {
        match self {
            Toolchain::Rustup { version } => format!("rustup {}", first_line(version)),
            Toolchain::Debian { version, .. } => {
                let rustc = version
                    .lines()
                    .find(|l| l.starts_with("rustc "))
                    .unwrap_or("rustc");
                format!("Debian {rustc} with -Zbuild-std, linked by rustup's wasm-component-ld")
            }
        }
    }

    fn components(&self, cache: &Path, sources: &str, names: &[String]) -> Components {
        let version = match self {
            Toolchain::Rustup { version } | Toolchain::Debian { version, .. } => version,
        };
        let mut hash = Sha256::new();
        for part in [sources, self.label(), version, TARGET, PROFILE] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let key = hex::encode(&hash.finalize()[..8]);
        Components {
            dir: cache.join("components").join(key),
            names: names.to_vec(),
            toolchain: self.describe(),
        }
    }

    /// Downloads Debian's Rust into the cache and extracts it. Call with the build lock held.
    fn install_debian(cache: &Path) -> Result<Toolchain, Error> {
        let debian = debian_dir(cache);
        let debs = debian.join("debs");
        let staging = debian.join("root.partial");
        for dir in [&debs, &staging, &debian.join("root")] {
            if dir.exists() {
                fs::remove_dir_all(dir).map_err(Error::io("remove", dir))?;
            }
        }
        fs::create_dir_all(&debs).map_err(Error::io("create", &debs))?;
        fs::create_dir_all(&staging).map_err(Error::io("create", &staging))?;

        let packages = debian_packages()?;
        progress(format_args!(
            "downloading Debian's Rust with apt-get ({}) into {} (first run on this machine only)",
            packages.join(" "),
            debs.display()
        ));
        let output = Command::new("apt-get")
            .arg("download")
            .args(&packages)
            .current_dir(&debs)
            .output()
            .map_err(spawn("apt-get", APT_HINT))?;
        if !output.status.success() {
            if let Some(package) = unlocatable_package(&combined(&output)) {
                return Err(Error::AptListsMissing { package });
            }
            return Err(failed(
                format!("apt-get download {}", packages.join(" ")),
                &output,
            ));
        }

        let mut files: Vec<PathBuf> = fs::read_dir(&debs)
            .map_err(Error::io("list", &debs))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        files.sort();
        for deb in &files {
            run(
                Command::new("dpkg").arg("-x").arg(deb).arg(&staging),
                "dpkg (Debian's package tool)",
            )?;
        }
        let root = debian.join("root");
        fs::rename(&staging, &root).map_err(Error::io("move into place", &root))?;
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let marker = debian.join("installed");
        fs::write(&marker, names.join("\n")).map_err(Error::io("write", &marker))?;
        // The downloaded archives are extracted; keep only what builds need.
        fs::remove_dir_all(&debs).map_err(Error::io("remove", &debs))?;

        match Toolchain::detect(cache)? {
            Some(toolchain) => Ok(toolchain),
            None => Err(Error::MissingOutput { path: marker }),
        }
    }

    /// Builds every plugin and moves the components into `components.dir`. Call with the
    /// build lock held.
    fn build(&self, workspace: &Path, cache: &Path, components: &Components) -> Result<(), Error> {
        let target_dir = cache.join(format!("target-{}", self.label()));
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo
            .current_dir(workspace)
            .args([
                "build",
                "--locked",
                "--profile",
                PROFILE,
                "--target",
                TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        for name in &components.names {
            cargo.args(["-p", &package_name(name)]);
        }
        // Flags meant for the calling build must not leak into this one.
        for var in [
            "RUSTC",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
        ] {
            cargo.env_remove(var);
        }
        if let Toolchain::Debian {
            root, rustup_bin, ..
        } = self
        {
            let linker = rustup_bin.join("wasm-component-ld");
            let libc = root.join("usr/lib/wasm32-wasi");
            cargo
                .arg("-Zbuild-std=std,panic_abort")
                .env("RUSTC", root.join("usr/bin/rustc"))
                .env("RUSTC_BOOTSTRAP", "1")
                .env("LD_LIBRARY_PATH", debian_library_path(root))
                .env(
                    "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
                    format!("-Clinker={} -L{}", linker.display(), libc.display()),
                )
                // wasm-component-ld runs `wasm-ld` from rustup's `gcc-ld`.
                .env("PATH", prepend_path(&rustup_bin.join("gcc-ld")));
        }

        let started = Instant::now();
        progress(format_args!(
            "building {} into WebAssembly components with {} (first build of these sources on this machine; a cold build takes minutes)",
            components.names.join(", "),
            self.describe()
        ));
        run(&mut cargo, RUST_HINT)?;

        let built = target_dir.join(TARGET).join(PROFILE);
        let staging = components.dir.with_extension("partial");
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(Error::io("remove", &staging))?;
        }
        fs::create_dir_all(&staging).map_err(Error::io("create", &staging))?;
        for name in &components.names {
            let from = built.join(format!("{}.wasm", package_name(name).replace('-', "_")));
            if !from.is_file() {
                return Err(Error::MissingOutput { path: from });
            }
            let to = staging.join(format!("{name}.wasm"));
            fs::copy(&from, &to).map_err(Error::io("copy", &from))?;
        }
        if components.dir.exists() {
            fs::remove_dir_all(&components.dir).map_err(Error::io("remove", &components.dir))?;
        }
        fs::rename(&staging, &components.dir)
            .map_err(Error::io("move into place", &components.dir))?;
        progress(format_args!(
            "built components in {:.1} s into {}",
            started.elapsed().as_secs_f64(),
            components.dir.display()
        ));
        Ok(())
    }
}

const RUST_HINT: &str = "install Rust with rustup, 1.95 or newer";
const APT_HINT: &str = "the fallback toolchain comes from Debian's packages; on a machine without apt, install the target with `rustup target add wasm32-wasip2`";

/// Whether rustup's `rustc` has a standard library for [`TARGET`].
fn rustup_has_target() -> Result<bool, Error> {
    let output = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(spawn("rustc", RUST_HINT))?;
    if !output.status.success() {
        return Ok(false);
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let Ok(entries) = fs::read_dir(&libdir) else {
        return Ok(false);
    };
    Ok(entries
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
}

/// rustup's host tools folder, which holds `wasm-component-ld`.
fn rustup_bin(rustc_version: &str) -> Result<PathBuf, Error> {
    let host = rustc_version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or("x86_64-unknown-linux-gnu");
    let sysroot = output_text(
        Command::new("rustc").args(["--print", "sysroot"]),
        RUST_HINT,
    )?;
    let dir = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin");
    if dir.join("wasm-component-ld").is_file() {
        Ok(dir)
    } else {
        Err(Error::NoComponentLinker { dir })
    }
}

fn debian_dir(cache: &Path) -> PathBuf {
    cache.join("debian-rust")
}

fn debian_library_path(root: &Path) -> OsString {
    let mut paths = vec![root.join("usr/lib/x86_64-linux-gnu")];
    if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

fn prepend_path(dir: &Path) -> OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(existing) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// The packages to download: the fixed ones, plus the versioned standard library and LLVM
/// they depend on, looked up so that a Debian update to a newer Rust keeps working.
fn debian_packages() -> Result<Vec<String>, Error> {
    let mut packages: Vec<String> = DEBIAN_PACKAGES.iter().map(|p| (*p).to_owned()).collect();
    let std = apt_dependency("libstd-rust-web-dev", |d| {
        d.starts_with("libstd-rust-web-") && d != "libstd-rust-web-dev"
    })?;
    let llvm = match &std {
        Some(std) => apt_dependency(std, |d| d.starts_with("libllvm"))?,
        None => None,
    };
    match (std, llvm) {
        (Some(std), Some(llvm)) => packages.extend([std, llvm]),
        _ => packages.extend(DEBIAN_VERSIONED_FALLBACK.iter().map(|p| (*p).to_owned())),
    }
    Ok(packages)
}

/// The first direct dependency of `package` that `wanted` accepts, per `apt-cache depends`.
fn apt_dependency(package: &str, wanted: impl Fn(&str) -> bool) -> Result<Option<String>, Error> {
    let output = Command::new("apt-cache")
        .args(["depends", package])
        .output()
        .map_err(spawn("apt-cache", APT_HINT))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|d| wanted(d))
        .map(str::to_owned))
}

/// The package apt reports it cannot find: what `apt-get download` says before
/// `apt-get update` has ever run (or when the configured suites lack the package).
fn unlocatable_package(apt_output: &str) -> Option<String> {
    apt_output
        .lines()
        .find_map(|l| l.split("Unable to locate package ").nth(1))
        .map(|p| p.trim().to_owned())
}

fn spawn(program: &str, hint: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let program = program.to_owned();
    move |source| Error::Spawn {
        program,
        hint,
        source,
    }
}

fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn combined(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

fn failed(command: String, output: &Output) -> Error {
    Error::Failed {
        command,
        status: output.status,
        output: combined(output),
    }
}

/// Runs a command to completion; its output is returned in the error when it fails.
fn run(command: &mut Command, hint: &'static str) -> Result<(), Error> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(spawn(&program, hint))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(command_line(command), &output))
    }
}

/// Runs a command and returns its stdout.
fn output_text(command: &mut Command, hint: &'static str) -> Result<String, Error> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(spawn(&program, hint))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(command_line(command), &output))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Progress for people watching a first build; failures are reported through errors.
fn progress(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "plugboard plugins: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_are_found_by_folder_and_package_name() {
        let names = plugin_names(&workspace_root()).unwrap();
        assert!(names.contains(&"recorder".to_owned()), "{names:?}");
        assert!(names.contains(&"adversary".to_owned()), "{names:?}");
    }

    #[test]
    fn component_key_depends_on_sources_and_toolchain() {
        let names = vec!["recorder".to_owned()];
        let cache = Path::new("/cache");
        let a = Toolchain::Rustup {
            version: "rustc 1.95.0".into(),
        };
        let b = Toolchain::Rustup {
            version: "rustc 1.96.0".into(),
        };
        let dir = |t: &Toolchain, sources: &str| t.components(cache, sources, &names).dir;
        assert_eq!(dir(&a, "s1"), dir(&a, "s1"));
        assert_ne!(dir(&a, "s1"), dir(&a, "s2"));
        assert_ne!(dir(&a, "s1"), dir(&b, "s1"));
        assert!(dir(&a, "s1").starts_with("/cache/components"));
    }

    #[test]
    fn sources_hash_ignores_build_output() {
        let workspace = tempfile::tempdir().unwrap();
        let root = workspace.path();
        for dir in ["plugins/p/src", "sdk/src", "wit/0.1.0"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("Cargo.toml"), "[workspace]").unwrap();
        fs::write(root.join("Cargo.lock"), "").unwrap();
        fs::write(root.join("plugins/p/src/lib.rs"), "// one").unwrap();
        let before = sources_hash(root).unwrap();

        fs::create_dir_all(root.join("plugins/p/target")).unwrap();
        fs::write(root.join("plugins/p/target/out.wasm"), "junk").unwrap();
        assert_eq!(sources_hash(root).unwrap(), before);

        fs::write(root.join("plugins/p/src/lib.rs"), "// two").unwrap();
        assert_ne!(sources_hash(root).unwrap(), before);
    }

    #[test]
    fn missing_apt_lists_are_reported_with_the_fix() {
        let output = "Reading package lists...\nE: Unable to locate package rustc-web\n";
        let package = unlocatable_package(output).unwrap();
        assert_eq!(package, "rustc-web");
        let message = Error::AptListsMissing { package }.to_string();
        assert!(message.contains("run `apt-get update`"), "{message}");
        assert_eq!(unlocatable_package("E: Failed to fetch"), None);
    }

    #[test]
    fn unknown_plugins_are_named_in_the_error() {
        let components = Components {
            dir: PathBuf::from("/c"),
            names: vec!["recorder".into()],
            toolchain: String::new(),
        };
        assert_eq!(
            components.path("recorder").unwrap(),
            Path::new("/c/recorder.wasm")
        );
        let err = components.path("nope").unwrap_err().to_string();
        assert_eq!(err, "no plugin `nope`: the plugins are [\"recorder\"]");
    }
}
