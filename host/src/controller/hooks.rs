//! Running one side's hooks at a lifecycle point, in the reference's order: its apparatus call,
//! then its templated `resources` for that point (as its ServiceAccount), then a Normal Event.
//! Hooks are at-least-once: a failure after a hook ran means it runs again on the retry, so
//! apparatuses must be idempotent (and applying resources is).

use kube::Resource;
use serde_json::Value;

use super::render::Renderer;
use super::sources::{Apparatus, Owner};
use super::{Context, Error, objects, verdicts, write};
use crate::apparatus::{HookRequest, Side};
use crate::crd::LifecyclePoint;
use crate::engine::Values;
use crate::engine::resources::ResourceStep;
use crate::metrics::{ApparatusKind, Metrics};

/// What the hook sees of the coupling.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HookInputs<'a> {
    pub(crate) plug: Option<&'a Value>,
    pub(crate) socket: Option<&'a Value>,
    pub(crate) plug_config: Option<&'a Values>,
    pub(crate) socket_config: Option<&'a Values>,
}

fn event_reason(side: Side, point: LifecyclePoint) -> String {
    let side = match side {
        Side::Plug => "Plug",
        Side::Socket => "Socket",
    };
    let point = point.as_str();
    let mut chars = point.chars();
    let first = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default();
    format!("{side}{first}{}", chars.as_str())
}

/// Runs `owner`'s hook at `point` — its apparatus, then its resources rendered by `renderer` —
/// and records a Normal Event on `obj` (the owner's object).
pub(crate) async fn run<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    owner: Owner<'_>,
    obj: &K,
    point: LifecyclePoint,
    inputs: HookInputs<'_>,
    renderer: &Renderer<'_>,
) -> Result<(), Error> {
    // Render before calling anything: a template error should not leave a hook half run.
    let steps = renderer.lifecycle_steps(owner, point)?;
    let request = HookRequest {
        side: owner.side,
        point,
        plug: inputs.plug,
        socket: inputs.socket,
        plug_config: inputs.plug_config,
        socket_config: inputs.socket_config,
    };
    let apparatus = owner.apparatus(ctx).await?;
    // One of the Socket's call slots, held for the call only (see `fairness`).
    let _slot = match &apparatus {
        Some(_) => Some(
            Box::pin(ctx.hook_slots.acquire(
                &super::fairness::socket_of(owner.side, owner.namespace, owner.name, inputs.socket),
                ctx.options.hook_calls_per_socket,
                ctx.options.hook_slot_wait,
            ))
            .await?,
        ),
        None => None,
    };
    let started = std::time::Instant::now();
    // A hook that answered invalid input is not called again with the same inputs.
    let key = verdicts::call_key(
        owner.uid,
        owner.side,
        point.as_str(),
        inputs.plug,
        inputs.socket,
        &[inputs.plug_config, inputs.socket_config],
    );
    if apparatus.is_some() {
        verdicts::check(ctx, &key)?;
    }
    match apparatus {
        Some(Apparatus::Http {
            endpoint,
            pod: lease,
        }) => {
            Metrics::inc(&ctx.metrics.apparatus_calls);
            let result = ctx.http.hook(&endpoint, &request).await;
            ctx.metrics
                .hook_called(http_kind(lease.as_ref()), point.as_str(), started.elapsed());
            result
                .map_err(|source| Error::Apparatus {
                    side: owner.side,
                    source,
                })
                .map_err(|e| verdicts::note(ctx, key, e))?;
        }
        Some(Apparatus::Wasm(wasm)) => {
            Metrics::inc(&ctx.metrics.apparatus_calls);
            let result = ctx
                .wasm
                .hook(wasm.loaded, &request, wasm.limits, wasm.context)
                .await;
            wasm_called(ctx, point.as_str(), started, result.as_ref().err());
            result
                .map_err(|source| Error::Wasm {
                    side: owner.side,
                    source,
                })
                .map_err(|e| verdicts::note(ctx, key, e))?;
        }
        None => {}
    }
    act(ctx, owner, obj, &steps).await?;
    tracing::info!(
        side = owner.side.as_str(),
        hook = point.as_str(),
        namespace = owner.namespace,
        name = owner.name,
        "hook ran"
    );
    // The reference's message format: name first, then namespace.
    let note = format!(
        "{} {}/{} {}",
        owner.side.as_str(),
        owner.name,
        owner.namespace,
        point.as_str()
    );
    write::event(ctx, obj, false, &event_reason(owner.side, point), note).await;
    Ok(())
}

/// The `apparatus` label of an HTTP call: `pod` when it goes to an apparatus pod.
pub(crate) fn http_kind(pod: Option<&super::pods::Lease>) -> ApparatusKind {
    if pod.is_some() {
        ApparatusKind::Pod
    } else {
        ApparatusKind::Http
    }
}

/// Records a WebAssembly call for `hook` that started at `started`, and the sandbox stopping
/// it if it did.
pub(crate) fn wasm_called(
    ctx: &Context,
    hook: &str,
    started: std::time::Instant,
    error: Option<&crate::wasm::WasmError>,
) {
    ctx.metrics
        .hook_called(ApparatusKind::Wasm, hook, started.elapsed());
    if let Some(kind) = error.and_then(crate::wasm::WasmError::trap_kind) {
        ctx.metrics.guest_trapped(kind);
    }
}

/// Applies, deletes or recreates `steps` as `owner`'s ServiceAccount. Objects plugboard did
/// not create for this owner are left alone, with a Warning Event.
pub(crate) async fn act<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    owner: Owner<'_>,
    obj: &K,
    steps: &[ResourceStep],
) -> Result<(), Error> {
    if steps.is_empty() {
        return Ok(());
    }
    let acted = objects::act(ctx, &owner.object_owner(), steps)
        .await
        .map_err(Error::from)?;
    for skipped in acted.not_owned() {
        write::event(
            ctx,
            obj,
            true,
            crate::crd::conditions::reasons::RESOURCE_NOT_OWNED,
            format!(
                "left {} alone: it exists but plugboard did not create it for {}",
                skipped.describe(),
                owner.describe()
            ),
        )
        .await;
    }
    Ok(())
}

/// Applies `owner`'s `resultResources`, rendered by `renderer` (which sees the results).
pub(crate) async fn result_resources<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    owner: Owner<'_>,
    obj: &K,
    renderer: &Renderer<'_>,
) -> Result<(), Error> {
    let steps = renderer.result_steps(owner)?;
    act(ctx, owner, obj, &steps).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_reasons_keep_the_reference_names() {
        assert_eq!(
            event_reason(Side::Plug, LifecyclePoint::Coupled),
            "PlugCoupled"
        );
        assert_eq!(
            event_reason(Side::Socket, LifecyclePoint::Decoupled),
            "SocketDecoupled"
        );
    }
}
