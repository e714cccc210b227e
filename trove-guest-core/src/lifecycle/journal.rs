//! The on-disk journal of the change in progress.
//!
//! A strategy runs one change at a time, so the journal is one small JSON file (0600), replaced
//! durably (temporary file, fsync, rename, fsync of the directory) before each irreversible
//! step is taken. It names the operation, the last step recorded and what recovery needs to
//! undo or finish it. A journal never holds a secret: saved configuration files (a passfile
//! among them) are copied next to it as 0600 files, and backend details are names only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::staging::write_durable;

/// The change a journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// `attach_replication_slave`.
    Attach,
    /// `stage_snapshot`.
    Stage,
    /// `get_replication_snapshot`.
    Snapshot,
    /// Any other change (enable as master, detach, demote...): recovery only makes sure the
    /// server runs again.
    Other,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Attach => "attach",
            Operation::Stage => "stage",
            Operation::Snapshot => "snapshot",
            Operation::Other => "change",
        })
    }
}

/// The steps of a change, in order. Each is recorded before it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// Started; nothing outside the staging area and the saved copies has changed.
    Begun,
    /// About to stop the server (data directory untouched).
    Stopping,
    /// About to swap the data directories (old data goes aside).
    Swapping,
    /// About to start the server on the restored data.
    Starting,
    /// Replication runs at the snapshot position: the restored data is the server's for good.
    Replicating,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Begun => "begun",
            Step::Stopping => "stopping",
            Step::Swapping => "swapping",
            Step::Starting => "starting",
            Step::Replicating => "replicating",
        })
    }
}

/// A configuration file a change rewrites, as it was before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    /// The file's path.
    pub path: PathBuf,
    /// Whether it existed (then a copy is in the layout's saved directory under `copy`).
    pub existed: bool,
    /// The name of its copy in the saved directory.
    pub copy: String,
    /// Its permission bits.
    pub mode: u32,
    /// Its owner (uid, gid).
    #[serde(default)]
    pub owner: Option<(u32, u32)>,
}

/// What the journal holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JournalEntry {
    /// The operation.
    pub operation: Operation,
    /// The last step recorded.
    pub step: Step,
    /// The snapshot it concerns, when it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// Configuration files saved before the server was stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved: Vec<SavedFile>,
    /// Whether the server was stopped by this change (and not started again yet).
    #[serde(default)]
    pub server_stopped: bool,
    /// What the backend needs to undo its part (names only, never a secret).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    /// The agent process that wrote it.
    pub pid: u32,
}

impl JournalEntry {
    /// A new entry at [`Step::Begun`].
    pub fn new(operation: Operation) -> Self {
        JournalEntry {
            operation,
            step: Step::Begun,
            href: None,
            saved: Vec::new(),
            server_stopped: false,
            detail: serde_json::Value::Null,
            pid: std::process::id(),
        }
    }

    /// Sets [`JournalEntry::href`].
    pub fn with_href(mut self, href: impl Into<String>) -> Self {
        self.href = Some(href.into());
        self
    }

    /// Sets [`JournalEntry::detail`].
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// The journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Journal { path: path.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded entry; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be read; [`Error::InvalidInput`] when it is not a journal
    /// (recovery then refuses to guess and leaves everything as it is).
    pub fn read(&self) -> Result<Option<JournalEntry>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::invalid(
                    "lifecycle journal",
                    format!(
                        "{}: {e} (remove it by hand once the server is checked)",
                        self.path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", self.path.display()), e)),
        }
    }

    /// Records `entry`, durably.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn write(&self, entry: &JournalEntry) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let json = serde_json::to_vec_pretty(entry).expect("a journal entry serializes");
        write_durable(&self.path, &json)
    }

    /// Moves `entry` to `step` and records it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn step(&self, entry: &mut JournalEntry, step: Step) -> Result<()> {
        entry.step = step;
        self.write(entry)
    }

    /// Removes the journal, durably (the change is over).
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn clear(&self) -> Result<()> {
        crate::staging::StagingMarker::new(&self.path)
            .remove()
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_records_steps_and_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join(".tg-journal.json"));
        assert_eq!(j.read().unwrap(), None);
        let mut e = JournalEntry::new(Operation::Attach).with_href("file:///s/a.snap");
        j.write(&e).unwrap();
        j.step(&mut e, Step::Swapping).unwrap();
        let back = j.read().unwrap().unwrap();
        assert_eq!(back.step, Step::Swapping);
        assert_eq!(back.href.as_deref(), Some("file:///s/a.snap"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(j.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        j.clear().unwrap();
        j.clear().unwrap();
        assert_eq!(j.read().unwrap(), None);
        std::fs::write(j.path(), b"{").unwrap();
        assert!(
            j.read().is_err(),
            "a damaged journal is an error, not silence"
        );
    }

    #[test]
    fn steps_are_ordered() {
        assert!(Step::Begun < Step::Stopping);
        assert!(Step::Swapping < Step::Starting);
        assert!(Step::Starting < Step::Replicating);
    }
}
