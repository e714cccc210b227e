//! The replication contract every datastore backend implements.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lifecycle::{RecoverOptions, RecoveryReport};
use crate::position::ReplicationPosition;
use crate::progress::Progress;
use crate::store::{Expected, FollowOptions};
use crate::wire::{DatastoreKind, MasterAddress, SnapshotDocument};

/// The replication role of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Not replicating and not set up as a master.
    Standalone,
    /// Set up to serve replicas (binary logging / WAL senders on).
    Master,
    /// Replicating from a master.
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Standalone => "standalone",
            Role::Master => "master",
            Role::Replica => "replica",
        })
    }
}

/// What a backend supports; the conformance suite runs only the checks that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Attach can position by GTID.
    pub gtid_positioning: bool,
    /// Attach can position by binlog file and offset.
    pub file_positioning: bool,
    /// Replicas get a replication slot on the master.
    pub slots: bool,
    /// A former master can rejoin as a replica by rewinding.
    pub rewind: bool,
    /// [`ReplicationStrategy::stage_snapshot`] is implemented: a replica can restore a snapshot
    /// while the master is still taking it.
    pub staging: bool,
}

impl Capabilities {
    /// All flags off.
    pub fn none() -> Self {
        Self::default()
    }
    /// Sets [`Capabilities::gtid_positioning`].
    pub fn with_gtid_positioning(mut self, v: bool) -> Self {
        self.gtid_positioning = v;
        self
    }
    /// Sets [`Capabilities::file_positioning`].
    pub fn with_file_positioning(mut self, v: bool) -> Self {
        self.file_positioning = v;
        self
    }
    /// Sets [`Capabilities::slots`].
    pub fn with_slots(mut self, v: bool) -> Self {
        self.slots = v;
        self
    }
    /// Sets [`Capabilities::rewind`].
    pub fn with_rewind(mut self, v: bool) -> Self {
        self.rewind = v;
        self
    }
    /// Sets [`Capabilities::staging`].
    pub fn with_staging(mut self, v: bool) -> Self {
        self.staging = v;
        self
    }
}

/// Options for [`ReplicationStrategy::enable_as_master`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EnableMasterOptions {
    /// Restart the server if a setting needs it (default: true via [`EnableMasterOptions::new`]).
    pub allow_restart: bool,
}

impl EnableMasterOptions {
    /// Defaults: restart allowed.
    pub fn new() -> Self {
        EnableMasterOptions {
            allow_restart: true,
        }
    }
}

/// A request for [`ReplicationStrategy::get_replication_snapshot`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SnapshotRequest {
    /// Identifies the replica this snapshot is for; names its account (and slot). A random id is
    /// used when absent.
    pub replica_id: Option<String>,
    /// The replica's address, when known: the replication account is restricted to it.
    pub replica_host: Option<String>,
    /// Name of the snapshot in the store; derived from the replica id and time when absent.
    pub snapshot_name: Option<String>,
    /// Backup tool parallelism (`--parallel`); the tool default when absent.
    pub parallel: Option<u32>,
    /// Where progress goes.
    pub progress: Progress,
}

impl SnapshotRequest {
    /// A request with defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`SnapshotRequest::replica_id`].
    pub fn with_replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica_id = Some(id.into());
        self
    }
    /// Sets [`SnapshotRequest::replica_host`].
    pub fn with_replica_host(mut self, host: impl Into<String>) -> Self {
        self.replica_host = Some(host.into());
        self
    }
    /// Sets [`SnapshotRequest::snapshot_name`].
    pub fn with_snapshot_name(mut self, name: impl Into<String>) -> Self {
        self.snapshot_name = Some(name.into());
        self
    }
    /// Sets [`SnapshotRequest::parallel`].
    pub fn with_parallel(mut self, n: u32) -> Self {
        self.parallel = Some(n);
        self
    }
    /// Sets [`SnapshotRequest::progress`].
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }
}

/// How a MySQL/MariaDB replica is positioned on its master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Positioning {
    /// By GTID (MariaDB `MASTER_USE_GTID=slave_pos`, MySQL auto-position). The default.
    #[default]
    Gtid,
    /// By binary log file and offset.
    BinlogFile,
}

/// A request for [`ReplicationStrategy::attach_replication_slave`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttachRequest {
    /// GTID or file/offset positioning (ignored by datastores without the choice).
    pub positioning: Positioning,
    /// The replica's server id; derived from the datastore handle when absent.
    pub server_id: Option<u32>,
    /// How long to wait for replication to run and reach the snapshot position.
    pub timeout: Duration,
    /// Where progress goes.
    pub progress: Progress,
}

impl Default for AttachRequest {
    fn default() -> Self {
        AttachRequest {
            positioning: Positioning::Gtid,
            server_id: None,
            timeout: Duration::from_secs(300),
            progress: Progress::none(),
        }
    }
}

impl AttachRequest {
    /// A request with defaults (GTID positioning, 300 s timeout).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`AttachRequest::positioning`].
    pub fn with_positioning(mut self, p: Positioning) -> Self {
        self.positioning = p;
        self
    }
    /// Sets [`AttachRequest::server_id`].
    pub fn with_server_id(mut self, id: u32) -> Self {
        self.server_id = Some(id);
        self
    }
    /// Sets [`AttachRequest::timeout`].
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Sets [`AttachRequest::progress`].
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }
}

/// A request for [`ReplicationStrategy::stage_snapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StageRequest {
    /// The snapshot to stage: complete, or still being uploaded.
    pub href: String,
    /// Size and SHA-256 the snapshot must have, when already known.
    pub expected: Expected,
    /// How to follow an upload in progress.
    pub follow: FollowOptions,
    /// Where progress goes.
    pub progress: Progress,
}

impl StageRequest {
    /// Stages the snapshot at `href`, following its upload with default options.
    pub fn new(href: impl Into<String>) -> Self {
        StageRequest {
            href: href.into(),
            expected: Expected::default(),
            follow: FollowOptions::default(),
            progress: Progress::none(),
        }
    }
    /// Sets [`StageRequest::expected`].
    pub fn with_expected(mut self, expected: Expected) -> Self {
        self.expected = expected;
        self
    }
    /// Sets [`StageRequest::follow`].
    pub fn with_follow(mut self, follow: FollowOptions) -> Self {
        self.follow = follow;
        self
    }
    /// Sets [`StageRequest::progress`].
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }
}

/// A snapshot restored (verified, and prepared where the datastore needs it) next to the data
/// directory, ready for [`ReplicationStrategy::attach_replication_slave`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StagedSnapshot {
    /// The snapshot.
    pub href: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its lowercase hex SHA-256, as verified against the store's manifest.
    pub sha256: String,
    /// True when an earlier call had already staged it (nothing was read this time).
    pub reused: bool,
}

impl StagedSnapshot {
    /// Builds the description of a staged snapshot.
    pub fn new(
        href: impl Into<String>,
        size: u64,
        sha256: impl Into<String>,
        reused: bool,
    ) -> Self {
        StagedSnapshot {
            href: href.into(),
            size,
            sha256: sha256.into(),
            reused,
        }
    }

    /// Whether this staged copy is the snapshot `doc` describes: same href, and the same size
    /// and SHA-256 wherever the document carries them.
    pub fn matches(&self, doc: &SnapshotDocument) -> bool {
        let d = &doc.dataset;
        d.snapshot_href == self.href
            && d.size_bytes.is_none_or(|s| s == self.size)
            && d.sha256
                .as_deref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&self.sha256))
    }
}

/// What an attach did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttachOutcome {
    /// Bytes read from the store.
    pub restored_bytes: u64,
    /// The position the replica had applied when the call returned.
    pub applied: Option<ReplicationPosition>,
}

impl AttachOutcome {
    /// Builds an outcome.
    pub fn new(restored_bytes: u64, applied: Option<ReplicationPosition>) -> Self {
        AttachOutcome {
            restored_bytes,
            applied,
        }
    }
}

/// Options for [`ReplicationStrategy::detach_replication_slave`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DetachOptions {
    /// How long to wait for replication threads to stop / promotion to finish.
    pub timeout: Duration,
    /// The replica becomes the new master of its former siblings (switchover, failover):
    /// everything it received is applied before replication stops (nothing received is
    /// discarded with the relay log), and the replication accounts it holds are kept, since
    /// the other replicas will use them. Default false.
    pub for_failover: bool,
}

impl Default for DetachOptions {
    fn default() -> Self {
        DetachOptions {
            timeout: Duration::from_secs(60),
            for_failover: false,
        }
    }
}

impl DetachOptions {
    /// Defaults (60 s timeout).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`DetachOptions::timeout`].
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Sets [`DetachOptions::for_failover`].
    pub fn with_for_failover(mut self, on: bool) -> Self {
        self.for_failover = on;
        self
    }
}

/// What the master needs to forget a detached replica; returned by
/// [`ReplicationStrategy::detach_replication_slave`] and passed to
/// [`ReplicationStrategy::cleanup_source_on_replica_detach`] on the master.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DetachedReplica {
    /// The replication account the replica used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_user: Option<String>,
    /// The slot the replica streamed from (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_name: Option<String>,
    /// The master it was attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterAddress>,
    /// False when the server was not replicating (a repeated detach).
    pub was_replicating: bool,
}

impl DetachedReplica {
    /// Builds the description of a detached replica.
    pub fn new(
        replication_user: Option<String>,
        slot_name: Option<String>,
        master: Option<MasterAddress>,
        was_replicating: bool,
    ) -> Self {
        DetachedReplica {
            replication_user,
            slot_name,
            master,
            was_replicating,
        }
    }
}

/// Options for [`ReplicationStrategy::demote_replication_master`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DemoteOptions {
    /// Also purge the binary logs / WAL kept for replicas (default true via `new`).
    pub purge_logs: bool,
}

impl DemoteOptions {
    /// Defaults: purge logs made for replication.
    pub fn new() -> Self {
        DemoteOptions { purge_logs: true }
    }
}

/// A snapshot of a server's replication state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicationStatus {
    /// Current role.
    pub role: Option<Role>,
    /// The master this server replicates from.
    pub master: Option<MasterAddress>,
    /// Whether the receiving side runs (IO thread / WAL receiver).
    pub receiver_running: Option<bool>,
    /// Whether the applying side runs (SQL thread / startup process replaying).
    pub applier_running: Option<bool>,
    /// Lag in seconds as the server reports it.
    pub lag_seconds: Option<f64>,
    /// Lag in bytes (PostgreSQL: received minus replayed).
    pub lag_bytes: Option<u64>,
    /// The last replication error, if any.
    pub last_error: Option<String>,
    /// The position this server has applied.
    pub executed: Option<ReplicationPosition>,
    /// The position this server has received (replica) .
    pub received: Option<ReplicationPosition>,
    /// Number of replicas connected (master).
    pub connected_replicas: Option<u32>,
    /// Whether the server refuses client writes.
    pub read_only: Option<bool>,
}

/// The guest-side replication calls of one datastore.
///
/// Implementations act on one local server described by a
/// [`DatastoreHandle`](crate::DatastoreHandle). Every call is safe to retry after a failure or
/// cancellation: the steps check current state before changing it, and data directories are
/// swapped only after a restore fully succeeded.
///
/// # Concurrency
///
/// One change at a time, for every backend: a call that changes the server
/// ([`enable_as_master`](Self::enable_as_master), snapshot, stage, attach, detach, cleanup,
/// demote, [`make_read_only`](Self::make_read_only), [`recover`](Self::recover), and the
/// failover calls: replica context, re-point, fence, unfence, stop receiver) fails at once
/// with [`Error::Busy`] while another change runs on the same strategy; it never queues. Calls
/// that only read ([`replication_status`](Self::replication_status), positions,
/// [`get_last_txn`](Self::get_last_txn), [`wait_for_txn`](Self::wait_for_txn)) run at any time. Backends implement this with
/// [`lifecycle::ChangeLock`](crate::lifecycle::ChangeLock).
///
/// # Crash safety
///
/// Attach and stage run on the core lifecycle ([`crate::lifecycle`]): each irreversible step
/// is journaled first, and [`recover`](Self::recover), which an agent runs before it serves,
/// rolls an interrupted change forward or back. Embedders must call it at startup too.
#[async_trait]
pub trait ReplicationStrategy: Send + Sync + fmt::Debug {
    /// The datastore this strategy serves.
    fn datastore(&self) -> DatastoreKind;

    /// What this strategy supports.
    fn capabilities(&self) -> Capabilities;

    /// Finishes or undoes whatever an earlier process of this agent left half done, before the
    /// strategy serves anything: an agent calls it once at startup (embedders must too).
    ///
    /// It reads the lifecycle journal and rolls an interrupted attach forward to the complete
    /// replica or back to the previous data, whichever the journal proves safe; removes stale
    /// overrides that would keep the server from starting; starts the server when it is not
    /// running ([`RecoverOptions::ensure_running`]); sweeps staging, old-data, partial-upload
    /// and secret leftovers; and on a master drops the slots and accounts made for snapshots
    /// that never committed. Each action is logged and reported. Idempotent: a second call finds
    /// nothing to do.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a leftover cannot be moved or removed; [`Error::Service`] when the
    /// server cannot be started; the journal is kept then, and a later call tries again.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, but every step is journaled or idempotent: calling it again completes
    /// the recovery.
    async fn recover(&self, opts: &RecoverOptions) -> Result<RecoveryReport> {
        let _ = opts;
        Ok(RecoveryReport::new())
    }

    /// Makes the server able to serve replicas: binary logging / WAL senders, row format,
    /// server id. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when the server rejects a change; [`Error::Service`] when a needed
    /// restart fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled call may leave override files written but not applied. Calling
    /// it again completes the change.
    async fn enable_as_master(&self, opts: &EnableMasterOptions) -> Result<()>;

    /// Takes a consistent physical snapshot into the strategy's snapshot store, creates a
    /// replication account (and slot) for the replica and returns the snapshot document.
    ///
    /// # Errors
    ///
    /// [`Error::ToolFailed`] when the backup tool fails; [`Error::Store`] or [`Error::Io`] when
    /// the store cannot take the snapshot; [`Error::Datastore`] for SQL failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: dropping the future kills the backup tool's process group and
    /// leaves no visible snapshot (stores publish only complete snapshots). An account or slot
    /// made before the cancel remains; a repeated call with the same replica id reuses it.
    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument>;

    /// The href [`get_replication_snapshot`](Self::get_replication_snapshot) will give a
    /// snapshot named `name` (see [`SnapshotRequest::snapshot_name`]), so that a replica can
    /// [`stage_snapshot`](Self::stage_snapshot) it while it is being taken.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad name; [`Error::Unsupported`] (the default) when the
    /// strategy cannot tell in advance.
    fn snapshot_href(&self, name: &str) -> Result<String> {
        let _ = name;
        Err(Error::unsupported(
            "snapshot hrefs known before the snapshot",
        ))
    }

    /// Restores a snapshot into a staging area next to the data directory, without touching the
    /// running server or its data: it reads the snapshot from the store, following its upload
    /// if the master is still taking it ([`SnapshotStore::follow`](crate::SnapshotStore::follow)),
    /// verifies it and prepares it. A later
    /// [`attach_replication_slave`](Self::attach_replication_slave) with a document naming the
    /// same href, size and SHA-256 uses the staged copy instead of reading the snapshot again;
    /// any other document discards it. Staging is an optimisation only: attach never needs it.
    ///
    /// Staging the snapshot that is already staged returns at once (`reused: true`); staging
    /// another one replaces it (one staged snapshot per server).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] (the default) for strategies without staging;
    /// [`Error::InvalidInput`] for an href outside this agent's store; [`Error::NotFound`] when
    /// the snapshot never appears; [`Error::Integrity`] for a corrupt, truncated or abandoned
    /// snapshot (nothing stays staged); [`Error::ToolFailed`] when extraction or preparation
    /// fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a cancel kills the extraction and leaves a partial staging area
    /// that is never used and is removed by the next stage or attach.
    async fn stage_snapshot(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        let _ = req;
        Err(Error::unsupported("staging a snapshot before attach"))
    }

    /// Restores `snapshot` on this server and starts replicating from its position; returns when
    /// replication runs and has applied the snapshot position. A snapshot staged earlier by
    /// [`stage_snapshot`](Self::stage_snapshot) is used when it is the one `snapshot` names.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for another datastore or version; [`Error::Integrity`] for a
    /// corrupt or truncated snapshot (the previous data directory stays in place);
    /// [`Error::Diverged`] when this server has transactions its master lacks;
    /// [`Error::Timeout`] when replication does not catch up in time.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancel before the swap leaves the old data directory in place and a
    /// staging directory that the next call removes; a cancel after the swap leaves the restored
    /// data in place, and a repeated call restores again.
    async fn attach_replication_slave(
        &self,
        snapshot: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome>;

    /// Stops replicating and makes the server a writable standalone server with all its data.
    /// Idempotent: on a server that is not replicating it returns `was_replicating: false`.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when the server rejects the change; [`Error::Timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: each step checks state first, so a repeated call finishes the work.
    async fn detach_replication_slave(&self, opts: &DetachOptions) -> Result<DetachedReplica>;

    /// On the master: drops the account (and slot) of a detached replica. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a malformed account or slot name; [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a repeated call finishes the work.
    async fn cleanup_source_on_replica_detach(&self, replica: &DetachedReplica) -> Result<()>;

    /// Returns a master to its pre-replication state: binary logging off, replication settings,
    /// accounts, slots and logs made for replication removed. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::WrongRole`] on a replica; [`Error::Datastore`]; [`Error::Service`] when the
    /// restart fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancel can leave the change half applied; a repeated call completes it.
    async fn demote_replication_master(&self, opts: &DemoteOptions) -> Result<()>;

    /// Makes the server refuse (or accept again) client writes; replication still applies.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the change is one statement (or a repeatable sequence).
    async fn make_read_only(&self, read_only: bool) -> Result<()>;

    /// The position of the latest transaction this server has executed.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition>;

    /// Waits until this server has applied `txn`, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the position is not reached in time; [`Error::InvalidInput`] for
    /// a position of another datastore.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn wait_for_txn(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()>;

    /// The server's replication state.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn replication_status(&self) -> Result<ReplicationStatus>;

    /// What another server needs to replicate from this one without a snapshot: this server's
    /// address and current position, where its history forked from its former master's, and a
    /// replication account (and slot) named for `opts.replica_id`. Call it on a master; calling
    /// it again for the same id gives the account a new password (contexts given earlier for
    /// that id stop working). With [`ServerTls`](crate::ServerTls) on the handle, the grant
    /// carries the CA certificate and the server name the replica verifies (never a key) and
    /// the account admits TLS connections only.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] (the default); [`Error::InvalidInput`] for a bad replica id;
    /// [`Error::WrongRole`] on a server that cannot serve replicas (not enabled as master, or
    /// replicating); [`Error::Tls`] when this server's certificate does not verify for its
    /// name; [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a repeated call finishes the work.
    async fn get_replica_context(
        &self,
        opts: &crate::failover::ReplicaContextOptions,
    ) -> Result<crate::failover::ReplicaContext> {
        let _ = opts;
        Err(Error::unsupported(
            "replica contexts (re-pointing without a snapshot)",
        ))
    }

    /// Starts replicating from `source` (a [`ReplicaContext`](crate::failover::ReplicaContext)
    /// from the new master) without a snapshot: a replica is re-pointed, a former master
    /// becomes a replica (PostgreSQL rewinds it first when its history forked). Returns once
    /// replication runs and has applied `source.position`, at most `opts.timeout`. Calling it
    /// again is safe: a server already replicating from `source` keeps its position and takes
    /// the (possibly renewed) password of the context. With TLS in the context, the source's
    /// certificate is verified from this host before anything changes, and replication runs
    /// with the certificate verified.
    ///
    /// # Errors
    ///
    /// [`Error::Diverged`] when this server holds transactions the source lacks (nothing is
    /// changed; a fresh snapshot is needed); [`Error::Tls`] when the source's certificate does
    /// not verify, or the context has no TLS and this server's policy requires it (nothing is
    /// changed: the server keeps following its old source); [`Error::Timeout`];
    /// [`Error::Incompatible`] for a source of another datastore; [`Error::Unsupported`] (the
    /// default); [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancel can leave replication configured but not yet verified; a
    /// repeated call completes it.
    async fn attach_replica(
        &self,
        source: &crate::failover::ReplicaContext,
        opts: &crate::failover::RepointOptions,
    ) -> Result<AttachOutcome> {
        let _ = (source, opts);
        Err(Error::unsupported("re-pointing without a snapshot"))
    }

    /// The last transaction this server received and applied, the source it came from, and
    /// the transactions it executed itself that no source sent (errant).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`]; [`Error::Unsupported`] (the default).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn get_last_txn(&self) -> Result<crate::failover::LastTxn> {
        Err(Error::unsupported("get_last_txn"))
    }

    /// Fences a master before a switchover: every client write is refused, privileged sessions
    /// included, and sessions holding writes are ended; replicas keep receiving what was
    /// committed. Returns the last transaction this server will have (what a candidate must
    /// apply). Idempotent: on a fenced server it returns the same position.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when sessions cannot be ended within `opts.timeout`;
    /// [`Error::Datastore`]; [`Error::Service`]; [`Error::Unsupported`] (the default).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancel can leave the server fenced; [`unfence_writes`](Self::unfence_writes)
    /// or a repeated call settles it.
    async fn fence_writes(
        &self,
        opts: &crate::failover::FenceOptions,
    ) -> Result<ReplicationPosition> {
        let _ = opts;
        Err(Error::unsupported("fencing writes"))
    }

    /// Undoes [`fence_writes`](Self::fence_writes): the server accepts writes again.
    /// Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`]; [`Error::Service`]; [`Error::Unsupported`] (the default).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a repeated call completes it.
    async fn unfence_writes(&self) -> Result<()> {
        Err(Error::unsupported("fencing writes"))
    }

    /// On a replica whose master is gone: stops receiving, lets everything already received be
    /// applied (at most `opts.timeout`) and returns the last transaction. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when what was received is not applied in time; [`Error::Datastore`];
    /// [`Error::Unsupported`] (the default).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a repeated call finishes the work.
    async fn stop_receiver(
        &self,
        opts: &crate::failover::FenceOptions,
    ) -> Result<crate::failover::LastTxn> {
        let _ = opts;
        Err(Error::unsupported("stopping the receiver"))
    }
}

/// Conveniences built on [`ReplicationStrategy`], implemented for every strategy.
#[async_trait]
pub trait ReplicationStrategyExt: ReplicationStrategy {
    /// Waits until this server has applied everything `master` has executed now.
    ///
    /// Whether the position is reached is this strategy's to say
    /// ([`ReplicationStrategy::wait_for_txn`]): core does not order positions, so an
    /// [`OpaquePosition`](crate::OpaquePosition) works like any other. A position of a datastore
    /// core does not know is refused here when it is not this strategy's datastore (and a
    /// strategy of such a datastore is given only its own positions).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a position of another datastore than this strategy's where
    /// one of them is not a datastore core knows; as
    /// [`ReplicationStrategy::get_latest_txn_id`] on the master and
    /// [`ReplicationStrategy::wait_for_txn`] here.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn catch_up_with(
        &self,
        master: &dyn ReplicationStrategy,
        timeout: Duration,
    ) -> Result<ReplicationPosition> {
        let txn = master.get_latest_txn_id().await?;
        let ours = self.datastore();
        let theirs = txn.datastore();
        let open = !ours.is_known() || matches!(txn, ReplicationPosition::Opaque(_));
        if open && theirs != Some(ours) {
            return Err(Error::invalid(
                "position",
                format!(
                    "the master's position {txn} is not a {ours} position; this server cannot wait for it"
                ),
            ));
        }
        self.wait_for_txn(&txn, timeout).await?;
        Ok(txn)
    }

    /// Provisions this server as a replica of `master` in one flow: `master` takes the snapshot
    /// while this server stages it (following the upload), then this server attaches. With
    /// strategies and stores that support it, restoring overlaps taking the snapshot, so a
    /// replica is ready in about the time of one pass over the data; otherwise the flow is the
    /// plain snapshot then attach.
    ///
    /// `snapshot.snapshot_name` is generated when absent (the href must be known in advance).
    /// A failed staging is logged and ignored (attach then reads the snapshot itself); a failed
    /// snapshot cancels the staging.
    ///
    /// # Errors
    ///
    /// As [`ReplicationStrategy::get_replication_snapshot`] on the master and
    /// [`ReplicationStrategy::attach_replication_slave`] here.
    ///
    /// # Cancel safety
    ///
    /// As those two calls: dropping the future kills the backup and the extraction; the old data
    /// directory stays in place unless the attach had already swapped it.
    async fn provision_from(
        &self,
        master: &dyn ReplicationStrategy,
        snapshot: &SnapshotRequest,
        attach: &AttachRequest,
    ) -> Result<Provisioned> {
        let mut snapshot = snapshot.clone();
        let name = match &snapshot.snapshot_name {
            Some(n) => n.clone(),
            None => {
                let n = format!(
                    "provision-{}",
                    crate::Secret::random(12).expose().to_ascii_lowercase()
                );
                snapshot.snapshot_name = Some(n.clone());
                n
            }
        };
        let href = match master.snapshot_href(&name) {
            Ok(h) if self.capabilities().staging => Some(h),
            Ok(_) | Err(Error::Unsupported { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(href) = href else {
            let document = master.get_replication_snapshot(&snapshot).await?;
            let outcome = self.attach_replication_slave(&document, attach).await?;
            return Ok(Provisioned::new(document, outcome, None));
        };
        let stage_req = StageRequest::new(href).with_progress(attach.progress.clone());
        let snap_fut = master.get_replication_snapshot(&snapshot);
        let stage_fut = self.stage_snapshot(&stage_req);
        tokio::pin!(snap_fut, stage_fut);
        let mut staged = None;
        let document = loop {
            tokio::select! {
                d = &mut snap_fut => break d,
                s = &mut stage_fut, if staged.is_none() => staged = Some(s),
            }
        };
        // A failed snapshot drops (cancels) the staging still following it.
        let document = document?;
        let staged = match staged {
            Some(s) => s,
            None => stage_fut.await,
        };
        let staged = match staged {
            Ok(s) if s.matches(&document) => Some(s),
            Ok(s) => {
                tracing::warn!(staged = %s.href, "the staged snapshot is not the one taken; attach reads it again");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "staging failed; attach reads the snapshot itself");
                None
            }
        };
        let outcome = self.attach_replication_slave(&document, attach).await?;
        Ok(Provisioned::new(document, outcome, staged))
    }

    /// Fails with [`Error::WrongRole`] unless the server is in `expected` role.
    ///
    /// # Errors
    ///
    /// [`Error::WrongRole`]; errors of [`ReplicationStrategy::replication_status`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn ensure_role(&self, expected: Role) -> Result<()> {
        let actual = self
            .replication_status()
            .await?
            .role
            .unwrap_or(Role::Standalone);
        if actual == expected {
            Ok(())
        } else {
            Err(Error::WrongRole { expected, actual })
        }
    }
}

impl<T: ReplicationStrategy + ?Sized> ReplicationStrategyExt for T {}

/// What [`ReplicationStrategyExt::provision_from`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Provisioned {
    /// The master's snapshot document.
    pub document: SnapshotDocument,
    /// The attach's outcome.
    pub outcome: AttachOutcome,
    /// The snapshot staged while the master took it, when staging overlapped the snapshot.
    pub staged: Option<StagedSnapshot>,
}

impl Provisioned {
    /// Builds the result of a provisioning flow.
    pub fn new(
        document: SnapshotDocument,
        outcome: AttachOutcome,
        staged: Option<StagedSnapshot>,
    ) -> Self {
        Provisioned {
            document,
            outcome,
            staged,
        }
    }
}

/// A shared strategy, as an agent holds it.
pub type SharedStrategy = Arc<dyn ReplicationStrategy>;
