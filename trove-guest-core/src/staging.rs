//! Building blocks for backends that implement
//! [`ReplicationStrategy::stage_snapshot`](crate::ReplicationStrategy::stage_snapshot): the
//! marker that says a staging directory holds a complete, verified snapshot.
//!
//! The rule every backend follows: write the marker ([`StagingMarker::write`], durable) only
//! after the staging directory is complete, and remove it ([`StagingMarker::remove`], durable)
//! before anything touches that directory again. A marker then always describes a finished
//! directory; a directory without one (an interrupted stage or attach) is never used.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoResultExt, Result};
use crate::store::{Expected, SnapshotStore, StoredSnapshot};
use crate::strategy::StagedSnapshot;

impl StagedSnapshot {
    /// Whether this staged copy is what `expected` asks for, where it asks.
    pub fn agrees(&self, expected: &Expected) -> bool {
        expected.size.is_none_or(|s| s == self.size)
            && expected
                .sha256
                .as_deref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&self.sha256))
    }

    /// Whether the store's manifest `stored` is exactly the snapshot staged here.
    pub fn is_stored(&self, stored: &StoredSnapshot) -> bool {
        stored.href == self.href
            && stored.size == self.size
            && stored.sha256.eq_ignore_ascii_case(&self.sha256)
    }
}

/// The marker file naming the snapshot a staging directory holds (a serialized
/// [`StagedSnapshot`], mode 0600).
#[derive(Debug, Clone)]
pub struct StagingMarker {
    path: PathBuf,
}

impl StagingMarker {
    /// The marker at `path` (its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StagingMarker { path: path.into() }
    }

    /// Where the marker is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The staged snapshot the marker names; `None` when there is no marker, or an unreadable
    /// one (logged: the staged copy is then simply not used).
    pub fn read(&self) -> Option<StagedSnapshot> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, marker = %self.path.display(), "unreadable staging marker; the staged copy is not used");
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, marker = %self.path.display(), "malformed staging marker; the staged copy is not used");
                None
            }
        }
    }

    /// The staged snapshot when it can serve: the marker names it, `dir` (the staged
    /// directory) exists, and the store's manifest is still exactly what was staged.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn usable(&self, dir: &Path, store: &dyn SnapshotStore) -> Option<StagedSnapshot> {
        let staged = self.read()?;
        if !dir.is_dir() {
            return None;
        }
        match store.stat(&staged.href).await {
            Ok(stored) if staged.is_stored(&stored) => Some(staged),
            Ok(_) => {
                tracing::warn!(href = %staged.href, "the store's snapshot differs from the staged copy; not using it");
                None
            }
            Err(e) => {
                tracing::warn!(href = %staged.href, error = %e, "cannot check the staged copy against the store; not using it");
                None
            }
        }
    }

    /// Writes the marker so that a crash leaves either no marker (or the previous one) or the
    /// whole new one: temporary file, fsync, rename, fsync of the directory.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn write(&self, staged: &StagedSnapshot) -> Result<()> {
        let json = serde_json::to_vec_pretty(staged).expect("a staged snapshot serializes");
        write_durable(&self.path, &json)
    }

    /// Removes the marker durably; `false` when there was none.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn remove(&self) -> Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                sync_dir(self.dir())?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("remove {}", self.path.display()), e)),
        }
    }
}

/// Replaces the file at `path` (mode 0600) so that a crash leaves either the previous file (or
/// none) or the whole new one: temporary file, fsync, rename, fsync of the directory.
///
/// # Errors
///
/// [`Error::Io`].
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("write {}", tmp.display()), e));
    }
    std::fs::rename(&tmp, path)
        .context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Flushes a directory's entries (creations, renames, removals) to disk.
///
/// # Errors
///
/// [`Error::Io`].
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("fsync {}", dir.display()))
}

/// Removes a directory tree; a missing one is fine.
///
/// # Errors
///
/// [`Error::Io`].
pub fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    // A tool of a killed process may still be writing into the tree for a moment (until it
    // reads the end of its input): a tree that refills while it is removed is tried again, a
    // bounded number of times.
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(Error::io(format!("remove {}", dir.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_snapshot_agrees_only_with_what_is_expected_of_it() {
        let s = StagedSnapshot::new("file:///s/a.snap", 10, "ABCD", false);
        assert!(s.agrees(&Expected::default()));
        let e = |size, sha: Option<&str>| Expected {
            size,
            sha256: sha.map(str::to_owned),
        };
        assert!(s.agrees(&e(Some(10), Some("abcd"))));
        assert!(!s.agrees(&e(Some(11), None)));
        assert!(!s.agrees(&e(None, Some("abce"))));
    }

    #[test]
    fn the_marker_is_replaced_whole_and_removed_once() {
        let dir = tempfile::tempdir().unwrap();
        let m = StagingMarker::new(dir.path().join(".staged.json"));
        assert!(m.read().is_none());
        let a = StagedSnapshot::new("file:///s/a.snap", 10, "ab", false);
        let b = StagedSnapshot::new("file:///s/b.snap", 20, "cd", false);
        m.write(&a).unwrap();
        m.write(&b).unwrap();
        assert_eq!(m.read(), Some(b));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
        assert!(m.remove().unwrap());
        assert!(!m.remove().unwrap());
        std::fs::write(m.path(), b"{not json").unwrap();
        assert!(m.read().is_none(), "a malformed marker names nothing");
    }
}
