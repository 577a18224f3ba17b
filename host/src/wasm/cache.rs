//! Compiled components on disk, keyed by component digest and engine compatibility, so an
//! operator restart loads them in a fraction of a millisecond instead of compiling again.
//!
//! Loading a compiled artifact is loading native code: wasmtime cannot validate it, so whoever
//! can write an artifact that gets loaded runs code in the operator. Three things keep that to
//! the operator itself:
//! - **Authentication.** Each artifact is stored with an HMAC-SHA256 tag over its name (which
//!   holds the component digest and the engine's compatibility hash) and its bytes, under a
//!   key that is kept **outside the cache directory** ([`CacheKey`]): a key file in a private
//!   directory of its own, created `0600`, or a key held in memory for this process only. An
//!   artifact whose tag does not verify — tampered, written under another key, or an old
//!   unauthenticated one — is recompiled and replaced, never loaded. The bytes verified are the
//!   bytes deserialized (read once into memory), so a file swapped after the check is not used.
//! - **A private directory.** The cache directory is created `0700`; an existing one must be
//!   owned by the user the operator runs as and not writable by anyone else ([`private_dir`]).
//!   One that is not is refused, and a fresh private directory is used instead, with a warning
//!   ([`private_dir_or_fresh`]). Files are written `0600`, through a temporary file and a rename.
//! - **When in doubt, recompile**: a key file that cannot be read or created safely gives way to
//!   an in-memory key (artifacts of earlier processes are then recompiled), with a warning.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::WasmError;

/// Where the key that authenticates compiled artifacts comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheKey {
    /// A fresh random key held in memory: artifacts written by an earlier process are never
    /// loaded (a restart recompiles).
    #[default]
    Ephemeral,
    /// A key file, created (`0600`, 32 random bytes in hex, in a directory created `0700`) when
    /// missing. Keep it outside the cache directory: whoever can read it can forge artifacts.
    File(PathBuf),
}

/// Why a directory or key file is not private enough to trust.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// It could not be created, read or checked.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another user owns it.
    #[error("{} is owned by user {owner}, not by user {me} that plugboard runs as", path.display())]
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// plugboard's uid.
        me: u32,
    },
    /// Others may write to it (or, for a key file, read it).
    #[error("{} has mode {mode:o}, which lets other users {what} it", path.display())]
    Mode {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// `write to` or `read`.
        what: &'static str,
    },
    /// It is not what it should be (a symbolic link, a file instead of a folder, a key of the
    /// wrong length).
    #[error("{} {problem}", path.display())]
    Kind {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PrivacyError {
    let path = path.to_owned();
    move |source| PrivacyError::Io {
        action,
        path,
        source,
    }
}

fn cache_io(path: &Path) -> impl FnOnce(std::io::Error) -> WasmError + '_ {
    move |source| WasmError::Cache {
        path: path.to_owned(),
        source,
    }
}

/// An error and its causes on one line, for logs.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A name no other writer uses at the same time, for temporary files.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    // Uniqueness only; the pid and counter already separate writers of this machine.
    let _ = getrandom::fill(&mut random);
    format!(
        "{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        hex::encode(random)
    )
}

#[cfg(unix)]
mod unix {
    use std::fs::{self, DirBuilder, OpenOptions};
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
    use std::path::Path;

    use super::{PrivacyError, io_error, unique_suffix};

    /// Creates `dir` (and missing parents) with the folder itself `0700`.
    pub(super) fn create_dir(dir: &Path) -> Result<(), PrivacyError> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_error("create", parent))?;
        }
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_error("create", dir)(e)),
        }
    }

    /// Creates a file that did not exist, `0600`.
    pub(super) fn create_new_private(path: &Path) -> std::io::Result<fs::File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }

    /// The uid files created by this process get: that of a probe file made in `dir` (portable
    /// across Unixes, needs no `unsafe` call to `geteuid`).
    fn my_uid(dir: &Path) -> Result<u32, PrivacyError> {
        let probe = dir.join(format!(".owner-probe-{}", unique_suffix()));
        let file = create_new_private(&probe).map_err(io_error("write a file in", dir))?;
        let uid = file.metadata().map(|m| m.uid());
        drop(file);
        let _ = fs::remove_file(&probe);
        uid.map_err(io_error("inspect a file in", dir))
    }

    /// Checks that `dir` is a folder (not a symbolic link) owned by this process's user and
    /// writable by nobody else; removes read access for others when it has it.
    pub(super) fn check_dir(dir: &Path) -> Result<(), PrivacyError> {
        let meta = fs::symlink_metadata(dir).map_err(io_error("inspect", dir))?;
        if meta.file_type().is_symlink() {
            return Err(PrivacyError::Kind {
                path: dir.to_owned(),
                problem: "is a symbolic link; give the folder it points to",
            });
        }
        if !meta.is_dir() {
            return Err(PrivacyError::Kind {
                path: dir.to_owned(),
                problem: "is not a folder",
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(PrivacyError::Mode {
                path: dir.to_owned(),
                mode,
                what: "write to",
            });
        }
        let me = my_uid(dir)?;
        if meta.uid() != me {
            return Err(PrivacyError::Owner {
                path: dir.to_owned(),
                owner: meta.uid(),
                me,
            });
        }
        if mode & 0o077 != 0 {
            // Ours, and only readable by others: make it private (compiled code of private
            // components is nobody else's to read).
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_error("restrict the permissions of", dir))?;
            tracing::info!(path = %dir.display(), "made the cache folder private (mode 700)");
        }
        Ok(())
    }

    /// Checks that the key file at `path` is a regular file owned by the owner of `dir` (its
    /// private folder, checked before) and readable by nobody else.
    pub(super) fn check_key_file(path: &Path, dir: &Path) -> Result<(), PrivacyError> {
        let meta = fs::symlink_metadata(path).map_err(io_error("inspect", path))?;
        if !meta.file_type().is_file() {
            return Err(PrivacyError::Kind {
                path: path.to_owned(),
                problem: "is not a regular file",
            });
        }
        let owner = fs::metadata(dir).map_err(io_error("inspect", dir))?.uid();
        if meta.uid() != owner {
            return Err(PrivacyError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                me: owner,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(PrivacyError::Mode {
                path: path.to_owned(),
                mode,
                what: "read",
            });
        }
        Ok(())
    }
}

#[cfg(not(unix))]
mod unix {
    //! Elsewhere there are no Unix owners and modes to check: folders are created as usual.
    use std::fs;
    use std::path::Path;

    use super::{PrivacyError, io_error};

    pub(super) fn create_dir(dir: &Path) -> Result<(), PrivacyError> {
        fs::create_dir_all(dir).map_err(io_error("create", dir))
    }

    pub(super) fn create_new_private(path: &Path) -> std::io::Result<fs::File> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    }

    pub(super) fn check_dir(_dir: &Path) -> Result<(), PrivacyError> {
        Ok(())
    }

    pub(super) fn check_key_file(_path: &Path, _dir: &Path) -> Result<(), PrivacyError> {
        Ok(())
    }
}

/// Creates `dir` (`0700`) unless it exists, and checks that it is private: a folder owned by
/// the user plugboard runs as, writable by nobody else (read access for others is removed).
pub fn private_dir(dir: &Path) -> Result<(), PrivacyError> {
    unix::create_dir(dir)?;
    unix::check_dir(dir)
}

/// A private cache folder: the one asked for, or a fresh one that replaced it (deleted when
/// this is dropped: nobody will use it again).
#[derive(Debug)]
pub struct CacheDir {
    path: PathBuf,
    fresh: bool,
}

impl CacheDir {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is a fresh folder in place of a refused one.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        if self.fresh {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// [`private_dir`], or, when `dir` is not private, a fresh private folder in the temp directory
/// (created anew, so nobody else can have prepared it), with a warning. `None` when neither can
/// be had.
pub fn private_dir_or_fresh(dir: &Path) -> Option<CacheDir> {
    match private_dir(dir) {
        Ok(()) => Some(CacheDir {
            path: dir.to_owned(),
            fresh: false,
        }),
        Err(error) => {
            let fresh = std::env::temp_dir().join(format!("plugboard-cache-{}", unique_suffix()));
            let made = fresh_dir(&fresh);
            match &made {
                Ok(()) => tracing::warn!(
                    error = %chain(&error),
                    using = %fresh.display(),
                    "refusing the cache folder; using a fresh private one instead (fix the folder's owner or mode, or give another --cache-dir)"
                ),
                Err(second) => tracing::warn!(
                    error = %chain(&error),
                    fallback = %chain(second),
                    "refusing the cache folder, and no private one can be made; compiled components are not cached"
                ),
            }
            made.ok().map(|()| CacheDir {
                path: fresh,
                fresh: true,
            })
        }
    }
}

/// Creates `dir`, which must not exist yet, `0700`, and checks it.
fn fresh_dir(dir: &Path) -> Result<(), PrivacyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(io_error("create", dir))?;
    }
    #[cfg(not(unix))]
    fs::create_dir(dir).map_err(io_error("create", dir))?;
    unix::check_dir(dir)
}

/// Reads the key at `path`, creating it first when missing (published atomically, so two
/// processes starting at once agree on one key).
fn read_or_create_key(path: &Path) -> Result<[u8; 32], PrivacyError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    private_dir(dir)?;
    if fs::symlink_metadata(path).is_err() {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| PrivacyError::Io {
            action: "generate a key for",
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let tmp = dir.join(format!(".cache-key-{}", unique_suffix()));
        let written = unix::create_new_private(&tmp)
            .and_then(|mut f| {
                f.write_all(hex::encode(key).as_bytes())?;
                f.sync_all()
            })
            .map_err(io_error("write", &tmp));
        // A hard link fails when the name exists: whoever links first wins, and everyone
        // reads that key below.
        let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(io_error("create", path)(e))
            }
            _ => Ok(()),
        });
        let _ = fs::remove_file(&tmp);
        linked?;
    }
    unix::check_key_file(path, dir)?;
    let text = fs::read_to_string(path).map_err(io_error("read", path))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| PrivacyError::Kind {
        path: path.to_owned(),
        problem: "does not hold a key (64 hexadecimal digits)",
    })?;
    Ok(key)
}

/// The key for `source`: read from (or created in) its file, or, when that is not possible
/// safely, a key for this process only, with a warning.
fn resolve_key(source: &CacheKey) -> Result<[u8; 32], WasmError> {
    if let CacheKey::File(path) = source {
        match read_or_create_key(path) {
            Ok(key) => return Ok(key),
            Err(error) => tracing::warn!(
                error = %chain(&error),
                "cannot use the compiled-cache key file; using a key for this process only, so compiled components are recompiled after a restart"
            ),
        }
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| WasmError::Setup(format!("failed to generate the cache key: {e}")))?;
    Ok(key)
}

/// The compiled-component cache of one runtime: a private folder and the key its artifacts
/// are authenticated with.
pub(crate) struct ArtifactCache {
    dir: CacheDir,
    key: [u8; 32],
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Domain separation for the tags (a key might one day serve another purpose too).
const TAG_CONTEXT: &[u8] = b"plugboard compiled component v1\0";

impl ArtifactCache {
    /// The cache in `dir` (made private, or replaced by a fresh private folder), with the key
    /// from `key`. `None` when no private folder can be had (nothing is cached then).
    pub(crate) fn open(dir: &Path, key: &CacheKey) -> Result<Option<Self>, WasmError> {
        let Some(dir) = private_dir_or_fresh(dir) else {
            return Ok(None);
        };
        Ok(Some(ArtifactCache {
            dir,
            key: resolve_key(key)?,
        }))
    }

    /// The artifact path for `digest` under this engine's settings.
    pub(crate) fn artifact_path(&self, engine: &Engine, digest: &str) -> PathBuf {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let name: String = digest
            .rsplit(':')
            .next()
            .unwrap_or(digest)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        self.dir
            .path()
            .join("compiled")
            .join(format!("{name}-{:016x}.cwasm", hasher.finish()))
    }

    fn mac(&self, artifact: &Path, bytes: &[u8]) -> Result<Hmac<Sha256>, WasmError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .map_err(|e| WasmError::Setup(format!("invalid cache key: {e}")))?;
        mac.update(TAG_CONTEXT);
        // The name binds the tag to the component digest and engine: an authentic artifact of
        // another component cannot be passed off as this one.
        let name = artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        mac.update(name.as_bytes());
        mac.update(b"\0");
        mac.update(bytes);
        Ok(mac)
    }

    /// The artifact's bytes when its tag verifies under this cache's key.
    fn authentic(&self, artifact: &Path) -> Option<Vec<u8>> {
        let tag_path = tag_path(artifact);
        let bytes = fs::read(artifact).ok()?;
        let tag = hex::decode(fs::read_to_string(&tag_path).ok()?.trim()).ok()?;
        match self.mac(artifact, &bytes).ok()?.verify_slice(&tag) {
            Ok(()) => Some(bytes),
            Err(_) => {
                tracing::warn!(
                    path = %artifact.display(),
                    "compiled component is not authentic (changed, or written under another key); recompiling"
                );
                None
            }
        }
    }

    /// Loads the compiled form of the component at `source` (content digest `digest`),
    /// compiling and caching it when no authentic artifact exists. Returns whether the cache
    /// was used.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        source: &Path,
    ) -> Result<(Component, bool), WasmError> {
        let artifact = self.artifact_path(engine, digest);
        if let Some(bytes) = self.authentic(&artifact) {
            // SAFETY: `bytes` are exactly the bytes whose HMAC-SHA256 tag verified under this
            // cache's key, which is kept outside the cache folder and known only to plugboard
            // processes of this user; only `store` below computes such tags, over the output of
            // `Component::serialize` for an engine with the same compatibility hash (in the
            // file name, which the tag covers). So this is a precompiled component we wrote.
            #[allow(
                unsafe_code,
                reason = "loading our own authenticated precompiled artifact"
            )]
            let loaded = unsafe { Component::deserialize(engine, &bytes) };
            match loaded {
                Ok(component) => return Ok((component, true)),
                Err(error) => {
                    tracing::warn!(%error, path = %artifact.display(), "cached component unusable; recompiling");
                }
            }
        }
        let bytes = fs::read(source).map_err(cache_io(source))?;
        let component =
            Component::new(engine, &bytes).map_err(|e| WasmError::Compile(format!("{e:#}")))?;
        match component.serialize() {
            Ok(compiled) => {
                if let Err(error) = self.store(&artifact, &compiled) {
                    // The cache is an optimisation: a failure costs a recompile next time.
                    tracing::warn!(error = %error, "failed to cache a compiled component");
                }
            }
            Err(error) => tracing::warn!(%error, "failed to serialise a compiled component"),
        }
        Ok((component, false))
    }

    fn store(&self, artifact: &Path, compiled: &[u8]) -> Result<(), WasmError> {
        if let Some(parent) = artifact.parent() {
            unix::create_dir(parent).map_err(|e| WasmError::Setup(e.to_string()))?;
        }
        let tag = hex::encode(self.mac(artifact, compiled)?.finalize().into_bytes());
        // The tag first: an artifact is never visible with a stale tag that verifies.
        write_atomically(&tag_path(artifact), tag.as_bytes())?;
        write_atomically(artifact, compiled)
    }
}

fn tag_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("cwasm.hmac")
}

/// Writes `bytes` to `path` through a fresh `0600` temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WasmError> {
    let tmp = path.with_extension(format!("tmp-{}", unique_suffix()));
    let written = unix::create_new_private(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(cache_io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[cfg(unix)]
    #[test]
    fn a_new_cache_folder_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/cache");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Our own folder readable by others is made private.
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_may_write_is_refused_and_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let error = private_dir(&dir).unwrap_err();
        assert!(matches!(error, PrivacyError::Mode { .. }), "{error}");
        assert!(error.to_string().contains("write to"), "{error}");
        let used = private_dir_or_fresh(&dir).unwrap();
        assert!(used.is_fresh());
        assert_ne!(used.path(), dir);
        assert!(used.path().starts_with(std::env::temp_dir()));
        assert_eq!(mode(used.path()), 0o700);
        // The refused folder is left as it was; the fresh one goes with its user.
        assert_eq!(mode(&dir), 0o777);
        let fresh = used.path().to_owned();
        drop(used);
        assert!(!fresh.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_of_another_user_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        private_dir(&dir).unwrap();
        match std::os::unix::fs::chown(&dir, Some(65534), Some(65534)) {
            // Running as root: the folder now belongs to `nobody`.
            Ok(()) => {
                let error = private_dir(&dir).unwrap_err();
                assert!(
                    matches!(error, PrivacyError::Owner { owner: 65534, .. }),
                    "{error}"
                );
                assert!(private_dir_or_fresh(&dir).is_some_and(|d| d.is_fresh()));
            }
            // Not root: root's folders are another user's.
            Err(_) => assert!(private_dir(Path::new("/")).is_err()),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        private_dir(&target).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = private_dir(&link).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("keys/cache.key");
        let first = read_or_create_key(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(read_or_create_key(&path).unwrap(), first);
        // A key others may read is not trusted: an in-memory key takes its place.
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_or_create_key(&path).unwrap_err();
        assert!(error.to_string().contains("read"), "{error}");
        assert_ne!(resolve_key(&CacheKey::File(path)).unwrap(), first);
    }

    #[test]
    fn tags_bind_the_artifact_name_and_bytes_to_the_key() {
        let root = tempfile::tempdir().unwrap();
        let cache = ArtifactCache {
            dir: private_dir_or_fresh(root.path()).unwrap(),
            key: [7; 32],
        };
        let a = root.path().join("compiled/aaa-1.cwasm");
        let b = root.path().join("compiled/bbb-1.cwasm");
        cache.store(&a, b"compiled a").unwrap();
        assert_eq!(cache.authentic(&a).unwrap(), b"compiled a");
        // Another component's authentic artifact and tag, copied over: refused.
        fs::copy(&a, &b).unwrap();
        fs::copy(tag_path(&a), tag_path(&b)).unwrap();
        assert!(cache.authentic(&b).is_none());
        // Another key: refused.
        let other = ArtifactCache {
            dir: private_dir_or_fresh(root.path()).unwrap(),
            key: [8; 32],
        };
        assert!(other.authentic(&a).is_none());
        // Changed bytes with a plain SHA-256 written beside them (the old scheme): refused.
        fs::write(&a, b"evil").unwrap();
        assert!(cache.authentic(&a).is_none());
    }
}
