//! `stage_snapshot`: restoring a snapshot next to the datadir before attach, and the marker
//! that says a staging directory holds a complete, verified and prepared snapshot.
//!
//! The staging directory (`<work_dir>/.tg-restore`) is the one attach restores into. The
//! marker (`<work_dir>/.tg-staged.json`, a serialized [`StagedSnapshot`]) is written, durably
//! (temporary file, fsync, rename, fsync of the directory), only after `--prepare` finished,
//! and removed, durably, before anything touches the staging directory again. So a marker
//! always describes a finished staging directory: a staging directory without a marker (a
//! cancelled or failed stage or attach) is never used, only removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use trove_guest_core::error::IoResultExt;
use trove_guest_core::store::Expected;
use trove_guest_core::{Error, Phase, Result, SnapshotDocument, StageRequest, StagedSnapshot};

use crate::restore::ReadFrom;
use crate::strategy::MysqlStrategy;

const STAGED_MARKER: &str = ".tg-staged.json";

/// Whether a staged snapshot agrees with what the caller expects of it.
fn agrees(staged: &StagedSnapshot, expected: &Expected) -> bool {
    expected.size.is_none_or(|s| s == staged.size)
        && expected
            .sha256
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(&staged.sha256))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the whole new one.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("write {}", tmp.display()), e));
    }
    std::fs::rename(&tmp, path).context(|| format!("rename {}", tmp.display()))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("fsync {}", dir.display()))
}

pub(crate) fn remove_dir_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", p.display()), e)),
    }
}

impl MysqlStrategy {
    fn staged_marker(&self) -> PathBuf {
        self.handle.work_dir.join(STAGED_MARKER)
    }

    /// The snapshot the marker describes, when there is a readable marker and the staging
    /// directory it describes exists.
    pub(crate) fn read_staged(&self) -> Option<StagedSnapshot> {
        let path = self.staged_marker();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, marker = %path.display(), "unreadable staging marker; ignoring the staged copy");
                return None;
            }
        };
        match serde_json::from_slice::<StagedSnapshot>(&bytes) {
            Ok(s) if self.staging_dir().is_dir() => Some(s),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, marker = %path.display(), "malformed staging marker; ignoring the staged copy");
                None
            }
        }
    }

    /// Removes the marker, durably: from now on the staging directory is not a staged copy.
    pub(crate) fn remove_staged_marker(&self) -> Result<()> {
        let path = self.staged_marker();
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.handle.work_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    /// Forgets any staged copy: the marker first, then the staging directory.
    pub(crate) fn discard_staged(&self) -> Result<()> {
        self.remove_staged_marker()?;
        remove_dir_if_exists(&self.staging_dir())
    }

    /// The staged copy `doc` can use instead of reading its snapshot: the marker names the
    /// document's snapshot ([`StagedSnapshot::matches`]) and the store still holds exactly
    /// that snapshot (size and SHA-256 of its manifest).
    pub(crate) async fn staged_for(&self, doc: &SnapshotDocument) -> Option<StagedSnapshot> {
        let staged = self.read_staged()?;
        if !staged.matches(doc) {
            tracing::info!(staged = %staged.href, wanted = %doc.dataset.snapshot_href, "the staged snapshot is not the document's; discarding it");
            return None;
        }
        match self.store.stat(&staged.href).await {
            Ok(s) if s.size == staged.size && s.sha256.eq_ignore_ascii_case(&staged.sha256) => {
                Some(staged)
            }
            Ok(_) => {
                tracing::warn!(href = %staged.href, "the store's snapshot differs from the staged copy; discarding it");
                None
            }
            Err(e) => {
                tracing::warn!(href = %staged.href, error = %e, "cannot check the staged copy against the store; discarding it");
                None
            }
        }
    }

    pub(crate) async fn stage_impl(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        let href = &req.href;
        if !self.store.owns(href) {
            return Err(Error::invalid(
                "snapshot href",
                format!("{href:?} is not in this agent's snapshot store"),
            ));
        }
        self.recover_interrupted_swap()?;
        if let Some(staged) = self.read_staged()
            && staged.href == *href
            && agrees(&staged, &req.expected)
        {
            match self.store.stat(href).await {
                Ok(s) if s.size == staged.size && s.sha256.eq_ignore_ascii_case(&staged.sha256) => {
                    tracing::info!(%href, "snapshot already staged");
                    req.progress
                        .phase(Phase::Done, format!("{href} is already staged"));
                    return Ok(StagedSnapshot::new(
                        staged.href,
                        staged.size,
                        staged.sha256,
                        true,
                    ));
                }
                _ => {}
            }
        }
        let flavor = self.flavor().await?;
        let staging = self.staging_dir();
        self.discard_staged()?;
        std::fs::create_dir_all(&staging).context(|| format!("create {}", staging.display()))?;
        let staged = async {
            let bytes = self
                .extract_and_prepare(
                    href,
                    ReadFrom::Follow(&req.expected, &req.follow),
                    &staging,
                    flavor,
                    &req.progress,
                )
                .await?;
            // The follower matched the bytes against the manifest the commit published.
            let stored = self.store.stat(href).await?;
            if stored.size != bytes {
                return Err(Error::integrity(
                    href.clone(),
                    format!(
                        "read {bytes} bytes, the store's manifest says {}",
                        stored.size
                    ),
                ));
            }
            let staged = StagedSnapshot::new(href.clone(), stored.size, stored.sha256, false);
            let json = serde_json::to_vec_pretty(&staged).map_err(|e| Error::Store {
                message: format!("serialize the staging marker: {e}"),
                source: None,
            })?;
            write_durably(&self.staged_marker(), &json)?;
            Ok(staged)
        }
        .await;
        match staged {
            Ok(s) => {
                tracing::info!(%href, bytes = s.size, "snapshot staged");
                req.progress.phase(Phase::Done, format!("{href} staged"));
                Ok(s)
            }
            Err(e) => {
                let _ = remove_dir_if_exists(&staging);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_copy_agrees_only_with_matching_expectations() {
        let s = StagedSnapshot::new("file:///s/a.snap", 10, "abcd", false);
        assert!(agrees(&s, &Expected::default()));
        let mut e = Expected {
            size: Some(10),
            sha256: Some("ABCD".into()),
        };
        assert!(agrees(&s, &e));
        e.size = Some(11);
        assert!(!agrees(&s, &e));
        e.size = None;
        e.sha256 = Some("abce".into());
        assert!(!agrees(&s, &e));
    }

    #[test]
    fn durable_writes_replace_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(STAGED_MARKER);
        write_durably(&p, b"{\"a\":1}").unwrap();
        write_durably(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }
}
