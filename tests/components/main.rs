//! The plugins in `plugins/`, built into WebAssembly components by
//! [`plugboard_tests::plugins`], checked from the outside: each is a valid component of the
//! `plugboard:apparatus` world, asks for nothing beyond the contract's interfaces and WASI, and is
//! small. The first run on a machine builds them (minutes); later runs find them cached.

use std::collections::BTreeSet;

use plugboard_tests::error_chain;
use plugboard_tests::plugins;
use wit_component::DecodedWasm;

const HOOKS: &str = "plugboard:apparatus/hooks@0.1.0";
const HOST: &str = "plugboard:apparatus/host@0.1.0";
/// Types-only interface the hooks use; the world imports it, but it has no functions.
const TYPES: &str = "plugboard:apparatus/types@0.1.0";
const PLUGINS: [&str; 3] = ["recorder", "adversary", "greeter"];

fn bytes(name: &str) -> Vec<u8> {
    let path = plugins::component(name)
        .unwrap_or_else(|e| panic!("building the plugins failed: {}", error_chain(&e)));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The names of a component's world's imports and exports.
fn world(name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let bytes = bytes(name);
    assert!(
        wasmparser::Parser::is_component(&bytes),
        "{name} is a core module, not a component"
    );
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&bytes)
        .unwrap_or_else(|e| panic!("{name} is not a valid component: {e}"));
    let DecodedWasm::Component(resolve, world) =
        wit_component::decode(&bytes).unwrap_or_else(|e| panic!("{name} cannot be decoded: {e:#}"))
    else {
        panic!("{name} decodes as a WIT package, not a component");
    };
    let world = &resolve.worlds[world];
    let imports = world.imports.keys().map(|k| resolve.name_world_key(k));
    let exports = world.exports.keys().map(|k| resolve.name_world_key(k));
    (imports.collect(), exports.collect())
}

#[test]
fn every_plugin_exports_the_hooks_and_imports_the_host() {
    for name in PLUGINS {
        let (imports, exports) = world(name);
        assert_eq!(exports, BTreeSet::from([HOOKS.to_owned()]), "{name}");
        assert!(imports.contains(HOST), "{name} imports {imports:?}");
    }
}

#[test]
fn plugins_import_nothing_but_the_contract_and_wasi() {
    for name in PLUGINS {
        let (imports, _) = world(name);
        let foreign: Vec<&String> = imports
            .iter()
            .filter(|i| *i != HOST && *i != TYPES && !i.starts_with("wasi:"))
            .collect();
        eprintln!("{name} imports {imports:?}");
        assert!(foreign.is_empty(), "{name} imports {foreign:?}");
    }
}

#[test]
fn adversary_can_ask_for_a_tcp_socket_and_recorder_cannot() {
    let (adversary, _) = world("adversary");
    assert!(
        adversary.iter().any(|i| i.starts_with("wasi:sockets/tcp")),
        "{adversary:?}"
    );
    let (recorder, _) = world("recorder");
    assert!(
        !recorder.iter().any(|i| i.starts_with("wasi:sockets")),
        "{recorder:?}"
    );
}

#[test]
fn plugins_are_small() {
    for name in PLUGINS {
        let size = bytes(name).len();
        eprintln!("{name}: {size} bytes");
        assert!(size < 512 * 1024, "{name} is {size} bytes");
    }
}
