//! Resolving a side's WebAssembly apparatus for a call: its pull secrets (read as the owner's
//! ServiceAccount), the component (fetched from OCI by digest, content-addressed, compiled once
//! per digest and engine), its limits and what it may reach.
//!
//! A tag is resolved again on every reconcile pass (once per side and image within a pass, so
//! the `created`, `config` and `coupled` hooks of one pass run the same component and ask the
//! registry once), so a new digest pushed under the same tag takes effect on the next pass
//! without a restart; a pinned digest needs no network once cached.
//! When the registry cannot be reached (or the side is being deleted and its image cannot be
//! resolved for any reason), the component whose digest the side's status recorded runs from
//! the cache instead, so an outage neither flips healthy couplings nor blocks deletions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use super::sources::{Owner, read_secret};
use super::{Context, Error};
use crate::crd::WasmApparatus;
use crate::oci::{ImageRef, RegistryAuth, auth_from_docker_config};
use crate::wasm::{CallContext, CallLimits, Loaded, WasmError};

/// A side's component, ready to call.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedWasm {
    pub(crate) loaded: Arc<Loaded>,
    pub(crate) limits: CallLimits,
    pub(crate) context: CallContext,
    pub(crate) image: String,
    pub(crate) digest: String,
    /// Set when the image could not be resolved and the component the status recorded ran
    /// instead: why, to say in a condition when hooks run.
    pub(crate) stale: Option<String>,
}

/// Components fetched during one reconcile pass, by side, owner and image.
#[derive(Default)]
struct PassFetches(
    Mutex<HashMap<(crate::apparatus::Side, String, String, String), crate::oci::Fetched>>,
);

tokio::task_local! {
    static PASS: PassFetches;
}

/// Runs one reconcile pass: within it, each side's image is fetched (its tag resolved) once.
pub(crate) async fn pass<F: Future>(f: F) -> F::Output {
    PASS.scope(PassFetches::default(), f).await
}

/// Key of the pull secret's Docker config.
const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// Resolves the side's component: fetched by its image, or — when the registry cannot be
/// reached, or the side is being deleted and the image cannot be resolved for any reason —
/// the component the side's status last recorded, from the cache by digest. So a registry
/// outage neither stalls a deletion nor flips a healthy coupling to not Ready.
pub(crate) async fn resolve(
    ctx: &Context,
    owner: Owner<'_>,
    wasm: &WasmApparatus,
) -> Result<ResolvedWasm, Error> {
    let side = owner.side;
    let (digest, path, stale) = match fetch(ctx, owner, wasm).await {
        Ok(fetched) => (fetched.digest, fetched.path, None),
        Err(error) => match fallback(ctx, owner, &error).await {
            Some((digest, path)) => {
                tracing::warn!(
                    image = %wasm.image,
                    %digest,
                    error = %error.message(),
                    "cannot resolve the component's image; using the cached component the status recorded"
                );
                let note = format!(
                    "{} ({}); hooks ran in the cached component {digest}",
                    error.message(),
                    error.reason()
                );
                (digest, path, Some(note))
            }
            None => return Err(error),
        },
    };
    let first_load = !ctx.wasm.is_loaded(&digest);
    let runtime = ctx.wasm.clone();
    let loaded = {
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || runtime.load(&digest, &path))
            .await
            .map_err(|e| Error::Wasm {
                side,
                source: WasmError::Setup(format!("loading the component failed: {e}")),
            })?
            .map_err(|source| Error::Wasm { side, source })?
    };
    if first_load {
        ctx.metrics
            .component_loaded(loaded.from_cache, loaded.load_time);
    }
    let limits =
        CallLimits::resolve(wasm.limits.as_ref(), ctx.wasm.options()).map_err(|e| Error::Wasm {
            side,
            source: WasmError::Limits(e),
        })?;
    Ok(ResolvedWasm {
        loaded,
        limits,
        context: CallContext {
            owner: format!(
                "{} {}/{}",
                match side {
                    crate::apparatus::Side::Plug => "Plug",
                    crate::apparatus::Side::Socket => "Socket",
                },
                owner.namespace,
                owner.name
            ),
            allowed_hosts: wasm.allowed_hosts.clone(),
        },
        image: wasm.image.clone(),
        digest,
        stale,
    })
}

/// The component the side's status recorded, from the cache, when `error` allows falling back
/// to it: the registry is unreachable, or the side is being deleted (its pull secret or the
/// registry may be gone with its namespace).
async fn fallback(
    ctx: &Context,
    owner: Owner<'_>,
    error: &Error,
) -> Option<(String, std::path::PathBuf)> {
    let digest = owner.last_digest?;
    let outage = matches!(error, Error::Oci { source, .. } if source.is_transient());
    if !(outage || owner.deleting) {
        return None;
    }
    match ctx.oci.cached_component(digest).await {
        Ok(Some(path)) => Some((digest.to_owned(), path)),
        Ok(None) => {
            tracing::debug!(%digest, "the recorded component is no longer cached");
            None
        }
        Err(error) => {
            tracing::debug!(%digest, %error, "reading the recorded component from the cache failed");
            None
        }
    }
}

/// Reads the pull secrets and fetches the image.
async fn fetch(
    ctx: &Context,
    owner: Owner<'_>,
    wasm: &WasmApparatus,
) -> Result<crate::oci::Fetched, Error> {
    let key = (
        owner.side,
        owner.namespace.to_owned(),
        owner.name.to_owned(),
        wasm.image.clone(),
    );
    let earlier = PASS
        .try_with(|fetches| {
            fetches
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned()
        })
        .ok()
        .flatten();
    if let Some(fetched) = earlier {
        return Ok(fetched);
    }
    let fetched = fetch_now(ctx, owner, wasm).await?;
    // Outside a pass (no scope) nothing is kept.
    let _ = PASS.try_with(|fetches| {
        fetches
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, fetched.clone())
    });
    Ok(fetched)
}

/// [`fetch`] without the pass's memory: reads the pull secrets, asks the registry, checks
/// the signature.
async fn fetch_now(
    ctx: &Context,
    owner: Owner<'_>,
    wasm: &WasmApparatus,
) -> Result<crate::oci::Fetched, Error> {
    let side = owner.side;
    let oci = |source| Error::Oci { side, source };
    let registry = ImageRef::parse(&wasm.image)
        .map_err(oci)?
        .registry()
        .to_owned();
    let mut auth = RegistryAuth::Anonymous;
    for secret in &wasm.pull_secrets {
        let values =
            read_secret(ctx, owner, &secret.name, "spec.apparatus.wasm.pullSecrets").await?;
        let Some(config) = values.get(DOCKER_CONFIG_KEY) else {
            return Err(oci(crate::oci::OciError::InvalidPullSecret {
                problem: format!(
                    "Secret {}/{} has no {DOCKER_CONFIG_KEY} key; pull secrets must be of type kubernetes.io/dockerconfigjson",
                    owner.namespace, secret.name
                ),
            }));
        };
        let found = auth_from_docker_config(config.as_bytes(), &registry).map_err(oci)?;
        if !matches!(found, RegistryAuth::Anonymous) {
            auth = found;
            break;
        }
    }
    let fetched = ctx.oci.fetch(&wasm.image, &auth).await;
    ctx.metrics.component_pulled(fetched.is_ok());
    let fetched = fetched.map_err(oci)?;
    super::signatures::check(ctx, owner, &wasm.image, &auth, &fetched.manifest_digest).await?;
    Ok(fetched)
}
