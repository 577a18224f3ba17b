//! Rendering a side's templates: the template context of each step (reference 5.3 with D-5's
//! superset: result templates and result resources see both configs, and `resultVars` under
//! both `resultVars` and `vars`), the coupling's password seed, and errors that name the
//! object as well as the field and line.

use serde_json::Value;

use super::Error;
use super::sources::Owner;
use crate::crd::LifecyclePoint;
use crate::engine::Values;
use crate::engine::resources::{self, ObjectOwner, ResourceStep};
use crate::engine::template::{self, PasswordSeed, TemplateContext, TemplateError, TemplateLimits};

/// The secret material of `password`: the Socket's key and the coupling's identity.
#[derive(Clone)]
pub(crate) struct Seed {
    pub(crate) key: [u8; 32],
    pub(crate) coupling: String,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("coupling", &self.coupling)
            .finish_non_exhaustive()
    }
}

/// Renders templates of one owner with one context.
#[derive(Debug)]
pub(crate) struct Renderer<'a> {
    pub(crate) context: TemplateContext,
    pub(crate) seed: Option<&'a Seed>,
    pub(crate) limits: &'a TemplateLimits,
}

impl Renderer<'_> {
    /// Renders `source`, the template in spec field `field`.
    pub(crate) fn render(&self, field: &str, source: &str) -> Result<String, TemplateError> {
        let seed = self.seed.map(|s| PasswordSeed {
            key: &s.key,
            coupling: &s.coupling,
        });
        template::render(field, source, &self.context, seed, self.limits)
    }

    /// Renders every template of a map field (`configTemplate`, `resultTemplate`).
    pub(crate) fn render_map(
        &self,
        owner: Owner<'_>,
        field: &str,
        templates: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Values>, Error> {
        if templates.is_empty() {
            return Ok(None);
        }
        let mut out = Values::new();
        for (key, source) in templates {
            let value = self
                .render(&format!("{field}.{key}"), source)
                .map_err(|source| owner.template_error(source))?;
            out.insert(key.clone(), value);
        }
        Ok(Some(out))
    }

    /// The resource steps of `owner` at `point`, labelled with the context's coupling (none at
    /// created and deleted, whose context is the owner only).
    pub(crate) fn lifecycle_steps(
        &self,
        owner: Owner<'_>,
        point: LifecyclePoint,
    ) -> Result<Vec<ResourceStep>, Error> {
        if owner.spec.resources.is_empty() {
            return Ok(Vec::new());
        }
        let render = |field: &str, source: &str| self.render(field, source);
        resources::plan_lifecycle(
            &owner.spec.resources,
            point,
            &owner.object_owner(),
            self.context.coupling.as_deref(),
            &render,
        )
        .map_err(|source| owner.resource_error(source))
    }

    /// The `resultResources` steps of `owner`.
    pub(crate) fn result_steps(&self, owner: Owner<'_>) -> Result<Vec<ResourceStep>, Error> {
        if owner.spec.result_resources.is_empty() {
            return Ok(Vec::new());
        }
        let render = |field: &str, source: &str| self.render(field, source);
        resources::plan_results(
            &owner.spec.result_resources,
            &owner.object_owner(),
            self.context.coupling.as_deref(),
            &render,
        )
        .map_err(|source| owner.resource_error(source))
    }
}

/// The context of a created or deleted hook's resources: the owner only.
pub(crate) fn owner_only(owner: Owner<'_>, json: &Value) -> TemplateContext {
    let mut context = TemplateContext::default();
    match owner.side {
        crate::apparatus::Side::Plug => context.plug = Some(std::sync::Arc::new(json.clone())),
        crate::apparatus::Side::Socket => {
            context.socket = Some(std::sync::Arc::new(json.clone()));
        }
    }
    context
}

impl Owner<'_> {
    /// The owner as templated objects record it.
    pub(crate) fn object_owner(&self) -> ObjectOwner {
        let kind = match self.side {
            crate::apparatus::Side::Plug => "Plug",
            crate::apparatus::Side::Socket => "Socket",
        };
        ObjectOwner {
            api_version: "plugboard.dev/v1alpha1".to_owned(),
            kind: kind.to_owned(),
            name: self.name.to_owned(),
            namespace: self.namespace.to_owned(),
            uid: self.uid.to_owned(),
            service_account: self.spec.service_account_name.clone(),
        }
    }

    /// `Plug ns/name` or `Socket ns/name`.
    pub(crate) fn describe(&self) -> String {
        let kind = match self.side {
            crate::apparatus::Side::Plug => "Plug",
            crate::apparatus::Side::Socket => "Socket",
        };
        format!("{kind} {}/{}", self.namespace, self.name)
    }

    pub(crate) fn template_error(&self, source: TemplateError) -> Error {
        Error::Template {
            owner: self.describe(),
            source,
        }
    }

    pub(crate) fn resource_error(&self, source: resources::ResourceError) -> Error {
        Error::Resource {
            owner: self.describe(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apparatus::Side;
    use crate::crd::{Resource, SideSpec};
    use crate::engine::resources::COUPLING_LABEL;

    fn labels_at(renderer: &Renderer<'_>, spec: &SideSpec, point: LifecyclePoint) -> Value {
        let owner = Owner {
            side: Side::Plug,
            name: "app",
            namespace: "team",
            uid: "plug-uid",
            spec,
            last_digest: None,
            deleting: false,
        };
        let steps = renderer.lifecycle_steps(owner, point).unwrap();
        steps[0].object().object["metadata"]["labels"].clone()
    }

    /// The coupling label comes from the coupling of the context, also when no template uses
    /// `password` (and so no seed was loaded).
    #[test]
    fn coupling_label_does_not_depend_on_the_password_seed() {
        let spec = SideSpec {
            resources: vec![Resource {
                when: LifecyclePoint::ALL.to_vec(),
                template: Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": "cm"}})),
                ..Default::default()
            }],
            ..Default::default()
        };
        let limits = TemplateLimits::default();
        let coupled = Renderer {
            context: TemplateContext {
                coupling: Some("c0ffee".to_owned()),
                ..Default::default()
            },
            seed: None,
            limits: &limits,
        };
        let labels = labels_at(&coupled, &spec, LifecyclePoint::Coupled);
        assert_eq!(labels[COUPLING_LABEL], "c0ffee");

        let created = Renderer {
            context: TemplateContext::default(),
            seed: None,
            limits: &limits,
        };
        let labels = labels_at(&created, &spec, LifecyclePoint::Created);
        assert!(labels.get(COUPLING_LABEL).is_none(), "{labels}");
    }
}
