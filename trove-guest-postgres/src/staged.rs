//! A snapshot staged ahead of an attach: followed while the master still takes it, verified,
//! extracted and prepared next to the data directory, then named by a marker file.
//!
//! The staged data directory is `<work_dir>/.tg-pg-staged`; the marker `.tg-pg-staged.json`
//! beside it is a serialized [`StagedSnapshot`] written (atomically, synced) only once the
//! directory is complete, prepared and on disk, and removed before the directory is touched,
//! so it never names a partial directory. A staging that is interrupted leaves a
//! `.tg-pg-staging-*` directory, which the next stage or attach removes.

use std::path::{Path, PathBuf};

use trove_guest_core::error::IoResultExt;
use trove_guest_core::progress::Phase;
use trove_guest_core::staging::{StagingMarker, remove_dir_if_exists};
use trove_guest_core::{Error, Result, SnapshotDocument, StageRequest, StagedSnapshot};

use crate::replica::data_dir_version;
use crate::restore::{self, STAGING_PREFIX};
use crate::strategy::PostgresStrategy;

/// The staged data directory (under the work directory).
pub(crate) const STAGED_DIR: &str = ".tg-pg-staged";
/// The marker naming what [`STAGED_DIR`] holds (under the work directory).
pub(crate) const STAGED_MARKER: &str = ".tg-pg-staged.json";

/// Flushes every file and directory under `root` (and `root`) to disk.
fn sync_tree(root: &Path) -> std::io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                std::fs::File::open(e.path())?.sync_all()?;
            }
        }
        std::fs::File::open(&dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes the staging area back to disk while the snapshot is still being extracted into it:
/// every [`Self::EVERY`] a thread `fdatasync`s the files under it that grew since it last
/// looked, until dropped, so the final per-file sync (and PostgreSQL's own sync at startup) finds
/// little left to write instead of the whole snapshot at once. Only the staging area is synced,
/// nothing else on the file system. Errors are ignored here: the final sync reports them.
struct BackgroundSync {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundSync {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(250);

    fn start(dir: &Path) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("tg-pg-stage-sync".into())
            .spawn(move || {
                let mut synced = std::collections::HashMap::<PathBuf, u64>::new();
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(Self::EVERY)
                {
                    sync_grown_files(&dir, &mut synced);
                }
            })
            .ok();
        BackgroundSync {
            stop: Some(tx),
            thread,
        }
    }
}

/// `fdatasync`s every file under `root` longer than `synced` says it was last time.
fn sync_grown_files(root: &Path, synced: &mut std::collections::HashMap<PathBuf, u64>) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(e.path());
            } else if meta.is_file() {
                let path = e.path();
                let len = meta.len();
                if synced.get(&path).is_none_or(|&l| l < len)
                    && let Ok(f) = std::fs::File::open(&path)
                    && f.sync_data().is_ok()
                {
                    synced.insert(path, len);
                }
            }
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PostgresStrategy {
    fn staged_dir(&self) -> PathBuf {
        self.handle.work_dir.join(STAGED_DIR)
    }

    fn staged_marker(&self) -> StagingMarker {
        StagingMarker::new(self.handle.work_dir.join(STAGED_MARKER))
    }

    /// Removes the staged snapshot: the marker first (synced), so that it never names a
    /// directory being removed, then the directory.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the marker cannot be removed; a directory that cannot be removed is
    /// only logged (no marker names it).
    pub(crate) fn discard_staged(&self) -> Result<()> {
        self.staged_marker().remove()?;
        if let Err(e) = remove_dir_if_exists(&self.staged_dir()) {
            tracing::warn!(error = %e, "could not remove a staged snapshot");
        }
        Ok(())
    }

    /// The staged snapshot when it is usable: a marker, its directory, and the store's manifest
    /// still the one staged.
    async fn usable_staged(&self) -> Option<StagedSnapshot> {
        self.staged_marker()
            .usable(&self.staged_dir(), &*self.store)
            .await
    }

    /// For an attach from `doc`: when the staged snapshot is the one `doc` names, moves it to a
    /// fresh staging directory (marker removed first) and returns that directory and the
    /// snapshot's size; otherwise discards whatever is staged and returns `None`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the marker cannot be removed or the directory not moved.
    pub(crate) async fn take_staged(
        &self,
        doc: &SnapshotDocument,
    ) -> Result<Option<(PathBuf, u64)>> {
        let staged = self.usable_staged().await.filter(|s| s.matches(doc));
        let Some(staged) = staged else {
            self.discard_staged()?;
            return Ok(None);
        };
        // No await from here on: the marker never outlives the directory it names.
        self.staged_marker().remove()?;
        let taken = restore::unique(&self.handle.work_dir, STAGING_PREFIX);
        std::fs::rename(self.staged_dir(), &taken).context(|| {
            format!(
                "move the staged snapshot {} to {}",
                self.staged_dir().display(),
                taken.display()
            )
        })?;
        tracing::info!(href = %staged.href, "attaching from the staged snapshot");
        Ok(Some((taken, staged.size)))
    }

    /// [`ReplicationStrategy::stage_snapshot`](trove_guest_core::ReplicationStrategy), under the
    /// strategy's lock.
    pub(crate) async fn stage_locked(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        let href = req.href.as_str();
        self.check_owned(href)?;
        if let Some(staged) = self.usable_staged().await
            && staged.href == href
            && staged.agrees(&req.expected)
        {
            return Ok(StagedSnapshot::new(href, staged.size, staged.sha256, true));
        }
        self.discard_staged()?;
        restore::remove_stale(&self.handle.work_dir);
        // The running server's major version, without asking the server.
        let major = data_dir_version(&self.handle.data_dir)?.major();
        let progress = &req.progress;
        progress.phase(
            Phase::Restore,
            "follow, verify and extract the snapshot into the staging area",
        );
        let mut reader = self.store.follow(href, &req.expected, &req.follow).await?;
        let staging = self.new_staging_dir()?;
        let staged = async {
            let background = BackgroundSync::start(&staging);
            let bytes = self
                .extract_into(href, &mut *reader, None, &staging, progress)
                .await?;
            drop(background);
            drop(reader);
            self.prepare_dir(&staging, major, href)?;
            let stored = self.store.stat(href).await?;
            let staged = StagedSnapshot::new(href, stored.size, stored.sha256, false);
            if bytes != staged.size || !staged.agrees(&req.expected) {
                return Err(Error::integrity(
                    href,
                    format!(
                        "read {bytes} bytes, the store's manifest says {}",
                        staged.size
                    ),
                ));
            }
            // On disk now, while the master may still be busy, rather than when the server
            // starts on it (PostgreSQL syncs a restored data directory before recovery).
            progress.phase(Phase::Restore, "sync the staged snapshot to disk");
            let dir = staging.clone();
            tokio::task::spawn_blocking(move || sync_tree(&dir))
                .await
                .map_err(|e| Error::io("sync the staged snapshot", std::io::Error::other(e)))?
                .context(|| format!("sync {}", staging.display()))?;
            Ok(staged)
        }
        .await;
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        // No await from here on: the directory is complete and synced before a marker names it.
        let published = (|| {
            std::fs::rename(&staging, self.staged_dir()).context(|| {
                format!(
                    "move {} to {}",
                    staging.display(),
                    self.staged_dir().display()
                )
            })?;
            self.staged_marker().write(&staged)
        })();
        if let Err(e) = published {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = self.discard_staged();
            return Err(e);
        }
        Ok(staged)
    }
}
