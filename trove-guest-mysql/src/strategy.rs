//! [`MysqlStrategy`]: the `ReplicationStrategy` for MySQL and MariaDB.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use trove_guest_core::failover::{
    FenceOptions, LastTxn, ReplicaContext, ReplicaContextOptions, RepointOptions,
};
use trove_guest_core::lifecycle::{self, ChangeGuard, ChangeLock, OwnedChangeGuard};
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, DatastoreHandle, DatastoreKind, DemoteOptions,
    DetachOptions, DetachedReplica, EnableMasterOptions, RecoverOptions, RecoveryReport,
    ReplicationPosition, ReplicationStatus, ReplicationStrategy, Result, SnapshotDocument,
    SnapshotRequest, SnapshotStore, StageRequest, StagedSnapshot,
};

use crate::client::{Row, Session};
use crate::flavor::Flavor;
use crate::options::MysqlOptions;
use crate::sql::Sql;

/// Replication for one local MySQL or MariaDB server, with snapshots in a [`SnapshotStore`].
///
/// The flavor (MariaDB 10.6+/11.x, MySQL 5.7/8.0/8.4+) is detected from the server on first
/// use. Changes run one at a time under the core lifecycle's policy
/// ([`trove_guest_core::lifecycle`]): a second one while another runs fails with
/// [`Error::Busy`](trove_guest_core::Error::Busy).
pub struct MysqlStrategy {
    pub(crate) handle: DatastoreHandle,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) opts: MysqlOptions,
    flavor: OnceCell<Flavor>,
    change: ChangeLock,
    /// The session holding the global read lock while writes are fenced.
    pub(crate) fence: tokio::sync::Mutex<Option<Session>>,
}

impl std::fmt::Debug for MysqlStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStrategy")
            .field("handle", &self.handle)
            .field("store", &self.store)
            .field("flavor", &self.flavor.get())
            .finish_non_exhaustive()
    }
}

/// Replication-relevant server variables.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerVars {
    pub(crate) log_bin: bool,
    pub(crate) binlog_format: String,
    pub(crate) server_id: u32,
    pub(crate) read_only: bool,
    /// MariaDB `gtid_current_pos`, MySQL `gtid_executed`.
    pub(crate) gtid: String,
    pub(crate) gtid_mode_on: bool,
}

pub(crate) fn truthy(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_uppercase()).as_deref(),
        Some("1" | "ON" | "YES" | "TRUE")
    )
}

impl MysqlStrategy {
    /// A strategy acting on the server behind `handle`, storing snapshots in `store`.
    pub fn new(handle: DatastoreHandle, store: Arc<dyn SnapshotStore>, opts: MysqlOptions) -> Self {
        MysqlStrategy {
            handle,
            store,
            opts,
            flavor: OnceCell::new(),
            change: ChangeLock::new(),
            fence: tokio::sync::Mutex::new(None),
        }
    }

    /// Like [`MysqlStrategy::new`], and detects the server's flavor now, so that
    /// [`ReplicationStrategy::datastore`] is exact from the start (before detection it reports
    /// [`MysqlOptions::expected_datastore`]).
    ///
    /// # Errors
    ///
    /// As [`MysqlStrategy::flavor`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn connect(
        handle: DatastoreHandle,
        store: Arc<dyn SnapshotStore>,
        opts: MysqlOptions,
    ) -> Result<Self> {
        let s = Self::new(handle, store, opts);
        s.flavor().await?;
        Ok(s)
    }

    /// The server's flavor, detected on first use.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when the server cannot be reached; [`Error::Unsupported`] for an
    /// unsupported version.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn flavor(&self) -> Result<Flavor> {
        self.flavor
            .get_or_try_init(|| async {
                let mut s = self.session().await?;
                let row = s.one(&Sql::server_identity()).await?;
                s.close().await;
                Flavor::detect(
                    row.get(&["version"]).unwrap_or_default(),
                    row.get(&["comment"]).unwrap_or_default(),
                )
            })
            .await
            .copied()
    }

    pub(crate) async fn sql(&self) -> Result<Sql> {
        Ok(Sql::new(self.flavor().await?))
    }

    pub(crate) async fn session(&self) -> Result<Session> {
        Session::open(&self.handle.admin).await
    }

    /// Like [`MysqlStrategy::guard`], as a guard a cleanup task can take over.
    pub(crate) fn owned_guard(&self, what: &str) -> Result<OwnedChangeGuard> {
        self.change.begin_owned(what)
    }

    pub(crate) fn guard(&self, what: &str) -> Result<ChangeGuard<'_>> {
        self.change.begin(what)
    }

    pub(crate) fn backup_tool(&self, flavor: Flavor) -> PathBuf {
        self.opts
            .backup_tool
            .clone()
            .unwrap_or_else(|| self.handle.program(flavor.backup_tool()))
    }

    pub(crate) fn stream_tool(&self, flavor: Flavor) -> PathBuf {
        self.opts
            .stream_tool
            .clone()
            .unwrap_or_else(|| self.handle.program(flavor.stream_tool()))
    }

    pub(crate) async fn vars(&self, s: &mut Session, sql: &Sql) -> Result<ServerVars> {
        let r = s.one(&sql.server_variables()).await?;
        Ok(ServerVars {
            log_bin: truthy(r.get(&["log_bin"])),
            binlog_format: r.get(&["binlog_format"]).unwrap_or_default().to_owned(),
            server_id: r
                .get(&["server_id"])
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            read_only: truthy(r.get(&["read_only"])),
            gtid: r
                .get(&["gtid"])
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect(),
            gtid_mode_on: r
                .get(&["gtid_mode"])
                .is_some_and(|m| m.eq_ignore_ascii_case("ON")),
        })
    }

    pub(crate) async fn replica_row(&self, s: &mut Session, sql: &Sql) -> Result<Option<Row>> {
        s.row(&sql.replica_status()).await
    }
}

pub(crate) use trove_guest_core::poll::Backoff;

#[async_trait]
impl ReplicationStrategy for MysqlStrategy {
    fn datastore(&self) -> DatastoreKind {
        self.flavor
            .get()
            .map_or(self.opts.expected_datastore, |f| f.datastore())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_gtid_positioning(true)
            .with_file_positioning(true)
            .with_staging(true)
    }

    async fn enable_as_master(&self, opts: &EnableMasterOptions) -> Result<()> {
        let _g = self.guard("enable_as_master")?;
        self.enable_master_impl(opts).await
    }

    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument> {
        // The lock goes with the snapshot's cleanup when the call is cancelled.
        let g = self.owned_guard("get_replication_snapshot")?;
        self.snapshot_impl(req, g).await
    }

    fn snapshot_href(&self, name: &str) -> Result<String> {
        self.store.snapshot_href(name)
    }

    async fn stage_snapshot(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        let _g = self.guard("stage_snapshot")?;
        self.stage_impl(req).await
    }

    async fn attach_replication_slave(
        &self,
        snapshot: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        let _g = self.guard("attach_replication_slave")?;
        self.attach_impl(snapshot, req).await
    }

    async fn detach_replication_slave(&self, opts: &DetachOptions) -> Result<DetachedReplica> {
        let _g = self.guard("detach_replication_slave")?;
        self.detach_impl(opts).await
    }

    async fn cleanup_source_on_replica_detach(&self, replica: &DetachedReplica) -> Result<()> {
        let _g = self.guard("cleanup_source_on_replica_detach")?;
        self.cleanup_impl(replica).await
    }

    async fn demote_replication_master(&self, opts: &DemoteOptions) -> Result<()> {
        let _g = self.guard("demote_replication_master")?;
        self.demote_impl(opts).await
    }

    async fn recover(&self, opts: &RecoverOptions) -> Result<RecoveryReport> {
        let _g = self.guard("recover")?;
        lifecycle::recover(self, opts).await
    }

    async fn make_read_only(&self, read_only: bool) -> Result<()> {
        let _g = self.guard("make_read_only")?;
        let sql = self.sql().await?;
        let mut s = self.session().await?;
        s.exec_all(&sql.set_read_only(read_only)).await?;
        s.close().await;
        Ok(())
    }

    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        self.latest_txn_impl().await
    }

    async fn wait_for_txn(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()> {
        self.wait_for_txn_impl(txn, timeout).await
    }

    async fn replication_status(&self) -> Result<ReplicationStatus> {
        self.status_impl().await
    }

    /// Makes (or renews the password of) the account `<prefix><replica id>@'%'`, not
    /// binary-logged, and returns it with this server's `gtid_binlog_pos` and, as
    /// `forked_at`, its `gtid_slave_pos` (what it had replicated before it was promoted).
    async fn get_replica_context(&self, opts: &ReplicaContextOptions) -> Result<ReplicaContext> {
        let _g = self.guard("get_replica_context")?;
        self.context_impl(opts).await
    }

    /// Re-points by GTID (`gtid_slave_pos` seeded from `gtid_current_pos`,
    /// `MASTER_USE_GTID=slave_pos`), after refusing a server holding GTIDs the source lacks.
    async fn attach_replica(
        &self,
        source: &ReplicaContext,
        opts: &RepointOptions,
    ) -> Result<AttachOutcome> {
        let _g = self.guard("attach_replica")?;
        self.repoint_impl(source, opts).await
    }

    async fn get_last_txn(&self) -> Result<LastTxn> {
        self.last_txn_impl().await
    }

    async fn fence_writes(&self, opts: &FenceOptions) -> Result<ReplicationPosition> {
        let _g = self.guard("fence_writes")?;
        self.fence_impl(opts).await
    }

    async fn unfence_writes(&self) -> Result<()> {
        let _g = self.guard("unfence_writes")?;
        self.unfence_impl().await
    }

    async fn stop_receiver(&self, opts: &FenceOptions) -> Result<LastTxn> {
        let _g = self.guard("stop_receiver")?;
        self.stop_receiver_impl(opts).await
    }
}
