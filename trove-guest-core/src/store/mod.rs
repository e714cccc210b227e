//! Snapshot storage: a narrow streaming trait and its implementations.
//!
//! A snapshot is written in two phases: [`SnapshotStore::put`] streams the data (hashing it as it
//! goes) into a hidden temporary object and returns a [`PendingUpload`]; only
//! [`PendingUpload::commit`] makes it visible, after the producer (the backup tool) has been
//! confirmed to have finished cleanly. Dropping a pending upload discards it.
//!
//! Reads ([`SnapshotStore::get`]) return a [`VerifyingReader`] that checks size and SHA-256 as the
//! data streams and fails at the end with an integrity error when either differs, so a consumer
//! that treats a read error as fatal never accepts a corrupt or truncated snapshot.

#[cfg(feature = "zstd")]
mod compress;
mod follow;
mod local;
#[cfg(feature = "object-store")]
mod object;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "object-store")]
mod segments;
mod stream;
mod sweep;
mod tail;
mod verify;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::progress::Progress;

#[cfg(feature = "zstd")]
pub use compress::ZstdSnapshotStore;
pub use follow::FollowOptions;
pub use local::{Durability, LocalSnapshotStore};
#[cfg(feature = "object-store")]
pub use object::ObjectSnapshotStore;
#[cfg(feature = "s3")]
pub use s3::S3Config;
pub use verify::{HashingReader, IntegrityFailure, VerifyingReader};

/// Size of the buffers used to move snapshot data (memory use is a small multiple of it).
pub const CHUNK_SIZE: usize = 1 << 20;

/// What the store records about a complete snapshot (its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Where the snapshot is.
    pub href: String,
    /// Exact size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// What a reader expects of a snapshot, usually from the snapshot document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Expected size in bytes.
    pub size: Option<u64>,
    /// Expected lowercase hex SHA-256.
    pub sha256: Option<String>,
}

/// An upload that has received all its data but is not visible yet.
#[async_trait]
pub trait PendingUpload: Send + fmt::Debug {
    /// Size and hash of what was streamed.
    fn snapshot(&self) -> &StoredSnapshot;

    /// Publishes the snapshot: from now on `get` finds it.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] / [`Error::Io`] when publishing fails (nothing is visible then).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancel can leave the data published without its manifest, which
    /// readers treat as absent.
    async fn commit(self: Box<Self>) -> Result<StoredSnapshot>;
}

/// A boxed snapshot byte stream.
pub type SnapshotRead = Box<dyn AsyncRead + Send + Unpin>;

/// Where snapshots live.
#[async_trait]
pub trait SnapshotStore: Send + Sync + fmt::Debug {
    /// Whether `href` names an object of this store (hrefs elsewhere are refused by agents).
    fn owns(&self, href: &str) -> bool;

    /// The href a snapshot named `name` gets once [`put`](Self::put) and
    /// [`commit`](PendingUpload::commit) stored it: callers use it to hand a snapshot to a
    /// replica before it is complete (see [`follow`](Self::follow)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad name.
    fn snapshot_href(&self, name: &str) -> Result<String>;

    /// Streams `data` to its end into a hidden object named after `name` and returns the
    /// pending upload. `name` must match `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad or taken name; [`Error::Io`] / [`Error::Store`] for
    /// write failures, including a read error from `data`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing becomes visible; temporary data is removed (or left invisible).
    async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>>;

    /// The manifest of a complete snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no complete snapshot at `href`; [`Error::InvalidInput`]
    /// for an href this store does not own.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn stat(&self, href: &str) -> Result<StoredSnapshot>;

    /// Opens a complete snapshot for reading, verified against its manifest and `expected`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`]; [`Error::Integrity`] when the manifest already disagrees with
    /// `expected`. Mismatches found while streaming surface as read errors (see
    /// [`IntegrityFailure`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn get(&self, href: &str, expected: &Expected) -> Result<VerifyingReader<SnapshotRead>>;

    /// Opens a snapshot that may still be uploading and reads it as it grows; the stream ends
    /// only after the upload committed, and it is verified (size and SHA-256) against the
    /// manifest published at commit and against `expected`, like [`get`](Self::get). An upload
    /// that is abandoned, or stalls longer than [`FollowOptions::stall_timeout`], fails the read.
    ///
    /// Stores that cannot read an object before it is complete (the default implementation)
    /// wait for the commit and then return [`get`](Self::get): correct, but without overlap.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when neither a complete snapshot nor an upload appears within
    /// [`FollowOptions::start_timeout`]; otherwise as [`get`](Self::get). Failures found while
    /// streaming (abandoned or stalled upload, mismatch) surface as read errors; map them with
    /// [`Error::from_read`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn follow(
        &self,
        href: &str,
        expected: &Expected,
        opts: &FollowOptions,
    ) -> Result<SnapshotRead> {
        follow::wait_then_get(self, href, expected, opts).await
    }

    /// Deletes a snapshot (manifest first, so it disappears atomically). Deleting a missing
    /// snapshot succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a foreign href; [`Error::Io`] / [`Error::Store`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a repeated call finishes the work.
    async fn delete(&self, href: &str) -> Result<()>;

    /// Removes what failed uploads left behind: temporary upload data whose uploader is
    /// provably gone (the local store: its lock is free; any age), and, when it last changed
    /// more than `older_than` ago, temporary data the store cannot prove abandoned and data
    /// without a manifest (a commit interrupted between publishing the data and writing the
    /// manifest: unreadable, and its name taken for good). Never touches a complete snapshot
    /// or a live upload; `older_than` keeps it off a commit in progress, so make it far longer
    /// than a commit takes (an hour, say). Returns the store-relative names of what it removed.
    ///
    /// The default removes nothing (a store with nothing to sweep, or that cannot tell).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] / [`Error::Store`] when listing or removing fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: each object is removed whole or not at all; a repeated call finishes the
    /// work.
    async fn sweep_incomplete(&self, older_than: Duration) -> Result<Vec<String>> {
        let _ = older_than;
        Ok(Vec::new())
    }
}

/// Checks a snapshot name.
///
/// # Errors
///
/// [`Error::InvalidInput`] unless `name` matches `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "snapshot name",
            format!("{name:?} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"),
        ))
    }
}

fn check_expected(href: &str, stored: &StoredSnapshot, expected: &Expected) -> Result<()> {
    if let Some(size) = expected.size
        && size != stored.size
    {
        return Err(Error::integrity(
            href,
            format!("expected {size} bytes, store holds {}", stored.size),
        ));
    }
    if let Some(h) = &expected.sha256
        && !h.eq_ignore_ascii_case(&stored.sha256)
    {
        return Err(Error::integrity(
            href,
            "expected SHA-256 differs from the store's manifest",
        ));
    }
    Ok(())
}
