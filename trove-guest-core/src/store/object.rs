//! [`SnapshotStore`] over the `object_store` crate (S3, GCS, Azure, HTTP/WebDAV, memory).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use tokio::io::{AsyncRead, AsyncWriteExt as _};
use tokio_util::io::StreamReader;

use super::stream::UploadChunks;
use super::{
    Expected, FollowOptions, PendingUpload, SnapshotRead, SnapshotStore, StoredSnapshot,
    VerifyingReader, check_expected, validate_snapshot_name,
};
use crate::error::{Error, Result};
use crate::progress::Progress;

const DATA_SUFFIX: &str = ".snap";
/// Prefix of the temporary object an upload streams into before its commit.
const PARTIAL_PREFIX: &str = ".partial-";
const MANIFEST_SUFFIX: &str = ".snap.manifest.json";
/// Multipart part size (S3 needs at least 5 MiB per part but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once; memory use is about `PART_SIZE * (PART_CONCURRENCY + 1)`.
const PART_CONCURRENCY: usize = 2;
/// Manifests are a few hundred bytes; anything much larger is not ours.
const MAX_MANIFEST_BYTES: u64 = 64 << 10;

/// Snapshots as objects in an [`ObjectStore`], addressed by hrefs under a base URL.
///
/// Layout under the key prefix: `<name>.snap` (data) and `<name>.snap.manifest.json` (size and
/// SHA-256, written last). Uploads stream as a multipart upload (parts of 8 MiB, two in flight,
/// so memory stays constant whatever the size) into the hidden key `.partial-<name>-<random>`,
/// hashing as they go; [`PendingUpload::commit`] copies that object to its final key, removes the
/// temporary one and then writes the manifest. A snapshot without a manifest does not exist for
/// readers. Dropping a pending upload deletes its temporary object in the background (a process
/// killed mid-upload can leave a `.partial-*` object or unfinished multipart parts behind; a
/// bucket lifecycle rule should expire those).
///
/// Hrefs are `<base_url>/<name>.snap`; [`SnapshotStore::owns`] accepts exactly those.
#[derive(Debug, Clone)]
pub struct ObjectSnapshotStore {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) base_url: String,
    pub(super) prefix: ObjectPath,
    /// Segment size of the segmented layout (`None`: one object per snapshot).
    pub(super) segment_size: Option<usize>,
}

impl ObjectSnapshotStore {
    /// A store keeping snapshots in `store`, with hrefs under `base_url` (such as
    /// `s3://bucket/trove/snapshots` or `memory:///snapshots`).
    ///
    /// The key prefix inside `store` is the URL's path (as `object_store::parse_url` derives it:
    /// `trove/snapshots` and `snapshots` above); use
    /// [`ObjectSnapshotStore::with_key_prefix`] when the store is rooted differently.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `base_url` is not `scheme://authority/path` without query,
    /// fragment, whitespace or `.`/`..` segments.
    pub fn new(store: Arc<dyn ObjectStore>, base_url: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Error::invalid("object store base URL", format!("{base_url:?}: {reason}"))
        };
        let (scheme, rest) = base_url
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://authority/path"))?;
        let rest = rest.trim_end_matches('/');
        let base = format!("{scheme}://{rest}");
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'));
        if !scheme_ok {
            return Err(bad("invalid scheme"));
        }
        if rest
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            || rest.contains(['?', '#', '\\'])
        {
            return Err(bad("query, fragment, backslash or whitespace not allowed"));
        }
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        let prefix = Self::parse_prefix(path).map_err(|r| bad(&r))?;
        Ok(ObjectSnapshotStore {
            store,
            base_url: base,
            prefix,
            segment_size: None,
        })
    }

    /// Uses `prefix` (`a/b/c`, may be empty) as the key prefix inside the store instead of the
    /// base URL's path. Hrefs are unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for empty, `.` or `..` segments or characters object stores
    /// do not allow.
    pub fn with_key_prefix(mut self, prefix: &str) -> Result<Self> {
        self.prefix = Self::parse_prefix(prefix)
            .map_err(|r| Error::invalid("object store key prefix", format!("{prefix:?}: {r}")))?;
        Ok(self)
    }

    fn parse_prefix(path: &str) -> std::result::Result<ObjectPath, String> {
        let path = path.trim_matches('/');
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err("'.' and '..' segments are not allowed".into());
        }
        ObjectPath::parse(path).map_err(|e| e.to_string())
    }

    /// Uploads in segments of `segment_size` bytes (at least 1 MiB) that a replica can read
    /// while the upload runs ([`SnapshotStore::follow`]); see the type's documentation. Reading
    /// understands both layouts whatever this is set to. [`ObjectSnapshotStore::s3`] turns it
    /// on with [`ObjectSnapshotStore::DEFAULT_SEGMENT_SIZE`].
    pub fn with_segments(mut self, segment_size: usize) -> Self {
        self.segment_size = Some(segment_size.max(super::CHUNK_SIZE));
        self
    }

    /// The segment size [`ObjectSnapshotStore::s3`] uses: 4 MiB (one filling and two in flight
    /// while uploading, one prefetched while reading, so an agent holding both sides stays well
    /// under 64 MiB whatever the snapshot's size).
    pub const DEFAULT_SEGMENT_SIZE: usize = 4 << 20;

    /// The object store underneath (for tests and tools that inspect what is stored).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The base URL hrefs start with (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The key prefix inside the object store (`""` for the root).
    pub fn key_prefix(&self) -> &str {
        self.prefix.as_ref()
    }

    /// The href of a snapshot named `name` in this store.
    pub fn href_for(&self, name: &str) -> String {
        format!("{}/{name}{DATA_SUFFIX}", self.base_url)
    }

    /// The snapshot name behind an href this store owns.
    fn name_of<'a>(&self, href: &'a str) -> Result<&'a str> {
        let bad = |reason: &str| Error::invalid("snapshot href", format!("{href:?}: {reason}"));
        let rest = href
            .strip_prefix(self.base_url.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| bad("outside this snapshot store"))?;
        let name = rest
            .strip_suffix(DATA_SUFFIX)
            .ok_or_else(|| bad("not a snapshot object"))?;
        validate_snapshot_name(name).map_err(|_| bad("not a snapshot name of this store"))?;
        Ok(name)
    }

    fn key(&self, file: &str) -> ObjectPath {
        // `file` is built from a validated snapshot name: always a single valid path part.
        self.prefix.child(file)
    }

    fn data_key(&self, name: &str) -> ObjectPath {
        self.key(&format!("{name}{DATA_SUFFIX}"))
    }

    fn manifest_key(&self, name: &str) -> ObjectPath {
        self.key(&format!("{name}{MANIFEST_SUFFIX}"))
    }

    pub(super) fn parts_dir(&self, name: &str) -> ObjectPath {
        self.key(&format!("{name}{}", super::segments::PARTS_SUFFIX))
    }

    pub(super) fn upload_dir(&self, m: &super::segments::SegmentedManifest) -> ObjectPath {
        let name = self.name_of(&m.href).unwrap_or_default();
        self.parts_dir(name).child(m.upload.as_str())
    }

    /// The segmented manifest of `href` (`None` when the snapshot is one object).
    pub(super) async fn read_segmented_manifest(
        &self,
        href: &str,
    ) -> Result<Option<super::segments::SegmentedManifest>> {
        Ok(self.read_manifests(href).await?.1)
    }

    async fn read_manifest(&self, href: &str) -> Result<StoredSnapshot> {
        Ok(self.read_manifests(href).await?.0)
    }

    async fn read_manifests(
        &self,
        href: &str,
    ) -> Result<(StoredSnapshot, Option<super::segments::SegmentedManifest>)> {
        let name = self.name_of(href)?;
        let key = self.manifest_key(name);
        let got = match self.store.get(&key).await {
            Ok(g) => g,
            Err(e @ object_store::Error::NotFound { .. }) => {
                #[cfg(feature = "s3")]
                if let Some(problem) = super::s3::classify(&e) {
                    return Err(Error::StoreAccess {
                        problem,
                        message: format!("read manifest {key}"),
                        source: Some(Box::new(e)),
                    });
                }
                let _ = e;
                return Err(Error::NotFound {
                    what: format!("snapshot {href}"),
                });
            }
            Err(e) => return Err(store_error(format!("read manifest {key}"), e)),
        };
        if got.meta.size > MAX_MANIFEST_BYTES {
            return Err(Error::integrity(href, "manifest is too large"));
        }
        let bytes = got
            .bytes()
            .await
            .map_err(|e| store_error(format!("read manifest {key}"), e))?;
        let m: StoredSnapshot = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity(href, format!("unreadable manifest: {e}")))?;
        if m.href != href {
            return Err(Error::integrity(href, "manifest names another snapshot"));
        }
        let seg = if serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("segments").cloned())
            .is_some()
        {
            let sm: super::segments::SegmentedManifest = serde_json::from_slice(&bytes)
                .map_err(|e| Error::integrity(href, format!("unreadable manifest: {e}")))?;
            let total: u64 = sm.segments.iter().map(|s| s.size).sum();
            if total != sm.size || crate::store::validate_snapshot_name(&sm.upload).is_err() {
                return Err(Error::integrity(href, "manifest's segments do not add up"));
            }
            Some(sm)
        } else {
            None
        };
        Ok((m, seg))
    }
}

async fn write_manifest(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    href: &str,
    json: Vec<u8>,
) -> Result<()> {
    let payload = PutPayload::from(Bytes::from(json));
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(key, payload.clone(), create).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
            // Stores without conditional writes: the caller's head check has to do.
            store
                .put(key, payload)
                .await
                .map(|_| ())
                .map_err(|e| store_error(format!("write {key}"), e))
        }
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Err(Error::invalid(
            "snapshot name",
            format!("{href} was committed concurrently"),
        )),
        Err(e) => Err(store_error(format!("write {key}"), e)),
    }
}

async fn refuse_existing(
    store: &Arc<dyn ObjectStore>,
    manifest: &ObjectPath,
    href: &str,
) -> Result<()> {
    match store.head(manifest).await {
        Ok(_) => Err(Error::invalid(
            "snapshot name",
            format!("{href} already exists"),
        )),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(store_error(format!("check {manifest}"), e)),
    }
}

pub(super) fn store_error(message: String, e: object_store::Error) -> Error {
    #[cfg(feature = "s3")]
    let e = match super::s3::access_error(&message, e) {
        Ok(access) => return access,
        Err(e) => e,
    };
    Error::Store {
        message,
        source: Some(Box::new(e)),
    }
}

pub(super) fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Deletes a temporary object in the background unless disarmed (cancel safety of `put`).
#[derive(Debug)]
struct TempObject {
    store: Arc<dyn ObjectStore>,
    key: Option<ObjectPath>,
}

impl TempObject {
    fn disarm(&mut self) -> Option<ObjectPath> {
        self.key.take()
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let store = Arc::clone(&self.store);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    match store.delete(&key).await {
                        Ok(()) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "could not remove partial snapshot")
                        }
                    }
                });
            } else {
                tracing::warn!(%key, "no runtime to remove partial snapshot");
            }
        }
    }
}

#[derive(Debug)]
struct ObjectPending {
    temp: TempObject,
    data: ObjectPath,
    manifest: ObjectPath,
    snapshot: StoredSnapshot,
}

#[async_trait]
impl PendingUpload for ObjectPending {
    fn snapshot(&self) -> &StoredSnapshot {
        &self.snapshot
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredSnapshot> {
        let store = Arc::clone(&self.temp.store);
        let href = self.snapshot.href.clone();
        refuse_existing(&store, &self.manifest, &href).await?;
        let temp = self
            .temp
            .key
            .clone()
            .expect("pending upload has its temporary object");
        // Overwrites a data object left by an earlier, interrupted commit (it has no manifest,
        // so nobody can be reading it).
        store
            .copy(&temp, &self.data)
            .await
            .map_err(|e| store_error(format!("copy {temp} to {}", self.data), e))?;
        self.temp.disarm();
        if let Err(e) = store.delete(&temp).await
            && !is_not_found(&e)
        {
            tracing::warn!(key = %temp, error = %e, "could not remove partial snapshot");
        }
        let json = serde_json::to_vec_pretty(&self.snapshot).expect("manifest serializes");
        write_manifest(&store, &self.manifest, &href, json).await?;
        Ok(self.snapshot.clone())
    }
}

/// Removes a segmented upload in the background unless disarmed.
#[derive(Debug)]
struct UploadGuard {
    store: Arc<dyn ObjectStore>,
    dir: Option<ObjectPath>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let store = Arc::clone(&self.store);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { super::segments::abort_upload(&store, &dir).await });
            } else {
                tracing::warn!(key = %dir, "no runtime to remove an abandoned upload");
            }
        }
    }
}

#[derive(Debug)]
struct SegmentedPending {
    guard: UploadGuard,
    manifest_key: ObjectPath,
    manifest: super::segments::SegmentedManifest,
    snapshot: StoredSnapshot,
}

#[async_trait]
impl PendingUpload for SegmentedPending {
    fn snapshot(&self) -> &StoredSnapshot {
        &self.snapshot
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredSnapshot> {
        let store = Arc::clone(&self.guard.store);
        let href = self.snapshot.href.clone();
        refuse_existing(&store, &self.manifest_key, &href).await?;
        let json = serde_json::to_vec_pretty(&self.manifest).expect("manifest serializes");
        write_manifest(&store, &self.manifest_key, &href, json).await?;
        self.guard.dir = None;
        Ok(self.snapshot.clone())
    }
}

impl ObjectSnapshotStore {
    async fn put_segmented(
        &self,
        name: &str,
        segment_size: usize,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>> {
        use super::segments::{SEGMENTS_IN_FLIGHT, SegmentInfo, SegmentedManifest, segment_key};
        use futures::StreamExt as _;
        let href = self.href_for(name);
        let upload = crate::secret::Secret::random(12).expose().to_owned();
        let dir = self.parts_dir(name).child(upload.as_str());
        let mut guard = UploadGuard {
            store: Arc::clone(&self.store),
            dir: Some(dir.clone()),
        };
        let mut chunks = UploadChunks::new(data, name, progress);
        let mut segments = Vec::new();
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut buf: Vec<u8> = Vec::with_capacity(segment_size);
        let mut done = false;
        while !done {
            match chunks.next().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => done = true,
            }
            if buf.len() >= segment_size || (done && (!buf.is_empty() || segments.is_empty())) {
                let seg = std::mem::replace(&mut buf, Vec::with_capacity(segment_size));
                let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&seg));
                let key = segment_key(&dir, segments.len(), &sha);
                segments.push(SegmentInfo {
                    size: seg.len() as u64,
                    sha256: sha,
                });
                let store = Arc::clone(&self.store);
                // Spawned, so a segment lands while the next one fills.
                in_flight.push_back(tokio::spawn(async move {
                    store
                        .put(&key, PutPayload::from(Bytes::from(seg)))
                        .await
                        .map_err(|e| store_error(format!("upload {key}"), e))
                }));
                while in_flight.len() >= SEGMENTS_IN_FLIGHT || (done && !in_flight.is_empty()) {
                    in_flight
                        .next()
                        .await
                        .expect("not empty")
                        .map_err(|e| Error::Store {
                            message: format!("segment upload task failed: {e}"),
                            source: None,
                        })??;
                }
            }
        }
        let (size, sha256) = chunks.finish();
        let snapshot = StoredSnapshot {
            href: href.clone(),
            size,
            sha256: sha256.clone(),
        };
        let manifest = SegmentedManifest {
            href,
            size,
            sha256,
            upload,
            segments,
        };
        let pending = SegmentedPending {
            guard: UploadGuard {
                store: Arc::clone(&self.store),
                dir: guard.dir.take(),
            },
            manifest_key: self.manifest_key(name),
            manifest,
            snapshot,
        };
        Ok(Box::new(pending))
    }
}

#[async_trait]
impl SnapshotStore for ObjectSnapshotStore {
    fn snapshot_href(&self, name: &str) -> Result<String> {
        validate_snapshot_name(name)?;
        Ok(self.href_for(name))
    }

    fn owns(&self, href: &str) -> bool {
        self.name_of(href).is_ok()
    }

    async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>> {
        validate_snapshot_name(name)?;
        if let Some(segment_size) = self.segment_size {
            return self.put_segmented(name, segment_size, data, progress).await;
        }
        let href = self.href_for(name);
        let temp_key = self.key(&format!(
            "{PARTIAL_PREFIX}{name}-{}",
            crate::secret::Secret::random(12).expose()
        ));
        let mut writer =
            BufWriter::with_capacity(Arc::clone(&self.store), temp_key.clone(), PART_SIZE)
                .with_max_concurrency(PART_CONCURRENCY);
        let mut chunks = UploadChunks::new(data, name, progress);
        let streamed: Result<()> = async {
            while let Some(chunk) = chunks.next().await? {
                writer
                    .put(Bytes::from(chunk))
                    .await
                    .map_err(|e| store_error(format!("upload {temp_key}"), e))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key = %temp_key, error = %abort, "could not abort multipart upload");
            }
            return Err(e);
        }
        // From here on a temporary object may exist: remove it if we fail or are cancelled.
        let temp = TempObject {
            store: Arc::clone(&self.store),
            key: Some(temp_key.clone()),
        };
        writer.shutdown().await.map_err(|e| {
            let message = format!("complete upload {temp_key}");
            match e.downcast::<object_store::Error>() {
                Ok(e) => store_error(message, e),
                Err(e) => Error::Store {
                    message,
                    source: Some(Box::new(e)),
                },
            }
        })?;
        let (size, sha256) = chunks.finish();
        Ok(Box::new(ObjectPending {
            temp,
            data: self.data_key(name),
            manifest: self.manifest_key(name),
            snapshot: StoredSnapshot { href, size, sha256 },
        }))
    }

    async fn stat(&self, href: &str) -> Result<StoredSnapshot> {
        self.read_manifest(href).await
    }

    async fn get(&self, href: &str, expected: &Expected) -> Result<VerifyingReader<SnapshotRead>> {
        let (m, segmented) = self.read_manifests(href).await?;
        check_expected(href, &m, expected)?;
        if let Some(sm) = segmented {
            let reader = super::segments::read_complete(self, sm, false);
            return Ok(VerifyingReader::new(reader, href, m.size, m.sha256));
        }
        let key = self.data_key(self.name_of(href)?);
        let got = match self.store.get(&key).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => {
                return Err(Error::integrity(
                    href,
                    "manifest present but data object missing",
                ));
            }
            Err(e) => return Err(store_error(format!("read {key}"), e)),
        };
        if got.meta.size != m.size {
            return Err(Error::integrity(
                href,
                format!(
                    "store holds {} bytes, manifest says {}",
                    got.meta.size, m.size
                ),
            ));
        }
        let stream = got.into_stream().map_err(std::io::Error::other);
        let reader: SnapshotRead = Box::new(StreamReader::new(stream));
        Ok(VerifyingReader::new(reader, href, m.size, m.sha256))
    }

    /// Lists the key prefix and deletes, when last modified more than `older_than` ago,
    /// temporary upload objects (`.partial-*`, left by a process killed between the upload
    /// and its commit), data objects without a manifest, and the segments of uploads no
    /// manifest names (`<name>.snap.parts/<upload>`; an upload marked aborted goes after a
    /// minute). Segmented uploads leave no multipart parts; the single-object layout's
    /// unfinished multipart parts are not listed by object stores, so a bucket lifecycle rule
    /// has to expire those. Returns the keys' store-relative names.
    async fn sweep_incomplete(&self, older_than: std::time::Duration) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| store_error(format!("list {}", self.prefix), e))?;
        let files: std::collections::HashSet<String> = listed
            .objects
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_owned))
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut removed = Vec::new();
        for meta in &listed.objects {
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let modified = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
            if now.saturating_sub(modified) < older_than.as_secs() {
                continue;
            }
            let incomplete = file.starts_with(PARTIAL_PREFIX)
                || (file.ends_with(DATA_SUFFIX)
                    && !files
                        .contains(&format!("{file}{}", &MANIFEST_SUFFIX[DATA_SUFFIX.len()..])));
            if !incomplete {
                continue;
            }
            match self.store.delete(&meta.location).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(store_error(format!("delete {}", meta.location), e)),
            }
            tracing::info!(key = %meta.location, "removed an incomplete upload from the snapshot store");
            removed.push(file.to_owned());
        }
        for dir in &listed.common_prefixes {
            let Some(file) = dir.filename() else { continue };
            let Some(name) = file.strip_suffix(super::segments::PARTS_SUFFIX) else {
                continue;
            };
            let live = match self.read_segmented_manifest(&self.href_for(name)).await {
                Ok(m) => m.map(|m| m.upload),
                Err(Error::NotFound { .. } | Error::InvalidInput { .. }) => None,
                Err(e) => return Err(e),
            };
            let uploads = self
                .store
                .list_with_delimiter(Some(dir))
                .await
                .map_err(|e| store_error(format!("list {dir}"), e))?;
            for upload in uploads.common_prefixes {
                let id = upload.filename().unwrap_or_default().to_owned();
                if live.as_deref() == Some(id.as_str()) {
                    continue;
                }
                let (newest, aborted) =
                    super::segments::newest_and_aborted(&self.store, &upload).await?;
                let old = now.saturating_sub(newest) >= older_than.as_secs();
                if !(old || aborted && now.saturating_sub(newest) >= 60) {
                    continue;
                }
                super::segments::remove_prefix(&self.store, &upload, true).await;
                tracing::info!(key = %upload, "removed an incomplete upload from the snapshot store");
                removed.push(format!("{file}/{id}"));
            }
        }
        removed.sort();
        Ok(removed)
    }

    async fn delete(&self, href: &str) -> Result<()> {
        let name = self.name_of(href)?;
        for key in [self.manifest_key(name), self.data_key(name)] {
            match self.store.delete(&key).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(store_error(format!("delete {key}"), e)),
            }
        }
        super::segments::remove_prefix(&self.store, &self.parts_dir(name), true).await;
        Ok(())
    }

    /// Segmented stores ([`ObjectSnapshotStore::with_segments`], S3) read an upload's segments
    /// as they land, each checked against the SHA-256 in its key, and end the stream only when
    /// the manifest written at commit names that upload and matches every byte read; a
    /// single-object store waits for the commit.
    async fn follow(
        &self,
        href: &str,
        expected: &Expected,
        opts: &FollowOptions,
    ) -> Result<SnapshotRead> {
        if self.segment_size.is_none() {
            return super::follow::wait_then_get(self, href, expected, opts).await;
        }
        let name = self.name_of(href)?.to_owned();
        let deadline = crate::deadline::deadline(opts.start_timeout);
        let mut backoff =
            crate::poll::Backoff::new(opts.poll_interval.max(std::time::Duration::from_millis(5)));
        loop {
            match self.read_manifest(href).await {
                Ok(_) => return Ok(Box::new(self.get(href, expected).await?)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if let Some(r) =
                super::segments::follow_upload(self, &name, href, expected, opts).await?
            {
                return Ok(r);
            }
            if !backoff.tick(deadline).await {
                return Err(Error::NotFound {
                    what: format!(
                        "snapshot {href} (neither complete nor uploading after {:?})",
                        opts.start_timeout
                    ),
                });
            }
        }
    }
}
