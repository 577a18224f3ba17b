//! What a component file says about itself: the world it targets, its imports and exports,
//! the contract version and SDK version it was built with — read with `wit-component` and
//! `wasmparser`, without running it. Used by `plugboard plugin push` (the CNCF wasm artifact
//! config lists imports and exports) and `plugboard plugin inspect`.

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wit_component::DecodedWasm;

/// The package of the WIT contract between plugboard and components.
pub const CONTRACT_PACKAGE: &str = "plugboard:apparatus";

/// The custom section `plugboard-sdk` embeds its version in (see the SDK's
/// `SDK_VERSION_SECTION`).
pub const SDK_VERSION_SECTION: &str = "plugboard-sdk-version";

/// The longest SDK version string read from a component; a longer section is not a version.
const MAX_SDK_VERSION_LEN: usize = 64;

/// What a component declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    /// The world the component targets when it implements plugboard's contract
    /// (`plugboard:apparatus/apparatus@0.1.0`), else `None`: a decoded component's own world
    /// is anonymous.
    pub world: Option<String>,
    /// The contract version (`0.1.0`) of the `plugboard:apparatus/hooks` interface it exports.
    pub contract_version: Option<String>,
    /// Exported interfaces (`ns:pkg/iface@version`) and functions, sorted.
    pub exports: Vec<String>,
    /// Imported interfaces and functions, sorted.
    pub imports: Vec<String>,
    /// The `plugboard-sdk` version from the component's custom section, if it has one.
    pub sdk_version: Option<String>,
    /// The component's size in bytes.
    pub size: u64,
    /// `sha256:` and the hex digest of the component's bytes (its layer digest).
    pub digest: String,
}

/// Why a file cannot be described.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The bytes are not a component (a core module, or not WebAssembly).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component could not be decoded.
    #[error("the component cannot be decoded: {0}")]
    Decode(String),
}

impl ComponentInfo {
    /// The config of the CNCF wasm artifact layout (`application/vnd.wasm.config.v0+json`)
    /// for this component, created at `created` (RFC 3339): `architecture` `wasm`, `os`
    /// `wasip2`, the layer's digest, and the component's imports, exports and — when it
    /// implements plugboard's contract — target world.
    pub fn artifact_config(&self, created: &str) -> serde_json::Value {
        let mut component = serde_json::json!({
            "exports": self.exports,
            "imports": self.imports,
        });
        if let (Some(world), Some(object)) = (&self.world, component.as_object_mut()) {
            object.insert("target".into(), world.clone().into());
        }
        serde_json::json!({
            "created": created,
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [self.digest],
            "component": component,
        })
    }
}

/// Describes the component in `bytes`.
pub fn inspect(bytes: &[u8]) -> Result<ComponentInfo, InspectError> {
    crate::oci::media::check_component_header(bytes).map_err(InspectError::NotAComponent)?;
    let decoded =
        wit_component::decode(bytes).map_err(|e| InspectError::Decode(format!("{e:#}")))?;
    let (resolve, world_id) = match decoded {
        DecodedWasm::Component(resolve, world) => (resolve, world),
        DecodedWasm::WitPackage(..) => {
            return Err(InspectError::NotAComponent(
                "it is a WIT package, not a component".into(),
            ));
        }
    };
    let world = &resolve.worlds[world_id];
    let mut exports = item_names(&resolve, world.exports.iter());
    let mut imports = item_names(&resolve, world.imports.iter());
    exports.sort();
    imports.sort();
    let contract_version = exports.iter().find_map(|e| {
        e.strip_prefix(CONTRACT_PACKAGE)
            .and_then(|rest| rest.strip_prefix("/hooks@"))
            .map(str::to_owned)
    });
    let world = contract_version
        .as_ref()
        .map(|v| format!("{CONTRACT_PACKAGE}/apparatus@{v}"));
    Ok(ComponentInfo {
        world,
        contract_version,
        exports,
        imports,
        sdk_version: sdk_version(bytes),
        size: bytes.len() as u64,
        digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
    })
}

/// The names of a world's interfaces and functions as the CNCF wasm artifact config lists
/// them: `ns:pkg/iface@version` for interfaces, the plain name for functions; types are left
/// out.
fn item_names<'a>(
    resolve: &wit_parser::Resolve,
    items: impl Iterator<Item = (&'a wit_parser::WorldKey, &'a wit_parser::WorldItem)>,
) -> Vec<String> {
    items
        .filter(|(_, item)| !matches!(item, wit_parser::WorldItem::Type { .. }))
        .map(|(key, _)| match key {
            wit_parser::WorldKey::Name(name) => name.clone(),
            wit_parser::WorldKey::Interface(id) => resolve
                .id_of(*id)
                .unwrap_or_else(|| "(anonymous interface)".to_owned()),
        })
        .collect()
}

/// The content of the SDK version section, wherever it is (the component's core modules are
/// nested inside it), when it is short UTF-8.
fn sdk_version(bytes: &[u8]) -> Option<String> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return None;
        };
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == SDK_VERSION_SECTION
        {
            let data = section.data();
            if data.len() > MAX_SDK_VERSION_LEN {
                return None;
            }
            return std::str::from_utf8(data)
                .ok()
                .filter(|v| v.chars().all(|c| c.is_ascii_graphic()))
                .map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_garbage_are_refused() {
        assert!(matches!(
            inspect(b"\0asm\x01\0\0\0"),
            Err(InspectError::NotAComponent(m)) if m.contains("core module")
        ));
        assert!(matches!(
            inspect(b"hello, world"),
            Err(InspectError::NotAComponent(_))
        ));
    }

    #[test]
    fn the_sdk_version_is_read_from_a_nested_core_module() {
        let component = |section: &str| {
            wat::parse_str(format!(
                r#"(component (core module (@custom "{SDK_VERSION_SECTION}" "{section}")))"#
            ))
            .unwrap()
        };
        let info = inspect(&component("0.1.0")).unwrap();
        assert_eq!(info.sdk_version.as_deref(), Some("0.1.0"));
        assert_eq!(info.world, None);
        assert_eq!(info.exports, Vec::<String>::new());
        // Not a version: too long, or with spaces or control characters.
        for junk in [&"9".repeat(65), "0.1 beta", "0.1\\0a"] {
            assert_eq!(
                inspect(&component(junk)).unwrap().sdk_version,
                None,
                "{junk}"
            );
        }
    }

    #[test]
    fn a_plugboard_component_names_its_world_and_contract() {
        let bytes = wat::parse_str(
            r#"(component (instance $hooks) (export "plugboard:apparatus/hooks@0.1.0" (instance $hooks)))"#,
        )
        .unwrap();
        let info = inspect(&bytes).unwrap();
        assert_eq!(info.contract_version.as_deref(), Some("0.1.0"));
        assert_eq!(
            info.world.as_deref(),
            Some("plugboard:apparatus/apparatus@0.1.0")
        );
        assert_eq!(info.exports, ["plugboard:apparatus/hooks@0.1.0"]);
        let config = info.artifact_config("2026-01-01T00:00:00Z");
        assert_eq!(
            config["component"]["target"],
            "plugboard:apparatus/apparatus@0.1.0"
        );
        assert_eq!(config["layerDigests"][0], info.digest);
        assert_eq!(config["os"], "wasip2");
    }

    #[test]
    fn a_truncated_component_is_a_decode_error() {
        assert!(matches!(
            inspect(b"\0asm\x0d\0\x01\0\x07\x05"),
            Err(InspectError::Decode(_))
        ));
    }
}
