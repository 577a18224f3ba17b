//! Fetching WebAssembly components from OCI registries: the edge between a WASM apparatus's
//! `image` and a verified component file on local disk.
//!
//! [`ComponentStore::fetch`] resolves a reference (a tag to its manifest digest, which callers
//! show in status), checks that the manifest describes a WebAssembly component artifact
//! ([`media`]), downloads its one layer within a size limit, verifies its sha256 against the
//! manifest and its preamble (a component, not a core module), and keeps it in a
//! content-addressed, size-bounded on-disk cache (least recently used blobs go first; files
//! are written atomically and checked against their digest on first use after a restart). A
//! reference pinned by digest that is already cached needs no network at all.
//!
//! **Trade-off of the shared cache.** The cache is keyed by content, not by who asked: once
//! any object's pull secret has fetched a component, a reference pinned to the same digest is
//! served from the cache without asking the registry, whatever the asker's credentials — the
//! behaviour of the kubelet's `IfNotPresent`. A digest is 256 bits that only someone who could
//! read the manifest (or was told it) knows.
//!
//! Concurrent fetches of one reference with the same credentials share one download. Every
//! fetch runs in an `oci.fetch` span carrying the image reference; credentials never appear in
//! spans, logs or errors.
//!
//! Registries are chosen by tenants, so pulls speak the OCI distribution protocol on
//! plugboard's own HTTP client (`pull`), under the operator's egress policy
//! ([`StoreOptions::egress`]): registry, token service and redirect targets are judged on the
//! addresses they resolve to at connect time, and a refused one fails the fetch with
//! [`OciError::EgressDenied`] before anything (credentials included) is sent. Manifests and
//! token answers are read as streams within [`StoreOptions::max_manifest_bytes`].
//!
//! [`push_component`], [`push_artifact`] and [`push_with_config`] write artifacts, for tests and
//! tooling (`plugboard plugin push`; with `oci-client`, outside the egress policy: they are not
//! driven by tenants); [`ComponentStore::signatures`] reads cosign signatures and
//! [`push_signature`] writes them (see [`crate::signature`]).

mod auth;
mod cache;
mod challenge;
mod client;
mod error;
pub mod media;
mod pull;
mod push;
mod reference;
mod signature;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt as _, Shared};
use sha2::{Digest as _, Sha256};
use tracing::Instrument as _;

pub use auth::{RegistryAuth, auth_from_docker_config};
pub use error::{Missing, OciError};
pub use push::{push_artifact, push_component, push_with_config};
pub use reference::ImageRef;
pub use signature::push_signature;

use crate::egress::EgressPolicy;
use cache::BlobCache;
use media::ComponentLayer;
use pull::PullClient;

/// Limits and settings of a [`ComponentStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The cache directory. One process per directory.
    pub root: PathBuf,
    /// The largest component layer accepted, in bytes. Default 64 MiB.
    pub max_layer_bytes: u64,
    /// The largest manifest (and token service answer) accepted, in bytes. Default 4 MiB (the
    /// distribution server's own limit). Read as a stream and refused as soon as it is
    /// announced or seen to be larger.
    pub max_manifest_bytes: u64,
    /// The bound of the cache's total size, in bytes; least recently used blobs are evicted
    /// beyond it. Default 1 GiB. Keep it several times `max_layer_bytes`.
    pub max_cache_bytes: u64,
    /// Registries (`host:port`, exactly as in references) spoken to over plain HTTP. Every
    /// other registry is HTTPS only.
    pub plain_http_hosts: Vec<String>,
    /// How long connecting to a registry may take. Default 10 s.
    pub connect_timeout: Duration,
    /// How long a registry may stay silent while answering. Default 30 s.
    pub read_timeout: Duration,
    /// How long one whole fetch may take. Default 5 min.
    pub fetch_timeout: Duration,
    /// Where pulls may connect: every registry, token service and redirect target is judged
    /// on its resolved address at connect time. Default [`EgressPolicy::default`] (loopback,
    /// link-local and the in-cluster API server names refused).
    pub egress: EgressPolicy,
}

impl StoreOptions {
    /// Default limits with the cache at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreOptions {
            root: root.into(),
            max_layer_bytes: 64 * 1024 * 1024,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_cache_bytes: 1024 * 1024 * 1024,
            plain_http_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(300),
            egress: EgressPolicy::default(),
        }
    }
}

/// A fetched component, verified and on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The digest of the component layer (`sha256:…`): what the file holds.
    pub digest: String,
    /// The digest of the manifest (`sha256:…`): what a tag resolved to, to show in status and
    /// to pin.
    pub manifest_digest: String,
    /// The component file. It stays until evicted; open it soon after the fetch.
    pub path: PathBuf,
    /// The component's size in bytes.
    pub bytes: u64,
    /// Whether the layer came from the cache rather than the registry. A tag is still
    /// resolved over the network; a cached pinned digest is not.
    pub from_cache: bool,
}

/// Counters of a [`ComponentStore`] since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Manifests requested from registries.
    pub manifest_pulls: u64,
    /// Component layers downloaded (started) from registries.
    pub layer_downloads: u64,
    /// Fetches whose layer came from the cache.
    pub cache_hits: u64,
    /// Blobs evicted to keep the cache within its bound.
    pub evictions: u64,
}

type SharedFetch = Shared<BoxFuture<'static, Result<Fetched, OciError>>>;

/// Fetches components from OCI registries into a content-addressed on-disk cache. Cloning
/// gives another handle to the same store.
#[derive(Clone)]
pub struct ComponentStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for ComponentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentStore")
            .field("options", &self.inner.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: StoreOptions,
    cache: BlobCache,
    /// The registry client (under the egress policy), shared by every fetch.
    puller: PullClient,
    inflight: Mutex<HashMap<FetchKey, (u64, SharedFetch)>>,
    next_fetch: AtomicU64,
    manifest_pulls: AtomicU64,
    layer_downloads: AtomicU64,
    cache_hits: AtomicU64,
}

/// Fetches with equal keys share one download: same repository, same tag or digest (the
/// digest when both are given), same credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FetchKey {
    registry: String,
    repository: String,
    version: String,
    auth: RegistryAuth,
}

impl ComponentStore {
    /// Opens the store, creating its cache directory and trimming the cache to its bound.
    pub fn open(options: StoreOptions) -> Result<Self, OciError> {
        let cache = BlobCache::open(&options.root, options.max_cache_bytes)?;
        let puller = PullClient::new(
            options.egress.clone(),
            options.plain_http_hosts.clone(),
            options.connect_timeout,
            options.read_timeout,
            options.max_manifest_bytes,
        )
        .map_err(|e| OciError::Transport {
            registry: "(any)".to_owned(),
            action: "set up a client for",
            source: Arc::new(e),
        })?;
        Ok(ComponentStore {
            inner: Arc::new(Inner {
                options,
                cache,
                puller,
                inflight: Mutex::new(HashMap::new()),
                next_fetch: AtomicU64::new(0),
                manifest_pulls: AtomicU64::new(0),
                layer_downloads: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
            }),
        })
    }

    /// The store's options.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.inner.options.root
    }

    /// The total size of the cached blobs, in bytes.
    pub fn cached_bytes(&self) -> u64 {
        self.inner.cache.total_bytes()
    }

    /// Counters since the store opened.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            manifest_pulls: self.inner.manifest_pulls.load(Ordering::Relaxed),
            layer_downloads: self.inner.layer_downloads.load(Ordering::Relaxed),
            cache_hits: self.inner.cache_hits.load(Ordering::Relaxed),
            evictions: self.inner.cache.evictions(),
        }
    }

    /// Fetches the component `image` names (see [`ImageRef`]) with `auth`, from the cache when
    /// the reference is pinned by a cached digest, from the registry otherwise.
    ///
    /// The download runs in its own task: dropping this future does not abort a download other
    /// callers wait for, and a completed download is cached even if nobody waits any more.
    pub async fn fetch(&self, image: &str, auth: &RegistryAuth) -> Result<Fetched, OciError> {
        let reference = ImageRef::parse(image)?;
        let key = FetchKey {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            version: reference
                .digest()
                .or(reference.tag())
                .unwrap_or_default()
                .to_owned(),
            auth: auth.clone(),
        };
        let shared = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(&key) {
                Some((_, shared)) => {
                    tracing::debug!(image = %reference, "joining a fetch in progress");
                    shared.clone()
                }
                None => {
                    let id = self.inner.next_fetch.fetch_add(1, Ordering::Relaxed);
                    let shared = self.start(id, key.clone(), reference, auth.clone());
                    inflight.insert(key, (id, shared.clone()));
                    shared
                }
            }
        };
        shared.await
    }

    /// The cached component file whose content has `digest` (`sha256:` and 64 hex digits),
    /// checked against its digest, without asking any registry: what a side falls back to when
    /// its image cannot be resolved. `None` when it is not (or no longer) cached, or `digest`
    /// is not a sha256 digest.
    pub async fn cached_component(&self, digest: &str) -> Result<Option<PathBuf>, OciError> {
        if !media::is_sha256_digest(digest) {
            return Ok(None);
        }
        let found = self.inner.cache.get(digest).await?;
        if found.is_some() {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// The cosign signatures stored next to `image` (its repository) for the manifest
    /// `manifest_digest`, read with `auth` through the client fetches use: `None` when there is
    /// no signature manifest. See [`crate::signature`].
    pub async fn signatures(
        &self,
        image: &str,
        auth: &RegistryAuth,
        manifest_digest: &str,
    ) -> Result<Option<Vec<crate::signature::StoredSignature>>, OciError> {
        let reference = ImageRef::parse(image)?;
        signature::fetch(&self.inner.puller, &reference, auth, manifest_digest).await
    }

    /// Spawns the fetch task. Called with `inflight` locked, so the task's own removal of its
    /// entry (which takes the lock) happens after the insertion.
    fn start(
        &self,
        id: u64,
        key: FetchKey,
        reference: ImageRef,
        auth: RegistryAuth,
    ) -> SharedFetch {
        let inner = Arc::clone(&self.inner);
        let span = tracing::info_span!("oci.fetch", image = %reference);
        let registry = reference.registry().to_owned();
        let task = tokio::spawn(
            async move {
                let timeout = inner.options.fetch_timeout;
                let result =
                    match tokio::time::timeout(timeout, inner.fetch(&reference, &auth)).await {
                        Ok(result) => result,
                        Err(_) => Err(OciError::Transport {
                            registry: reference.registry().to_owned(),
                            action: "pull from",
                            source: Arc::new(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("the fetch took longer than {timeout:?}"),
                            )),
                        }),
                    };
                match &result {
                    Ok(fetched) => tracing::debug!(
                        digest = %fetched.digest,
                        manifest_digest = %fetched.manifest_digest,
                        from_cache = fetched.from_cache,
                        "fetched component"
                    ),
                    Err(e) => tracing::debug!(error = %e, reason = e.reason(), "fetch failed"),
                }
                let mut inflight = lock(&inner.inflight);
                if inflight.get(&key).is_some_and(|(entry, _)| *entry == id) {
                    inflight.remove(&key);
                }
                result
            }
            .instrument(span),
        );
        async move {
            task.await.unwrap_or_else(|e| {
                Err(OciError::Transport {
                    registry,
                    action: "pull from",
                    source: Arc::new(e),
                })
            })
        }
        .boxed()
        .shared()
    }
}

impl Inner {
    async fn fetch(&self, image: &ImageRef, auth: &RegistryAuth) -> Result<Fetched, OciError> {
        if let Some(pinned) = image.digest()
            && let Some(fetched) = self.cached(image, pinned).await?
        {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(fetched);
        }
        let mut pull = self.puller.pull(image, auth)?;
        self.manifest_pulls.fetch_add(1, Ordering::Relaxed);
        let pull::Manifest {
            body: manifest,
            announced_digest,
        } = pull.manifest().await?;
        // The digest recorded is the body's own sha256; it must match a pinned digest and
        // what the registry announced.
        let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        let expected = image
            .digest()
            .map(str::to_owned)
            .or(announced_digest.filter(|d| d.starts_with("sha256:")));
        if let Some(expected) = expected
            && expected != manifest_digest
        {
            return Err(OciError::DigestMismatch {
                image: image.to_string(),
                what: "manifest",
                expected,
                actual: manifest_digest,
            });
        }
        let layer = media::component_layer(&image.to_string(), &manifest)?;
        self.check_layer_size(image, &layer)?;
        let (path, from_cache) = match self.cache.get(&layer.digest).await? {
            Some(path) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                (path, true)
            }
            None => (self.download(&mut pull, image, &layer).await?, false),
        };
        // The manifest goes in only with its layer, so that a pinned reference found in the
        // cache always has everything it needs.
        self.cache.put(&manifest).await?;
        self.cache.evict(&[&manifest_digest, &layer.digest]).await;
        Ok(Fetched {
            digest: layer.digest,
            manifest_digest,
            path,
            bytes: layer.size,
            from_cache,
        })
    }

    /// The fetch of a pinned reference from the cache alone, if everything is there.
    async fn cached(&self, image: &ImageRef, pinned: &str) -> Result<Option<Fetched>, OciError> {
        let Some(manifest) = self.cache.read(pinned).await? else {
            return Ok(None);
        };
        // A cached manifest was accepted when it was stored; limits may have changed since.
        let layer = media::component_layer(&image.to_string(), &manifest)?;
        self.check_layer_size(image, &layer)?;
        let Some(path) = self.cache.get(&layer.digest).await? else {
            return Ok(None);
        };
        tracing::debug!(digest = %layer.digest, "pinned component found in the cache");
        Ok(Some(Fetched {
            digest: layer.digest,
            manifest_digest: pinned.to_owned(),
            path,
            bytes: layer.size,
            from_cache: true,
        }))
    }

    fn check_layer_size(&self, image: &ImageRef, layer: &ComponentLayer) -> Result<(), OciError> {
        let limit = self.options.max_layer_bytes;
        if layer.size > limit {
            return Err(OciError::TooLarge {
                image: image.to_string(),
                what: "layer",
                size: layer.size,
                limit,
            });
        }
        Ok(())
    }

    /// Downloads, checks and caches the layer; nothing is cached unless every check passes.
    async fn download(
        &self,
        pull: &mut pull::Pull<'_>,
        image: &ImageRef,
        layer: &ComponentLayer,
    ) -> Result<PathBuf, OciError> {
        self.layer_downloads.fetch_add(1, Ordering::Relaxed);
        let limit = self.options.max_layer_bytes;
        let too_large = |size| OciError::TooLarge {
            image: image.to_string(),
            what: "layer",
            size,
            limit,
        };
        let mut response = pull.blob(&layer.digest).await?;
        if let Some(length) = response.content_length()
            && length > limit
        {
            return Err(too_large(length));
        }
        let mut writer = self.cache.writer().await?;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| pull.transport("download a layer from", e))?
        {
            let size = writer.len() + chunk.len() as u64;
            if size > limit {
                return Err(too_large(size));
            }
            writer.write(&chunk).await?;
        }
        let actual = writer.finish().await?;
        if actual != layer.digest {
            return Err(OciError::DigestMismatch {
                image: image.to_string(),
                what: "layer",
                expected: layer.digest.clone(),
                actual,
            });
        }
        if let Err(found) = media::check_component_header(writer.header()) {
            return Err(OciError::NotAComponent {
                image: image.to_string(),
                found,
            });
        }
        self.cache.commit(writer).await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold no invariant a panicking holder could break halfway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod pull_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod tests {
    use super::*;

    /// What a side falls back to: a cached blob by its digest, checked, never a path made of
    /// something that is not a sha256 digest.
    #[tokio::test]
    async fn cached_component_is_found_by_digest_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::open(StoreOptions::new(dir.path())).unwrap();
        let digest = store.inner.cache.put(b"\0asm\x0d\0\x01\0").await.unwrap();
        let path = store.cached_component(&digest).await.unwrap().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"\0asm\x0d\0\x01\0");
        assert_eq!(store.stats().cache_hits, 1);

        let absent = format!("sha256:{}", "0".repeat(64));
        assert_eq!(store.cached_component(&absent).await.unwrap(), None);
        for bad in [
            "",
            "sha256:../../etc/passwd",
            "sha512:00",
            &digest.to_uppercase(),
        ] {
            assert_eq!(store.cached_component(bad).await.unwrap(), None, "{bad}");
        }
    }
}
