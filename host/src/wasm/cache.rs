//! Compiled components on disk, keyed by component digest and engine compatibility, so an
//! operator restart loads them in a fraction of a millisecond instead of compiling again.
//!
//! Loading a compiled artifact is trusted code loading: wasmtime cannot validate it. Each
//! artifact is written by this module together with its SHA-256, and is used only when the
//! file still has that hash; anything else is recompiled and replaced.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::WasmError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WasmError + '_ {
    move |source| WasmError::Cache {
        path: path.to_owned(),
        source,
    }
}

/// The artifact path for `digest` under this engine's settings.
pub(crate) fn artifact_path(engine: &Engine, dir: &Path, digest: &str) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let name: String = digest
        .rsplit(':')
        .next()
        .unwrap_or(digest)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    dir.join("compiled")
        .join(format!("{name}-{:016x}.cwasm", hasher.finish()))
}

/// Loads the compiled form of the component at `source`, compiling and caching it when no
/// intact artifact exists. Returns whether the cache was used.
pub(crate) fn load_or_compile(
    engine: &Engine,
    dir: &Path,
    digest: &str,
    source: &Path,
) -> Result<(Component, bool), WasmError> {
    let artifact = artifact_path(engine, dir, digest);
    let checksum = artifact.with_extension("cwasm.sha256");
    if let (Ok(bytes), Ok(expected)) = (fs::read(&artifact), fs::read_to_string(&checksum))
        && hex::encode(Sha256::digest(&bytes)) == expected.trim()
    {
        // SAFETY: the artifact was produced by `Component::serialize` of this module for an
        // engine with the same compatibility hash (it is in the file name), and its SHA-256
        // matches the one written next to it at that time, so it is the bytes we wrote.
        #[allow(
            unsafe_code,
            reason = "loading our own checksummed precompiled artifact"
        )]
        let loaded = unsafe { Component::deserialize(engine, &bytes) };
        match loaded {
            Ok(component) => return Ok((component, true)),
            Err(error) => {
                tracing::warn!(%error, path = %artifact.display(), "cached component unusable; recompiling");
            }
        }
    }
    let bytes = fs::read(source).map_err(io(source))?;
    let component =
        Component::new(engine, &bytes).map_err(|e| WasmError::Compile(format!("{e:#}")))?;
    match component.serialize() {
        Ok(compiled) => {
            if let Err(error) = store(&artifact, &checksum, &compiled) {
                // The cache is an optimisation: a failure costs a recompile next time.
                tracing::warn!(error = %error, "failed to cache a compiled component");
            }
        }
        Err(error) => tracing::warn!(%error, "failed to serialise a compiled component"),
    }
    Ok((component, false))
}

fn store(artifact: &Path, checksum: &Path, compiled: &[u8]) -> Result<(), WasmError> {
    if let Some(parent) = artifact.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, compiled).map_err(io(&tmp))?;
    fs::rename(&tmp, artifact).map_err(io(artifact))?;
    fs::write(checksum, hex::encode(Sha256::digest(compiled))).map_err(io(checksum))?;
    Ok(())
}
