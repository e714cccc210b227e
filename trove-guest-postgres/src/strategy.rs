//! [`PostgresStrategy`]: the replication contract for PostgreSQL streaming replication.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use trove_guest_core::failover::{
    FenceOptions, LastTxn, ReplicaContext, ReplicaContextOptions, RepointOptions,
};
use trove_guest_core::lifecycle::{self, ChangeLock};
use trove_guest_core::wire::{MasterAddress, ReplicationGrant};
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, DatastoreHandle, DatastoreKind, DemoteOptions,
    DetachOptions, DetachedReplica, EnableMasterOptions, Error, OsUser, RecoverOptions,
    RecoveryReport, ReplicationPosition, ReplicationStatus, ReplicationStrategy, Result,
    SnapshotDocument, SnapshotRequest, SnapshotStore, StageRequest, StagedSnapshot,
};

use crate::client::Db;
use crate::error::PgError;
use crate::flavor::{Flavor, ServerVersion};
use crate::sql;

/// Options of a [`PostgresStrategy`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresStrategyOptions {
    /// Lower bound for `max_wal_senders` on a master (default 10).
    pub max_wal_senders: u32,
    /// Lower bound for `max_replication_slots` on a master (default 10).
    pub max_replication_slots: u32,
    /// `wal_keep_size` on a master in MiB (default 1024): the WAL `pg_rewind` needs to bring
    /// a former primary back (slots do not keep it). On PostgreSQL 12 it becomes
    /// `wal_keep_segments`, rounded up to whole WAL segments.
    pub wal_keep_size_mb: u64,
    /// hba address fields replicas may connect from (default `["all"]`; every entry requires
    /// scram-sha-256 and membership in the replication group).
    pub replica_networks: Vec<String>,
    /// The `tar` program used to extract snapshots (default `tar` from `PATH`).
    pub tar_program: PathBuf,
    /// How long to wait for the server to accept connections after a (re)start (default 120 s).
    pub start_timeout: Duration,
    /// How long `tar` may take to extract one snapshot before it is killed and the restore
    /// fails with [`trove_guest_core::Error::Timeout`] (default 24 h). It reads the snapshot as
    /// it streams from the store, so this bounds the whole download: keep it above the time a
    /// full copy of the largest database takes.
    pub extract_timeout: Duration,
    /// How long `pg_rewind` may run before it is killed (default 1 h). A rewind copies only
    /// the blocks changed since the histories diverged; a killed rewind leaves the server a
    /// read-only standby that needs a fresh snapshot.
    pub rewind_timeout: Duration,
    /// `max_slot_wal_keep_size` on a master (PostgreSQL 13 and later; default `"8GB"`, `None`
    /// leaves the server's setting alone). A replication slot keeps every WAL segment its
    /// replica has not confirmed, so a replica that vanished without a detach (or a forgotten
    /// snapshot slot) would otherwise fill the primary's disk until the primary stops. With
    /// the cap, PostgreSQL invalidates such a slot once it holds this much WAL: that replica
    /// then needs a fresh snapshot, and the primary keeps running. 8 GB is 512 segments of the
    /// default size: hours of ordinary write load, enough for a replica to ride out a restart
    /// or a network outage, small next to a typical data volume. Set it below the free space
    /// of the WAL volume.
    pub max_slot_wal_keep_size: Option<String>,
}

impl Default for PostgresStrategyOptions {
    fn default() -> Self {
        PostgresStrategyOptions {
            max_wal_senders: 10,
            max_replication_slots: 10,
            wal_keep_size_mb: 1024,
            replica_networks: vec!["all".into()],
            tar_program: PathBuf::from("tar"),
            start_timeout: Duration::from_secs(120),
            extract_timeout: Duration::from_secs(24 * 3600),
            rewind_timeout: Duration::from_secs(3600),
            max_slot_wal_keep_size: Some("8GB".into()),
        }
    }
}

impl PostgresStrategyOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`PostgresStrategyOptions::wal_keep_size_mb`].
    pub fn with_wal_keep_size_mb(mut self, mb: u64) -> Self {
        self.wal_keep_size_mb = mb;
        self
    }
    /// Sets [`PostgresStrategyOptions::replica_networks`].
    pub fn with_replica_networks(mut self, nets: Vec<String>) -> Self {
        self.replica_networks = nets;
        self
    }
    /// Sets [`PostgresStrategyOptions::extract_timeout`].
    pub fn with_extract_timeout(mut self, timeout: Duration) -> Self {
        self.extract_timeout = timeout;
        self
    }
    /// Sets [`PostgresStrategyOptions::rewind_timeout`].
    pub fn with_rewind_timeout(mut self, timeout: Duration) -> Self {
        self.rewind_timeout = timeout;
        self
    }
    /// Sets [`PostgresStrategyOptions::max_slot_wal_keep_size`] (a size in PostgreSQL's
    /// configuration syntax, `"8GB"`, `"512MB"`; `None` leaves the server's own setting).
    pub fn with_max_slot_wal_keep_size(mut self, size: Option<String>) -> Self {
        self.max_slot_wal_keep_size = size;
        self
    }
    /// Sets [`PostgresStrategyOptions::max_wal_senders`] and
    /// [`PostgresStrategyOptions::max_replication_slots`].
    pub fn with_max_replicas(mut self, n: u32) -> Self {
        self.max_wal_senders = n;
        self.max_replication_slots = n;
        self
    }
}

/// Where a standby (a former primary rejoining, say) finds its primary: the address and the
/// replication account and slot made for it by [`PostgresStrategy::grant_standby`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct StandbySource {
    /// The primary's address.
    pub master: MasterAddress,
    /// The account (with its password in transit) and slot.
    pub replication: ReplicationGrant,
}

impl StandbySource {
    /// Builds a source.
    pub fn new(master: MasterAddress, replication: ReplicationGrant) -> Self {
        StandbySource {
            master,
            replication,
        }
    }
}

/// Options for [`PostgresStrategy::rejoin_as_standby`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RejoinOptions {
    /// How long to wait for the rewound server to stream from its new primary (default 120 s).
    pub timeout: Duration,
}

impl Default for RejoinOptions {
    fn default() -> Self {
        RejoinOptions {
            timeout: Duration::from_secs(120),
        }
    }
}

impl RejoinOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`RejoinOptions::timeout`].
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// PostgreSQL streaming replication from `pg_basebackup` snapshots, with physical slots,
/// promotion and `pg_rewind`.
///
/// Settings go into override files in the handle's `config_dir` (which the server's main
/// configuration must include with `include_dir`, after its own settings); replication
/// `pg_hba` entries go into a marked block at the top of the hba file.
#[derive(Debug)]
pub struct PostgresStrategy {
    pub(crate) handle: DatastoreHandle,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) opts: PostgresStrategyOptions,
    pub(crate) change: ChangeLock,
}

impl PostgresStrategy {
    /// A strategy acting on the server of `handle`, storing snapshots in `store`.
    pub fn new(
        handle: DatastoreHandle,
        store: Arc<dyn SnapshotStore>,
        opts: PostgresStrategyOptions,
    ) -> Self {
        PostgresStrategy {
            handle,
            store,
            opts,
            change: ChangeLock::new(),
        }
    }

    /// The handle this strategy acts on.
    pub fn handle(&self) -> &DatastoreHandle {
        &self.handle
    }

    /// The account tools that touch the data directory run as: the handle's `os_user` when this
    /// process is root, else this process's own account.
    pub(crate) fn tool_user(&self) -> Option<OsUser> {
        if OsUser::current().uid == 0 {
            self.handle.os_user
        } else {
            None
        }
    }

    /// The owner given to files the server must read.
    pub(crate) fn file_owner(&self) -> Option<OsUser> {
        self.tool_user()
    }

    pub(crate) fn config_file(&self, name: &str) -> PathBuf {
        self.handle.config_dir.join(name)
    }

    pub(crate) async fn db(&self) -> Result<Db> {
        Ok(Db::connect(&self.handle).await?)
    }

    pub(crate) async fn db_wait(&self) -> Result<Db> {
        Ok(Db::connect_retry(&self.handle, self.opts.start_timeout).await?)
    }

    /// Restarts the server and reconnects.
    pub(crate) async fn restart(&self) -> Result<Db> {
        self.handle.service.restart().await?;
        self.db_wait().await
    }
}

pub(crate) async fn in_recovery(db: &Db) -> Result<bool> {
    Ok(db
        .one("read recovery state", sql::IS_IN_RECOVERY, &[])
        .await?
        .get(0))
}

/// `(version, full version string)`.
///
/// # Errors
///
/// [`Error::Unsupported`] before PostgreSQL 12; [`Error::Datastore`].
pub(crate) async fn server_version(db: &Db) -> Result<(ServerVersion, String)> {
    let row = db
        .one("read server version", sql::SERVER_VERSION, &[])
        .await?;
    let num: i32 = row.get(0);
    Ok((ServerVersion::from_num(i64::from(num))?, row.get(1)))
}

/// What the connected server's version does differently.
pub(crate) async fn flavor(db: &Db) -> Result<Flavor> {
    Ok(server_version(db).await?.0.flavor())
}

pub(crate) async fn setting(db: &Db, name: &str) -> Result<String> {
    Ok(db
        .one("read a setting", sql::SETTING, &[&name])
        .await?
        .get(0))
}

/// Reloads the configuration and waits (briefly) until every reloadable setting in `names`
/// either comes from `file` (`present`) or no longer does (`!present`), or is pending a
/// restart. Returns the settings pending a restart. `names` must include a reloadable setting.
pub(crate) async fn reload_and_settle(
    db: &Db,
    names: &[&str],
    file: &Path,
    present: bool,
) -> Result<Vec<String>> {
    db.one("reload configuration", sql::RELOAD, &[]).await?;
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let canonical = file
        .parent()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .zip(file.file_name())
        .map(|(d, f)| d.join(f));
    let started = Instant::now();
    loop {
        let rows = db
            .query("read settings after reload", sql::SETTINGS, &[&names])
            .await?;
        let mut pending = Vec::new();
        let mut settled = true;
        for r in &rows {
            let name: String = r.get(0);
            let pending_restart: bool = r.get(2);
            let source: String = r.get(3);
            let from_file = !source.is_empty()
                && (Path::new(&source) == file || Some(Path::new(&source)) == canonical.as_deref());
            let context: String = r.get(4);
            if pending_restart {
                pending.push(name);
            } else if context == "postmaster" {
                // An unchanged postmaster setting keeps its old source: nothing to wait for.
                // Its pending_restart flag is set by the same reload pass as the others.
            } else if from_file != present {
                settled = false;
            }
        }
        if settled || started.elapsed() > Duration::from_secs(10) {
            if !settled {
                tracing::warn!("configuration reload did not settle within 10 s");
            }
            return Ok(pending);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn unexpected(action: &'static str, detail: impl Into<String>) -> Error {
    PgError::Unexpected {
        action,
        detail: detail.into(),
    }
    .into()
}

#[async_trait]
impl ReplicationStrategy for PostgresStrategy {
    fn datastore(&self) -> DatastoreKind {
        DatastoreKind::Postgresql
    }

    fn capabilities(&self) -> Capabilities {
        // Positioning is by LSN through the slot; the contract's default (`Gtid`) stands for it.
        Capabilities::none()
            .with_gtid_positioning(true)
            .with_slots(true)
            .with_rewind(true)
            .with_staging(true)
    }

    async fn enable_as_master(&self, opts: &EnableMasterOptions) -> Result<()> {
        let _g = self.change.begin("enable_as_master")?;
        self.enable_master_locked(opts).await
    }

    /// Takes a `pg_basebackup` snapshot into the store, with the slot `trove_snap_<replica id>`
    /// (made before the backup) and the login `trove_repl_<replica id>`.
    ///
    /// Retried for the same replica id, the login gets a new password, but only once the backup
    /// has succeeded: the password change runs in a transaction committed after the snapshot is
    /// committed to the store, and rolled back otherwise. A retry that fails therefore leaves
    /// the password of the earlier document (and of any standby streaming with it) valid; one
    /// that succeeds invalidates it. A failed snapshot drops the slot and login only if it made
    /// them.
    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument> {
        // The change goes with the snapshot's cleanup when the call is cancelled.
        let g = self.change.begin_owned("get_replication_snapshot")?;
        self.snapshot_locked(req, g).await
    }

    /// The store's href for `name`: snapshots are stored under exactly
    /// [`SnapshotRequest::snapshot_name`] when it is set.
    fn snapshot_href(&self, name: &str) -> Result<String> {
        self.store.snapshot_href(name)
    }

    /// Follows, verifies and extracts the snapshot into the core lifecycle's staging directory
    /// (named by its marker once complete), prepares it as attach does (control file and
    /// version checked, files a standby must not carry over removed) and syncs it to disk. Like
    /// every change, refused with `Busy` while another runs. The running server and its data
    /// directory are not touched.
    async fn stage_snapshot(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        let _g = self.change.begin("stage_snapshot")?;
        self.stage_locked(req).await
    }

    async fn attach_replication_slave(
        &self,
        snapshot: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        let _g = self.change.begin("attach_replication_slave")?;
        self.attach_locked(snapshot, req).await
    }

    async fn detach_replication_slave(&self, opts: &DetachOptions) -> Result<DetachedReplica> {
        let _g = self.change.begin("detach_replication_slave")?;
        self.detach_locked(opts).await
    }

    async fn cleanup_source_on_replica_detach(&self, replica: &DetachedReplica) -> Result<()> {
        let _g = self.change.begin("cleanup_source_on_replica_detach")?;
        self.cleanup_locked(replica).await
    }

    async fn demote_replication_master(&self, opts: &DemoteOptions) -> Result<()> {
        let _g = self.change.begin("demote_replication_master")?;
        self.demote_locked(opts).await
    }

    async fn recover(&self, opts: &RecoverOptions) -> Result<RecoveryReport> {
        let _g = self.change.begin("recover")?;
        lifecycle::recover(self, opts).await
    }

    async fn make_read_only(&self, read_only: bool) -> Result<()> {
        let _g = self.change.begin("make_read_only")?;
        self.read_only_locked(read_only).await
    }

    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        let db = self.db().await?;
        self.latest_position(&db).await
    }

    async fn wait_for_txn(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()> {
        self.wait_for_position(txn, timeout).await
    }

    async fn replication_status(&self) -> Result<ReplicationStatus> {
        self.status().await
    }

    /// [`PostgresStrategy::grant_standby`] for `opts.replica_id` (login and slot), with this
    /// primary's position and timeline history.
    async fn get_replica_context(&self, opts: &ReplicaContextOptions) -> Result<ReplicaContext> {
        self.context_impl(opts).await
    }

    /// A standby (or a fenced former primary) gets the new `primary_conninfo` and slot
    /// (reloaded) and follows the source's latest timeline; it is refused with `Diverged` when
    /// it holds WAL past the point where the source's history left its timeline. A primary
    /// rejoins by `pg_rewind` ([`PostgresStrategy::rejoin_as_standby`]).
    async fn attach_replica(
        &self,
        source: &ReplicaContext,
        opts: &RepointOptions,
    ) -> Result<AttachOutcome> {
        self.repoint_impl(source, opts).await
    }

    async fn get_last_txn(&self) -> Result<LastTxn> {
        self.last_txn_impl().await
    }

    /// Restarts the primary in recovery (see the module notes of `failover.rs`): no session can
    /// write to a server in recovery.
    async fn fence_writes(&self, opts: &FenceOptions) -> Result<ReplicationPosition> {
        let _g = self.change.begin("fence_writes")?;
        self.fence_locked(opts).await
    }

    async fn unfence_writes(&self) -> Result<()> {
        let _g = self.change.begin("unfence_writes")?;
        self.unfence_locked().await
    }

    async fn stop_receiver(&self, opts: &FenceOptions) -> Result<LastTxn> {
        {
            let _g = self.change.begin("stop_receiver")?;
            self.stop_receiver_locked(opts).await?;
        }
        self.last_txn_impl().await
    }
}
