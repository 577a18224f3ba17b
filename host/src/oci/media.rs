//! Which OCI manifests hold a WebAssembly component, and whether bytes are a component.
//!
//! Accepted layouts (exactly one layer):
//!
//! | config media type | layer media type | who writes it |
//! | --- | --- | --- |
//! | `application/vnd.wasm.config.v0+json` | `application/wasm` | the CNCF wasm artifact layout (wkg, [`push_component`](super::push_component)) |
//! | `application/vnd.wasm.config.v1+json` | `application/vnd.wasm.content.layer.v1+wasm` | older tools (oci-client's constants, wasm-to-oci) |
//! | `application/vnd.oci.empty.v1+json` | any of the wasm layer types | `oras push` of a `.wasm` file |
//!
//! and the older layer type `application/vnd.module.wasm.content.layer.v1+wasm` with any of
//! those configs. Everything else — container images, image indexes, tar layers, several
//! layers — is [`OciError::NotWasm`].

use serde::Deserialize;

use super::error::OciError;

/// Config media type of the CNCF wasm artifact layout.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of the CNCF wasm artifact layout.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Config media type written by older tools.
pub const LEGACY_WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";
/// Layer media types written by older tools.
pub const LEGACY_WASM_LAYER_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];
/// The OCI empty config, used by generic artifact tools.
pub const OCI_EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The OCI image manifest media type, the one [`push_component`](super::push_component) writes.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Manifest media types asked for when pulling: image manifests, and indexes so that an index
/// is reported as "not wasm" rather than "not found".
pub(crate) const ACCEPTED_MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Whether a config media type belongs to an accepted layout.
pub fn is_wasm_config(media_type: &str) -> bool {
    [
        WASM_CONFIG_MEDIA_TYPE,
        LEGACY_WASM_CONFIG_MEDIA_TYPE,
        OCI_EMPTY_CONFIG_MEDIA_TYPE,
    ]
    .contains(&media_type)
}

/// Whether a layer media type is WebAssembly.
pub fn is_wasm_layer(media_type: &str) -> bool {
    media_type == WASM_LAYER_MEDIA_TYPE || LEGACY_WASM_LAYER_MEDIA_TYPES.contains(&media_type)
}

/// The component layer a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComponentLayer {
    /// `sha256:…`.
    pub(crate) digest: String,
    /// The size the manifest announces.
    pub(crate) size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
}

/// Reads a manifest and returns its component layer, or why it has none.
pub(crate) fn component_layer(image: &str, manifest: &[u8]) -> Result<ComponentLayer, OciError> {
    let invalid = |problem: String| OciError::InvalidManifest {
        image: image.to_owned(),
        problem,
    };
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| invalid(format!("it is not a JSON manifest ({e})")))?;
    if manifest.schema_version != Some(2) {
        return Err(invalid("its schemaVersion is not 2".into()));
    }
    if manifest.manifests.is_some() {
        return Err(OciError::NotWasm {
            image: image.to_owned(),
            media_types: vec![
                manifest
                    .media_type
                    .unwrap_or_else(|| "application/vnd.oci.image.index.v1+json".into()),
            ],
        });
    }
    let (Some(config), Some(layers)) = (manifest.config, manifest.layers) else {
        return Err(invalid("it has no config or no layers".into()));
    };
    let wasm = is_wasm_config(&config.media_type)
        && layers.len() == 1
        && layers.iter().all(|l| is_wasm_layer(&l.media_type));
    if !wasm {
        return Err(OciError::NotWasm {
            image: image.to_owned(),
            media_types: manifest
                .media_type
                .into_iter()
                .chain(std::iter::once(config.media_type))
                .chain(layers.into_iter().map(|l| l.media_type))
                .collect(),
        });
    }
    let Some(layer) = layers.into_iter().next() else {
        return Err(invalid("it has no layers".into()));
    };
    if !is_sha256_digest(&layer.digest) {
        return Err(invalid(format!(
            "its layer digest {:?} is not a sha256 digest",
            layer.digest
        )));
    }
    let size = u64::try_from(layer.size)
        .map_err(|_| invalid(format!("its layer size {} is negative", layer.size)))?;
    Ok(ComponentLayer {
        digest: layer.digest,
        size,
    })
}

/// `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// How many leading bytes [`check_component_header`] needs.
pub(crate) const HEADER_LEN: usize = 8;

/// Checks the preamble of a WebAssembly binary: the magic `\0asm`, then a 16-bit version and a
/// 16-bit layer, where layer 0 is a core module and layer 1 a component. Returns what the bytes
/// are instead when they are not a component.
pub(crate) fn check_component_header(header: &[u8]) -> Result<(), String> {
    let Some(preamble) = header.get(..HEADER_LEN) else {
        return Err(format!(
            "it is only {} bytes long, too short to be WebAssembly",
            header.len()
        ));
    };
    if &preamble[..4] != b"\0asm" {
        return Err("it does not start with the WebAssembly magic bytes (\\0asm)".into());
    }
    let version = u16::from_le_bytes([preamble[4], preamble[5]]);
    let layer = u16::from_le_bytes([preamble[6], preamble[7]]);
    match layer {
        1 => Ok(()),
        0 => Err(
            "this is a core module; build a component (cargo build --target \
                  wasm32-wasip2, or wasm-tools component new)"
                .into(),
        ),
        other => Err(format!(
            "it is WebAssembly of unknown layer {other} (version {version})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|m| json!({"mediaType": m, "digest": DIGEST, "size": 8}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": config, "digest": DIGEST, "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    fn media_types(result: Result<ComponentLayer, OciError>) -> Vec<String> {
        match result {
            Err(OciError::NotWasm { media_types, .. }) => media_types,
            other => panic!("expected NotWasm, got {other:?}"),
        }
    }

    #[test]
    fn cncf_layout_is_accepted() {
        let layer = component_layer(
            "r/x:1",
            &manifest(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE]),
        )
        .unwrap();
        assert_eq!(
            layer,
            ComponentLayer {
                digest: DIGEST.into(),
                size: 8
            }
        );
    }

    #[test]
    fn older_layouts_are_accepted() {
        for layer in LEGACY_WASM_LAYER_MEDIA_TYPES {
            for config in [LEGACY_WASM_CONFIG_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE] {
                assert!(component_layer("r/x:1", &manifest(config, &[layer])).is_ok());
            }
        }
        assert!(
            component_layer(
                "r/x:1",
                &manifest(OCI_EMPTY_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE])
            )
            .is_ok()
        );
    }

    #[test]
    fn container_image_is_not_wasm_and_says_what_it_is() {
        let found = media_types(component_layer(
            "r/x:1",
            &manifest(
                "application/vnd.oci.image.config.v1+json",
                &["application/vnd.oci.image.layer.v1.tar+gzip"],
            ),
        ));
        assert_eq!(
            found,
            [
                OCI_MANIFEST_MEDIA_TYPE,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip"
            ]
        );
    }

    #[test]
    fn wasm_config_with_a_tar_layer_is_not_wasm() {
        media_types(component_layer(
            "r/x:1",
            &manifest(
                WASM_CONFIG_MEDIA_TYPE,
                &["application/vnd.oci.image.layer.v1.tar"],
            ),
        ));
    }

    #[test]
    fn two_layers_are_not_wasm() {
        media_types(component_layer(
            "r/x:1",
            &manifest(
                WASM_CONFIG_MEDIA_TYPE,
                &[WASM_LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE],
            ),
        ));
    }

    #[test]
    fn an_index_is_not_wasm() {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [],
        }))
        .unwrap();
        assert_eq!(
            media_types(component_layer("r/x:1", &index)),
            ["application/vnd.oci.image.index.v1+json"]
        );
    }

    #[test]
    fn garbage_is_an_invalid_manifest() {
        assert!(matches!(
            component_layer("r/x:1", b"<html>"),
            Err(OciError::InvalidManifest { .. })
        ));
        assert!(matches!(
            component_layer("r/x:1", br#"{"schemaVersion": 1}"#),
            Err(OciError::InvalidManifest { .. })
        ));
    }

    #[test]
    fn component_header_is_accepted() {
        assert_eq!(check_component_header(b"\0asm\x0d\0\x01\0"), Ok(()));
    }

    #[test]
    fn core_module_header_is_refused_with_advice() {
        let why = check_component_header(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(why.starts_with("this is a core module; build a component"));
    }

    #[test]
    fn non_wasm_header_is_refused() {
        assert!(
            check_component_header(b"\x7fELF\x02\x01\x01\0")
                .unwrap_err()
                .contains("magic")
        );
        assert!(
            check_component_header(b"\0as")
                .unwrap_err()
                .contains("too short")
        );
    }
}
