//! Undoing a coupling: decoupling (the decoupled hooks and resources of both sides, results
//! dropped), the Plug's own deletion, and the force annotation that passes over failures.

use super::*;

pub(super) fn forced(plug: &Plug) -> bool {
    plug.annotations()
        .get(FORCE_DECOUPLE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Removes the force annotation once a decouple it allowed has completed on a Plug that stays,
/// with a Normal Event saying so.
pub(super) async fn clear_force(ctx: &Context, plug: &Plug) -> Result<(), Error> {
    if write::remove_annotation(ctx, plug, FORCE_DECOUPLE_ANNOTATION, "true").await? {
        write::event(
            ctx,
            plug,
            false,
            reasons::FORCE_DECOUPLE_CLEARED,
            format!(
                "decoupled; removed {FORCE_DECOUPLE_ANNOTATION}, which applies to one decouple only"
            ),
        )
        .await;
    }
    Ok(())
}

/// Runs the decoupled hooks (Plug side, then Socket side when the Socket still exists), drops
/// the results and clears the coupling from `status`. With the force annotation, failures are
/// reported as Warning Events and passed over.
pub(super) async fn decouple(
    ctx: &Context,
    plug: &Plug,
    plug_json: &Value,
    socket: Option<&Socket>,
    status: &mut PlugStatus,
) -> Result<(), Error> {
    let force = forced(plug);
    let plug_owner = Owner::plug(plug);
    // A Plug deleted with its namespace: its ServiceAccount, RoleBindings and Secrets go at the
    // same time, and no apparatus pod can start; the namespace's deletion must finish.
    // Asked only when something fails.
    let terminating = || async {
        plug.meta().deletion_timestamp.is_some()
            && super::super::namespace_terminating(ctx, plug_owner.namespace).await
    };
    // A failure passed over: with the force annotation, or when the namespace is being deleted.
    let skip = |error: &Error| {
        let quick = force || error.namespace_terminating();
        async move { quick || terminating().await }
    };
    let pass = |result: Result<(), Error>| async {
        match result {
            Err(error) if skip(&error).await => {
                let why = if force {
                    format!("{FORCE_DECOUPLE_ANNOTATION} is set")
                } else {
                    "the namespace is being deleted".to_owned()
                };
                write::event(
                    ctx,
                    plug,
                    true,
                    reasons::DECOUPLE_FAILED,
                    format!("{why}, decoupling anyway: {}", error.message()),
                )
                .await;
                Ok(())
            }
            other => other,
        }
    };
    // Neither side's hooks run while its ServiceAccount has not opted in (with the force,
    // they run, and whatever needs the ServiceAccount fails and is passed over).
    pass(plug_owner.require_opt_in(ctx).await).await?;
    if let Some(socket) = socket {
        pass(Owner::socket(socket).require_opt_in(ctx).await).await?;
    }
    match socket {
        Some(socket) => {
            let socket_json = ctx.socket_json.get(socket)?;
            let parties = Parties {
                plug,
                socket,
                plug_json,
                socket_json: &socket_json,
            };
            let seed = match seed_for(ctx, plug, socket).await {
                Ok(seed) => seed,
                Err(error) if skip(&error).await => {
                    pass(Err(error)).await?;
                    None
                }
                Err(error) => return Err(error),
            };
            let computed = match sources::configs(ctx, parties, seed.as_ref()).await {
                Ok(computed) => computed,
                Err(error) if skip(&error).await => {
                    pass(Err(error)).await?;
                    Computed::default()
                }
                Err(error) => return Err(error),
            };
            let inputs = HookInputs {
                plug: Some(plug_json),
                socket: Some(&socket_json),
                plug_config: Some(&computed.plug_config),
                socket_config: Some(&computed.socket_config),
            };
            for side in lifecycle::hook_sides(LifecyclePoint::Decoupled) {
                let renderer = coupling_renderer(ctx, parties, &computed, *side, seed.as_ref());
                let ran = match side {
                    Side::Plug => {
                        hooks::run(
                            ctx,
                            plug_owner,
                            plug,
                            LifecyclePoint::Decoupled,
                            inputs,
                            &renderer,
                        )
                        .await
                    }
                    Side::Socket => {
                        hooks::run(
                            ctx,
                            Owner::socket(socket),
                            socket,
                            LifecyclePoint::Decoupled,
                            inputs,
                            &renderer,
                        )
                        .await
                    }
                };
                pass(ran).await?;
            }
        }
        None => {
            // The Socket is gone for good (its finalizer was removed by hand): only the Plug's
            // side can still be told.
            let empty = Values::new();
            let inputs = HookInputs {
                plug: Some(plug_json),
                socket: None,
                plug_config: Some(&empty),
                socket_config: Some(&empty),
            };
            let renderer = Renderer {
                context: TemplateContext {
                    plug_config: Some(Values::new()),
                    socket_config: Some(Values::new()),
                    ..render::owner_only(plug_owner, plug_json)
                },
                seed: None,
                limits: &ctx.options.templates,
            };
            pass(
                hooks::run(
                    ctx,
                    plug_owner,
                    plug,
                    LifecyclePoint::Decoupled,
                    inputs,
                    &renderer,
                )
                .await,
            )
            .await?;
        }
    }
    super::super::result::delete(
        ctx,
        &plug.namespace().unwrap_or_default(),
        &sources::result_secret_name(plug),
        &plug.uid().unwrap_or_default(),
    )
    .await?;
    status.coupled_socket = None;
    status.coupling_socket = None;
    status.coupling_checksum = None;
    status.result = None;
    status.results_checksum = None;
    Ok(())
}

pub(super) fn decouple_error(error: Error, coupled: &CoupledObjectRef) -> Error {
    match error {
        Error::Api { .. } => error,
        other => Error::Decouple {
            socket: format!("{}/{}", coupled.namespace, coupled.name),
            source: Box::new(other),
        },
    }
}

/// Deletion: decouple if coupled, run the deleted hooks, release the finalizer.
pub(super) async fn delete(plug: &Plug, ctx: &Context) -> Result<Action, Error> {
    if !write::has_finalizer(plug) {
        return Ok(Action::await_change());
    }
    let mut status = plug.status.clone().unwrap_or_default();
    let mut writer = StatusWriter {
        plug,
        written: plug.status.clone(),
        unsaved: false,
    };
    let plug_json = to_json("the Plug", plug)?;
    let result = async {
        let coupled = status
            .coupled_socket
            .clone()
            .or_else(|| status.coupling_socket.clone());
        if let Some(coupled) = coupled {
            // A Socket cannot go while a Plug holds it (its finalizer waits), so the watch's
            // copy will do.
            let socket = super::super::socket(ctx, &coupled.namespace, &coupled.name)
                .await?
                .filter(|s| s.uid().as_deref() == Some(coupled.uid.as_str()));
            decouple(ctx, plug, &plug_json, socket.as_deref(), &mut status)
                .await
                .map_err(|e| decouple_error(e, &coupled))?;
        }
        if status.created {
            let inputs = HookInputs {
                plug: Some(&plug_json),
                ..Default::default()
            };
            let renderer = Renderer {
                context: render::owner_only(Owner::plug(plug), &plug_json),
                seed: None,
                limits: &ctx.options.templates,
            };
            let ran = match Owner::plug(plug).require_opt_in(ctx).await {
                Ok(()) => {
                    hooks::run(
                        ctx,
                        Owner::plug(plug),
                        plug,
                        LifecyclePoint::Deleted,
                        inputs,
                        &renderer,
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            let passed_over = match &ran {
                Ok(()) => false,
                Err(error) => {
                    forced(plug)
                        || error.namespace_terminating()
                        || super::super::namespace_terminating(
                            ctx,
                            &plug.namespace().unwrap_or_default(),
                        )
                        .await
                }
            };
            match ran {
                Err(error) if passed_over => {
                    write::event(ctx, plug, true, reasons::DECOUPLE_FAILED, error.message()).await;
                }
                other => other?,
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            super::super::pods::delete_for_owner(ctx, Owner::plug(plug)).await;
            write::remove_finalizer(ctx, plug).await?;
            Ok(Action::await_change())
        }
        Err(error @ Error::Api { .. }) => Err(error),
        Err(error) => {
            let outcome = Outcome::stalled(
                error.reason(),
                error.message(),
                requeue(super::super::retry_delay(ctx)),
            );
            finish(ctx, plug, &mut writer, &mut status, outcome).await
        }
    }
}
