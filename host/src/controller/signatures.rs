//! Checking a fetched component's cosign signature before it runs, by the operator's policy
//! (see [`crate::signature`]): keys from `--signature-public-key-file` and from Secrets the
//! operator reads as itself, signatures read from the component's repository with the side's
//! pull secret.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::sources::Owner;
use super::{Context, Error};
use crate::oci::RegistryAuth;
use crate::signature::{SignatureError, TrustedKey, Verdict, judge, keys_from_secret};

/// Checks the signatures of `image` at `manifest_digest`; `Ok` when the component may run.
pub(crate) async fn check(
    ctx: &Context,
    owner: Owner<'_>,
    image: &str,
    auth: &RegistryAuth,
    manifest_digest: &str,
) -> Result<(), Error> {
    let policy = &ctx.options.signatures;
    if !policy.enabled() {
        return Ok(());
    }
    let side = owner.side;
    let refuse = |source| Error::Signature { side, source };
    let keys = trusted_keys(ctx).await.map_err(refuse)?;
    if ctx.verified.contains(manifest_digest, &keys) {
        return Ok(());
    }
    let stored = ctx
        .oci
        .signatures(image, auth, manifest_digest)
        .await
        .map_err(|source| Error::Oci { side, source })?;
    match judge(
        &keys,
        policy.required,
        image,
        manifest_digest,
        stored.as_deref(),
    ) {
        Ok(Verdict::Verified) => {
            tracing::info!(%image, digest = %manifest_digest, "component signature verified");
            ctx.verified.insert(manifest_digest, &keys);
            Ok(())
        }
        Ok(Verdict::Unsigned) => {
            tracing::debug!(%image, digest = %manifest_digest, "component is unsigned; signatures are not required");
            Ok(())
        }
        Err(source) => Err(refuse(source)),
    }
}

/// The keys from files, and those in the configured Secrets, read now (so a rotated Secret
/// takes effect on the next verification).
async fn trusted_keys(ctx: &Context) -> Result<Vec<TrustedKey>, SignatureError> {
    let policy = &ctx.options.signatures;
    let mut keys = policy.keys.clone();
    for (namespace, name) in &policy.key_secrets {
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get(name)
            .await
            .map_err(|e| {
                SignatureError::Keys(format!(
                    "cannot read Secret {namespace}/{name}: {}",
                    super::error::chain(&e)
                ))
            })?;
        let data = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0));
        keys.extend(keys_from_secret(&format!("{namespace}/{name}"), data)?);
    }
    if keys.is_empty() {
        return Err(SignatureError::Keys(
            "signatures are required but no trusted key is configured (--signature-public-key-file or --signature-public-key-secret)".into(),
        ));
    }
    Ok(keys)
}
