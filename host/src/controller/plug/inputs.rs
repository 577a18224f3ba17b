//! What a Plug reconcile loads and derives before deciding: the state of its Socket
//! (admission included), the password seed, the checksum of the coupling's inputs, the
//! renderer of each side's resources, and the re-check delay.

use super::*;

/// The state of the Socket a Plug names, for the pure lifecycle decision (admission included).
pub(crate) async fn socket_state(
    ctx: &Context,
    plug: &Plug,
    socket: Option<&Socket>,
) -> Result<SocketState, Error> {
    let Some(socket) = socket else {
        return Ok(SocketState::Missing);
    };
    if socket.meta().deletion_timestamp.is_some() {
        return Ok(SocketState::Deleting);
    }
    // A Socket that ran its created hooks but reports a failure of its own (its config against
    // its own interface, a refused feature) cannot take Plugs either; say why.
    let status = socket.status.as_ref();
    let fault = status
        .and_then(|st| conditions::find(&st.conditions, types::READY))
        .filter(|c| c.status == "False")
        .map(|c| (c.reason.clone(), c.message.clone()));
    if !status.is_some_and(|st| st.created) {
        return Ok(SocketState::NotCreated { fault });
    }
    if let Some(fault) = fault {
        return Ok(SocketState::Faulty {
            uid: socket.uid().unwrap_or_default(),
            fault,
        });
    }
    let plug_ns = plug.namespace().unwrap_or_default();
    let labels = namespace_labels(ctx, &plug_ns).await?;
    let admission = admission::admit(
        &socket.namespace().unwrap_or_default(),
        socket.spec.validation.as_ref(),
        PlugNamespace {
            name: &plug_ns,
            labels: &labels,
        },
    )
    .map_err(Error::Policy)?;
    Ok(SocketState::Ready {
        uid: socket.uid().unwrap_or_default(),
        admission,
    })
}

pub(super) fn wait_outcome(wait: Wait, key: &str) -> Outcome {
    match wait {
        Wait::SocketMissing { deleting: false } => Outcome::waiting(
            reasons::SOCKET_NOT_CREATED,
            format!("waiting for Socket {key} to be created"),
        ),
        Wait::SocketMissing { deleting: true } => Outcome::waiting(
            reasons::SOCKET_NOT_CREATED,
            format!("Socket {key} is being deleted; waiting for it to be created again"),
        ),
        Wait::SocketNotReady { fault: None } => Outcome::waiting(
            reasons::SOCKET_NOT_CREATED,
            format!("waiting for Socket {key} to finish its created hooks"),
        ),
        Wait::SocketNotReady {
            fault: Some((reason, message)),
        } => Outcome::waiting(
            reasons::SOCKET_NOT_READY,
            format!("Socket {key} is not ready ({reason}): {message}"),
        ),
        Wait::Refused(message) => {
            Outcome::stalled(reasons::COUPLING_REFUSED, message, Action::await_change())
        }
    }
}

pub(super) async fn namespace_labels(
    ctx: &Context,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    // From the operator's Namespace watch (whose changes wake this namespace's Plugs), when
    // there is one and it has seen the namespace.
    if let Some(ns) = ctx
        .namespaces
        .as_ref()
        .and_then(|store| store.get(&kube::runtime::reflector::ObjectRef::new(name)))
    {
        return Ok(ns.metadata.labels.clone().unwrap_or_default());
    }
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get(name)
        .await
        .map_err(|source| Error::Api {
            action: "read",
            what: format!("Namespace {name}"),
            source: Box::new(source),
        })?;
    Ok(ns.metadata.labels.unwrap_or_default())
}

/// Whether any template of either side may call `password` (the seed is kept only then).
pub(super) fn uses_password(plug: &Plug, socket: &Socket) -> bool {
    [&plug.spec.side, &socket.spec.side].iter().any(|side| {
        serde_json::to_string(&(
            &side.config_template,
            &side.result_template,
            &side.resources,
            &side.result_resources,
        ))
        .is_ok_and(|text| text.contains("password"))
    })
}

/// The coupling's password seed, when a template may need it.
pub(crate) async fn seed_for(
    ctx: &Context,
    plug: &Plug,
    socket: &Socket,
) -> Result<Option<Seed>, Error> {
    if !uses_password(plug, socket) {
        return Ok(None);
    }
    let key = super::super::seed::socket_key(ctx, socket).await?;
    Ok(Some(Seed {
        key,
        coupling: coupling_id(
            plug.uid().as_deref().unwrap_or_default(),
            socket.uid().as_deref().unwrap_or_default(),
        ),
    }))
}

/// The checksum of everything the coupling hooks and resources see.
pub(crate) fn inputs_checksum(plug: &Plug, socket: &Socket, computed: &Computed) -> String {
    let mut extra = serde_json::json!({
        "interface": socket.spec.interface,
        "validation": socket.spec.validation,
        "limit": socket.spec.limit,
    });
    // Only when there are vars, so couplings without any keep the checksum they had before
    // vars existed (an upgrade fires no `updated`).
    if (computed.plug_vars.is_some() || computed.socket_vars.is_some())
        && let Some(map) = extra.as_object_mut()
    {
        map.insert(
            "vars".to_owned(),
            serde_json::json!([&computed.plug_vars, &computed.socket_vars]),
        );
    }
    checksum::checksum(&CouplingInputs {
        plug_spec: &plug.spec.side,
        socket_spec: &socket.spec.side,
        socket_extra: extra,
        plug_config: &computed.plug_config,
        socket_config: &computed.socket_config,
    })
}

/// The renderer of one side's coupled, updated and decoupled resources: both objects, both
/// configs, the side's own vars, the coupling.
pub(crate) fn coupling_renderer<'a>(
    ctx: &'a Context,
    parties: Parties<'_>,
    computed: &Computed,
    side: Side,
    seed: Option<&'a Seed>,
) -> Renderer<'a> {
    Renderer {
        context: TemplateContext {
            plug_config: Some(computed.plug_config.clone()),
            socket_config: Some(computed.socket_config.clone()),
            vars: match side {
                Side::Plug => computed.plug_vars.clone(),
                Side::Socket => computed.socket_vars.clone(),
            },
            ..sources::base_context(parties, seed)
        },
        seed,
        limits: &ctx.options.templates,
    }
}

/// The delay before a coupled Plug is looked at again, so that changes no watch reports
/// (Secrets, ConfigMaps, var targets, apparatus `config` replies) are noticed: the re-check
/// interval, spread by ±10% so that many Plugs do not re-check at once.
pub(super) fn recheck_delay(ctx: &Context) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let spread = 0.9 + 0.2 * f64::from(nanos % 1000) / 1000.0;
    ctx.options.recheck.mul_f64(spread)
}

/// The Socket as a coupling's hooks and templates see it: all of it but `status.coupledPlugs`,
/// the list of every coupled Plug (its length, `status.coupledPlugCount`, stays). The list grows
/// with the Socket, and every Plug reconcile serialises and copies the Socket, so with it a
/// Socket with n Plugs cost each of them O(n), and every hook call carried n entries.
pub(crate) fn socket_json(socket: &Socket) -> Result<Value, Error> {
    let status = socket.status.as_ref().map(|s| crate::crd::SocketStatus {
        observed_generation: s.observed_generation,
        conditions: s.conditions.clone(),
        created: s.created,
        coupled_plugs: Vec::new(),
        coupled_plug_count: s.coupled_plug_count,
        apparatus: s.apparatus.clone(),
    });
    let seen = Socket {
        metadata: socket.metadata.clone(),
        spec: socket.spec.clone(),
        status,
    };
    to_json("the Socket", &seen)
}
