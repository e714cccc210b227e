//! [`ZstdSnapshotStore`]: zstd compression of snapshots on their way into any other store.
//!
//! The wrapper is transparent to strategies: `put` takes the raw backup stream and `get` returns
//! it raw again, verified against the raw size and SHA-256 (what the snapshot document
//! carries). In the inner store a snapshot named `N` is two objects:
//!
//! * `N.zst`: the zstd stream (the inner store verifies it against its own manifest);
//! * `N`: a small JSON pointer naming `N.zst` with the compressed and the raw size and SHA-256.
//!   Its href is the snapshot's href.
//!
//! Compression runs as the data streams (no temporary copy); with `workers > 0` zstd compresses
//! on that many extra threads. A corrupt compressed stream fails the read with an
//! [`IntegrityFailure`], like any other mismatch.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::{ZstdDecoder, ZstdEncoder};
use async_compression::zstd::CParameter;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

use super::stream::ChunkCarver;
use super::{
    CHUNK_SIZE, Expected, FollowOptions, HashingReader, IntegrityFailure, PendingUpload,
    SnapshotRead, SnapshotStore, StoredSnapshot, VerifyingReader, check_expected,
    validate_snapshot_name,
};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Suffix of the compressed data object in the inner store.
const DATA_SUFFIX: &str = ".zst";
/// The pointer object's format tag.
const FORMAT: &str = "trove-guest-zstd/1";
/// Upper bound on a pointer object's size.
const POINTER_LIMIT: u64 = 64 * 1024;

/// The snapshot name in an href: the last path segment (the inner store checks the rest).
fn href_name(href: &str) -> Result<String> {
    let file = href.rsplit('/').next().unwrap_or_default();
    let name = file.strip_suffix(".snap").unwrap_or(file);
    validate_snapshot_name(name)?;
    Ok(name.to_owned())
}

/// The pointer object: where the compressed data is and what it decompresses to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pointer {
    format: String,
    data_href: String,
    stored_size: u64,
    stored_sha256: String,
    size: u64,
    sha256: String,
}

/// A [`SnapshotStore`] that compresses snapshots with zstd into an inner store.
#[derive(Debug, Clone)]
pub struct ZstdSnapshotStore {
    inner: Arc<dyn SnapshotStore>,
    level: i32,
    workers: u32,
}

impl ZstdSnapshotStore {
    /// Wraps `inner`, compressing at zstd level 1 on the calling thread.
    pub fn new(inner: Arc<dyn SnapshotStore>) -> Self {
        ZstdSnapshotStore {
            inner,
            level: 1,
            workers: 0,
        }
    }

    /// Sets the zstd level (1 = fastest, 19 = smallest; negative levels are faster still).
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Compresses on `n` extra threads (zstd's multithreaded mode); 0 compresses inline.
    pub fn with_workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }

    /// The store holding the compressed objects.
    pub fn inner(&self) -> &Arc<dyn SnapshotStore> {
        &self.inner
    }

    async fn pointer(&self, href: &str) -> Result<Pointer> {
        let reader = self.inner.get(href, &Expected::default()).await?;
        let mut bytes = Vec::new();
        reader
            .take(POINTER_LIMIT + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::from_read(format!("read snapshot pointer {href}"), e))?;
        if bytes.len() as u64 > POINTER_LIMIT {
            return Err(Error::integrity(
                href,
                "not a zstd snapshot pointer (too large)",
            ));
        }
        let p: Pointer = serde_json::from_slice(&bytes).map_err(|e| {
            Error::integrity(href, format!("unreadable zstd snapshot pointer: {e}"))
        })?;
        if p.format != FORMAT {
            return Err(Error::integrity(
                href,
                format!("unknown snapshot pointer format {:?}", p.format),
            ));
        }
        Ok(p)
    }
}

/// Both halves of an upload: the compressed data and its pointer, committed in that order.
#[derive(Debug)]
struct ZstdPending {
    data: Box<dyn PendingUpload>,
    pointer: Box<dyn PendingUpload>,
    inner: Arc<dyn SnapshotStore>,
    snapshot: StoredSnapshot,
}

#[async_trait]
impl PendingUpload for ZstdPending {
    fn snapshot(&self) -> &StoredSnapshot {
        &self.snapshot
    }

    async fn commit(self: Box<Self>) -> Result<StoredSnapshot> {
        let ZstdPending {
            data,
            pointer,
            inner,
            snapshot,
        } = *self;
        let data = data.commit().await?;
        if let Err(e) = pointer.commit().await {
            let _ = inner.delete(&data.href).await;
            return Err(e);
        }
        Ok(snapshot)
    }
}

/// Turns decoder errors into integrity failures (a corrupt stream is a damaged snapshot).
struct DecodeErrors<R> {
    inner: R,
    href: String,
}

impl<R: AsyncRead + Unpin> AsyncRead for DecodeErrors<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e))
                if e.get_ref()
                    .and_then(|r| r.downcast_ref::<IntegrityFailure>())
                    .is_none() =>
            {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    IntegrityFailure {
                        href: self.href.clone(),
                        reason: format!("zstd stream: {e}"),
                    },
                )))
            }
            other => other,
        }
    }
}

#[async_trait]
impl SnapshotStore for ZstdSnapshotStore {
    fn snapshot_href(&self, name: &str) -> Result<String> {
        self.inner.snapshot_href(name)
    }

    fn owns(&self, href: &str) -> bool {
        self.inner.owns(href)
    }

    async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>> {
        validate_snapshot_name(name)?;
        let data_name = format!("{name}{DATA_SUFFIX}");
        validate_snapshot_name(&data_name)?;
        let raw = HashingReader::new(data);
        let mut params = Vec::new();
        if self.workers > 0 {
            params.push(CParameter::nb_workers(self.workers));
        }
        let mut encoder = ZstdEncoder::with_quality_and_params(
            BufReader::with_capacity(CHUNK_SIZE, raw),
            Level::Precise(self.level),
            &params,
        );
        let stored = self.inner.put(&data_name, &mut encoder, progress).await?;
        let (size, sha256) = encoder.into_inner().into_inner().finish();
        let pointer = Pointer {
            format: FORMAT.to_owned(),
            data_href: stored.snapshot().href.clone(),
            stored_size: stored.snapshot().size,
            stored_sha256: stored.snapshot().sha256.clone(),
            size,
            sha256: sha256.clone(),
        };
        let json = serde_json::to_vec(&pointer).expect("pointer serializes");
        let pointer = self
            .inner
            .put(name, &mut json.as_slice(), &Progress::none())
            .await?;
        let snapshot = StoredSnapshot {
            href: pointer.snapshot().href.clone(),
            size,
            sha256,
        };
        Ok(Box::new(ZstdPending {
            data: stored,
            pointer,
            inner: self.inner.clone(),
            snapshot,
        }))
    }

    async fn stat(&self, href: &str) -> Result<StoredSnapshot> {
        let p = self.pointer(href).await?;
        Ok(StoredSnapshot {
            href: href.to_owned(),
            size: p.size,
            sha256: p.sha256,
        })
    }

    async fn get(&self, href: &str, expected: &Expected) -> Result<VerifyingReader<SnapshotRead>> {
        let p = self.pointer(href).await?;
        let raw = StoredSnapshot {
            href: href.to_owned(),
            size: p.size,
            sha256: p.sha256.clone(),
        };
        check_expected(href, &raw, expected)?;
        let data = self
            .inner
            .get(
                &p.data_href,
                &Expected {
                    size: Some(p.stored_size),
                    sha256: Some(p.stored_sha256.clone()),
                },
            )
            .await?;
        let mut decoder = ZstdDecoder::new(BufReader::with_capacity(CHUNK_SIZE, data));
        decoder.multiple_members(true);
        let reader: SnapshotRead = Box::new(DecodeErrors {
            inner: decoder,
            href: href.to_owned(),
        });
        Ok(VerifyingReader::new(reader, href, p.size, p.sha256))
    }

    /// Follows the compressed data in the inner store while it uploads (when the inner store
    /// can), decompressing and hashing as it lands; at its end waits (bounded by
    /// [`FollowOptions::stall_timeout`]) for the pointer the commit writes after the data, and
    /// ends the stream cleanly only when the pointer names the data followed and matches the
    /// raw size and SHA-256 of every byte read, and `expected`.
    async fn follow(
        &self,
        href: &str,
        expected: &Expected,
        opts: &FollowOptions,
    ) -> Result<SnapshotRead> {
        match self.pointer(href).await {
            Ok(_) => return Ok(Box::new(self.get(href, expected).await?)),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let name = href_name(href)?;
        if self.inner.snapshot_href(&name)? != href {
            return Err(Error::invalid(
                "snapshot href",
                format!("{href:?} is not this store's"),
            ));
        }
        let data_href = self.inner.snapshot_href(&format!("{name}{DATA_SUFFIX}"))?;
        let data = self
            .inner
            .follow(&data_href, &Expected::default(), opts)
            .await?;
        let mut decoder = ZstdDecoder::new(BufReader::with_capacity(CHUNK_SIZE, data));
        decoder.multiple_members(true);
        let mut decoded = DecodeErrors {
            inner: decoder,
            href: href.to_owned(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
        let this = self.clone();
        let href = href.to_owned();
        let expected = expected.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let fail = |reason: String| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    IntegrityFailure {
                        href: href.clone(),
                        reason,
                    },
                )
            };
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            let mut count = 0u64;
            let mut carver = ChunkCarver::new();
            loop {
                match decoded.read(carver.spare()).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let chunk = carver.take(n);
                        sha2::Digest::update(&mut hasher, &chunk);
                        count += n as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            let sha = hex::encode(sha2::Digest::finalize(hasher));
            // The data is committed; the pointer follows it.
            let deadline = crate::deadline::deadline(opts.stall_timeout);
            let mut backoff = crate::poll::Backoff::new(opts.poll_interval);
            let p = loop {
                match this.pointer(&href).await {
                    Ok(p) => break p,
                    Err(Error::NotFound { .. }) if backoff.tick(deadline).await => {}
                    Err(e) => {
                        let _ = tx
                            .send(Err(fail(format!("no pointer after the data: {e}"))))
                            .await;
                        return;
                    }
                }
            };
            let result = if p.data_href != data_href {
                Err(fail(
                    "the pointer names other data than the data followed".into(),
                ))
            } else if p.size != count || p.sha256 != sha {
                Err(fail(format!(
                    "decompressed {count} bytes that do not match the pointer's size and SHA-256"
                )))
            } else if expected.size.is_some_and(|s| s != count)
                || expected
                    .sha256
                    .as_ref()
                    .is_some_and(|h| !h.eq_ignore_ascii_case(&sha))
            {
                Err(fail(
                    "snapshot differs from the expected size or SHA-256".into(),
                ))
            } else {
                Ok(())
            };
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(
            stream,
        ))))
    }

    /// Sweeps the inner store (where the compressed data and the pointers live).
    async fn sweep_incomplete(&self, older_than: std::time::Duration) -> Result<Vec<String>> {
        self.inner.sweep_incomplete(older_than).await
    }

    async fn delete(&self, href: &str) -> Result<()> {
        let p = match self.pointer(href).await {
            Ok(p) => Some(p),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        // The pointer first: the snapshot disappears atomically.
        self.inner.delete(href).await?;
        if let Some(p) = p {
            self.inner.delete(&p.data_href).await?;
        }
        Ok(())
    }
}
