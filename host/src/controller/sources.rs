//! Loading what a coupling is computed from — Secrets, ConfigMaps, apparatus `config` replies —
//! as the owner's ServiceAccount, and feeding it through the pure engine.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, ResourceExt as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Context, Error};
use crate::apparatus::http::Endpoint;
use crate::apparatus::{ConfigRequest, Side};
use crate::crd::{Plug, SideSpec, Socket};
use crate::engine::Values;
use crate::engine::config::{self, MissingProperties, Sources, ValuesKind};
use crate::engine::template::TemplateContext;

use super::render::{Renderer, Seed};

/// Where a side's hooks run, resolved for a call.
#[derive(Debug)]
pub(crate) enum Apparatus {
    /// An HTTP apparatus: an external endpoint, or the owner's apparatus pod (ready, and kept
    /// from idle deletion while the lease lives).
    Http {
        /// Where calls go.
        endpoint: Endpoint,
        /// The pod's lease, for an apparatus with `containers`.
        pod: Option<super::pods::Lease>,
    },
    /// A WebAssembly component.
    Wasm(super::wasm::ResolvedWasm),
}

/// The two objects of a coupling, with their JSON forms (what apparatuses receive).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parties<'a> {
    pub(crate) plug: &'a Plug,
    pub(crate) socket: &'a Socket,
    pub(crate) plug_json: &'a Value,
    /// Shared: with many Plugs coupled to the Socket it is large (see `shared`).
    pub(crate) socket_json: &'a std::sync::Arc<Value>,
}

/// A side's identity: the spec fields it declares and where it lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub(crate) side: Side,
    pub(crate) name: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) uid: &'a str,
    pub(crate) spec: &'a SideSpec,
    /// The digest of the WebAssembly component the side's status last recorded for the image
    /// its spec names now: what its hooks fall back to when the registry cannot be asked.
    pub(crate) last_digest: Option<&'a str>,
    /// The side is being deleted: any failure to resolve its component falls back to
    /// `last_digest`, so that nothing the deletion removes at the same time (the registry, a
    /// pull secret) keeps it from finishing.
    pub(crate) deleting: bool,
}

/// The digest in `status` when it was recorded for the image `spec` names now.
fn last_digest<'a>(
    spec: &SideSpec,
    status: Option<&'a crate::crd::ApparatusStatus>,
) -> Option<&'a str> {
    let image = spec.apparatus.as_ref()?.wasm.as_ref()?.image.as_str();
    status
        .filter(|s| s.image == image && !s.digest.is_empty())
        .map(|s| s.digest.as_str())
}

impl<'a> Owner<'a> {
    pub(crate) fn plug(plug: &'a Plug) -> Self {
        Owner {
            side: Side::Plug,
            name: plug.metadata.name.as_deref().unwrap_or_default(),
            namespace: plug.metadata.namespace.as_deref().unwrap_or_default(),
            uid: plug.metadata.uid.as_deref().unwrap_or_default(),
            spec: &plug.spec.side,
            last_digest: last_digest(
                &plug.spec.side,
                plug.status.as_ref().and_then(|s| s.apparatus.as_ref()),
            ),
            deleting: plug.metadata.deletion_timestamp.is_some(),
        }
    }

    pub(crate) fn socket(socket: &'a Socket) -> Self {
        Owner {
            side: Side::Socket,
            name: socket.metadata.name.as_deref().unwrap_or_default(),
            namespace: socket.metadata.namespace.as_deref().unwrap_or_default(),
            uid: socket.metadata.uid.as_deref().unwrap_or_default(),
            spec: &socket.spec.side,
            last_digest: last_digest(
                &socket.spec.side,
                socket.status.as_ref().and_then(|s| s.apparatus.as_ref()),
            ),
            deleting: socket.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Fails unless the side's ServiceAccount opted in to plugboard acting as it.
    pub(crate) async fn require_opt_in(&self, ctx: &Context) -> Result<(), Error> {
        ctx.require_opt_in(self.namespace, &self.spec.service_account_name)
            .await
    }

    /// The side's external HTTP apparatus endpoint, if it has one (not for apparatus pods).
    pub(crate) fn endpoint(&self) -> Result<Option<Endpoint>, Error> {
        let Some(apparatus) = &self.spec.apparatus else {
            return Ok(None);
        };
        if apparatus.wasm.is_some() || apparatus.containers.is_some() {
            return Ok(None);
        }
        Endpoint::resolve(
            apparatus.endpoint.as_deref(),
            self.name,
            self.namespace,
            false,
        )
        .map(Some)
        .map_err(|source| Error::Endpoint {
            side: self.side,
            source,
        })
    }

    /// The side's apparatus, resolved for a call (a WebAssembly component is fetched and
    /// loaded; an apparatus pod is started if needed and awaited until ready), if it has one.
    pub(crate) async fn apparatus(&self, ctx: &Context) -> Result<Option<Apparatus>, Error> {
        let Some(spec) = self.spec.apparatus.as_ref() else {
            return Ok(None);
        };
        // The local development loop: a debug endpoint replaces whatever the spec names.
        if let Some(debug) = super::debug::endpoint(&ctx.options, self.side) {
            return Endpoint::resolve(Some(debug), self.name, self.namespace, false)
                .map(|endpoint| {
                    Some(Apparatus::Http {
                        endpoint,
                        pod: None,
                    })
                })
                .map_err(|source| Error::Endpoint {
                    side: self.side,
                    source,
                });
        }
        if let Some(wasm) = spec.wasm.as_ref() {
            return Ok(Some(Apparatus::Wasm(
                super::wasm::resolve(ctx, *self, wasm).await?,
            )));
        }
        if spec.containers.is_some() {
            let lease = ctx
                .pods
                .acquire(ctx, *self, spec)
                .await
                .map_err(|source| Error::Pod {
                    side: self.side,
                    source,
                })?;
            return Ok(Some(Apparatus::Http {
                endpoint: lease.endpoint.clone(),
                pod: Some(lease),
            }));
        }
        Ok(self.endpoint()?.map(|endpoint| Apparatus::Http {
            endpoint,
            pod: None,
        }))
    }

    /// For a WebAssembly apparatus, the image and the digest it resolves to now (fetching and
    /// loading the component, so a bad image shows up before any hook needs it), and why the
    /// digest recorded before was kept when the image could not be resolved.
    pub(crate) async fn apparatus_status(
        &self,
        ctx: &Context,
    ) -> Result<(Option<crate::crd::ApparatusStatus>, Option<String>), Error> {
        if self
            .spec
            .apparatus
            .as_ref()
            .and_then(|a| a.wasm.as_ref())
            .is_none()
        {
            return Ok((None, None));
        }
        match self.apparatus(ctx).await? {
            Some(Apparatus::Wasm(w)) => Ok((
                Some(crate::crd::ApparatusStatus {
                    image: w.image,
                    digest: w.digest,
                }),
                w.stale,
            )),
            _ => Ok((None, None)),
        }
    }
}

/// Reads `name` of kind `K` from the owner's namespace as the owner's ServiceAccount.
async fn read_as_owner<K>(
    ctx: &Context,
    owner: Owner<'_>,
    name: &str,
    field: &'static str,
) -> Result<K, Error>
where
    K: k8s_openapi::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let sa = owner.spec.service_account_name.as_str();
    let client = ctx.client_as(owner.namespace, sa).await?;
    Api::<K>::namespaced(client, owner.namespace)
        .get(name)
        .await
        .map_err(|source| Error::SourceRead {
            kind: <K as k8s_openapi::Resource>::KIND,
            namespace: owner.namespace.to_owned(),
            name: name.to_owned(),
            field,
            service_account: sa.to_owned(),
            source: Box::new(source),
        })
}

pub(crate) async fn read_secret(
    ctx: &Context,
    owner: Owner<'_>,
    name: &str,
    field: &'static str,
) -> Result<Values, Error> {
    let secret: Secret = read_as_owner(ctx, owner, name, field).await?;
    let mut values = Values::new();
    for (key, bytes) in secret.data.unwrap_or_default() {
        let text = String::from_utf8(bytes.0).map_err(|_| Error::SourceNotText {
            namespace: owner.namespace.to_owned(),
            name: name.to_owned(),
            field,
            key: key.clone(),
        })?;
        values.insert(key, text);
    }
    // Guest text that repeats these values is scrubbed before it reaches status or Events.
    ctx.wasm.secret_values().remember(values.values());
    Ok(values)
}

async fn read_config_map(
    ctx: &Context,
    owner: Owner<'_>,
    name: &str,
    field: &'static str,
) -> Result<Values, Error> {
    let cm: ConfigMap = read_as_owner(ctx, owner, name, field).await?;
    Ok(cm.data.unwrap_or_default())
}

async fn optional_secret(
    ctx: &Context,
    owner: Owner<'_>,
    name: Option<&String>,
    field: &'static str,
) -> Result<Option<Values>, Error> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => Ok(Some(read_secret(ctx, owner, name, field).await?)),
        None => Ok(None),
    }
}

async fn optional_config_map(
    ctx: &Context,
    owner: Owner<'_>,
    name: Option<&String>,
    field: &'static str,
) -> Result<Option<Values>, Error> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => Ok(Some(read_config_map(ctx, owner, name, field).await?)),
        None => Ok(None),
    }
}

/// A side's data: Secret `dataSecretName`, then `data`, then ConfigMap `dataConfigMapName`.
async fn data(ctx: &Context, owner: Owner<'_>) -> Result<Values, Error> {
    let spec = owner.spec;
    Ok(config::merge(Sources {
        secret: optional_secret(
            ctx,
            owner,
            spec.data_secret_name.as_ref(),
            "spec.dataSecretName",
        )
        .await?,
        inline: spec.data.clone(),
        templates: None,
        config_map: optional_config_map(
            ctx,
            owner,
            spec.data_config_map_name.as_ref(),
            "spec.dataConfigMapName",
        )
        .await?,
        apparatus: None,
    }))
}

/// What both sides' configs were computed from and came to: the inputs of the coupling hooks,
/// of resource templates and of the checksum that decides `updated`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Computed {
    pub(crate) plug_config: Values,
    pub(crate) socket_config: Values,
    /// The Plug's resolved `vars`, when it declares any.
    pub(crate) plug_vars: Option<Values>,
    /// The Socket's resolved `vars`, when it declares any.
    pub(crate) socket_vars: Option<Values>,
}

/// Whether a side needs its data read: an apparatus or a template will see it.
fn needs_data(spec: &SideSpec) -> bool {
    spec.apparatus.is_some() || !spec.config_template.is_empty() || !spec.result_template.is_empty()
}

/// A side's config or result from its sources, later winning: the Secret
/// (`configSecretName` / `resultSecretName`), the inline map, the rendered templates, the
/// ConfigMap (`configConfigMapName` / `resultConfigMapName`), and for config the apparatus
/// `config` reply.
async fn merged(
    ctx: &Context,
    owner: Owner<'_>,
    kind: ValuesKind,
    templates: Option<Values>,
    apparatus: Option<Values>,
) -> Result<Values, Error> {
    let spec = owner.spec;
    let (secret, inline, config_map, fields) = match kind {
        ValuesKind::Config => (
            &spec.config_secret_name,
            &spec.config,
            &spec.config_config_map_name,
            ["spec.configSecretName", "spec.configConfigMapName"],
        ),
        ValuesKind::Result => (
            &spec.result_secret_name,
            &spec.result,
            &spec.result_config_map_name,
            ["spec.resultSecretName", "spec.resultConfigMapName"],
        ),
    };
    Ok(config::merge(Sources {
        secret: optional_secret(ctx, owner, secret.as_ref(), fields[0]).await?,
        inline: inline.clone(),
        templates,
        config_map: optional_config_map(ctx, owner, config_map.as_ref(), fields[1]).await?,
        apparatus,
    }))
}

async fn merged_config(
    ctx: &Context,
    owner: Owner<'_>,
    templates: Option<Values>,
    apparatus: Option<Values>,
) -> Result<Values, Error> {
    merged(ctx, owner, ValuesKind::Config, templates, apparatus).await
}

async fn merged_result(
    ctx: &Context,
    owner: Owner<'_>,
    templates: Option<Values>,
) -> Result<Values, Error> {
    merged(ctx, owner, ValuesKind::Result, templates, None).await
}

/// The template context every template of a coupling starts from.
pub(crate) fn base_context(parties: Parties<'_>, seed: Option<&Seed>) -> TemplateContext {
    TemplateContext {
        plug: Some(std::sync::Arc::new(parties.plug_json.clone())),
        socket: Some(parties.socket_json.clone()),
        coupling: seed.map(|s| s.coupling.clone()).or_else(|| {
            Some(crate::engine::resources::coupling_id(
                parties.plug.metadata.uid.as_deref().unwrap_or_default(),
                parties.socket.metadata.uid.as_deref().unwrap_or_default(),
            ))
        }),
        ..Default::default()
    }
}

/// The validated configs of both sides: Secret, inline, templates, ConfigMap, apparatus
/// `config`, then the Socket's interface. Vars are resolved first (as each side's
/// ServiceAccount); data is read only when an apparatus or a template will see it.
pub(crate) async fn configs(
    ctx: &Context,
    parties: Parties<'_>,
    seed: Option<&Seed>,
) -> Result<Computed, Error> {
    let plug = Owner::plug(parties.plug);
    let socket = Owner::socket(parties.socket);
    let base = base_context(parties, seed);
    let names = Renderer {
        context: base.clone(),
        seed,
        limits: &ctx.options.templates,
    };
    let plug_vars = super::vars::resolve(ctx, plug, "spec.vars", &plug.spec.vars, &names).await?;
    let socket_vars =
        super::vars::resolve(ctx, socket, "spec.vars", &socket.spec.vars, &names).await?;
    let (plug_endpoint, socket_endpoint) = if ctx.plan.is_some() {
        (None, None)
    } else {
        (plug.apparatus(ctx).await?, socket.apparatus(ctx).await?)
    };
    let (plug_data, socket_data) = if needs_data(plug.spec) || needs_data(socket.spec) {
        (data(ctx, plug).await?, data(ctx, socket).await?)
    } else {
        (Values::new(), Values::new())
    };
    let interface = parties
        .socket
        .spec
        .interface
        .as_ref()
        .and_then(|i| i.config.as_ref());
    let mut out = Vec::with_capacity(2);
    for (owner, endpoint, properties, vars) in [
        (
            plug,
            plug_endpoint,
            interface.and_then(|c| c.plug.as_ref()),
            plug_vars.as_ref(),
        ),
        (
            socket,
            socket_endpoint,
            interface.and_then(|c| c.socket.as_ref()),
            socket_vars.as_ref(),
        ),
    ] {
        let spec = owner.spec;
        let request = ConfigRequest {
            side: owner.side,
            plug: parties.plug_json,
            socket: parties.socket_json,
            plug_data: &plug_data,
            socket_data: &socket_data,
            vars,
        };
        // A plan calls no apparatus.
        let endpoint = if ctx.plan.is_some() { None } else { endpoint };
        // One of the Socket's call slots, held for the call only (see `fairness`).
        let _slot = match &endpoint {
            Some(_) => Some(
                Box::pin(ctx.hook_slots.acquire(
                    &super::fairness::socket_of(
                        owner.side,
                        owner.namespace,
                        owner.name,
                        Some(parties.socket_json),
                    ),
                    ctx.options.hook_calls_per_socket,
                    ctx.options.hook_slot_wait,
                ))
                .await?,
            ),
            None => None,
        };
        let started = std::time::Instant::now();
        // A `config` hook that answered invalid input is not called again with the same inputs.
        let key = super::verdicts::call_key(
            owner.uid,
            owner.side,
            "config",
            Some(parties.plug_json),
            Some(parties.socket_json),
            &[Some(&plug_data), Some(&socket_data), vars],
        );
        if endpoint.is_some() {
            super::verdicts::check(ctx, &key)?;
        }
        let apparatus = match endpoint {
            Some(Apparatus::Http {
                endpoint,
                pod: lease,
            }) => {
                super::Metrics::inc(&ctx.metrics.apparatus_calls);
                let result = ctx.http.config(&endpoint, &request).await;
                ctx.metrics.hook_called(
                    super::hooks::http_kind(lease.as_ref()),
                    "config",
                    started.elapsed(),
                );
                Some(
                    result
                        .map_err(|source| Error::Apparatus {
                            side: owner.side,
                            source,
                        })
                        .map_err(|e| super::verdicts::note(ctx, key, e))?,
                )
            }
            Some(Apparatus::Wasm(wasm)) => {
                super::Metrics::inc(&ctx.metrics.apparatus_calls);
                let result = ctx
                    .wasm
                    .config(wasm.loaded, &request, wasm.limits, wasm.context)
                    .await;
                super::hooks::wasm_called(ctx, "config", started, result.as_ref().err());
                Some(
                    result
                        .map_err(|source| Error::Wasm {
                            side: owner.side,
                            source,
                        })
                        .map_err(|e| super::verdicts::note(ctx, key, e))?,
                )
            }
            None => None,
        };
        let renderer = Renderer {
            context: TemplateContext {
                plug_data: Some(plug_data.clone()),
                socket_data: Some(socket_data.clone()),
                vars: vars.cloned(),
                ..base.clone()
            },
            seed,
            limits: &ctx.options.templates,
        };
        let templates = renderer.render_map(owner, "spec.configTemplate", &spec.config_template)?;
        let merged = merged_config(ctx, owner, templates, apparatus).await?;
        out.push(
            config::validate(owner.side, ValuesKind::Config, properties, merged)
                .map_err(Error::Interface)?,
        );
    }
    let socket_config = out.pop().unwrap_or_default();
    let plug_config = out.pop().unwrap_or_default();
    Ok(Computed {
        plug_config,
        socket_config,
        plug_vars,
        socket_vars,
    })
}

/// The validated results of both sides, or the required properties still missing. Result
/// templates see both sides' objects, data and configs, and their side's `resultVars` (as
/// `resultVars` and as `vars`).
pub(crate) async fn results(
    ctx: &Context,
    parties: Parties<'_>,
    computed: &Computed,
    seed: Option<&Seed>,
) -> Result<Result<(Values, Values), MissingProperties>, Error> {
    let interface = parties
        .socket
        .spec
        .interface
        .as_ref()
        .and_then(|i| i.result.as_ref());
    let plug = Owner::plug(parties.plug);
    let socket = Owner::socket(parties.socket);
    let base = base_context(parties, seed);
    let templated =
        !plug.spec.result_template.is_empty() || !socket.spec.result_template.is_empty();
    let (plug_data, socket_data) = if templated {
        (data(ctx, plug).await?, data(ctx, socket).await?)
    } else {
        (Values::new(), Values::new())
    };
    let names = Renderer {
        context: base.clone(),
        seed,
        limits: &ctx.options.templates,
    };
    let mut out = Vec::with_capacity(2);
    for (owner, properties) in [
        (plug, interface.and_then(|r| r.plug.as_ref())),
        (socket, interface.and_then(|r| r.socket.as_ref())),
    ] {
        let spec = owner.spec;
        let result_vars =
            super::vars::resolve(ctx, owner, "spec.resultVars", &spec.result_vars, &names).await?;
        let renderer = Renderer {
            context: TemplateContext {
                plug_data: Some(plug_data.clone()),
                socket_data: Some(socket_data.clone()),
                vars: result_vars.clone(),
                result_vars,
                plug_config: Some(computed.plug_config.clone()),
                socket_config: Some(computed.socket_config.clone()),
                ..base.clone()
            },
            seed,
            limits: &ctx.options.templates,
        };
        let templates = renderer.render_map(owner, "spec.resultTemplate", &spec.result_template)?;
        let merged = merged_result(ctx, owner, templates).await?;
        match config::validate(owner.side, ValuesKind::Result, properties, merged) {
            Ok(values) => out.push(values),
            Err(missing) => return Ok(Err(missing)),
        }
    }
    let socket_result = out.pop().unwrap_or_default();
    let plug_result = out.pop().unwrap_or_default();
    Ok(Ok((plug_result, socket_result)))
}

/// Checks what a Socket can know about its own config and result without a Plug: when its
/// config comes only from static sources (no apparatus, no templates, no vars), it must satisfy
/// the Socket's own interface; so must its result when it is only inline. Faults show on the
/// Socket instead of only on the Plugs that try to couple.
pub(crate) async fn socket_self_check(ctx: &Context, socket: &Socket) -> Result<(), Error> {
    let owner = Owner::socket(socket);
    let spec = owner.spec;
    let interface = socket.spec.interface.as_ref();
    let static_config =
        spec.apparatus.is_none() && spec.config_template.is_empty() && spec.vars.is_empty();
    if static_config
        && let Some(properties) = interface
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.socket.as_ref())
    {
        let merged = merged_config(ctx, owner, None, None).await?;
        config::validate(owner.side, ValuesKind::Config, Some(properties), merged)
            .map_err(Error::Interface)?;
    }
    let inline_result = spec.result_secret_name.is_none()
        && spec.result_config_map_name.is_none()
        && spec.result_template.is_empty()
        && spec.result_vars.is_empty();
    if inline_result
        && let Some(properties) = interface
            .and_then(|i| i.result.as_ref())
            .and_then(|r| r.socket.as_ref())
    {
        config::validate(
            owner.side,
            ValuesKind::Result,
            Some(properties),
            spec.result.clone(),
        )
        .map_err(Error::Interface)?;
    }
    Ok(())
}

/// Name of the Secret holding a Plug's results: `<plug>-plugboard-result`, shortened with a
/// hash when that would exceed the 253-character name limit.
pub(crate) fn result_secret_name(plug: &Plug) -> String {
    suffixed_name(&plug.name_any(), "-plugboard-result")
}

/// `<name><suffix>`, shortened with a hash of `name` when that would exceed the 253-character
/// name limit.
pub(crate) fn suffixed_name(name: &str, suffix: &str) -> String {
    if name.len() + suffix.len() <= 253 {
        return format!("{name}{suffix}");
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    let keep = 253 - suffix.len() - hash.len() - 1;
    let mut end = keep.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}-{hash}{suffix}",
        name[..end].trim_end_matches(['-', '.'])
    )
}

/// A Secret key is letters, digits, `-`, `_` and `.`.
pub(crate) fn valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checksum of stored results.
pub(crate) fn results_checksum(plug: &Values, socket: &Values) -> String {
    let mut hash = Sha256::new();
    if let Ok(bytes) = serde_json::to_vec(&(plug, socket)) {
        hash.update(bytes);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PlugSpec, SocketRef};

    fn plug_named(name: &str) -> Plug {
        Plug::new(
            name,
            PlugSpec {
                socket: SocketRef::default(),
                side: SideSpec::default(),
            },
        )
    }

    #[test]
    fn result_secret_names_fit_the_limit() {
        assert_eq!(
            result_secret_name(&plug_named("app")),
            "app-plugboard-result"
        );
        let long = "a".repeat(253);
        let name = result_secret_name(&plug_named(&long));
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.ends_with("-plugboard-result"));
        assert_ne!(name, result_secret_name(&plug_named(&"a".repeat(252))));
    }

    #[test]
    fn secret_keys_are_checked() {
        assert!(valid_secret_key("db.password_1-x"));
        assert!(!valid_secret_key("has space"));
        assert!(!valid_secret_key("slash/key"));
        assert!(!valid_secret_key(""));
    }
}
