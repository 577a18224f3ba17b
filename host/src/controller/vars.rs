//! Resolving a side's `vars` / `resultVars`: each reads one field of one object in the owner's
//! namespace, as the owner's ServiceAccount. A target that does not exist yet keeps the
//! coupling waiting (it is looked at again on the re-check interval); a bad reference or path
//! is a spec error.

use super::render::Renderer;
use super::sources::Owner;
use super::{Context, Error, objects};
use crate::crd::Var;
use crate::engine::Values;
use crate::engine::vars;

/// Resolves `vars` (in `field`, `spec.vars` or `spec.resultVars`) for `owner`. Name and
/// namespace templates are rendered with `names` (which sees `plug` and `socket`).
pub(crate) async fn resolve(
    ctx: &Context,
    owner: Owner<'_>,
    field: &str,
    list: &[Var],
    names: &Renderer<'_>,
) -> Result<Option<Values>, Error> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut out = Values::new();
    for (i, var) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let invalid = |problem: String| Error::VarInvalid {
            owner: owner.describe(),
            field: at.clone(),
            problem,
        };
        let objref = &var.objref;
        let mut name = objref.name.clone().unwrap_or_default();
        if let Some(template) = &objref.template_name {
            name = names
                .render(&format!("{at}.objref.templateName"), template)
                .map_err(|source| owner.template_error(source))?
                .trim()
                .to_owned();
        }
        let mut namespace = objref.namespace.clone().unwrap_or_default();
        if let Some(template) = &objref.template_namespace {
            namespace = names
                .render(&format!("{at}.objref.templateNamespace"), template)
                .map_err(|source| owner.template_error(source))?
                .trim()
                .to_owned();
        }
        if namespace.is_empty() {
            namespace = owner.namespace.to_owned();
        }
        if namespace != owner.namespace {
            // The reference's message.
            return Err(invalid(format!(
                "var objRef namespace {namespace} must be {}",
                owner.namespace
            )));
        }
        if name.is_empty() {
            return Err(invalid(
                "objref names no object (name or templateName)".to_owned(),
            ));
        }
        let path = vars::parse_field_path(&var.fieldref.field_path)
            .map_err(|e| invalid(format!("fieldref.fieldPath: {e}")))?;
        let object = objects::get_as(
            ctx,
            owner.namespace,
            &owner.spec.service_account_name,
            &objref.api_version,
            &objref.kind,
            &namespace,
            &name,
        )
        .await
        .map_err(Error::from)?;
        let Some(object) = object else {
            return Err(Error::VarTargetMissing {
                owner: owner.describe(),
                field: at,
                kind: objref.kind.clone(),
                namespace,
                name,
            });
        };
        let json = serde_json::to_value(&object).map_err(|source| Error::Encode {
            what: "a var's object",
            source,
        })?;
        out.insert(var.name.clone(), vars::extract(&json, &path));
    }
    Ok(Some(out))
}
