//! `stage_snapshot`: restoring a snapshot next to the datadir before attach, and the marker
//! that says a staging directory holds a complete, verified and prepared snapshot.
//!
//! The staging directory (`<work_dir>/.tg-restore`) is the one attach restores into. The
//! marker (`<work_dir>/.tg-staged.json`, a serialized [`StagedSnapshot`]) is written, durably
//! (temporary file, fsync, rename, fsync of the directory), only after `--prepare` finished,
//! and removed, durably, before anything touches the staging directory again. So a marker
//! always describes a finished staging directory: a staging directory without a marker (a
//! cancelled or failed stage or attach) is never used, only removed.

use trove_guest_core::error::IoResultExt;

use trove_guest_core::staging::{StagingMarker, remove_dir_if_exists};
use trove_guest_core::{Error, Phase, Result, SnapshotDocument, StageRequest, StagedSnapshot};

use crate::restore::ReadFrom;
use crate::strategy::MysqlStrategy;

const STAGED_MARKER: &str = ".tg-staged.json";

impl MysqlStrategy {
    fn staged_marker(&self) -> StagingMarker {
        StagingMarker::new(self.handle.work_dir.join(STAGED_MARKER))
    }

    /// Removes the marker, durably: from now on the staging directory is not a staged copy.
    pub(crate) fn remove_staged_marker(&self) -> Result<()> {
        self.staged_marker().remove().map(|_| ())
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
        let staged = self
            .staged_marker()
            .usable(&self.staging_dir(), &*self.store)
            .await?;
        if !staged.matches(doc) {
            tracing::info!(staged = %staged.href, wanted = %doc.dataset.snapshot_href, "the staged snapshot is not the document's; discarding it");
            return None;
        }
        Some(staged)
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
        if let Some(staged) = self
            .staged_marker()
            .usable(&self.staging_dir(), &*self.store)
            .await
            && staged.href == *href
            && staged.agrees(&req.expected)
        {
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
            self.staged_marker().write(&staged)?;
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
