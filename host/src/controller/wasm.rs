//! Resolving a side's WebAssembly apparatus for a call: its pull secrets (read as the owner's
//! ServiceAccount), the component (fetched from OCI by digest, content-addressed, compiled once
//! per digest and engine), its limits and what it may reach.
//!
//! A tag is resolved again on every call, so a new digest pushed under the same tag takes
//! effect on the next hook without a restart; a pinned digest needs no network once cached.

use std::sync::Arc;

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
}

/// Key of the pull secret's Docker config.
const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

pub(crate) async fn resolve(
    ctx: &Context,
    owner: Owner<'_>,
    wasm: &WasmApparatus,
) -> Result<ResolvedWasm, Error> {
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
    let fetched = ctx.oci.fetch(&wasm.image, &auth).await.map_err(oci)?;
    let first_load = !ctx.wasm.is_loaded(&fetched.digest);
    let runtime = ctx.wasm.clone();
    let digest = fetched.digest.clone();
    let path = fetched.path.clone();
    let loaded = tokio::task::spawn_blocking(move || runtime.load(&digest, &path))
        .await
        .map_err(|e| Error::Wasm {
            side,
            source: WasmError::Setup(format!("loading the component failed: {e}")),
        })?
        .map_err(|source| Error::Wasm { side, source })?;
    if first_load {
        crate::metrics::Metrics::inc(if loaded.from_cache {
            &ctx.metrics.wasm_cache_loads
        } else {
            &ctx.metrics.wasm_compiles
        });
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
        digest: fetched.digest,
    })
}
