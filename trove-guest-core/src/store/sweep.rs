//! [`SnapshotStore::sweep_incomplete`](super::SnapshotStore::sweep_incomplete) for
//! [`LocalSnapshotStore`](super::LocalSnapshotStore): what crashed uploads and interrupted
//! commits leave in the store's directory.

use std::fs::TryLockError;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::local::{DATA_SUFFIX, LocalSnapshotStore, MANIFEST_PARTIAL_PREFIX, PARTIAL_PREFIX};
use crate::error::{Error, IoResultExt, Result};

/// How long ago `meta`'s file last changed: its content (mtime) or its links (ctime: a hard
/// link or rename publishing it). Zero for times in the future.
fn age(meta: &std::fs::Metadata) -> Duration {
    let ctime = SystemTime::UNIX_EPOCH
        .checked_add(Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let changed = meta.modified().map_or(ctime, |m| m.max(ctime));
    SystemTime::now()
        .duration_since(changed)
        .unwrap_or(Duration::ZERO)
}

/// Whether the upload file at `path` is abandoned: its uploader holds an exclusive `flock` from
/// creation to commit or abort, so a lock we can take means the uploader is gone.
fn abandoned(path: &Path) -> Result<bool> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    match f.try_lock() {
        // Released again when `f` closes; the file is removed by the caller right after.
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("lock {}", path.display()), e)),
    }
}

fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

/// Removes, from `store`'s directory, entries older than `older_than`: upload files whose
/// uploader is gone, half-written manifests, and data files without a manifest. Returns their
/// file names.
pub(super) fn sweep_local(store: &LocalSnapshotStore, older_than: Duration) -> Result<Vec<String>> {
    let root = store.root();
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(root).context(|| format!("list {}", root.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("list {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        // A partial upload is proven abandoned by its free lock, whatever its age; the rest is
        // judged by age only, which keeps the sweep off a commit in progress.
        let old = age(&meta) >= older_than;
        let incomplete = if name.starts_with(PARTIAL_PREFIX) {
            abandoned(&path)?
        } else if !old {
            false
        } else if name.starts_with(MANIFEST_PARTIAL_PREFIX) {
            // Written and renamed in one step of a commit: an old one is a crashed commit's.
            true
        } else if name.ends_with(DATA_SUFFIX) {
            // A commit that crashed between publishing the data and writing the manifest:
            // unreadable, and its name is taken for good.
            !LocalSnapshotStore::manifest_path(&path).exists()
        } else {
            false
        };
        if incomplete && remove(&path)? {
            tracing::info!(file = %name, "removed an incomplete upload from the snapshot store");
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}
