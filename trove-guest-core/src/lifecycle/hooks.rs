//! What a backend supplies to the core lifecycle: the steps that differ between datastores.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::datastore::DatastoreHandle;
use crate::error::Result;
use crate::position::ReplicationPosition;
use crate::progress::Progress;
use crate::store::SnapshotStore;

use super::report::RecoveryAction;

/// The datastore-specific steps of restoring a snapshot and making it a replica.
///
/// Core drives [`attach`](super::attach), [`stage`](super::stage) and
/// [`recover`](super::recover) over these hooks: the staging directory, the marker, the
/// journal, stopping the server, the swap by rename, putting the old data back, starting it
/// again and sweeping leftovers are core's, written once. A hook never touches the data
/// directory or the work directory except where its documentation says so.
///
/// `Plan` is what the backend worked out before the flow began (the validated document, the
/// replication credentials, a slot it claimed): core hands it back to each hook.
#[async_trait]
pub trait RestoreHooks: Send + Sync {
    /// What one attach carries from the backend's checks into its hooks.
    type Plan: Send + Sync;

    /// The server acted on.
    fn handle(&self) -> &DatastoreHandle;

    /// Where snapshots are read from.
    fn store(&self) -> &dyn SnapshotStore;

    /// Streams the snapshot bytes of `reader` (`total` when known) into the existing, empty
    /// directory `dir` with the datastore's extractor, reporting restore progress; returns the
    /// number of bytes read. The reader verifies what it streams and fails its last read on a
    /// mismatch: the hook must read it to its end and report a read error as such.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`](crate::Error::Integrity) for a damaged snapshot, the extractor's
    /// failure otherwise.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe in effect: the extractor is killed and only `dir` is written.
    async fn extract(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        dir: &Path,
        progress: &Progress,
    ) -> Result<u64>;

    /// Makes an extracted directory a consistent data directory (MariaDB: `--prepare`;
    /// PostgreSQL: version check, files a standby must not carry). It must not depend on the
    /// document: a staged copy is prepared before the document exists.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`](crate::Error::Incompatible) for data of another version, the
    /// tool's failure otherwise.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe in effect: only `dir` is written.
    async fn prepare(&self, href: &str, dir: &Path, progress: &Progress) -> Result<()>;

    /// Whether a staged copy is written back to disk before its marker (default `false`).
    /// PostgreSQL says yes: a standby started on a synced directory skips its own sync.
    fn sync_staged(&self) -> bool {
        false
    }

    /// Checks the restored directory `dir` against the plan's document (the position it
    /// records, versions). Runs for a fresh restore and for a staged copy alike.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`](crate::Error::Integrity) when `dir` and the document disagree.
    fn check_restored(&self, plan: &Self::Plan, dir: &Path) -> Result<()>;

    /// The configuration files (absolute paths) [`configure`](Self::configure) and
    /// [`start`](Self::start) may write. Core saves them before the server is stopped and
    /// puts them back (or removes them) on rollback.
    fn config_files(&self) -> Vec<PathBuf>;

    /// Configures the swapped-in data directory while the server is stopped: override files,
    /// signal files, settings carried over from the previous data directory (now at
    /// `previous_data`). `staged` says the directory was synced to disk as a staged copy.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io); core rolls back.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe; the journal lets recovery roll back.
    async fn configure(&self, plan: &Self::Plan, previous_data: &Path, staged: bool) -> Result<()>;

    /// Starts the server on the restored data and waits (bounded) until the administrator's
    /// login works. Files it writes for the first start only are listed in
    /// [`transient_files`](Self::transient_files) and removed by it before it returns.
    ///
    /// # Errors
    ///
    /// [`Error::Service`](crate::Error::Service) when the server does not start or admit the
    /// administrator; core rolls back.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe; the journal lets recovery roll back.
    async fn start(&self, plan: &Self::Plan) -> Result<()>;

    /// Points replication at the master and waits, within `timeout`, until it runs and has
    /// applied the snapshot position; returns the applied position.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout), [`Error::Datastore`](crate::Error::Datastore);
    /// core rolls back.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe; the journal lets recovery roll back.
    async fn replicate(
        &self,
        plan: &Self::Plan,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Option<ReplicationPosition>>;

    /// After a rollback put the previous data directory and configuration back, before the
    /// server starts again: undo what the attach did elsewhere (relay logs, a slot claimed on
    /// the master). Best effort; the default does nothing.
    ///
    /// # Cancel safety
    ///
    /// Best effort: a cancel leaves at most what recovery would sweep.
    async fn rolled_back(&self, plan: &Self::Plan) {
        let _ = plan;
    }

    /// After the attach committed (the old data is gone): release what only the restore needed
    /// (the snapshot's slot). Best effort; the default does nothing.
    ///
    /// # Cancel safety
    ///
    /// Best effort.
    async fn committed(&self, plan: &Self::Plan) {
        let _ = plan;
    }

    /// Files that are valid only during one flow (an `init_file` override pointing at a
    /// temporary secret): recovery and rollback remove them so the server can start.
    fn transient_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Waits (bounded) until the server answers after core started it on its previous data
    /// (rollback, recovery). The default returns at once: the service's own readiness check
    /// has passed.
    ///
    /// # Errors
    ///
    /// [`Error::Service`](crate::Error::Service) when it never answers.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn wait_serving(&self) -> Result<()> {
        Ok(())
    }

    /// The last step of recovery, with the server running: makes the configuration agree with
    /// what the server is after a crash between two statements of a change (PostgreSQL: a
    /// promoted server still carrying its standby settings). The default does nothing.
    ///
    /// # Errors
    ///
    /// The datastore's; recovery reports them and a later call tries again.
    ///
    /// # Cancel safety
    ///
    /// Idempotent: a repeated call finishes the work.
    async fn reconcile(&self) -> Result<Vec<RecoveryAction>> {
        Ok(Vec::new())
    }

    /// Recovery on a master: undoes what a snapshot that never committed made (a slot, an
    /// account), named by the `detail` its journal recorded. The default does nothing.
    ///
    /// # Errors
    ///
    /// The datastore's; recovery keeps the journal and a later call tries again.
    ///
    /// # Cancel safety
    ///
    /// Idempotent: a repeated call finishes the work.
    async fn abandon_snapshot(&self, detail: &serde_json::Value) -> Result<Vec<RecoveryAction>> {
        let _ = detail;
        Ok(Vec::new())
    }
}
