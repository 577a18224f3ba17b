//! Property tests of everything that reads input plugboard does not control: the pure engine
//! (config merge, interface validation, lifecycle decisions), apparatus `config` replies, OCI
//! manifests, Plug specs with their resource plans, and templates. Each property must never
//! panic, and every failure must be an error that says what is wrong.
//!
//! Runs are seeded and bounded so CI stays fast and repeatable: [`CASES`] cases per property
//! (at most [`CASES`] / 4 for the slower template and plan properties), with the seed of
//! `PROPTEST_RNG_SEED` when set, [`DEFAULT_SEED`] otherwise (printed by every property, and
//! recorded with the shrunk input in `proptest-regressions/` next to this file on failure).

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use serde_json::Value;

use crate::apparatus::Side;
use crate::crd::{InterfaceProperty, LifecyclePoint, PlugSpec};
use crate::engine::Values;
use crate::engine::admission::Admission;
use crate::engine::config::{self, Sources, ValuesKind};
use crate::engine::lifecycle::{self, Observed, SocketState, Wait};
use crate::engine::resources::{self, ObjectOwner};
use crate::engine::template::{self, TemplateContext, TemplateLimits};

/// Cases of each fast property.
const CASES: u32 = 256;
/// The seed used unless `PROPTEST_RNG_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x706c_7567_626f_6172;

fn seed() -> u64 {
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn config(cases: u32) -> Config {
    let seed = seed();
    eprintln!("proptest: {cases} cases, seed {seed} (set PROPTEST_RNG_SEED to repeat another)");
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// Keys from a small alphabet, so that sources and interfaces overlap often.
fn key() -> impl Strategy<Value = String> {
    "[a-d]{1,2}"
}

fn values() -> impl Strategy<Value = Values> {
    prop::collection::btree_map(key(), "[a-z]{0,3}", 0..6)
}

fn interface() -> impl Strategy<Value = BTreeMap<String, InterfaceProperty>> {
    prop::collection::btree_map(
        key(),
        (any::<bool>(), prop::option::of("[a-z]{0,2}")).prop_map(|(required, default)| {
            InterfaceProperty {
                required,
                default,
                description: None,
            }
        }),
        0..5,
    )
}

/// Arbitrary JSON, up to `depth` levels of arrays and objects.
fn json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z0-9._-]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Template sources: fragments of the template language mixed with arbitrary text, so that
/// both valid and broken templates come up.
fn template_source() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("{{ ".to_owned()),
        Just(" }}".to_owned()),
        Just("{% for i in range(1000) %}".to_owned()),
        Just("{% endfor %}".to_owned()),
        Just("{% if plugConfig %}".to_owned()),
        Just("{% endif %}".to_owned()),
        Just("plugConfig.a".to_owned()),
        Just("socketData".to_owned()),
        Just("coupling".to_owned()),
        Just(" | upper".to_owned()),
        Just(" | b64encode".to_owned()),
        Just(" | password".to_owned()),
        Just(" ~ ".to_owned()),
        Just("\"x\" * 100000".to_owned()),
        Just("{% set x = x ~ x %}".to_owned()),
        Just("{# c #}".to_owned()),
        "[a-z :.\\n-]{0,10}",
        ".{0,6}",
    ];
    prop::collection::vec(fragment, 0..14).prop_map(|parts| parts.concat())
}

fn context() -> TemplateContext {
    let values: Values = [("a".to_owned(), "1".to_owned())].into_iter().collect();
    TemplateContext {
        plug_config: Some(values.clone()),
        socket_data: Some(values),
        coupling: Some("0123456789abcdef".to_owned()),
        ..TemplateContext::default()
    }
}

/// Small bounds, so a runaway template ends fast.
fn limits() -> TemplateLimits {
    TemplateLimits {
        fuel: 50_000,
        max_output_bytes: 8 * 1024,
    }
}

fn socket_state() -> impl Strategy<Value = SocketState> {
    let uid = prop_oneof![Just("a".to_owned()), Just("b".to_owned())];
    let fault = prop::option::of(("[A-Z][a-z]{0,4}", "[a-z ]{0,8}"));
    prop_oneof![
        Just(SocketState::Missing),
        Just(SocketState::Deleting),
        fault.prop_map(|fault| SocketState::NotCreated { fault }),
        (uid.clone(), ("[A-Z][a-z]{0,4}", "[a-z ]{0,8}"))
            .prop_map(|(uid, fault)| SocketState::Faulty { uid, fault }),
        (
            uid,
            prop_oneof![
                Just(Admission::Admitted),
                "[a-z ]{0,8}".prop_map(Admission::Refused)
            ]
        )
            .prop_map(|(uid, admission)| SocketState::Ready { uid, admission }),
    ]
}

fn owner() -> ObjectOwner {
    ObjectOwner {
        api_version: "plugboard.dev/v1alpha1".to_owned(),
        kind: "Plug".to_owned(),
        name: "app".to_owned(),
        namespace: "team".to_owned(),
        uid: "plug-uid".to_owned(),
        service_account: "default".to_owned(),
    }
}

/// A Plug spec as JSON: its known fields with arbitrary (often wrong) values, and resources
/// whose templates are arbitrary.
fn plug_spec_json() -> impl Strategy<Value = Value> {
    let when = prop::collection::vec(
        prop_oneof![
            Just("created"),
            Just("coupled"),
            Just("updated"),
            Just("decoupled"),
            Just("deleted"),
            Just("sometimes"),
        ],
        0..4,
    );
    let when = prop_oneof![2 => Just(vec!["coupled"]), 1 => when];
    let config_map = |value: String| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "cm"}, "data": {"k": value}})
    };
    let object_template = prop_oneof![
        3 => "[a-z]{0,8}".prop_map(config_map),
        2 => template_source().prop_map(config_map),
        1 => json(3),
        1 => (template_source(), template_source()).prop_map(|(name, value)| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name}, "data": {"k": value}})
        }),
    ];
    // Mostly exactly one of `template` and `stringTemplate`, sometimes both or neither.
    let body = prop_oneof![
        4 => object_template.prop_map(|t| (Some(t), None)),
        2 => template_source().prop_map(|s| (None, Some(s))),
        1 => (prop::option::of(json(2)), prop::option::of(template_source())),
    ];
    let resource = (
        prop_oneof![
            6 => Just(None),
            1 => Just(Some("apply")),
            1 => Just(Some("delete")),
            1 => Just(Some("recreate")),
            1 => Just(Some("explode")),
        ],
        body,
        when,
        any::<bool>(),
    )
        .prop_map(|(action, (template, string_template), when, retain)| {
            let mut r = serde_json::json!({"when": when, "retainWhenDecoupled": retain});
            if let Some(action) = action {
                r["do"] = Value::from(action);
            }
            if let Some(template) = template {
                r["template"] = template;
            }
            if let Some(source) = string_template {
                r["stringTemplate"] = Value::from(source);
            }
            r
        })
        .boxed();
    // Mostly well-typed, sometimes anything: both parsing and planning get exercised.
    let string_map = || {
        prop_oneof![
            3 => values().prop_map(|v| serde_json::json!(v)),
            1 => json(2),
        ]
    };
    (
        prop_oneof![3 => Just(serde_json::json!({"name": "db"})), 1 => json(1)],
        prop::collection::vec(resource.clone(), 0..3),
        prop::collection::vec(resource, 0..2),
        string_map(),
        string_map(),
    )
        .prop_map(|(socket, resources, results, config, data)| {
            serde_json::json!({
                "socket": socket,
                "resources": resources,
                "resultResources": results,
                "config": config,
                "data": data,
            })
        })
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Later sources win key by key, and nothing else comes in or goes.
    #[test]
    fn merge_takes_each_key_from_the_last_source_that_has_it(
        secret in prop::option::of(values()),
        inline in values(),
        templates in prop::option::of(values()),
        config_map in prop::option::of(values()),
        apparatus in prop::option::of(values()),
    ) {
        let layers = [secret.clone(), Some(inline.clone()), templates.clone(), config_map.clone(), apparatus.clone()];
        let merged = config::merge(Sources { secret, inline, templates, config_map, apparatus });
        let mut expected = Values::new();
        for layer in layers.into_iter().flatten() {
            for (k, v) in layer {
                expected.insert(k, v);
            }
        }
        prop_assert_eq!(merged, expected);
    }

    /// Validation fails exactly when required keys are missing or empty, and then names every
    /// one of them; otherwise it keeps only the interface's keys, each provided or defaulted.
    #[test]
    fn validation_fails_exactly_on_missing_required_keys_and_names_them(
        values in values(),
        interface in prop::option::of(interface()),
        plug_side in any::<bool>(),
    ) {
        let side = if plug_side { Side::Plug } else { Side::Socket };
        let result = config::validate(side, ValuesKind::Config, interface.as_ref(), values.clone());
        let Some(properties) = interface else {
            prop_assert_eq!(result, Ok(values));
            return Ok(());
        };
        let missing: Vec<String> = properties
            .iter()
            .filter(|(k, p)| p.required && values.get(*k).is_none_or(String::is_empty))
            .map(|(k, _)| k.clone())
            .collect();
        match result {
            Err(error) => {
                prop_assert!(!missing.is_empty());
                prop_assert_eq!(&error.missing, &missing);
                let message = error.to_string();
                for key in &missing {
                    prop_assert!(message.contains(key.as_str()), "{} does not name {}", message, key);
                }
            }
            Ok(out) => {
                prop_assert!(missing.is_empty());
                for (k, v) in &out {
                    prop_assert!(properties.contains_key(k));
                    prop_assert!(!v.is_empty());
                }
                for (k, p) in &properties {
                    if p.required {
                        prop_assert_eq!(out.get(k), values.get(k));
                    }
                }
            }
        }
    }

    /// The steps before configs: `created` runs once, a Plug decouples exactly when it is
    /// coupled to something other than the ready (or merely faulty) Socket that admits it, and
    /// it waits exactly when that Socket is not ready to admit it.
    #[test]
    fn before_configs_decides_created_decouple_and_wait_consistently(
        created in any::<bool>(),
        coupled_to in prop::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned())]),
        socket in socket_state(),
        fresh in any::<bool>(),
    ) {
        let observed = Observed { created, coupled_to: coupled_to.clone(), socket: socket.clone(), fresh };
        let before = lifecycle::before_configs(&observed);
        // Holding back only ever happens before anything ran, and runs nothing.
        if before.settle {
            prop_assert!(fresh && !created && coupled_to.is_none());
            prop_assert!(!before.run_created && !before.decouple);
            prop_assert!(before.wait.is_some());
        } else {
            prop_assert_eq!(before.run_created, !created);
        }
        let keeps = match &socket {
            SocketState::Ready { uid, admission: Admission::Admitted } | SocketState::Faulty { uid, .. } => {
                coupled_to.as_deref() == Some(uid.as_str())
            }
            _ => false,
        };
        prop_assert_eq!(before.decouple, coupled_to.is_some() && !keeps);
        let admitted = matches!(&socket, SocketState::Ready { admission: Admission::Admitted, .. });
        prop_assert_eq!(before.wait.is_none(), admitted);
        if let Some(Wait::Refused(message)) = &before.wait {
            let refused_so = matches!(&socket, SocketState::Ready { admission: Admission::Refused(m), .. } if m == message);
            prop_assert!(refused_so, "{:?} for {:?}", before.wait, socket);
        }
    }

    /// `coupled` the first time, `updated` only on a changed checksum, nothing otherwise; the
    /// coupling hooks run on both sides, the Plug's first.
    #[test]
    fn coupling_hook_fires_on_first_coupling_and_changed_inputs_only(
        coupled in any::<bool>(),
        last in prop::option::of("[a-c]{1,2}"),
        now in "[a-c]{1,2}",
    ) {
        let point = lifecycle::coupling_hook(coupled, last.as_deref(), &now);
        let expected = if !coupled {
            Some(LifecyclePoint::Coupled)
        } else if last.as_deref() == Some(now.as_str()) {
            None
        } else {
            Some(LifecyclePoint::Updated)
        };
        prop_assert_eq!(point, expected);
        if let Some(point) = point {
            prop_assert_eq!(lifecycle::hook_sides(point), &[Side::Plug, Side::Socket][..]);
        }
    }

    /// Arbitrary bytes as a `config` reply: values only from a JSON object, otherwise an error
    /// naming the endpoint.
    #[test]
    fn config_replies_of_arbitrary_bytes_are_values_or_clear_errors(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_config_reply(&bytes)?;
    }

    /// Arbitrary JSON as a `config` reply: an object gives one value per key.
    #[test]
    fn config_replies_of_arbitrary_json_keep_every_key(value in json(4)) {
        check_config_reply(value.to_string().as_bytes())?;
    }

    /// Deeply nested and huge replies end in an error or values, never a stack overflow.
    #[test]
    fn config_replies_nested_deep_or_wide_are_handled(depth in 1usize..50_000, wide in 0usize..20_000) {
        let deep = format!("{{\"k\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        check_config_reply(deep.as_bytes())?;
        let mut huge = serde_json::Map::new();
        for i in 0..wide {
            huge.insert(format!("k{i}"), Value::from(i));
        }
        let values = crate::apparatus::http::config_reply("http://apparatus.example", Value::Object(huge).to_string().as_bytes());
        prop_assert_eq!(values.map(|v| v.len()).ok(), Some(wide));
    }

    /// Arbitrary bytes as a manifest: a component layer only from a valid manifest, otherwise
    /// an error naming the image.
    #[test]
    fn manifests_of_arbitrary_bytes_are_layers_or_clear_errors(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_manifest(&bytes)?;
    }

    /// Manifest-shaped JSON with arbitrary fields and media types.
    #[test]
    fn manifests_of_arbitrary_json_are_layers_or_clear_errors(
        schema in prop_oneof![Just(Value::from(2)), json(1)],
        config_type in prop_oneof![Just(crate::oci::media::WASM_CONFIG_MEDIA_TYPE.to_owned()), ".{0,10}"],
        layer_types in prop::collection::vec(prop_oneof![Just(crate::oci::media::WASM_LAYER_MEDIA_TYPE.to_owned()), ".{0,10}"], 0..3),
        digest in prop_oneof![
            "sha256:[0-9a-f]{64}",
            ".{0,70}",
        ],
        size in any::<i64>(),
        extra in json(2),
    ) {
        let layers: Vec<Value> = layer_types
            .iter()
            .map(|t| serde_json::json!({"mediaType": t, "digest": digest, "size": size}))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": schema,
            "config": {"mediaType": config_type, "digest": digest, "size": 2},
            "layers": layers,
            "annotations": extra,
        });
        check_manifest(manifest.to_string().as_bytes())?;
    }
}

proptest! {
    #![proptest_config(config(CASES / 4))]

    /// Arbitrary templates render or fail with an error naming the field, always within the
    /// output bound.
    #[test]
    fn templates_render_or_fail_within_their_bounds(source in template_source()) {
        let limits = limits();
        let key = [7u8; 32];
        let seed = template::PasswordSeed { key: &key, coupling: "0123456789abcdef" };
        for seed in [None, Some(seed)] {
            match template::render("spec.configTemplate.x", &source, &context(), seed, &limits) {
                Ok(out) => prop_assert!(out.len() <= limits.max_output_bytes),
                Err(error) => {
                    let message = error.to_string();
                    prop_assert!(message.contains("spec.configTemplate.x"), "{}", message);
                }
            }
        }
    }

    /// Arbitrary JSON as a Plug spec: parsed or refused, and a parsed spec's resources plan or
    /// fail with an error (their templates are arbitrary too) at every lifecycle point.
    #[test]
    fn plug_specs_parse_and_plan_without_panicking(spec in plug_spec_json(), noise in json(2)) {
        let _ = serde_json::from_value::<PlugSpec>(noise);
        let Ok(spec) = serde_json::from_value::<PlugSpec>(spec) else {
            return Ok(());
        };
        let limits = limits();
        let context = context();
        let render = |field: &str, source: &str| template::render(field, source, &context, None, &limits);
        let owner = owner();
        for point in LifecyclePoint::ALL {
            if let Ok(steps) = resources::plan_lifecycle(&spec.side.resources, point, &owner, Some("0123456789abcdef"), &render) {
                for step in steps {
                    prop_assert_eq!(&step.object().namespace, &owner.namespace);
                }
            }
        }
        if let Ok(steps) = resources::plan_results(&spec.side.result_resources, &owner, None, &render) {
            for step in steps {
                prop_assert_eq!(&step.object().namespace, &owner.namespace);
            }
        }
    }
}

/// The generators are not vacuous: many generated specs parse and plan, and many generated
/// templates render.
#[test]
fn generators_reach_the_successful_paths() {
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;

    // Always the default seed: the thresholds below hold for it.
    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(DEFAULT_SEED),
        ..config(64)
    });
    let limits = limits();
    let context = context();
    let render =
        |field: &str, source: &str| template::render(field, source, &context, None, &limits);
    let (mut parsed, mut planned, mut rendered) = (0, 0, 0);
    for _ in 0..64 {
        let Ok(tree) = plug_spec_json().new_tree(&mut runner) else {
            continue;
        };
        if let Ok(spec) = serde_json::from_value::<PlugSpec>(tree.current()) {
            parsed += 1;
            let steps = resources::plan_lifecycle(
                &spec.side.resources,
                LifecyclePoint::Coupled,
                &owner(),
                None,
                &render,
            );
            if steps.is_ok_and(|s| !s.is_empty()) {
                planned += 1;
            }
        }
        let Ok(tree) = template_source().new_tree(&mut runner) else {
            continue;
        };
        if render("spec.configTemplate.x", &tree.current()).is_ok() {
            rendered += 1;
        }
    }
    eprintln!(
        "of 64: {parsed} specs parsed, {planned} planned objects, {rendered} templates rendered"
    );
    assert!(parsed >= 8, "{parsed} specs parsed");
    assert!(planned >= 1, "{planned} specs planned objects");
    assert!(rendered >= 4, "{rendered} templates rendered");
}

fn check_config_reply(bytes: &[u8]) -> Result<(), TestCaseError> {
    let url = "http://apparatus.example/config";
    match crate::apparatus::http::config_reply(url, bytes) {
        Ok(values) => {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| TestCaseError::fail(format!("accepted invalid JSON: {e}")))?;
            let object = value
                .as_object()
                .ok_or_else(|| TestCaseError::fail("accepted a non-object"))?;
            prop_assert_eq!(values.len(), object.len());
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(message.contains(url), "{}", message);
        }
    }
    Ok(())
}

fn check_manifest(bytes: &[u8]) -> Result<(), TestCaseError> {
    let image = "registry.example/app:1";
    match crate::oci::media::component_layer(image, bytes) {
        Ok(layer) => {
            prop_assert!(crate::oci::media::is_sha256_digest(&layer.digest));
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(message.contains(image), "{}", message);
        }
    }
    Ok(())
}
