//! Rendering the template strings of one resource into objects: object forms value by value,
//! string forms as text then parsed as YAML, every document. Blank renders produce nothing.

use serde_json::{Map, Value};

use crate::crd::{Resource, ResultResource};
use crate::engine::template::TemplateError;

use super::error::ResourceError;
use super::{MAX_OBJECTS, MAX_TOTAL_BYTES};

/// How a template string is rendered: `render(field, source)`.
pub(super) type RenderFn<'r> = dyn Fn(&str, &str) -> Result<String, TemplateError> + 'r;

/// The template fields of a `Resource` or a `ResultResource`.
#[derive(Debug, Clone, Copy)]
pub(super) struct TemplateSet<'a> {
    template: Option<&'a Value>,
    templates: &'a [Value],
    string_template: Option<&'a str>,
    string_templates: &'a [String],
}

impl<'a> From<&'a Resource> for TemplateSet<'a> {
    fn from(r: &'a Resource) -> Self {
        TemplateSet {
            template: r.template.as_ref(),
            templates: &r.templates,
            string_template: r.string_template.as_deref(),
            string_templates: &r.string_templates,
        }
    }
}

impl<'a> From<&'a ResultResource> for TemplateSet<'a> {
    fn from(r: &'a ResultResource) -> Self {
        TemplateSet {
            template: r.template.as_ref(),
            templates: &r.templates,
            string_template: r.string_template.as_deref(),
            string_templates: &r.string_templates,
        }
    }
}

/// A rendered object, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rendered {
    pub object: Value,
    pub origin: String,
}

/// Counts the objects and bytes of one plan against [`MAX_OBJECTS`] and [`MAX_TOTAL_BYTES`].
#[derive(Debug)]
pub(super) struct Budget {
    list: &'static str,
    objects: usize,
    bytes: usize,
}

impl Budget {
    pub fn new(list: &'static str) -> Self {
        Budget {
            list,
            objects: 0,
            bytes: 0,
        }
    }

    fn admit(&mut self, object: &Value) -> Result<(), ResourceError> {
        self.objects += 1;
        if self.objects > MAX_OBJECTS {
            return Err(ResourceError::TooMany {
                list: self.list,
                limit: MAX_OBJECTS,
            });
        }
        self.bytes = self.bytes.saturating_add(json_len(object));
        if self.bytes > MAX_TOTAL_BYTES {
            return Err(ResourceError::TooBig {
                list: self.list,
                limit: MAX_TOTAL_BYTES,
            });
        }
        Ok(())
    }
}

/// Length of a value as compact JSON, without building the text.
fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` into a writer that never fails cannot fail.
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// Renders every template string of one resource, in the reference's order (8.1): `template`,
/// each of `templates`, `stringTemplate`, each of `stringTemplates`. `prefix` names the
/// resource, e.g. `spec.resources[1]`.
pub(super) fn render_resource(
    set: TemplateSet<'_>,
    prefix: &str,
    render: &RenderFn<'_>,
    budget: &mut Budget,
) -> Result<Vec<Rendered>, ResourceError> {
    let mut out = Vec::new();
    if let Some(template) = set.template {
        render_object_form(
            template,
            format!("{prefix}.template"),
            render,
            budget,
            &mut out,
        )?;
    }
    for (i, template) in set.templates.iter().enumerate() {
        let origin = format!("{prefix}.templates[{i}]");
        render_object_form(template, origin, render, budget, &mut out)?;
    }
    if let Some(source) = set.string_template {
        let field = format!("{prefix}.stringTemplate");
        render_string_form(source, &field, render, budget, &mut out)?;
    }
    for (i, source) in set.string_templates.iter().enumerate() {
        let field = format!("{prefix}.stringTemplates[{i}]");
        render_string_form(source, &field, render, budget, &mut out)?;
    }
    Ok(out)
}

fn render_object_form(
    template: &Value,
    origin: String,
    render: &RenderFn<'_>,
    budget: &mut Budget,
    out: &mut Vec<Rendered>,
) -> Result<(), ResourceError> {
    if template.is_null() {
        return Ok(());
    }
    let object = render_value(template, &origin, render).map_err(|e| match e {
        ValueError::Render(source) => ResourceError::Render {
            origin: origin.clone(),
            source,
        },
        ValueError::DuplicateKey(field) => ResourceError::DuplicateKey { field },
    })?;
    if !object.is_object() {
        return Err(ResourceError::NotAnObject { origin });
    }
    budget.admit(&object)?;
    out.push(Rendered { object, origin });
    Ok(())
}

enum ValueError {
    Render(TemplateError),
    DuplicateKey(String),
}

/// Whether a string may contain template syntax. Anything else renders to itself.
fn has_template_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

fn render_str(field: &str, source: &str, render: &RenderFn<'_>) -> Result<String, ValueError> {
    if has_template_syntax(source) {
        render(field, source).map_err(ValueError::Render)
    } else {
        Ok(source.to_owned())
    }
}

/// Renders every string value and map key of `value`, keeping its structure. `field` is the
/// path of `value` in the spec, given to the renderer for its messages.
fn render_value(value: &Value, field: &str, render: &RenderFn<'_>) -> Result<Value, ValueError> {
    Ok(match value {
        Value::String(s) => Value::String(render_str(field, s, render)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| render_value(item, &format!("{field}[{i}]"), render))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                let child = format!("{field}.{key}");
                let rendered_key = render_str(&format!("{child} (key)"), key, render)?;
                let rendered = render_value(item, &child, render)?;
                if out.insert(rendered_key, rendered).is_some() {
                    return Err(ValueError::DuplicateKey(field.to_owned()));
                }
            }
            Value::Object(out)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
    })
}

fn render_string_form(
    source: &str,
    field: &str,
    render: &RenderFn<'_>,
    budget: &mut Budget,
    out: &mut Vec<Rendered>,
) -> Result<(), ResourceError> {
    let text = render(field, source).map_err(|source| ResourceError::Render {
        origin: field.to_owned(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(());
    }
    for document in split_documents(&text) {
        let origin = format!("{field} (document {})", document.number);
        let Some(object) = parse_document(document.text, document.first_line, &origin)? else {
            continue;
        };
        if !object.is_object() {
            return Err(ResourceError::NotAnObject { origin });
        }
        budget.admit(&object)?;
        out.push(Rendered { object, origin });
    }
    Ok(())
}

/// Parses one YAML document; `None` when it is blank (only `---`, comments or `null`).
fn parse_document(
    text: &str,
    first_line: usize,
    origin: &str,
) -> Result<Option<Value>, ResourceError> {
    // No snippets: the parser must not echo rendered text (it may hold Secret values) into
    // messages. The user-facing formatter's messages name the problem and its position only.
    let options = serde_saphyr::options! { with_snippet: false };
    match serde_saphyr::from_str_with_options::<Option<Value>>(text, options) {
        Ok(Some(Value::Null) | None) => Ok(None),
        Ok(Some(value)) => Ok(Some(value)),
        Err(e) => Err(ResourceError::Parse {
            origin: origin.to_owned(),
            message: e.render_with_options(serde_saphyr::render_options! {
                formatter: &serde_saphyr::UserMessageFormatter,
                snippets: serde_saphyr::SnippetMode::Off,
                line_offset: u64::try_from(first_line).unwrap_or(u64::MAX),
            }),
        }),
    }
}

/// One YAML document of a multi-document text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Document<'t> {
    /// 1-based number of the document in the text.
    pub number: usize,
    /// Its text, including its `---` marker line when it has one.
    pub text: &'t str,
    /// 0-based line of the text its first line is on.
    pub first_line: usize,
}

/// Splits a YAML stream into its documents at the document markers, the way a YAML parser
/// counts them: `---` at the start of a line starts a document (a new one if one is already
/// open), `...` ends one, and a document opened by neither is opened by its first content line.
/// Text that opens no document (blank lines, comments, directives) belongs to none. YAML forbids
/// both markers at the start of a line inside a document's content, so no scalar is cut.
pub(super) fn split_documents(text: &str) -> Vec<Document<'_>> {
    // (start, end, first line) of every chunk that holds a document.
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    let mut start = 0; // byte offset where the current chunk begins
    let mut start_line = 0;
    let mut open = false; // whether the current chunk holds a document
    let mut offset = 0;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        let end = offset + line.len();
        if is_marker(content, "---") {
            if open {
                chunks.push((start, offset, start_line));
                start = offset;
                start_line = line_no;
            }
            open = true;
        } else if is_marker(content, "...") {
            if open {
                chunks.push((start, end, start_line));
            }
            open = false;
            start = end;
            start_line = line_no + 1;
        } else if !open && opens_document(content) {
            open = true;
        }
        offset = end;
    }
    if open {
        chunks.push((start, text.len(), start_line));
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, (from, to, first_line))| Document {
            number: i + 1,
            text: text.get(from..to).unwrap_or_default(),
            first_line,
        })
        .collect()
}

/// Whether `line` is the marker `marker` (`---` or `...`), alone or followed by whitespace.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Whether a line outside any document starts one: anything but blanks, comments and
/// directives.
fn opens_document(line: &str) -> bool {
    let trimmed = line.trim_start();
    !(trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with('%'))
}
