//! Jinja templates (minijinja): config and result templates, resource templates, var name and
//! namespace templates. Rendering is pure and bounded; undefined variables are errors.
//!
//! # The language
//! Jinja as minijinja implements it: `{{ expr }}` prints, `{% stmt %}` controls, `{# #}`
//! comments, with minijinja's built-in filters and tests plus `b64encode`, `b64decode`,
//! `toyaml`, `required`, `sha256` and `password` (documented in the `filters` and `password`
//! submodules).
//!
//! - **Strict undefined.** Printing, iterating, testing for truth or reading an attribute of
//!   something undefined is an error that names it (``undefined variable `plugConfig` ``,
//!   ``undefined value `plugConfig.database` ``). Probe optional values with `is defined` or
//!   `| default(...)`: `{% if plugConfig.tls is defined %}`, `{{ plugConfig.port | default("5432") }}`.
//!   A context entry that is absent (e.g. `plugResult` before there is one) is undefined too.
//! - **Whitespace.** `trim_blocks` and `lstrip_blocks` are on, so a `{% if %}`/`{% for %}` line of
//!   its own leaves no blank line or indentation behind in YAML; a trailing newline of the source
//!   is kept. Mind that a block tag at the *end* of a text line also takes that line's newline:
//!   end such a line with `+%}` (or keep the tag mid-line). `{%+` / `+%}` turn the stripping
//!   off for one tag, `{%-` / `-%}` strip all whitespace on that side.
//! - **Sealed.** Templates see only the context: no loader, no `include`/`import`/`extends`
//!   (refused with a clear error), no environment variables, files or clock, and no `debug()`.
//!   Output is not escaped. Macros within one template work.
//! - **Errors** ([`TemplateError`]) carry the field, the line and a one-line message of at most
//!   300 bytes: no source excerpt, no values (except the text a template passes to `required`).
//! - **Bounded.** Sources larger than [`MAX_SOURCE_BYTES`] are refused; a render stops when it
//!   uses up [`TemplateLimits::fuel`] or writes more than [`TemplateLimits::max_output_bytes`].

mod filters;
mod message;
mod password;

use std::io;
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use super::Values;

pub use password::{
    DEFAULT_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, MIN_SEED_KEY_LEN,
    PLACEHOLDER_KEY, PasswordSeed, SEED_KEY_LEN, SeedKeyError, new_seed_key,
};

/// Largest template source [`render`] accepts, in bytes. Templates live in spec fields, whose
/// whole object the API server caps at about 1.5 MiB; 128 KiB is far above any real template.
pub const MAX_SOURCE_BYTES: usize = 128 * 1024;

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
    /// The Plug object as JSON (shared: every template of a coupling sees the same).
    pub plug: Option<Arc<Value>>,
    /// The Socket object as JSON (shared; with many Plugs coupled it is large).
    pub socket: Option<Arc<Value>>,
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

impl TemplateContext {
    /// The context as templates see it: a JSON object with the keys `plug`, `socket`,
    /// `plugData`, `socketData`, `vars`, `resultVars`, `plugConfig`, `socketConfig`,
    /// `plugResult`, `socketResult` and `coupling`, each present only when it is `Some`.
    pub fn to_value(&self) -> Value {
        fn values(map: &Values) -> Value {
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        }
        let mut out = Map::new();
        let objects = [("plug", &self.plug), ("socket", &self.socket)];
        for (key, object) in objects {
            if let Some(object) = object {
                out.insert(key.to_owned(), Value::clone(object));
            }
        }
        let maps = [
            ("plugData", &self.plug_data),
            ("socketData", &self.socket_data),
            ("vars", &self.vars),
            ("resultVars", &self.result_vars),
            ("plugConfig", &self.plug_config),
            ("socketConfig", &self.socket_config),
            ("plugResult", &self.plug_result),
            ("socketResult", &self.socket_result),
        ];
        for (key, map) in maps {
            if let Some(map) = map {
                out.insert(key.to_owned(), values(map));
            }
        }
        if let Some(coupling) = &self.coupling {
            out.insert("coupling".to_owned(), Value::String(coupling.clone()));
        }
        Value::Object(out)
    }
}

/// How much one render may do.
///
/// The defaults allow real templates with room to spare — a loop over 3,000 items with a few
/// expressions each uses about a fifth of the fuel — while an endless or huge loop stops within
/// tens of milliseconds (measured: under 100 ms in a debug build) instead of stalling the
/// reconciler. Fuel counts executed instructions and about one unit per 64 bytes of data
/// created (output, strings, lists), so it also caps what a render allocates: about
/// `fuel * 64` bytes, 32 MiB by default. Nesting and recursion have minijinja's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// The fuel budget of one render (default 500,000).
    pub fuel: u64,
    /// The largest output one render may produce, in bytes (default 256 KiB: far more than a
    /// real config value or resource, little enough that a runaway template costs nothing).
    /// The render stops at the first write that would pass it.
    pub max_output_bytes: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            fuel: 500_000,
            max_output_bytes: 256 * 1024,
        }
    }
}

/// Renders `source`, the template in spec field `field` (named in errors), with `context`.
///
/// `seed` enables the `password` filter; without it (nothing coupled yet) `password` is an
/// error saying it needs a coupling. The render is bounded by `limits` and by
/// [`MAX_SOURCE_BYTES`]; see the module documentation for the language.
pub fn render(
    field: &str,
    source: &str,
    context: &TemplateContext,
    seed: Option<PasswordSeed<'_>>,
    limits: &TemplateLimits,
) -> Result<String, TemplateError> {
    let fail = |line: Option<usize>, message: String| TemplateError {
        field: field.to_owned(),
        line,
        message,
    };
    if source.len() > MAX_SOURCE_BYTES {
        return Err(fail(
            None,
            format!("the template is larger than the limit of {MAX_SOURCE_BYTES} bytes"),
        ));
    }
    let env = environment(seed, limits).map_err(|err| fail(None, err.to_string()))?;
    let template = env
        .template_from_named_str(field, source)
        .map_err(|err| fail(err.line(), message::message(&err, limits.fuel)))?;
    let mut out = BoundedWriter {
        buf: Vec::new(),
        limit: limits.max_output_bytes,
        exceeded: false,
    };
    let rendered = template.render_captured_to(
        minijinja::Value::from(minijinja::value::Serde(context.to_value())),
        &mut out,
    );
    if out.exceeded {
        let limit = limits.max_output_bytes;
        return Err(fail(
            None,
            format!("the output is larger than the limit of {limit} bytes"),
        ));
    }
    rendered.map_err(|err| fail(err.line(), message::message(&err, limits.fuel)))?;
    String::from_utf8(out.buf).map_err(|_| fail(None, "the output is not UTF-8 text".to_owned()))
}

/// A fresh environment: built-ins minus `debug`, our filters, strict undefined, no loader.
fn environment<'a>(
    seed: Option<PasswordSeed<'_>>,
    limits: &TemplateLimits,
) -> Result<Environment<'a>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()?,
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Debug mode is what lets errors name the undefined expression; its value snapshots are
    // never shown (see `message`).
    env.set_debug(true);
    env.set_fuel(Some(limits.fuel));
    env.remove_global("debug");
    filters::register(&mut env);
    env.add_filter("password", password::filter(seed.map(Into::into)));
    Ok(env)
}

/// Collects the output and refuses, before storing anything, a write that would exceed `limit`.
/// Writes arrive whole `str` chunks, so the buffer is always UTF-8.
struct BoundedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("template output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn context() -> TemplateContext {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        TemplateContext {
            plug: Some(Arc::new(
                serde_json::json!({"metadata": {"name": "app", "namespace": "team"}}),
            )),
            socket_config: map(&[("host", "db.internal"), ("port", "5432")]),
            plug_config: map(&[("database", "orders")]),
            coupling: Some("team/app:infra/postgres".to_owned()),
            ..TemplateContext::default()
        }
    }

    fn seed(coupling: &str) -> Option<PasswordSeed<'_>> {
        Some(PasswordSeed { key: KEY, coupling })
    }

    fn render_with(source: &str, seed: Option<PasswordSeed<'_>>) -> Result<String, TemplateError> {
        render(
            "spec.t",
            source,
            &context(),
            seed,
            &TemplateLimits::default(),
        )
    }

    fn ok(source: &str) -> String {
        render_with(source, seed("c")).unwrap()
    }

    fn err(source: &str) -> TemplateError {
        render_with(source, seed("c")).unwrap_err()
    }

    #[test]
    fn context_value_has_only_the_present_keys() {
        let full = TemplateContext {
            plug: Some(Arc::new(Value::Null)),
            socket: Some(Arc::new(Value::Null)),
            plug_data: Some(Values::new()),
            socket_data: Some(Values::new()),
            vars: Some(Values::new()),
            result_vars: Some(Values::new()),
            plug_config: Some(Values::new()),
            socket_config: Some(Values::new()),
            plug_result: Some(Values::new()),
            socket_result: Some(Values::new()),
            coupling: Some("c".to_owned()),
        };
        let keys: Vec<String> = full
            .to_value()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut expected = [
            "plug",
            "socket",
            "plugData",
            "socketData",
            "vars",
            "resultVars",
            "plugConfig",
            "socketConfig",
            "plugResult",
            "socketResult",
            "coupling",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let value = context().to_value();
        assert_eq!(
            value["plugConfig"],
            serde_json::json!({"database": "orders"})
        );
        assert!(value.get("plugResult").is_none() && value.get("vars").is_none());
    }

    #[test]
    fn templates_see_the_context() {
        let source = "{{ plug.metadata.name }} {{ socketConfig.host }}:{{ socketConfig.port }} {{ coupling }}";
        assert_eq!(ok(source), "app db.internal:5432 team/app:infra/postgres");
    }

    #[test]
    fn block_tags_on_their_own_lines_leave_no_blank_lines_and_the_final_newline_stays() {
        let source = "data:\n  {% if plugConfig.database is defined %}\n  db: {{ plugConfig.database }}\n  {% endif %}\n  {% for k in ['a', 'b'] %}\n  {{ k }}: x\n  {% endfor %}\n";
        assert_eq!(ok(source), "data:\n  db: orders\n  a: x\n  b: x\n");
        let inline = "a: {% if true %}x{% endif +%}\nb: {% if true %}y{% endif %}\nc\n";
        assert_eq!(ok(inline), "a: x\nb: yc\n");
    }

    #[test]
    fn undefined_variable_is_an_error_naming_it() {
        for source in [
            "{{ nope }}",
            "{{ nope.deeper }}",
            "{% for x in nope %}{% endfor %}",
            "{% if nope %}{% endif %}",
        ] {
            assert_eq!(err(source).message, "undefined variable `nope`", "{source}");
        }
    }

    #[test]
    fn undefined_attribute_is_an_error_naming_its_path() {
        assert_eq!(
            err("{{ plugConfig.user }}").message,
            "undefined value `plugConfig.user`"
        );
        assert_eq!(
            err("{{ plugConfig.user.name }}").message,
            "undefined value `plugConfig.user`"
        );
        assert_eq!(
            err("{{ plugConfig['user'] }}").message,
            "undefined value `plugConfig['user']`"
        );
        for filter in ["b64encode", "toyaml", "sha256", "password", "upper"] {
            let message = err(&format!("{{{{ plugConfig.user | {filter} }}}}")).message;
            assert_eq!(message, "undefined value `plugConfig.user`", "{filter}");
        }
    }

    #[test]
    fn absent_context_entries_are_undefined() {
        assert_eq!(
            err("{{ plugResult.url }}").message,
            "undefined variable `plugResult`"
        );
        assert_eq!(
            ok("{{ plugResult is defined }} {{ plug is defined }}"),
            "False True"
        );
    }

    #[test]
    fn default_and_is_defined_work_on_undefined_values() {
        let source = r#"{{ plugConfig.user | default("admin") }} {{ nope | default("x") }} {% if plugConfig.user is defined %}set{% else %}unset{% endif %}"#;
        assert_eq!(ok(source), "admin x unset");
    }

    #[test]
    fn errors_report_the_line_and_field() {
        let error = err("a: 1\nb: 2\nc: {{ plugConfig.missing }}\n");
        assert_eq!(error.line, Some(3));
        assert_eq!(error.field, "spec.t");
        assert_eq!(
            error.to_string(),
            "failed to render spec.t (line 3): undefined value `plugConfig.missing`"
        );
        let syntax = err("a: 1\nb: 2\nc: {{ x \n");
        assert_eq!(syntax.line, Some(3));
        assert!(
            syntax.message.starts_with("syntax error: "),
            "{}",
            syntax.message
        );
    }

    #[test]
    fn error_messages_are_one_line_without_values_or_source() {
        let error = err("{% set x = 1 %}\n{{ plugConfig.database + 1 }}\n");
        assert_eq!(
            error.message,
            "tried to use + operator on unsupported types string and number"
        );
        let error = err("{{ socketConfig.host | int }}");
        assert!(
            !error.message.contains("db.internal") && !error.message.contains('\n'),
            "{}",
            error.message
        );
    }

    #[test]
    fn output_larger_than_the_limit_is_refused() {
        let limits = TemplateLimits {
            max_output_bytes: 100,
            ..TemplateLimits::default()
        };
        let render_with_limit = |source: &str| render("f", source, &context(), None, &limits);
        assert_eq!(render_with_limit(&"x".repeat(100)).unwrap().len(), 100);
        // Far more output than the limit, and more than the fuel allows: the limit stops it first.
        let error =
            render_with_limit("{% for i in range(100000) %}0123456789{% endfor %}").unwrap_err();
        assert_eq!(
            error.message,
            "the output is larger than the limit of 100 bytes"
        );
    }

    #[test]
    fn endless_loop_is_stopped_by_fuel() {
        let started = std::time::Instant::now();
        let source =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let error = err(source);
        assert_eq!(
            error.message,
            "the template used up its fuel of 500000 (a very long or endless loop?)"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(
            err("{% for i in range(100000000) %}x{% endfor %}").message,
            "range has too many elements"
        );
    }

    #[test]
    fn a_loop_over_thousands_of_items_fits_the_default_fuel() {
        let mut ctx = context();
        ctx.vars = Some(
            (0..3000)
                .map(|i| (format!("key{i}"), "value".to_owned()))
                .collect(),
        );
        let source = "{% for k, v in vars | items %}\n  {{ k }}: {% if k == 'x' %}!{% endif %}{{ v | b64encode | tojson }}\n{% endfor %}";
        let out = render("f", source, &ctx, None, &TemplateLimits::default()).unwrap();
        assert_eq!(out.lines().count(), 3000);
    }

    #[test]
    fn templates_cannot_load_other_templates_or_read_the_environment() {
        for source in [
            "{% include 'x' %}",
            "{% import 'x' as y %}",
            "{% extends 'x' %}",
            "{% from 'x' import y %}",
        ] {
            assert_eq!(
                err(source).message,
                "templates cannot include, import or extend other templates",
                "{source}"
            );
        }
        assert!(
            err("{{ env('HOME') }}")
                .message
                .contains("unknown function")
        );
        assert!(err("{{ debug() }}").message.contains("unknown function"));
    }

    #[test]
    fn deep_nesting_recursion_and_growing_strings_are_bounded() {
        let nested = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
        assert!(err(&nested).message.contains("maximum recursion"));
        let recursive = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert_eq!(err(recursive).message, "recursion limit exceeded");
        // Doubling a string 40 times would need a terabyte; fuel pays for data too.
        let doubling = "{% set ns = namespace(a='x') %}{% for i in range(40) %}{% set ns.a = ns.a ~ ns.a %}{% endfor %}";
        assert!(
            err(doubling)
                .message
                .starts_with("the template used up its fuel")
        );
    }

    #[test]
    fn oversized_source_is_refused() {
        let error = err(&"x".repeat(MAX_SOURCE_BYTES + 1));
        assert_eq!(
            error.message,
            "the template is larger than the limit of 131072 bytes"
        );
        assert_eq!(error.line, None);
    }

    #[test]
    fn filters_are_available_in_templates() {
        let source = r#"{{ "a" | b64encode }} {{ "YQ==" | b64decode }} {{ ("abc" | sha256)[:8] }} {{ plugConfig | tojson }} {{ plugConfig | toyaml }}"#;
        assert_eq!(
            ok(source),
            r#"YQ== a ba7816bf {"database": "orders"} database: orders"#
        );
        assert_eq!(
            err(r#"{{ nope | required("db needs a name") }}"#).message,
            "db needs a name"
        );
    }

    #[test]
    fn password_is_stable_for_a_coupling_and_differs_between_couplings() {
        let source = r#"{{ "admin" | password }}"#;
        let first = render_with(source, seed("team/a:infra/db")).unwrap();
        assert_eq!(first, render_with(source, seed("team/a:infra/db")).unwrap());
        assert_ne!(first, render_with(source, seed("team/b:infra/db")).unwrap());
        assert_ne!(
            first,
            render_with(r#"{{ "reader" | password }}"#, seed("team/a:infra/db")).unwrap()
        );
        assert_eq!(first.len(), DEFAULT_PASSWORD_LENGTH);
        assert!(first.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(ok(r#"{{ "admin" | password(32) }}"#).len(), 32);
    }

    #[test]
    fn password_without_a_coupling_is_an_error() {
        let error = render_with(r#"{{ "admin" | password }}"#, None).unwrap_err();
        assert!(
            error.message.starts_with("password needs a coupling"),
            "{}",
            error.message
        );
    }
}
