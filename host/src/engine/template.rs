//! Jinja templates (minijinja): config and result templates, resource templates, var name and
//! namespace templates. Rendering is pure and bounded; undefined variables are errors.

use serde_json::Value;

use super::Values;

/// A template that could not be rendered. Says which field, which line and why; never the
/// values it was rendered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to render {field}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct TemplateError {
    /// The spec field holding the template, e.g. `spec.configTemplate.url`.
    pub field: String,
    /// The line of the template the error is on, when known.
    pub line: Option<usize>,
    /// What went wrong, e.g. ``undefined variable `plugConfig` ``.
    pub message: String,
}

/// What a template may see. Absent entries are undefined in the template, so using them is an
/// error that names them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateContext {
    /// The Plug object as JSON.
    pub plug: Option<Value>,
    /// The Socket object as JSON.
    pub socket: Option<Value>,
    /// The Plug's data.
    pub plug_data: Option<Values>,
    /// The Socket's data.
    pub socket_data: Option<Values>,
    /// The rendering side's resolved `vars`.
    pub vars: Option<Values>,
    /// The rendering side's resolved `resultVars`.
    pub result_vars: Option<Values>,
    /// The Plug's validated config.
    pub plug_config: Option<Values>,
    /// The Socket's validated config.
    pub socket_config: Option<Values>,
    /// The Plug's validated result.
    pub plug_result: Option<Values>,
    /// The Socket's validated result.
    pub socket_result: Option<Values>,
    /// A stable identity of this Plug/Socket pair.
    pub coupling: Option<String>,
}
