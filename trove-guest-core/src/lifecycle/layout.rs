//! Where the lifecycle keeps its files: all of them in the strategy's work directory (on the
//! data directory's file system, so that swaps are renames), all named `.tg-*`.

use std::path::{Path, PathBuf};

use crate::staging::StagingMarker;

use super::journal::Journal;

/// The staging directory: a snapshot being restored, or a complete staged copy when the
/// marker names it.
const STAGING: &str = ".tg-staging";
/// The marker naming the staged copy in [`STAGING`].
const MARKER: &str = ".tg-staged.json";
/// The previous data directory, kept aside until the restored one replicates.
const OLD_DATA: &str = ".tg-old-data";
/// A restored data directory being thrown away after a rollback.
const FAILED: &str = ".tg-failed";
/// Copies of the configuration files a change rewrites, to put back on rollback.
const SAVED: &str = ".tg-saved";
/// The journal of the change in progress.
const JOURNAL: &str = ".tg-journal.json";
/// Prefix of private directories holding secret files for tools and servers.
pub(crate) const SECRET_PREFIX: &str = ".tg-secret-";
/// Prefix of a backup tool's scratch directories (a snapshot in progress).
pub const BACKUP_SCRATCH_PREFIX: &str = ".tg-backup-";

/// The lifecycle's files in a work directory.
#[derive(Debug, Clone)]
pub struct WorkLayout {
    work_dir: PathBuf,
}

impl WorkLayout {
    /// The layout in `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        WorkLayout {
            work_dir: work_dir.into(),
        }
    }

    /// The work directory.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The staging directory (a restore in progress, or the staged copy the marker names).
    pub fn staging(&self) -> PathBuf {
        self.work_dir.join(STAGING)
    }

    /// The marker naming the staged copy.
    pub fn marker(&self) -> StagingMarker {
        StagingMarker::new(self.work_dir.join(MARKER))
    }

    /// Where the previous data directory waits while the restored one starts.
    pub fn old_data(&self) -> PathBuf {
        self.work_dir.join(OLD_DATA)
    }

    /// Where a restored data directory goes when it is rolled back.
    pub fn failed(&self) -> PathBuf {
        self.work_dir.join(FAILED)
    }

    /// Where the configuration files a change rewrites are saved.
    pub fn saved(&self) -> PathBuf {
        self.work_dir.join(SAVED)
    }

    /// The journal.
    pub fn journal(&self) -> Journal {
        Journal::new(self.work_dir.join(JOURNAL))
    }

    /// Whether `name` (an entry of the work directory) is a lifecycle leftover recovery may
    /// remove when no journal and no marker claims it: the lifecycle's own names, the names of
    /// earlier releases (`.tg-restore`, `.tg-pg-*`...) and secret directories.
    pub(crate) fn is_leftover(name: &str) -> bool {
        name == STAGING
            || name == OLD_DATA
            || name == FAILED
            || name == SAVED
            || name.starts_with(SECRET_PREFIX)
            || name.starts_with(BACKUP_SCRATCH_PREFIX)
            || (name.ends_with(".tmp") && name.starts_with(".tg-"))
            // Names used before the lifecycle moved into core.
            || name == ".tg-restore"
            || name == ".tg-failed-restore"
            || name.starts_with(".tg-pg-staging-")
            || name.starts_with(".tg-pg-previous-")
            || name == ".tg-pg-staged"
            || name == ".tg-pg-staged.json"
    }
}
