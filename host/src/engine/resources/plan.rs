//! Plans: which objects to apply, delete or recreate at a lifecycle point, and for results.

use sha2::{Digest, Sha256};

use crate::crd::{LifecyclePoint, Resource, ResourceAction, ResultResource};
use crate::engine::template::TemplateError;

use super::check::check;
use super::error::ResourceError;
use super::render::{Budget, TemplateSet, render_resource};
use super::{ObjectOwner, PlannedObject, ResourceStep};

const RESOURCES: &str = "spec.resources";
const RESULT_RESOURCES: &str = "spec.resultResources";

/// Plans a side's `spec.resources` at `point` (see the [module docs](super)): each resource
/// whose `when` lists `point`, in order, with its `do`; at [`LifecyclePoint::Decoupled`] then the
/// auto-delete of every resource that is not `delete`, does not list `decoupled` and is not
/// retained. `coupling` is the coupling id ([`coupling_id`]) when planned for a coupling; it
/// becomes the [`COUPLING_LABEL`](super::COUPLING_LABEL). `render(field, source)` renders one
/// template string with the context of this point.
pub fn plan_lifecycle(
    resources: &[Resource],
    point: LifecyclePoint,
    owner: &ObjectOwner,
    coupling: Option<&str>,
    render: &dyn Fn(&str, &str) -> Result<String, TemplateError>,
) -> Result<Vec<ResourceStep>, ResourceError> {
    let mut budget = Budget::new(RESOURCES);
    let mut steps = Vec::new();
    for (i, resource) in resources.iter().enumerate() {
        if !resource.when.contains(&point) {
            continue;
        }
        let prefix = format!("{RESOURCES}[{i}]");
        for object in plan_objects(
            resource.into(),
            &prefix,
            owner,
            coupling,
            render,
            &mut budget,
        )? {
            steps.push(step(resource.action, object));
        }
    }
    if point == LifecyclePoint::Decoupled {
        for (i, resource) in resources.iter().enumerate() {
            if !deleted_when_decoupled(resource) {
                continue;
            }
            let prefix = format!("{RESOURCES}[{i}]");
            let objects = plan_objects(
                resource.into(),
                &prefix,
                owner,
                coupling,
                render,
                &mut budget,
            )
            .map_err(|source| ResourceError::AutoDelete {
                resource: prefix.clone(),
                source: Box::new(source),
            })?;
            steps.extend(objects.into_iter().map(ResourceStep::Delete));
        }
    }
    Ok(steps)
}

/// Whether the decouple auto-delete (reference 8.4) deletes this resource.
fn deleted_when_decoupled(resource: &Resource) -> bool {
    resource.action != ResourceAction::Delete
        && !resource.when.contains(&LifecyclePoint::Decoupled)
        && !resource.retain_when_decoupled
}

/// Plans a side's `spec.resultResources`: all of them, in order, each with its `do` (`apply`
/// when unset). `coupling` and `render` as for [`plan_lifecycle`]; the render context of results
/// includes `plugResult` and `socketResult`.
pub fn plan_results(
    result_resources: &[ResultResource],
    owner: &ObjectOwner,
    coupling: Option<&str>,
    render: &dyn Fn(&str, &str) -> Result<String, TemplateError>,
) -> Result<Vec<ResourceStep>, ResourceError> {
    let mut budget = Budget::new(RESULT_RESOURCES);
    let mut steps = Vec::new();
    for (i, resource) in result_resources.iter().enumerate() {
        let prefix = format!("{RESULT_RESOURCES}[{i}]");
        for object in plan_objects(
            resource.into(),
            &prefix,
            owner,
            coupling,
            render,
            &mut budget,
        )? {
            steps.push(step(resource.action, object));
        }
    }
    Ok(steps)
}

fn plan_objects(
    set: TemplateSet<'_>,
    prefix: &str,
    owner: &ObjectOwner,
    coupling: Option<&str>,
    render: &dyn Fn(&str, &str) -> Result<String, TemplateError>,
    budget: &mut Budget,
) -> Result<Vec<PlannedObject>, ResourceError> {
    render_resource(set, prefix, render, budget)?
        .into_iter()
        .map(|rendered| check(rendered, owner, coupling))
        .collect()
}

fn step(action: ResourceAction, object: PlannedObject) -> ResourceStep {
    match action {
        ResourceAction::Apply => ResourceStep::Apply(object),
        ResourceAction::Delete => ResourceStep::Delete(object),
        ResourceAction::Recreate => ResourceStep::Recreate(object),
    }
}

/// A short, stable identity of a Plug/Socket pair, valid as a label value: the first 16 hex
/// characters of SHA-256 over a domain-separated, length-prefixed encoding of both UIDs. The
/// order matters (plug first), and no two different pairs share an encoding.
pub fn coupling_id(plug_uid: &str, socket_uid: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"plugboard.dev/coupling/v1\0");
    for uid in [plug_uid, socket_uid] {
        hasher.update((uid.len() as u64).to_be_bytes());
        hasher.update(uid.as_bytes());
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..8])
}
