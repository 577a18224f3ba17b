//! Fetching WebAssembly components through `plugboard::oci` from a real OCI registry (the CNCF
//! distribution server, see `plugboard_tests::registry`). Each test has its own registry and
//! its own cache directory. Payloads are hand-written components and core modules (`wat`), so
//! no WebAssembly toolchain is needed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and their helpers fail by panicking"
)]

use std::path::Path;
use std::time::Instant;

use plugboard::egress::{EgressOptions, EgressPolicy};
use plugboard::oci::media::{
    LEGACY_WASM_CONFIG_MEDIA_TYPE, LEGACY_WASM_LAYER_MEDIA_TYPES, WASM_CONFIG_MEDIA_TYPE,
};
use plugboard::oci::{
    ComponentStore, Fetched, Missing, OciError, RegistryAuth, StoreOptions,
    auth_from_docker_config, push_artifact, push_component,
};
use plugboard_tests::registry::Registry;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// A valid component whose content (and so digest) depends on `label`, padded with a custom
/// section of `pad` bytes.
fn component(label: &str, pad: usize) -> Vec<u8> {
    let padding = "x".repeat(pad);
    wat::parse_str(format!(
        r#"(component (@custom "plugboard-test" "{label}{padding}"))"#
    ))
    .unwrap()
}

fn core_module() -> Vec<u8> {
    wat::parse_str(r#"(module (@custom "plugboard-test" "core"))"#).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn registry() -> Registry {
    Registry::start().await.expect("start the test registry")
}

/// A store with default limits, its cache in a fresh temporary directory.
fn store(registry: &Registry) -> (ComponentStore, TempDir) {
    store_with(registry, |_| {})
}

fn store_with(
    registry: &Registry,
    tune: impl FnOnce(&mut StoreOptions),
) -> (ComponentStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path().join("cache"));
    options.plain_http_hosts = registry.plain_http_hosts();
    // The registry listens on loopback, which the default egress policy refuses.
    options.egress = EgressPolicy::new(EgressOptions::default().allowing_loopback());
    tune(&mut options);
    (ComponentStore::open(options).unwrap(), dir)
}

async fn push(registry: &Registry, repository_and_tag: &str, bytes: &[u8]) -> String {
    push_component(
        &registry.image(repository_and_tag),
        bytes,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap()
}

/// The blob files in a store's cache and their total size.
fn cached_blobs(store: &ComponentStore) -> (Vec<String>, u64) {
    let dir = store.root().join("blobs/sha256");
    let mut names = Vec::new();
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        total += entry.metadata().unwrap().len();
        names.push(format!("sha256:{}", entry.file_name().to_string_lossy()));
    }
    names.sort();
    (names, total)
}

fn assert_component(fetched: &Fetched, bytes: &[u8]) {
    assert_eq!(fetched.digest, sha256(bytes));
    assert_eq!(fetched.bytes, bytes.len() as u64);
    assert_eq!(std::fs::read(&fetched.path).unwrap(), bytes);
    assert_eq!(
        fetched.path.file_name().unwrap().to_string_lossy(),
        fetched.digest.strip_prefix("sha256:").unwrap()
    );
}

#[tokio::test]
async fn fetch_by_tag_resolves_and_records_the_manifest_digest() {
    let registry = registry().await;
    let bytes = component("by-tag", 150 * 1024);
    let started = Instant::now();
    let manifest_digest = push(&registry, "hooks:1.0.0", &bytes).await;
    let pushed = started.elapsed();
    let (store, _dir) = store(&registry);

    let started = Instant::now();
    let fetched = store
        .fetch(&registry.image("hooks:1.0.0"), &RegistryAuth::Anonymous)
        .await
        .unwrap();
    let pulled = started.elapsed();
    eprintln!("150 KiB component on loopback: push {pushed:?}, fetch by tag {pulled:?}");

    assert_component(&fetched, &bytes);
    assert_eq!(fetched.manifest_digest, manifest_digest);
    assert!(!fetched.from_cache);

    // A tag is resolved again (the tag may move), but the layer comes from the cache.
    let again = store
        .fetch(&registry.image("hooks:1.0.0"), &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert!(again.from_cache);
    assert_eq!(again.manifest_digest, manifest_digest);
    let stats = store.stats();
    assert_eq!((stats.manifest_pulls, stats.layer_downloads), (2, 1));
}

#[tokio::test]
async fn pinned_digest_in_the_cache_needs_no_registry() {
    let mut registry = registry().await;
    let bytes = component("pinned", 1024);
    let manifest_digest = push(&registry, "hooks:1", &bytes).await;
    let pinned = registry.image(&format!("hooks@{manifest_digest}"));
    let both = registry.image(&format!("hooks:1@{manifest_digest}"));
    let (store, _dir) = store(&registry);

    let first = store
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_component(&first, &bytes);
    assert_eq!(first.manifest_digest, manifest_digest);
    assert!(!first.from_cache);

    registry.stop();

    let second = store
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert!(second.from_cache);
    assert_eq!(second.path, first.path);
    // With a tag as well, the digest decides and the tag is not looked up.
    let third = store.fetch(&both, &RegistryAuth::Anonymous).await.unwrap();
    assert!(third.from_cache);
    assert_eq!(store.stats().manifest_pulls, 1);
    assert_eq!(store.stats().layer_downloads, 1);

    // A store opened on the same directory (an operator restart) finds it too, after checking
    // the files it did not write itself.
    let restarted = ComponentStore::open(store.options().clone()).unwrap();
    let fourth = restarted
        .fetch(&pinned, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert!(fourth.from_cache);
    assert_component(&fourth, &bytes);
    assert_eq!(restarted.stats().manifest_pulls, 0);
}

#[tokio::test]
async fn unknown_digest_is_not_found() {
    let registry = registry().await;
    push(&registry, "hooks:1", &component("unknown-digest", 0)).await;
    let (store, _dir) = store(&registry);
    let wrong = sha256(b"not the manifest");

    let err = store
        .fetch(
            &registry.image(&format!("hooks@{wrong}")),
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::NotFound { what: Missing::Manifest(d), .. } if *d == wrong),
        "{err:?}"
    );
    assert_eq!(err.reason(), "ImageNotFound");
    assert!(
        err.to_string()
            .starts_with(&format!("manifest {wrong} not found in"))
    );
}

#[tokio::test]
async fn registry_serving_other_content_for_a_pinned_digest_is_a_digest_mismatch() {
    let registry = registry().await;
    let manifest_digest = push(&registry, "hooks:1", &component("tampered-manifest", 0)).await;
    // The registry now serves a different (still valid) manifest under the same digest.
    let stored = registry.blob_data_path(&manifest_digest);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    manifest["annotations"] = serde_json::json!({"altered": "yes"});
    std::fs::write(&stored, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (store, _dir) = store(&registry);

    let err = store
        .fetch(
            &registry.image(&format!("hooks@{manifest_digest}")),
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::DigestMismatch { what: "manifest", expected, .. } if *expected == manifest_digest),
        "{err:?}"
    );
    assert_eq!(err.reason(), "DigestMismatch");
    assert_eq!(cached_blobs(&store).0, Vec::<String>::new());
}

#[tokio::test]
async fn tampered_layer_is_a_digest_mismatch_and_nothing_is_cached() {
    let registry = registry().await;
    let bytes = component("tampered-layer", 256);
    push(&registry, "hooks:1", &bytes).await;
    // Same length, different content.
    let stored = registry.blob_data_path(&sha256(&bytes));
    let mut altered = std::fs::read(&stored).unwrap();
    let last = altered.len() - 1;
    altered[last] = b'y';
    std::fs::write(&stored, &altered).unwrap();
    let (store, _dir) = store(&registry);

    let err = store
        .fetch(&registry.image("hooks:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::DigestMismatch { what: "layer", expected, actual, .. }
            if *expected == sha256(&bytes) && *actual == sha256(&altered)),
        "{err:?}"
    );
    assert_eq!(cached_blobs(&store).0, Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0,
        "no partial download is left behind"
    );
}

#[tokio::test]
async fn missing_tag_and_missing_repository_are_not_found() {
    let registry = registry().await;
    push(&registry, "hooks:1", &component("missing-tag", 0)).await;
    let (store, _dir) = store(&registry);

    let err = store
        .fetch(&registry.image("hooks:2"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::NotFound { what: Missing::Tag(t), .. } if t == "2"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("tag \"2\" not found in 127.0.0.1:")
    );

    let err = store
        .fetch(&registry.image("nothing-here:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    // distribution 2.8 answers MANIFEST_UNKNOWN for unknown repositories too (registries
    // that answer NAME_UNKNOWN give `Missing::Repository`, see the unit tests).
    assert!(
        matches!(
            &err,
            OciError::NotFound {
                what: Missing::Tag(_) | Missing::Repository,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "ImageNotFound");
}

#[tokio::test]
async fn container_image_is_not_wasm() {
    let registry = registry().await;
    push_artifact(
        &registry.image("app:1"),
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        b"\x1f\x8b not really a tarball",
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let (store, _dir) = store(&registry);

    let err = store
        .fetch(&registry.image("app:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    let OciError::NotWasm { media_types, .. } = &err else {
        panic!("expected NotWasm, got {err:?}");
    };
    assert_eq!(
        media_types,
        &[
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ]
    );
    assert!(
        err.to_string()
            .contains("application/vnd.oci.image.layer.v1.tar+gzip")
    );
    assert_eq!(err.reason(), "NotWasm");
    // Refused from the manifest alone: the layer was never downloaded.
    assert_eq!(store.stats().layer_downloads, 0);
}

#[tokio::test]
async fn core_module_is_not_a_component() {
    let registry = registry().await;
    push(&registry, "module:1", &core_module()).await;
    let (store, _dir) = store(&registry);

    let err = store
        .fetch(&registry.image("module:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NotAComponent { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("this is a core module; build a component"),
        "{err}"
    );
    assert_eq!(err.reason(), "NotAComponent");
    assert_eq!(cached_blobs(&store).0, Vec::<String>::new());
}

#[tokio::test]
async fn older_wasm_media_types_are_accepted() {
    let registry = registry().await;
    let (store, _dir) = store(&registry);
    for (i, layer_media_type) in LEGACY_WASM_LAYER_MEDIA_TYPES.into_iter().enumerate() {
        let bytes = component(&format!("legacy-{i}"), 0);
        let image = registry.image(&format!("legacy:{i}"));
        push_artifact(
            &image,
            LEGACY_WASM_CONFIG_MEDIA_TYPE,
            layer_media_type,
            &bytes,
            &RegistryAuth::Anonymous,
            &registry.plain_http_hosts(),
        )
        .await
        .unwrap();
        let fetched = store.fetch(&image, &RegistryAuth::Anonymous).await.unwrap();
        assert_component(&fetched, &bytes);
    }
    // And a CNCF config with an older layer type.
    let bytes = component("mixed", 0);
    let image = registry.image("legacy:mixed");
    push_artifact(
        &image,
        WASM_CONFIG_MEDIA_TYPE,
        LEGACY_WASM_LAYER_MEDIA_TYPES[0],
        &bytes,
        &RegistryAuth::Anonymous,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    assert_component(
        &store.fetch(&image, &RegistryAuth::Anonymous).await.unwrap(),
        &bytes,
    );
}

#[tokio::test]
async fn authenticated_registry_refuses_anonymous_pulls() {
    let registry = Registry::start_with_auth("robot", "s3cret").await.unwrap();
    let credentials =
        auth_from_docker_config(&registry.docker_config_json(), registry.host()).unwrap();
    push_component(
        &registry.image("private:1"),
        &component("private-anonymous", 0),
        &credentials,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let (store, _dir) = store(&registry);

    let err = store
        .fetch(&registry.image("private:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::Unauthorized {
                with_credentials: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "ImageUnauthorized");
    assert!(err.to_string().contains("add a pull secret"));
}

#[tokio::test]
async fn authenticated_registry_serves_with_docker_config_credentials() {
    let registry = Registry::start_with_auth("robot", "s3cret").await.unwrap();
    let credentials =
        auth_from_docker_config(&registry.docker_config_json(), registry.host()).unwrap();
    assert!(matches!(&credentials, RegistryAuth::Basic { username, .. } if username == "robot"));
    let bytes = component("private", 0);
    push_component(
        &registry.image("private:1"),
        &bytes,
        &credentials,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let (store, _dir) = store(&registry);

    // Anonymous first: the store must not keep using the anonymous client for this registry.
    store
        .fetch(&registry.image("private:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    let fetched = store
        .fetch(&registry.image("private:1"), &credentials)
        .await
        .unwrap();
    assert_component(&fetched, &bytes);

    let wrong = RegistryAuth::Basic {
        username: "robot".into(),
        password: "not-the-password".into(),
    };
    let err = store
        .fetch(&registry.image("private:1"), &wrong)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::Unauthorized {
                with_credentials: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("not-the-password"));
    assert!(!format!("{err:?}").contains("not-the-password"));
}

#[tokio::test]
async fn oversized_layer_and_manifest_are_too_large() {
    let registry = registry().await;
    push(&registry, "big:1", &component("big", 4096)).await;

    let (store, _dir) = store_with(&registry, |o| o.max_layer_bytes = 1024);
    let err = store
        .fetch(&registry.image("big:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::TooLarge {
                what: "layer",
                limit: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "ImageTooLarge");
    assert_eq!(
        store.stats().layer_downloads,
        0,
        "refused from the manifest's size"
    );

    let (store, _dir) = store_with(&registry, |o| o.max_manifest_bytes = 64);
    let err = store
        .fetch(&registry.image("big:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::TooLarge {
                what: "manifest",
                limit: 64,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrent_fetches_of_one_reference_share_one_download() {
    let registry = registry().await;
    let bytes = component("concurrent", 512 * 1024);
    push(&registry, "shared:1", &bytes).await;
    let (store, _dir) = store(&registry);
    let image = registry.image("shared:1");

    let fetches = (0..8).map(|_| {
        let store = store.clone();
        let image = image.clone();
        tokio::spawn(async move { store.fetch(&image, &RegistryAuth::Anonymous).await })
    });
    let results = futures::future::join_all(fetches).await;
    let fetched: Vec<Fetched> = results.into_iter().map(|r| r.unwrap().unwrap()).collect();
    for f in &fetched {
        assert_eq!(f, &fetched[0]);
    }
    assert_component(&fetched[0], &bytes);
    let stats = store.stats();
    assert_eq!(
        (stats.manifest_pulls, stats.layer_downloads),
        (1, 1),
        "{stats:?}"
    );

    // The registry saw one download of the layer too (its access log is written as each
    // request completes, so wait for the line rather than read it at once).
    let blob_get = format!("\"GET /v2/shared/blobs/{} ", sha256(&bytes));
    plugboard_tests::wait_for(
        "the layer download in the access log",
        std::time::Duration::from_secs(10),
        || {
            let seen = registry.count_requests(&blob_get);
            async move {
                if seen >= 1 {
                    Ok(())
                } else {
                    Err(format!("{seen} downloads"))
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(registry.count_requests(&blob_get), 1, "{}", registry.log());
}

#[tokio::test]
async fn cache_stays_within_its_bound_and_evicts_the_least_recently_used() {
    let registry = registry().await;
    // Equal sizes, different content.
    let a = component("evict-a", 1000);
    let b = component("evict-b", 1000);
    let c = component("evict-c", 1000);
    let mut pinned = Vec::new();
    for (tag, bytes) in [("a", &a), ("b", &b), ("c", &c)] {
        let digest = push(&registry, &format!("evict:{tag}"), bytes).await;
        pinned.push(registry.image(&format!("evict@{digest}")));
    }
    // One component with its manifest, measured.
    let unit = {
        let (probe, _dir) = store(&registry);
        probe
            .fetch(&pinned[0], &RegistryAuth::Anonymous)
            .await
            .unwrap();
        probe.cached_bytes()
    };
    let bound = unit * 5 / 2;
    let (store, _dir) = store_with(&registry, |o| o.max_cache_bytes = bound);
    let fetch = |i: usize| {
        let store = store.clone();
        let image = pinned[i].clone();
        async move { store.fetch(&image, &RegistryAuth::Anonymous).await.unwrap() }
    };

    let fa = fetch(0).await;
    let fb = fetch(1).await;
    assert!(!fb.from_cache);
    // Using a again makes b the least recently used.
    assert!(fetch(0).await.from_cache);
    let fc = fetch(2).await;

    let (names, total) = cached_blobs(&store);
    assert!(total <= bound, "{total} bytes cached, bound {bound}");
    assert_eq!(store.cached_bytes(), total);
    assert!(names.contains(&fa.digest) && names.contains(&fa.manifest_digest));
    assert!(names.contains(&fc.digest) && names.contains(&fc.manifest_digest));
    assert!(!names.contains(&fb.digest), "b was the least recently used");
    assert!(store.stats().evictions >= 1);
    assert!(!Path::new(&fb.path).exists());

    // b comes back from the registry, and the bound still holds.
    assert!(!fetch(1).await.from_cache);
    assert!(cached_blobs(&store).1 <= bound);
}

#[tokio::test]
async fn registries_not_allowed_plain_http_are_spoken_to_over_https() {
    let registry = registry().await;
    push(&registry, "hooks:1", &component("https-only", 0)).await;
    let (store, _dir) = store_with(&registry, |o| o.plain_http_hosts.clear());

    let err = store
        .fetch(&registry.image("hooks:1"), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Transport { .. }), "{err:?}");
    assert_eq!(err.reason(), "RegistryUnavailable");
    assert!(err.is_transient());
}

#[tokio::test]
async fn invalid_references_are_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = ComponentStore::open(StoreOptions::new(dir.path())).unwrap();
    let err = store
        .fetch("hooks:1", &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::InvalidReference { .. }), "{err:?}");
    assert!(err.to_string().contains("name the registry explicitly"));
    assert_eq!(err.reason(), "InvalidImageReference");
    assert_eq!(store.stats().manifest_pulls, 0);
}

#[tokio::test]
async fn a_registry_the_egress_policy_refuses_gets_no_request_and_no_credentials() {
    let registry = Registry::start_with_auth("robot", "s3cret").await.unwrap();
    let credentials =
        auth_from_docker_config(&registry.docker_config_json(), registry.host()).unwrap();
    push_component(
        &registry.image("private:1"),
        &component("denied", 0),
        &credentials,
        &registry.plain_http_hosts(),
    )
    .await
    .unwrap();
    let port = registry.host().rsplit(':').next().unwrap().to_owned();
    for (name, image, egress) in [
        // The default policy: loopback refused.
        (
            "default",
            registry.image("denied/private:1"),
            EgressOptions::default(),
        ),
        // An operator deny entry for the very address, over the loopback allowance.
        (
            "deny entry",
            registry.image("denied/private:1"),
            EgressOptions {
                deny: vec!["127.0.0.1/32".parse().unwrap()],
                ..EgressOptions::default().allowing_loopback()
            },
        ),
        // An allowed name that resolves (like a rebinding DNS server) to the refused address.
        (
            "rebound name",
            format!("registry.rebind.test:{port}/denied/private:1"),
            EgressOptions {
                allow: vec!["registry.rebind.test".parse().unwrap()],
                deny_unlisted: true,
                static_hosts: [(
                    "registry.rebind.test".to_owned(),
                    vec!["127.0.0.1".parse().unwrap()],
                )]
                .into(),
                ..Default::default()
            },
        ),
    ] {
        let (store, _dir) = store_with(&registry, |o| {
            o.egress = EgressPolicy::new(egress);
            o.plain_http_hosts
                .push(format!("registry.rebind.test:{port}"));
        });
        let err = store.fetch(&image, &credentials).await.unwrap_err();
        let OciError::EgressDenied { source, .. } = &err else {
            panic!("{name}: expected EgressDenied, got {err:?}");
        };
        let refusal = source.to_string();
        assert!(refusal.contains("127.0.0.1"), "{name}: {refusal}");
        assert!(refusal.contains("--egress-allow"), "{name}: {refusal}");
        assert_eq!(err.reason(), "EgressDenied");
        assert!(!err.to_string().contains("s3cret"));
        assert_eq!(store.stats().layer_downloads, 0);
    }
    // Nothing reached the registry, so no credentials did. A control pull that is allowed
    // reaches it afterwards: once its request is in the access log, so would be any earlier one.
    let (store, _dir) = store(&registry);
    store
        .fetch(&registry.image("control/private:1"), &credentials)
        .await
        .unwrap_err();
    plugboard_tests::wait_for(
        "the control pull in the access log",
        std::time::Duration::from_secs(10),
        || {
            let seen = registry.count_requests("/v2/control/private/");
            async move {
                if seen >= 1 {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        registry.count_requests("/v2/denied/"),
        0,
        "{}",
        registry.log()
    );
}

#[tokio::test]
async fn an_oversized_manifest_from_the_registry_is_refused_before_it_is_read() {
    let registry = registry().await;
    // A valid manifest padded with a large annotation, well past the limit below.
    let bytes = component("huge-manifest", 0);
    push(&registry, "huge:1", &bytes).await;
    let manifest_digest = {
        let (store, _dir) = store(&registry);
        store
            .fetch(&registry.image("huge:1"), &RegistryAuth::Anonymous)
            .await
            .unwrap()
            .manifest_digest
    };
    let stored = registry.blob_data_path(&manifest_digest);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    manifest["annotations"] = serde_json::json!({"padding": "x".repeat(2 << 20)});
    std::fs::write(&stored, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let (store, _dir) = store_with(&registry, |o| o.max_manifest_bytes = 64 * 1024);
    let err = store
        .fetch(
            &registry.image(&format!("huge@{manifest_digest}")),
            &RegistryAuth::Anonymous,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::TooLarge {
                what: "manifest",
                limit: 65536,
                size,
                ..
            } if size > 65536
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("raise the operator's limit"),
        "{err}"
    );
    assert_eq!(store.stats().layer_downloads, 0);
}
