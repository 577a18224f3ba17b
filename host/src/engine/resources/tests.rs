//! Table-driven tests of resource plans, with a fake renderer so they do not depend on the
//! template engine.

use serde_json::{Value, json};

use super::render::{Document, split_documents};
use super::*;
use crate::crd::{LifecyclePoint, Resource, ResourceAction, ResultResource};
use crate::engine::template::TemplateError;

use LifecyclePoint::{Coupled, Created, Decoupled, Deleted, Updated};
use ResourceAction::{Apply, Delete, Recreate};

const COUPLING: &str = "0123456789abcdef";

fn owner() -> ObjectOwner {
    ObjectOwner {
        api_version: "plugboard.dev/v1alpha1".into(),
        kind: "Plug".into(),
        name: "app".into(),
        namespace: "apps".into(),
        uid: "uid-1".into(),
        service_account: "default".into(),
    }
}

/// The fake template engine: `{{ name }}` → `demo`, `{{ blank }}` → nothing, `{{ secret }}` →
/// `s3cr3t`; a source containing `{{ fail }}` fails naming the field.
fn fake_render(field: &str, source: &str) -> Result<String, TemplateError> {
    if source.contains("{{ fail }}") {
        return Err(TemplateError {
            field: field.to_owned(),
            line: Some(1),
            message: "undefined variable `fail`".into(),
        });
    }
    Ok(source
        .replace("{{ name }}", "demo")
        .replace("{{ blank }}", "")
        .replace("{{ secret }}", "s3cr3t"))
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
}

fn resource(name: &str, when: &[LifecyclePoint], action: ResourceAction, retain: bool) -> Resource {
    Resource {
        action,
        template: Some(config_map(name)),
        when: when.to_vec(),
        retain_when_decoupled: retain,
        ..Resource::default()
    }
}

fn string_resource(text: &str) -> Resource {
    Resource {
        string_template: Some(text.to_owned()),
        when: vec![Coupled],
        ..Resource::default()
    }
}

fn plan(resources: &[Resource], point: LifecyclePoint) -> Result<Vec<ResourceStep>, ResourceError> {
    plan_lifecycle(resources, point, &owner(), Some(COUPLING), &fake_render)
}

fn plan_coupled(resources: &[Resource]) -> Result<Vec<ResourceStep>, ResourceError> {
    plan(resources, Coupled)
}

/// A step as `A name`, `D name` or `R name`.
fn summary(step: &ResourceStep) -> String {
    let letter = match step {
        ResourceStep::Apply(_) => 'A',
        ResourceStep::Delete(_) => 'D',
        ResourceStep::Recreate(_) => 'R',
    };
    format!("{letter} {}", step.object().name)
}

fn summaries(steps: &[ResourceStep]) -> Vec<String> {
    steps.iter().map(summary).collect()
}

fn only_object(steps: &[ResourceStep]) -> &PlannedObject {
    assert_eq!(steps.len(), 1, "{steps:#?}");
    steps[0].object()
}

// ---- lifecycle points × when × do × retain ----

/// One resource alone, planned at every lifecycle point. `expected` has one letter per point in
/// [`LifecyclePoint::ALL`] order (created, coupled, updated, decoupled, deleted): `A`pply,
/// `D`elete, `R`ecreate, or `-` for nothing.
#[test]
fn every_point_every_when_every_do() {
    #[rustfmt::skip]
    let cases: &[(&str, &[LifecyclePoint], ResourceAction, bool, &str)] = &[
        // no `when`: never runs, auto-deleted at decouple unless delete or retained (D-3)
        ("no-when-apply",          &[], Apply, false,    "---D-"),
        ("no-when-recreate",       &[], Recreate, false, "---D-"),
        ("no-when-delete",         &[], Delete, false,   "-----"),
        ("no-when-retained",       &[], Apply, true,     "-----"),
        // created
        ("created-apply",          &[Created], Apply, false,    "A--D-"),
        ("created-recreate",       &[Created], Recreate, false, "R--D-"),
        ("created-delete",         &[Created], Delete, false,   "D----"),
        ("created-retained",       &[Created], Apply, true,     "A----"),
        // coupled
        ("coupled-apply",          &[Coupled], Apply, false,    "-A-D-"),
        ("coupled-recreate",       &[Coupled], Recreate, false, "-R-D-"),
        ("coupled-delete",         &[Coupled], Delete, false,   "-D---"),
        ("coupled-retained",       &[Coupled], Apply, true,     "-A---"),
        // updated
        ("updated-apply",          &[Updated], Apply, false,    "--AD-"),
        ("updated-recreate",       &[Updated], Recreate, false, "--RD-"),
        ("updated-delete",         &[Updated], Delete, false,   "--D--"),
        ("updated-retained",       &[Updated], Recreate, true,  "--R--"),
        // decoupled: runs with its own `do`, never auto-deleted
        ("decoupled-apply",        &[Decoupled], Apply, false,    "---A-"),
        ("decoupled-recreate",     &[Decoupled], Recreate, false, "---R-"),
        ("decoupled-delete",       &[Decoupled], Delete, false,   "---D-"),
        ("decoupled-retained",     &[Decoupled], Apply, true,     "---A-"),
        // deleted
        ("deleted-apply",          &[Deleted], Apply, false,    "---DA"),
        ("deleted-recreate",       &[Deleted], Recreate, false, "---DR"),
        ("deleted-delete",         &[Deleted], Delete, false,   "----D"),
        ("deleted-retained",       &[Deleted], Apply, true,     "----A"),
        // several points
        ("coupled-updated",        &[Coupled, Updated], Apply, false,     "-AAD-"),
        ("coupled-updated-ret",    &[Coupled, Updated], Apply, true,      "-AA--"),
        ("coupled-decoupled",      &[Coupled, Decoupled], Apply, false,   "-A-A-"),
        ("created-deleted-delete", &[Created, Deleted], Delete, false,    "D---D"),
        ("decoupled-deleted-del",  &[Decoupled, Deleted], Delete, false,  "---DD"),
        ("all-points",             &LifecyclePoint::ALL, Recreate, false, "RRRRR"),
        ("duplicate-point",        &[Coupled, Coupled], Apply, false,     "-A-D-"),
    ];
    for (name, when, action, retain, expected) in cases {
        let resources = [resource(name, when, *action, *retain)];
        let got: String = LifecyclePoint::ALL
            .iter()
            .map(|point| {
                let steps = plan(&resources, *point).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(steps.len() <= 1, "{name} at {point:?}: {steps:#?}");
                steps
                    .first()
                    .map_or('-', |s| summary(s).chars().next().unwrap_or('?'))
            })
            .collect();
        assert_eq!(&got, expected, "case {name}");
    }
}

#[test]
fn steps_follow_list_order_and_auto_delete_comes_after_decoupled_ones() {
    let resources = [
        resource("never", &[], Apply, false),
        resource("on-decouple", &[Decoupled], Recreate, false),
        resource("created-only", &[Created], Apply, false),
        resource("deleter", &[Coupled], Delete, false),
        resource("kept", &[Coupled], Apply, true),
        resource("on-decouple-delete", &[Decoupled], Delete, false),
        resource("coupled", &[Coupled, Updated], Recreate, false),
    ];
    assert_eq!(
        summaries(&plan(&resources, Decoupled).unwrap()),
        [
            "R on-decouple",
            "D on-decouple-delete",
            "D never",
            "D created-only",
            "D coupled",
        ]
    );
    assert_eq!(
        summaries(&plan(&resources, Coupled).unwrap()),
        ["D deleter", "A kept", "R coupled"]
    );
    assert_eq!(
        summaries(&plan(&resources, Updated).unwrap()),
        ["R coupled"]
    );
}

#[test]
fn unset_do_means_apply() {
    let resource: Resource = serde_json::from_value(json!({
        "when": ["coupled"],
        "template": config_map("plain"),
    }))
    .unwrap();
    assert_eq!(resource.action, Apply);
    assert_eq!(summaries(&plan_coupled(&[resource]).unwrap()), ["A plain"]);
}

#[test]
fn auto_delete_is_rendered_with_the_same_context() {
    let resources = [resource("cm-{{ name }}", &[Created], Apply, false)];
    let steps = plan(&resources, Decoupled).unwrap();
    assert_eq!(summaries(&steps), ["D cm-demo"]);
    assert_eq!(
        steps[0].object().object["metadata"]["labels"][COUPLING_LABEL],
        COUPLING
    );
}

#[test]
fn auto_delete_render_failure_is_an_error_naming_the_resource() {
    let resources = [
        resource("fine", &[Decoupled], Apply, false),
        resource("broken-{{ fail }}", &[Created], Apply, false),
    ];
    let err = plan(&resources, Decoupled).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to plan the decouple auto-delete of spec.resources[1]"
    );
    let ResourceError::AutoDelete { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(**source, ResourceError::Render { .. }),
        "{source:?}"
    );
    // A resource that never runs and is not auto-deleted is never rendered.
    let retained = [resource("broken-{{ fail }}", &[Created], Apply, true)];
    assert_eq!(plan(&retained, Decoupled).unwrap(), []);
}

#[test]
fn result_resources_are_all_planned_with_their_do() {
    let results = [
        ResultResource {
            template: Some(config_map("first")),
            ..ResultResource::default()
        },
        ResultResource {
            action: Recreate,
            string_template: Some(
                "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ name }}\n".into(),
            ),
            ..ResultResource::default()
        },
        ResultResource {
            action: Delete,
            templates: vec![config_map("gone")],
            ..ResultResource::default()
        },
    ];
    let steps = plan_results(&results, &owner(), Some(COUPLING), &fake_render).unwrap();
    assert_eq!(summaries(&steps), ["A first", "R demo", "D gone"]);
    assert_eq!(
        steps[1].object().origin,
        "spec.resultResources[1].stringTemplate (document 1)"
    );
    assert_eq!(steps[1].object().kind, "Job");
}

#[test]
fn result_render_failure_names_the_result_resource() {
    let results = [ResultResource {
        string_template: Some("{{ fail }}".into()),
        ..ResultResource::default()
    }];
    let err = plan_results(&results, &owner(), None, &fake_render).unwrap_err();
    assert_eq!(
        err,
        ResourceError::Render {
            origin: "spec.resultResources[0].stringTemplate".into(),
            source: TemplateError {
                field: "spec.resultResources[0].stringTemplate".into(),
                line: Some(1),
                message: "undefined variable `fail`".into(),
            },
        }
    );
    assert_eq!(
        err.to_string(),
        "failed to render spec.resultResources[0].stringTemplate"
    );
}

// ---- template forms ----

#[test]
fn template_forms_are_taken_in_reference_order() {
    let resources = [Resource {
        template: Some(config_map("t")),
        templates: vec![config_map("ts0"), config_map("ts1")],
        string_template: Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n".into()),
        string_templates: vec![
            "apiVersion: v1\nkind: Secret\nmetadata: {name: ss0}\n".into(),
            "{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"metadata\": {\"name\": \"ss1\"}}"
                .into(),
        ],
        when: vec![Coupled],
        ..Resource::default()
    }];
    let steps = plan_coupled(&resources).unwrap();
    let origins: Vec<_> = steps.iter().map(|s| s.object().origin.as_str()).collect();
    assert_eq!(
        origins,
        [
            "spec.resources[0].template",
            "spec.resources[0].templates[0]",
            "spec.resources[0].templates[1]",
            "spec.resources[0].stringTemplate (document 1)",
            "spec.resources[0].stringTemplates[0] (document 1)",
            "spec.resources[0].stringTemplates[1] (document 1)",
        ]
    );
    assert_eq!(
        summaries(&steps),
        ["A t", "A ts0", "A ts1", "A s", "A ss0", "A ss1"]
    );
}

#[test]
fn object_form_renders_nested_strings_and_keys_keeping_other_values() {
    let resources = [Resource {
        template: Some(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "{{ name }}-cm", "labels": {"app": "{{ name }}"}},
            "data": {
                "{{ name }}.conf": "host={{ name }}\nquote=\"x\"",
                "plain": "{ not a template }",
            },
            "spec": {
                "replicas": 3,
                "ratio": 0.5,
                "enabled": true,
                "nothing": null,
                "list": ["{{ name }}", 7, {"deep": ["{{ name }}"]}],
            },
        })),
        when: vec![Coupled],
        ..Resource::default()
    }];
    let steps = plan_coupled(&resources).unwrap();
    let object = &only_object(&steps).object;
    assert_eq!(object["metadata"]["name"], "demo-cm");
    assert_eq!(object["metadata"]["labels"]["app"], "demo");
    assert_eq!(object["data"]["demo.conf"], "host=demo\nquote=\"x\"");
    assert_eq!(object["data"]["plain"], "{ not a template }");
    assert_eq!(
        object["spec"],
        json!({
            "replicas": 3,
            "ratio": 0.5,
            "enabled": true,
            "nothing": null,
            "list": ["demo", 7, {"deep": ["demo"]}],
        })
    );
}

#[test]
fn object_form_render_error_names_the_nested_field() {
    let resources = [Resource {
        template: Some(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x"},
            "data": {"list": ["ok", "{{ fail }}"]},
        })),
        when: vec![Coupled],
        ..Resource::default()
    }];
    let err = plan_coupled(&resources).unwrap_err();
    let ResourceError::Render { origin, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(origin, "spec.resources[0].template");
    assert_eq!(source.field, "spec.resources[0].template.data.list[1]");
}

#[test]
fn strings_without_template_syntax_are_not_rendered() {
    let refuse = |field: &str, _: &str| -> Result<String, TemplateError> {
        Err(TemplateError {
            field: field.to_owned(),
            line: None,
            message: "must not be called".into(),
        })
    };
    let resources = [resource("literal", &[Coupled], Apply, false)];
    let steps = plan_lifecycle(&resources, Coupled, &owner(), None, &refuse).unwrap();
    assert_eq!(summaries(&steps), ["A literal"]);
}

#[test]
fn keys_rendering_to_the_same_key_are_refused() {
    let resources = [Resource {
        template: Some(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x"},
            "data": {"{{ name }}": "a", "demo": "b"},
        })),
        when: vec![Coupled],
        ..Resource::default()
    }];
    assert_eq!(
        plan_coupled(&resources).unwrap_err(),
        ResourceError::DuplicateKey {
            field: "spec.resources[0].template.data".into()
        }
    );
}

#[test]
fn multi_document_string_template_plans_every_document() {
    let text = "\
# leading comment
apiVersion: v1
kind: ConfigMap
metadata:
  name: one
---
# a blank document
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ name }}
stringData:
  password: {{ secret }}
--- null
---
apiVersion: v1
kind: Service
metadata: {name: three}
...
";
    let steps = plan_coupled(&[string_resource(text)]).unwrap();
    assert_eq!(summaries(&steps), ["A one", "A demo", "A three"]);
    let origins: Vec<_> = steps.iter().map(|s| s.object().origin.as_str()).collect();
    assert_eq!(
        origins,
        [
            "spec.resources[0].stringTemplate (document 1)",
            "spec.resources[0].stringTemplate (document 3)",
            "spec.resources[0].stringTemplate (document 5)",
        ]
    );
    assert_eq!(steps[1].object().object["stringData"]["password"], "s3cr3t");
}

#[test]
fn blank_renders_produce_nothing() {
    let cases = [
        "",
        "{{ blank }}",
        "  \n\t\n",
        "{{ blank }}\n   \n",
        "---\n",
        "---\n# only a comment\n---\n",
        "# comment\n",
        "null\n",
        "~",
        "--- null\n...\n",
        "...\n",
        "%YAML 1.2\n---\n",
    ];
    for text in cases {
        assert_eq!(
            plan_coupled(&[string_resource(text)]).unwrap(),
            [],
            "{text:?}"
        );
    }
    let null_template = Resource {
        template: Some(Value::Null),
        templates: vec![Value::Null],
        when: vec![Coupled],
        ..Resource::default()
    };
    assert_eq!(plan_coupled(&[null_template]).unwrap(), []);
}

#[test]
fn a_conditional_blank_render_next_to_objects_keeps_the_others() {
    let resources = [
        string_resource("{{ blank }}"),
        resource("kept", &[Coupled], Apply, false),
    ];
    assert_eq!(summaries(&plan_coupled(&resources).unwrap()), ["A kept"]);
}

#[test]
fn parse_errors_name_origin_document_and_line_but_no_values() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\ndata:\n  password: '{{ secret }}\n";
    let err = plan_coupled(&[string_resource(text)]).unwrap_err();
    let ResourceError::Parse { origin, message } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(origin, "spec.resources[0].stringTemplate (document 2)");
    assert!(message.contains("line 6"), "{message}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert!(
        err.to_string().starts_with(
            "failed to parse spec.resources[0].stringTemplate (document 2) as YAML or JSON: "
        ),
        "{err}"
    );
}

#[test]
fn documents_that_are_not_objects_are_refused() {
    for text in ["- a\n- b\n", "just text", "42"] {
        assert_eq!(
            plan_coupled(&[string_resource(text)]).unwrap_err(),
            ResourceError::NotAnObject {
                origin: "spec.resources[0].stringTemplate (document 1)".into()
            },
            "{text:?}"
        );
    }
    let list_template = Resource {
        templates: vec![json!(["x"])],
        when: vec![Coupled],
        ..Resource::default()
    };
    assert_eq!(
        plan_coupled(&[list_template]).unwrap_err(),
        ResourceError::NotAnObject {
            origin: "spec.resources[0].templates[0]".into()
        }
    );
}

#[test]
fn split_documents_counts_like_a_yaml_parser() {
    let text = "# c\n---\na: 1\n--- {b: 2}\n...\n# between\n%YAML 1.2\n---\nc: 3\n---\n";
    let docs = split_documents(text);
    assert_eq!(
        docs,
        [
            Document {
                number: 1,
                text: "# c\n---\na: 1\n",
                first_line: 0
            },
            Document {
                number: 2,
                text: "--- {b: 2}\n...\n",
                first_line: 3
            },
            Document {
                number: 3,
                text: "# between\n%YAML 1.2\n---\nc: 3\n",
                first_line: 5
            },
            Document {
                number: 4,
                text: "---\n",
                first_line: 9
            },
        ]
    );
    // Markers only count at the start of a line and followed by nothing or whitespace.
    let docs = split_documents("a: |\n  ---\n  x\nb: ---x\n----\n");
    assert_eq!(docs.len(), 1, "{docs:?}");
}

// ---- checks ----

#[test]
fn missing_or_empty_required_fields_are_refused() {
    #[rustfmt::skip]
    let cases: &[(Value, &str)] = &[
        (json!({"kind": "ConfigMap", "metadata": {"name": "x"}}), "apiVersion"),
        (json!({"apiVersion": "", "kind": "ConfigMap", "metadata": {"name": "x"}}), "apiVersion"),
        (json!({"apiVersion": "v1", "metadata": {"name": "x"}}), "kind"),
        (json!({"apiVersion": "v1", "kind": 3, "metadata": {"name": "x"}}), "kind"),
        (json!({"apiVersion": "v1", "kind": "ConfigMap"}), "metadata.name"),
        (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}), "metadata.name"),
        (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ""}}), "metadata.name"),
        (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}}), "metadata.name"),
        (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "x"}), "metadata.name"),
    ];
    for (template, field) in cases {
        let resources = [Resource {
            template: Some(template.clone()),
            when: vec![Coupled],
            ..Resource::default()
        }];
        let err = plan_coupled(&resources).unwrap_err();
        assert_eq!(
            err,
            ResourceError::MissingField {
                origin: "spec.resources[0].template".into(),
                field
            },
            "{template}"
        );
        assert_eq!(
            err.to_string(),
            format!("spec.resources[0].template has no {field}")
        );
    }
}

#[test]
fn generate_name_without_name_is_refused() {
    let text = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: job-\n";
    assert_eq!(
        plan_coupled(&[string_resource(text)]).unwrap_err(),
        ResourceError::GenerateName {
            origin: "spec.resources[0].stringTemplate (document 1)".into()
        }
    );
}

#[test]
fn namespace_is_forced_to_the_owners() {
    #[rustfmt::skip]
    let cases: &[(Option<Value>, Result<&str, &str>)] = &[
        (None, Ok("apps")),
        (Some(Value::Null), Ok("apps")),
        (Some(json!("")), Ok("apps")),
        (Some(json!("apps")), Ok("apps")),
        (Some(json!("other")), Err("other")),
        (Some(json!("kube-system")), Err("kube-system")),
        (Some(json!(7)), Err("7")),
    ];
    for (namespace, expected) in cases {
        let mut template = config_map("cm");
        if let Some(namespace) = namespace {
            template["metadata"]["namespace"] = namespace.clone();
        }
        let resources = [Resource {
            template: Some(template),
            when: vec![Coupled],
            ..Resource::default()
        }];
        match (plan_coupled(&resources), expected) {
            (Ok(steps), Ok(ns)) => {
                let object = only_object(&steps);
                assert_eq!(object.namespace, *ns);
                assert_eq!(object.object["metadata"]["namespace"], *ns);
            }
            (Err(err), Err(ns)) => {
                assert_eq!(
                    err.to_string(),
                    format!("spec.resources[0].template: resource namespace {ns} must be apps")
                );
            }
            (got, expected) => panic!("{namespace:?}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn owner_labels_annotation_and_reference_are_added() {
    let steps = plan_coupled(&[resource("cm", &[Coupled], Apply, false)]).unwrap();
    let planned = only_object(&steps);
    assert_eq!(planned.api_version, "v1");
    assert_eq!(planned.kind, "ConfigMap");
    assert_eq!(planned.name, "cm");
    assert_eq!(planned.namespace, "apps");
    assert_eq!(planned.origin, "spec.resources[0].template");
    assert_eq!(
        planned.object,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "cm",
                "namespace": "apps",
                "labels": {
                    OWNER_UID_LABEL: "uid-1",
                    MANAGED_BY_LABEL: MANAGED_BY,
                    COUPLING_LABEL: COUPLING,
                },
                "annotations": {OWNER_ANNOTATION: "Plug apps/app"},
                "ownerReferences": [{
                    "apiVersion": "plugboard.dev/v1alpha1",
                    "kind": "Plug",
                    "name": "app",
                    "uid": "uid-1",
                    "controller": false,
                    "blockOwnerDeletion": false,
                }],
            },
        })
    );
}

#[test]
fn no_coupling_label_without_a_coupling() {
    let resources = [resource("cm", &[Created], Apply, false)];
    let steps = plan_lifecycle(&resources, Created, &owner(), None, &fake_render).unwrap();
    let labels = &only_object(&steps).object["metadata"]["labels"];
    assert_eq!(labels.get(COUPLING_LABEL), None);
    assert_eq!(labels[OWNER_UID_LABEL], "uid-1");
}

#[test]
fn template_labels_annotations_and_owner_references_are_kept() {
    let resources = [Resource {
        template: Some(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "cm",
                "labels": {"app": "web", OWNER_UID_LABEL: "uid-1", MANAGED_BY_LABEL: MANAGED_BY},
                "annotations": {"note": "hi"},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep-uid"},
                    {"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug", "name": "app", "uid": "uid-1", "controller": true},
                ],
            },
        })),
        when: vec![Coupled],
        ..Resource::default()
    }];
    let steps = plan_coupled(&resources).unwrap();
    let metadata = &only_object(&steps).object["metadata"];
    assert_eq!(metadata["labels"]["app"], "web");
    assert_eq!(metadata["labels"][COUPLING_LABEL], COUPLING);
    assert_eq!(metadata["annotations"]["note"], "hi");
    assert_eq!(metadata["annotations"][OWNER_ANNOTATION], "Plug apps/app");
    let references = metadata["ownerReferences"].as_array().unwrap();
    assert_eq!(references.len(), 2, "{references:#?}");
    assert_eq!(references[0]["uid"], "dep-uid");
    assert_eq!(references[1]["uid"], "uid-1");
    assert_eq!(references[1]["controller"], false);
    assert_eq!(references[1]["blockOwnerDeletion"], false);
}

#[test]
fn template_setting_plugboards_marks_differently_is_refused() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &'static str)] = &[
        ("labels", OWNER_UID_LABEL, OWNER_UID_LABEL),
        ("labels", MANAGED_BY_LABEL, MANAGED_BY_LABEL),
        ("labels", COUPLING_LABEL, COUPLING_LABEL),
        ("annotations", OWNER_ANNOTATION, OWNER_ANNOTATION),
    ];
    for (map, key, expected) in cases {
        let mut template = config_map("cm");
        template["metadata"][*map] = json!({ *key: "someone-else" });
        let resources = [Resource {
            template: Some(template),
            when: vec![Coupled],
            ..Resource::default()
        }];
        let err = plan_coupled(&resources).unwrap_err();
        assert_eq!(
            err,
            ResourceError::LabelClash {
                origin: "spec.resources[0].template".into(),
                key: expected
            }
        );
        assert!(!err.to_string().contains("someone-else"), "{err}");
    }
}

#[test]
fn metadata_maps_of_the_wrong_type_are_refused() {
    #[rustfmt::skip]
    let cases: &[(&str, Value, &str)] = &[
        ("labels", json!(["x"]), "metadata.labels"),
        ("annotations", json!("x"), "metadata.annotations"),
        ("ownerReferences", json!({"a": 1}), "metadata.ownerReferences"),
    ];
    for (key, value, field) in cases {
        let mut template = config_map("cm");
        template["metadata"][*key] = value.clone();
        let resources = [Resource {
            template: Some(template),
            when: vec![Coupled],
            ..Resource::default()
        }];
        let err = plan_coupled(&resources).unwrap_err();
        assert!(
            matches!(&err, ResourceError::InvalidField { field: f, .. } if f == field),
            "{err:?}"
        );
    }
}

// ---- bounds ----

#[test]
fn too_many_objects_are_refused() {
    let doc = |i: usize| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\n");
    let fits: String = (0..MAX_OBJECTS).map(doc).collect::<Vec<_>>().join("---\n");
    assert_eq!(
        plan_coupled(&[string_resource(&fits)]).unwrap().len(),
        MAX_OBJECTS
    );
    let too_many: String = (0..=MAX_OBJECTS).map(doc).collect::<Vec<_>>().join("---\n");
    let err = plan_coupled(&[string_resource(&too_many)]).unwrap_err();
    assert_eq!(
        err,
        ResourceError::TooMany {
            list: "spec.resources",
            limit: MAX_OBJECTS
        }
    );
    assert_eq!(
        err.to_string(),
        "spec.resources renders more than 256 objects, the limit"
    );
}

#[test]
fn too_many_bytes_are_refused_across_resources() {
    let big = |name: &str| {
        let mut template = config_map(name);
        template["data"] = json!({"blob": "x".repeat(MAX_TOTAL_BYTES / 2)});
        Resource {
            template: Some(template),
            when: vec![Coupled],
            ..Resource::default()
        }
    };
    assert_eq!(plan_coupled(&[big("one")]).unwrap().len(), 1);
    let err = plan_coupled(&[big("one"), big("two")]).unwrap_err();
    assert_eq!(
        err,
        ResourceError::TooBig {
            list: "spec.resources",
            limit: MAX_TOTAL_BYTES
        }
    );
}

// ---- coupling id ----

#[test]
fn coupling_id_is_short_stable_hex_and_distinguishes_pairs() {
    let id = coupling_id("plug-uid", "socket-uid");
    assert_eq!(id, coupling_id("plug-uid", "socket-uid"));
    assert_eq!(id.len(), 16);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    assert_ne!(id, coupling_id("socket-uid", "plug-uid"));
    assert_ne!(id, coupling_id("plug-uid", "other-socket"));
    // Length-prefixed: moving bytes from one UID to the other changes the id.
    assert_ne!(coupling_id("ab", "c"), coupling_id("a", "bc"));
    // Pinned, so a change of encoding (which would orphan labelled objects) is noticed.
    assert_eq!(
        coupling_id(
            "11111111-1111-1111-1111-111111111111",
            "22222222-2222-2222-2222-222222222222"
        ),
        PINNED_COUPLING_ID
    );
}

/// Computed independently: `sha256(b"plugboard.dev/coupling/v1\0" + u64be(len) + plug +
/// u64be(len) + socket)[:8]` in hex.
const PINNED_COUPLING_ID: &str = "49de1380f30f1833";
