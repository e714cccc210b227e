//! [`ObjectSnapshotStore`]'s segmented layout: an upload published in parts a follower can read,
//! verify and hand on while the upload runs (the model is Swift's segments plus a manifest).
//!
//! An upload gets a random id and writes its data as plain objects
//! `<name>.snap.parts/<upload>/<seq>-<sha256>` (`seq` zero-padded, each segment's SHA-256 in its
//! key), a few in flight at once. The key is the progress record: a follower lists the upload's
//! keys after the last one it read, fetches the next segment in order and checks it against the
//! hash in its key before handing it on. The commit writes the manifest last, naming the upload
//! and every segment's hash, with the whole snapshot's size and SHA-256; a follower's stream ends
//! cleanly only when that manifest names the upload it read and matches every byte it read. An
//! upload that fails writes `<upload>/aborted` and removes its segments; a follower that sees the
//! marker fails at once, one that sees nothing new for `stall_timeout` fails then.
//!
//! Segments are single PUTs: nothing is left as an invisible multipart upload, commit copies
//! nothing (no server-side copy, no 5 GiB copy limit), and `sweep_incomplete` finds every
//! leftover by listing.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::object::{ObjectSnapshotStore, is_not_found, store_error};
use super::{Expected, FollowOptions, IntegrityFailure, SnapshotRead};

/// Segments in flight at once while uploading.
pub(super) const SEGMENTS_IN_FLIGHT: usize = 2;
use crate::error::{Error, Result};

pub(super) const PARTS_SUFFIX: &str = ".snap.parts";
const ABORTED: &str = "aborted";

/// The manifest of a segmented snapshot: the [`StoredSnapshot`] fields plus the parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SegmentedManifest {
    pub(super) href: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    /// The upload whose segments hold the data.
    pub(super) upload: String,
    /// Each segment's size and SHA-256, in order.
    pub(super) segments: Vec<SegmentInfo>,
}

/// One segment of a segmented snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct SegmentInfo {
    pub(super) size: u64,
    pub(super) sha256: String,
}

/// Key of segment `seq` with hash `sha256` under `upload_dir`.
pub(super) fn segment_key(upload_dir: &ObjectPath, seq: usize, sha256: &str) -> ObjectPath {
    upload_dir.child(format!("{seq:08}-{sha256}"))
}

/// `(seq, sha256)` of a segment key's file name.
fn parse_segment(file: &str) -> Option<(usize, &str)> {
    let (seq, sha) = file.split_once('-')?;
    if seq.len() != 8 || sha.len() != 64 {
        return None;
    }
    Some((seq.parse().ok()?, sha))
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Removes an upload's objects, after marking it aborted for followers (best effort).
pub(super) async fn abort_upload(store: &Arc<dyn ObjectStore>, upload_dir: &ObjectPath) {
    let marker = upload_dir.child(ABORTED);
    if let Err(e) = store.put(&marker, PutPayload::from_static(b"")).await {
        tracing::warn!(key = %marker, error = %e, "could not mark an upload aborted");
    }
    remove_prefix(store, upload_dir, false).await;
}

/// The newest modification (seconds since the epoch) under an upload's dir, and whether it is
/// marked aborted.
pub(super) async fn newest_and_aborted(
    store: &Arc<dyn ObjectStore>,
    dir: &ObjectPath,
) -> Result<(u64, bool)> {
    let mut l = store.list(Some(dir));
    let (mut newest, mut aborted) = (0u64, false);
    while let Some(m) = l.next().await {
        let m = m.map_err(|e| store_error(format!("list {dir}"), e))?;
        aborted |= m.location.filename() == Some(ABORTED);
        newest = newest.max(u64::try_from(m.last_modified.timestamp()).unwrap_or(0));
    }
    Ok((newest, aborted))
}

/// Deletes everything under `dir` (keeping the `aborted` marker unless `all`).
pub(super) async fn remove_prefix(store: &Arc<dyn ObjectStore>, dir: &ObjectPath, all: bool) {
    let mut listed = store.list(Some(dir));
    let mut keys = Vec::new();
    while let Some(m) = listed.next().await {
        match m {
            Ok(m) => keys.push(m.location),
            Err(e) => {
                tracing::warn!(key = %dir, error = %e, "could not list an upload to remove it");
                return;
            }
        }
    }
    for k in keys {
        if !all && k.filename() == Some(ABORTED) {
            continue;
        }
        match store.delete(&k).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(key = %k, error = %e, "could not remove a segment"),
        }
    }
}

/// Reads a whole segment and checks its size and hash.
async fn fetch_segment(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    href: &str,
    sha256: Option<&str>,
    size: Option<u64>,
) -> std::result::Result<Bytes, std::io::Error> {
    let got = store.get(key).await.map_err(|e| {
        if is_not_found(&e) {
            integrity(href, format!("segment {key} is missing"))
        } else {
            std::io::Error::other(store_error(format!("read {key}"), e))
        }
    })?;
    let bytes = got
        .bytes()
        .await
        .map_err(|e| std::io::Error::other(store_error(format!("read {key}"), e)))?;
    if let Some(size) = size
        && bytes.len() as u64 != size
    {
        return Err(integrity(
            href,
            format!(
                "segment {key} holds {} bytes, manifest says {size}",
                bytes.len()
            ),
        ));
    }
    if let Some(sha256) = sha256
        && sha_hex(&bytes) != sha256
    {
        return Err(integrity(
            href,
            format!("segment {key} does not match its SHA-256"),
        ));
    }
    Ok(bytes)
}

fn integrity(href: &str, reason: impl Into<String>) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        IntegrityFailure {
            href: href.to_owned(),
            reason: reason.into(),
        },
    )
}

type Chunk = std::result::Result<Bytes, std::io::Error>;

fn reader_from(rx: mpsc::Receiver<Chunk>) -> SnapshotRead {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

/// Final check of what was read against the manifest and the caller's expectation.
fn check_whole(
    href: &str,
    m: &SegmentedManifest,
    expected: &Expected,
    count: u64,
    sha: &str,
) -> std::result::Result<(), std::io::Error> {
    if count != m.size || sha != m.sha256 {
        return Err(integrity(
            href,
            format!("read {count} bytes that do not match the manifest's size and SHA-256"),
        ));
    }
    if expected.size.is_some_and(|s| s != count)
        || expected
            .sha256
            .as_ref()
            .is_some_and(|h| !h.eq_ignore_ascii_case(sha))
    {
        return Err(integrity(
            href,
            "snapshot differs from the expected size or SHA-256",
        ));
    }
    Ok(())
}

/// A complete segmented snapshot as a stream of its segments in order, each checked for its
/// size (and, with `verify_parts`, its SHA-256: the caller's [`super::VerifyingReader`] checks
/// the whole anyway), one segment prefetched.
pub(super) fn read_complete(
    store: &ObjectSnapshotStore,
    m: SegmentedManifest,
    verify_parts: bool,
) -> SnapshotRead {
    let inner = Arc::clone(&store.store);
    let dir = store.upload_dir(&m);
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    tokio::spawn(async move {
        let href = m.href.clone();
        let mut next = None;
        for (i, seg) in m.segments.iter().enumerate() {
            let fetch = |i: usize, seg: &SegmentInfo| {
                let inner = Arc::clone(&inner);
                let key = segment_key(&dir, i, &seg.sha256);
                let href = href.clone();
                let seg = seg.clone();
                tokio::spawn(async move {
                    let sha = verify_parts.then_some(seg.sha256.as_str());
                    fetch_segment(&inner, &key, &href, sha, Some(seg.size)).await
                })
            };
            let current = next.take().unwrap_or_else(|| fetch(i, seg));
            if let Some(s) = m.segments.get(i + 1) {
                next = Some(fetch(i + 1, s));
            }
            let got = match current.await {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(e)),
            };
            match got {
                Ok(bytes) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    reader_from(rx)
}

/// Follows the newest upload of `name` (whose dir is `parts_dir`), or returns `None` when there
/// is none yet.
pub(super) async fn follow_upload(
    store: &ObjectSnapshotStore,
    name: &str,
    href: &str,
    expected: &Expected,
    opts: &FollowOptions,
) -> Result<Option<SnapshotRead>> {
    let parts_dir = store.parts_dir(name);
    let listed = store
        .store
        .list_with_delimiter(Some(&parts_dir))
        .await
        .map_err(|e| store_error(format!("list {parts_dir}"), e))?;
    // Each upload is a common prefix; pick the one with the newest segment.
    let mut newest: Option<(i64, ObjectPath)> = None;
    for dir in listed.common_prefixes {
        let mut l = store.store.list(Some(&dir));
        let mut latest = None;
        let mut aborted = false;
        while let Some(m) = l.next().await {
            let m = m.map_err(|e| store_error(format!("list {dir}"), e))?;
            if m.location.filename() == Some(ABORTED) {
                aborted = true;
                break;
            }
            let ts = m.last_modified.timestamp_millis();
            latest = Some(latest.map_or(ts, |l: i64| l.max(ts)));
        }
        if aborted {
            continue;
        }
        if let Some(ts) = latest
            && newest.as_ref().is_none_or(|(n, _)| ts > *n)
        {
            newest = Some((ts, dir));
        }
    }
    let Some((_, upload_dir)) = newest else {
        return Ok(None);
    };
    let upload = upload_dir.filename().unwrap_or_default().to_owned();
    tracing::debug!(upload = %upload_dir, "following an object store upload in progress");
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let tail = Tail {
        store: store.clone(),
        name: name.to_owned(),
        href: href.to_owned(),
        upload,
        upload_dir,
        expected: expected.clone(),
        opts: opts.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = tail.run(&tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(Some(reader_from(rx)))
}

struct Tail {
    store: ObjectSnapshotStore,
    name: String,
    href: String,
    upload: String,
    upload_dir: ObjectPath,
    expected: Expected,
    opts: FollowOptions,
}

impl Tail {
    async fn run(self, tx: &mpsc::Sender<Chunk>) -> std::result::Result<(), std::io::Error> {
        let inner = Arc::clone(&self.store.store);
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        let mut seq = 0usize;
        let mut last_key: Option<ObjectPath> = None;
        let mut stall = crate::deadline::deadline(self.opts.stall_timeout);
        let mut backoff = crate::poll::Backoff::new(self.opts.poll_interval);
        loop {
            // New keys after the last segment read, in key order.
            let mut l = match &last_key {
                Some(k) => inner.list_with_offset(Some(&self.upload_dir), k),
                None => inner.list(Some(&self.upload_dir)),
            };
            let mut found = Vec::new();
            while let Some(m) = l.next().await {
                let m = m.map_err(|e| {
                    std::io::Error::other(store_error(format!("list {}", self.upload_dir), e))
                })?;
                found.push(m.location);
            }
            found.sort();
            let mut progressed = false;
            for key in found {
                let file = key.filename().unwrap_or_default();
                if file == ABORTED {
                    return Err(integrity(&self.href, "the upload was abandoned"));
                }
                let Some((s, sha)) = parse_segment(file) else {
                    continue;
                };
                if s != seq {
                    break; // a later segment landed first; wait for this one
                }
                let bytes = fetch_segment(&inner, &key, &self.href, Some(sha), None).await?;
                hasher.update(&bytes);
                count += bytes.len() as u64;
                if let Some(limit) = self.expected.size
                    && count > limit
                {
                    return Err(integrity(
                        &self.href,
                        format!("more than the expected {limit} bytes"),
                    ));
                }
                if tx.send(Ok(bytes)).await.is_err() {
                    return Ok(());
                }
                seq += 1;
                last_key = Some(key.clone());
                progressed = true;
            }
            if progressed {
                stall = crate::deadline::deadline(self.opts.stall_timeout);
                backoff = crate::poll::Backoff::new(self.opts.poll_interval);
                continue;
            }
            // Nothing new: committed?
            match self.store.read_segmented_manifest(&self.href).await {
                Ok(Some(m)) => {
                    if m.upload != self.upload {
                        return Err(integrity(
                            &self.href,
                            "committed from another upload than the one followed",
                        ));
                    }
                    if m.segments.len() == seq {
                        let sha = hex::encode(hasher.finalize());
                        return check_whole(&self.href, &m, &self.expected, count, &sha);
                    }
                    // Listing lags the manifest: look again.
                }
                Ok(None) => {}
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(std::io::Error::other(e)),
            }
            if !backoff.tick(stall).await {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    Error::timeout(
                        format!("the upload of {} to grow", self.name),
                        self.opts.stall_timeout,
                    ),
                ));
            }
        }
    }
}
