//! The on-disk, content-addressed blob cache behind [`ComponentStore`](super::ComponentStore).
//!
//! Layout under the cache root:
//!
//! - `blobs/sha256/<hex>` — one file per blob (component layers and their manifests), named by
//!   the sha256 of its content;
//! - `tmp/` — downloads in progress. A blob is written there and renamed into `blobs/` only
//!   once complete and verified, so `blobs/` never holds a partial file. `tmp/` is emptied when
//!   the cache opens: one cache root belongs to one process.
//!
//! **Verification on read.** A blob this process wrote was hashed while it was written. A blob
//! found on disk at startup is re-hashed the first time it is used (a crash, a full disk or a
//! hand edit may have damaged it); a damaged blob is deleted and counts as absent, so it is
//! downloaded again. After that first check the process trusts the file: the directory is the
//! operator's own and re-hashing a large component on every use would cost more than it
//! protects. Manifests are small and are re-hashed on every read. Files are not fsynced for the
//! same reason: verification catches what a crash leaves behind.
//!
//! **Bounded size, least recently used first.** The total size of `blobs/` is kept at or
//! below a bound by deleting the least recently used blobs after each insertion (never the
//! blobs of the fetch in progress, so one blob larger than the bound stays alone). Use is
//! recorded in memory and in each file's modification time, so the order survives restarts.
//! An open file stays readable after eviction deletes it (Unix semantics), so a caller that has
//! opened a returned path is not disturbed.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::error::OciError;
use super::media::{HEADER_LEN, is_sha256_digest};

/// Unique names for temporary files of this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The blob cache.
#[derive(Debug)]
pub(crate) struct BlobCache {
    blobs: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    evictions: AtomicU64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    /// Logical time of the latest use.
    clock: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    last_used: u64,
    /// Whether this process has checked (or written) the file's content.
    verified: bool,
}

impl Index {
    fn insert(&mut self, hex: &str, size: u64, verified: bool) {
        self.clock += 1;
        let entry = Entry {
            size,
            last_used: self.clock,
            verified,
        };
        if let Some(old) = self.entries.insert(hex.to_owned(), entry) {
            self.total -= old.size;
        }
        self.total += size;
    }

    fn remove(&mut self, hex: &str) {
        if let Some(old) = self.entries.remove(hex) {
            self.total -= old.size;
        }
    }

    fn touch(&mut self, hex: &str) {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(hex) {
            entry.last_used = self.clock;
        }
    }

    /// Removes least recently used entries, except `keep`, until the total fits `max`.
    fn evict(&mut self, max: u64, keep: &[&str]) -> Vec<String> {
        let mut victims = Vec::new();
        if self.total <= max {
            return victims;
        }
        let mut candidates: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(hex, _)| !keep.contains(&hex.as_str()))
            .map(|(hex, entry)| (entry.last_used, hex.clone()))
            .collect();
        candidates.sort_unstable();
        for (_, hex) in candidates {
            if self.total <= max {
                break;
            }
            self.remove(&hex);
            victims.push(hex);
        }
        victims
    }
}

impl BlobCache {
    /// Opens (creating) the cache at `root`, empties `tmp/`, indexes `blobs/` and trims it to
    /// `max_bytes`.
    pub(crate) fn open(root: &Path, max_bytes: u64) -> Result<Self, OciError> {
        let blobs = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for dir in [&blobs, &tmp] {
            std::fs::create_dir_all(dir).map_err(OciError::cache("create", dir))?;
        }
        let leftovers = std::fs::read_dir(&tmp).map_err(OciError::cache("list", &tmp))?;
        for leftover in leftovers.flatten() {
            // A leftover that cannot be removed only costs space.
            let _ = std::fs::remove_file(leftover.path());
        }
        let mut found = Vec::new();
        let listing = std::fs::read_dir(&blobs).map_err(OciError::cache("list", &blobs))?;
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if !is_sha256_digest(&format!("sha256:{name}")) {
                continue;
            }
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((used, name, meta.len()));
        }
        found.sort();
        let mut index = Index::default();
        for (_, hex, size) in found {
            index.insert(&hex, size, false);
        }
        let cache = BlobCache {
            blobs,
            tmp,
            max_bytes,
            index: Mutex::new(index),
            evictions: AtomicU64::new(0),
        };
        for hex in cache.lock().evict(max_bytes, &[]) {
            cache.evictions.fetch_add(1, Ordering::Relaxed);
            let _ = std::fs::remove_file(cache.blobs.join(hex));
        }
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index holds no invariant a panicking holder could break halfway.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the blob with `digest` lives (whether or not it is there).
    #[cfg(test)]
    pub(crate) fn path(&self, digest: &str) -> PathBuf {
        self.blobs.join(hex_of(digest))
    }

    /// The total size of the cached blobs.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// How many blobs were evicted since the cache opened.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The path of a cached, intact blob, or `None` when it is absent or was damaged (and has
    /// been deleted).
    pub(crate) async fn get(&self, digest: &str) -> Result<Option<PathBuf>, OciError> {
        let hex = hex_of(digest).to_owned();
        let verified = match self.lock().entries.get(&hex) {
            None => return Ok(None),
            Some(entry) => entry.verified,
        };
        let path = self.blobs.join(&hex);
        if !verified {
            match hash_file(path.clone()).await {
                Ok((actual, size)) if actual == hex => {
                    let mut index = self.lock();
                    if index.entries.contains_key(&hex) {
                        index.insert(&hex, size, true);
                    }
                }
                Ok(_) => {
                    tracing::warn!(%digest, "cached blob is damaged; removing it");
                    self.forget(&hex).await;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.lock().remove(&hex);
                    return Ok(None);
                }
                Err(e) => return Err(OciError::cache("read", &path)(e)),
            }
        }
        self.touch(&hex, &path).await;
        Ok(Some(path))
    }

    /// The content of a cached blob, checked against its digest on every read; `None` when
    /// absent or damaged (and then deleted). For small blobs such as manifests.
    pub(crate) async fn read(&self, digest: &str) -> Result<Option<Vec<u8>>, OciError> {
        let hex = hex_of(digest).to_owned();
        if !self.lock().entries.contains_key(&hex) {
            return Ok(None);
        }
        let path = self.blobs.join(&hex);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.lock().remove(&hex);
                return Ok(None);
            }
            Err(e) => return Err(OciError::cache("read", &path)(e)),
        };
        if hex::encode(Sha256::digest(&bytes)) != hex {
            tracing::warn!(%digest, "cached blob is damaged; removing it");
            self.forget(&hex).await;
            return Ok(None);
        }
        self.touch(&hex, &path).await;
        Ok(Some(bytes))
    }

    /// Stores `bytes` (atomically) and returns their digest.
    pub(crate) async fn put(&self, bytes: &[u8]) -> Result<String, OciError> {
        let mut writer = self.writer().await?;
        writer.write(bytes).await?;
        let digest = writer.finish().await?;
        self.commit(writer).await?;
        Ok(digest)
    }

    /// Starts writing a blob to a temporary file.
    pub(crate) async fn writer(&self) -> Result<BlobWriter, OciError> {
        let name = format!(
            "{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = self.tmp.join(name);
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(OciError::cache("create", &tmp))?;
        Ok(BlobWriter {
            file: Some(tokio::io::BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            hasher: Sha256::new(),
            len: 0,
            header: Vec::with_capacity(HEADER_LEN),
            digest: None,
        })
    }

    /// Moves a finished blob into place and returns its path. Does not evict: call
    /// [`BlobCache::evict`] once everything a fetch needs is in place.
    pub(crate) async fn commit(&self, mut writer: BlobWriter) -> Result<PathBuf, OciError> {
        let Some(digest) = writer.digest.clone() else {
            return Err(OciError::cache(
                "commit an unfinished download to",
                &writer.tmp,
            )(io::Error::other(
                "the download was not finished",
            )));
        };
        let hex = hex_of(&digest).to_owned();
        let path = self.blobs.join(&hex);
        tokio::fs::rename(&writer.tmp, &path)
            .await
            .map_err(OciError::cache("move a download into", &path))?;
        writer.committed();
        self.lock().insert(&hex, writer.len, true);
        Ok(path)
    }

    /// Deletes least recently used blobs, never those of `keep` (digests), until the cache
    /// fits its bound.
    pub(crate) async fn evict(&self, keep: &[&str]) {
        let keep: Vec<&str> = keep.iter().map(|d| hex_of(d)).collect();
        let victims = self.lock().evict(self.max_bytes, &keep);
        for hex in victims {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(digest = %format!("sha256:{hex}"), "evicting cached blob");
            // The index no longer has it; a file that cannot be removed only costs space.
            let _ = tokio::fs::remove_file(self.blobs.join(hex)).await;
        }
    }

    async fn forget(&self, hex: &str) {
        self.lock().remove(hex);
        let _ = tokio::fs::remove_file(self.blobs.join(hex)).await;
    }

    async fn touch(&self, hex: &str, path: &Path) {
        self.lock().touch(hex);
        // The modification time carries the use order across restarts; failing to set it
        // only makes that order less precise.
        let path = path.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()))
        })
        .await;
    }
}

/// A blob being written to a temporary file, hashed on the way. Dropping it before
/// [`BlobCache::commit`] deletes the temporary file.
#[derive(Debug)]
pub(crate) struct BlobWriter {
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    tmp: PathBuf,
    hasher: Sha256,
    len: u64,
    header: Vec<u8>,
    digest: Option<String>,
}

impl BlobWriter {
    /// Appends a chunk.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), OciError> {
        let Some(file) = self.file.as_mut() else {
            return Err(OciError::cache(
                "write to a finished download in",
                &self.tmp,
            )(io::Error::other(
                "the download was already finished",
            )));
        };
        if self.header.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.header.len()).min(chunk.len());
            self.header.extend_from_slice(&chunk[..take]);
        }
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        file.write_all(chunk)
            .await
            .map_err(OciError::cache("write", &self.tmp))
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The first bytes written (up to the WebAssembly preamble's length).
    pub(crate) fn header(&self) -> &[u8] {
        &self.header
    }

    /// Flushes and closes the file and returns the content's digest (`sha256:…`).
    pub(crate) async fn finish(&mut self) -> Result<String, OciError> {
        if let Some(mut file) = self.file.take() {
            file.flush()
                .await
                .map_err(OciError::cache("write", &self.tmp))?;
            let digest = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
            self.digest = Some(digest);
        }
        match &self.digest {
            Some(digest) => Ok(digest.clone()),
            None => Err(OciError::cache("finish", &self.tmp)(io::Error::other(
                "the download has no digest",
            ))),
        }
    }

    fn committed(&mut self) {
        self.tmp = PathBuf::new();
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            // An abandoned download; a leftover is also removed when the cache next opens.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The hex part of a `sha256:` digest (callers pass validated digests).
fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The sha256 (hex) and length of a file, off the reactor.
async fn hash_file(path: PathBuf) -> io::Result<(String, u64)> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let len = io::copy(&mut file, &mut hasher)?;
        Ok((hex::encode(hasher.finalize()), len))
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    #[tokio::test]
    async fn put_then_read_and_get() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
        let d = cache.put(b"hello").await.unwrap();
        assert_eq!(d, digest(b"hello"));
        assert_eq!(cache.read(&d).await.unwrap().unwrap(), b"hello");
        let path = cache.get(&d).await.unwrap().unwrap();
        assert_eq!(path, dir.path().join("blobs/sha256").join(hex_of(&d)));
        assert_eq!(std::fs::read(path).unwrap(), b"hello");
        assert_eq!(cache.total_bytes(), 5);
        assert!(
            std::fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[tokio::test]
    async fn absent_blob_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
        assert!(cache.get(&digest(b"x")).await.unwrap().is_none());
        assert!(cache.read(&digest(b"x")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn damaged_blob_found_at_startup_is_deleted_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let d = {
            let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
            cache.put(b"component bytes").await.unwrap()
        };
        let path = dir.path().join("blobs/sha256").join(hex_of(&d));
        std::fs::write(&path, b"tampered bytes!").unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
        assert!(cache.get(&d).await.unwrap().is_none());
        assert!(!path.exists());
        assert_eq!(cache.total_bytes(), 0);
    }

    #[tokio::test]
    async fn intact_blob_found_at_startup_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let d = {
            let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
            cache.put(b"component bytes").await.unwrap()
        };
        let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
        assert!(cache.get(&d).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn damaged_manifest_is_deleted_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
        let d = cache.put(b"{}").await.unwrap();
        std::fs::write(cache.path(&d), b"[]").unwrap();
        assert!(cache.read(&d).await.unwrap().is_none());
        assert!(!cache.path(&d).exists());
    }

    #[tokio::test]
    async fn eviction_removes_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 25).unwrap();
        let a = cache.put(&[b'a'; 10]).await.unwrap();
        let b = cache.put(&[b'b'; 10]).await.unwrap();
        // Using a makes b the least recently used.
        assert!(cache.get(&a).await.unwrap().is_some());
        let c = cache.put(&[b'c'; 10]).await.unwrap();
        cache.evict(&[&c]).await;
        assert!(cache.get(&b).await.unwrap().is_none());
        assert!(!cache.path(&b).exists());
        assert!(cache.get(&a).await.unwrap().is_some());
        assert!(cache.get(&c).await.unwrap().is_some());
        assert_eq!(cache.total_bytes(), 20);
        assert_eq!(cache.evictions(), 1);
    }

    #[tokio::test]
    async fn a_blob_larger_than_the_bound_is_kept_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 15).unwrap();
        let a = cache.put(&[b'a'; 10]).await.unwrap();
        let big = cache.put(&[b'b'; 20]).await.unwrap();
        cache.evict(&[&big]).await;
        assert!(cache.get(&a).await.unwrap().is_none());
        assert!(cache.get(&big).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn opening_with_a_smaller_bound_trims_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
            let a = cache.put(&[b'a'; 10]).await.unwrap();
            let b = cache.put(&[b'b'; 10]).await.unwrap();
            // Modification times order use across restarts; make a clearly older.
            let old = SystemTime::now() - std::time::Duration::from_secs(60);
            std::fs::File::open(cache.path(&a))
                .unwrap()
                .set_modified(old)
                .unwrap();
            (a, b)
        };
        let cache = BlobCache::open(dir.path(), 10).unwrap();
        assert!(cache.get(&a).await.unwrap().is_none());
        assert!(cache.get(&b).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn abandoned_download_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
        let mut writer = cache.writer().await.unwrap();
        writer.write(b"partial").await.unwrap();
        drop(writer);
        assert!(
            std::fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(
            std::fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .next()
                .is_none()
        );
    }
}
