//! The per-Socket password seed: a random key kept in the Secret `<socket>-plugboard-seed`
//! (owned by the Socket, so it goes with it), from which the `password` template filter derives
//! a credential per coupling. A re-render, an operator restart or a new operator replica
//! derives the same credential; another Plug, or a re-created Socket, gets another.
//!
//! The operator may create Secrets but not read them. It creates the seed Secret once
//! (creation is atomic, so concurrent couplings agree on one key) and learns an existing key
//! from the response of a server-side apply of the Secret's labels, which changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Resource as _};

use super::sources::Owner;
use super::{Context, Error};
use crate::crd::Socket;
use crate::engine::resources::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::metrics::Metrics;

/// Key of the seed in its Secret.
const SEED_KEY: &str = "seed";
/// Field manager of the label apply that reads an existing seed back.
const SEED_MANAGER: &str = "plugboard-seed";
/// Seeds kept in memory at most; the cache is cleared when it grows past this.
const MAX_CACHED: usize = 4096;

/// Name of a Socket's seed Secret.
pub(crate) fn seed_secret_name(socket: &str) -> String {
    super::sources::suffixed_name(socket, "-plugboard-seed")
}

/// The Socket's seed key, creating it the first time.
pub(crate) async fn socket_key(ctx: &Context, socket: &Socket) -> Result<[u8; 32], Error> {
    let owner = Owner::socket(socket);
    let uid = owner.uid.to_owned();
    if ctx.plan.is_some() {
        // A plan writes nothing; the passwords it would show are masked anyway.
        return Ok(crate::engine::template::PLACEHOLDER_KEY);
    }
    if let Some(key) = ctx.seeds.lock().await.get(&uid) {
        return Ok(*key);
    }
    let namespace = owner.namespace.to_owned();
    let name = seed_secret_name(owner.name);
    let problem = |problem: String| Error::Seed {
        namespace: namespace.clone(),
        name: name.clone(),
        problem,
    };
    let fresh = crate::engine::template::new_seed_key().map_err(|e| problem(e.to_string()))?;
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let owner_ref = OwnerReference {
        api_version: Socket::api_version(&()).into_owned(),
        kind: Socket::kind(&()).into_owned(),
        name: owner.name.to_owned(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_owned(),
            MANAGED_BY.to_owned(),
        )])),
        owner_references: Some(vec![owner_ref]),
        ..Default::default()
    };
    let secret = Secret {
        metadata: metadata.clone(),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            SEED_KEY.to_owned(),
            ByteString(fresh.to_vec()),
        )])),
        ..Default::default()
    };
    let key = match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            Metrics::inc(&ctx.metrics.secret_writes);
            ctx.metrics.api_write("create", "secrets");
            fresh
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let touch = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: metadata.labels.clone(),
                    ..Default::default()
                },
                ..Default::default()
            };
            let existing = api
                .patch(
                    &name,
                    &PatchParams::apply(SEED_MANAGER),
                    &Patch::Apply(&touch),
                )
                .await
                .map_err(|e| problem(format!("reading it back failed: {e}")))?;
            let owned = existing
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|refs| refs.iter().any(|r| r.uid == uid));
            if !owned {
                return Err(problem(format!(
                    "it exists but does not belong to Socket {namespace}/{}; delete or rename it",
                    owner.name
                )));
            }
            let bytes = existing
                .data
                .as_ref()
                .and_then(|d| d.get(SEED_KEY))
                .map(|b| b.0.clone())
                .unwrap_or_default();
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| problem(format!("its key {SEED_KEY:?} is not 32 bytes")))?
        }
        Err(e) => return Err(problem(format!("creating it failed: {e}"))),
    };
    let mut seeds = ctx.seeds.lock().await;
    if seeds.len() >= MAX_CACHED {
        seeds.clear();
    }
    seeds.insert(uid, key);
    Ok(key)
}
