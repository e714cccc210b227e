//! [`RedisStrategy`]: the replication contract for Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use trove_guest_core::lifecycle::{self, ChangeLock};
use trove_guest_core::poll::Backoff;
use trove_guest_core::strategy::Role;
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, DatastoreHandle, DatastoreKind, DemoteOptions,
    DetachOptions, DetachedReplica, EnableMasterOptions, Error, OpaquePosition, OsUser,
    RecoverOptions, RecoveryReport, ReplicationPosition, ReplicationStatus, ReplicationStrategy,
    Result, SnapshotDocument, SnapshotRequest, SnapshotStore, StageRequest, StagedSnapshot,
    deadline,
};

use crate::commands::{self, Cmd};
use crate::resp::{Conn, Reply};

/// The override file (in the handle's `config_dir`) a replica's settings live in.
pub const OVERRIDE_FILE: &str = "trove-replica.conf";

/// Options of a [`RedisStrategy`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisStrategyOptions {
    /// How long to wait for the server to answer after a (re)start, including loading its RDB
    /// file (default 120 s).
    pub start_timeout: Duration,
    /// How long streaming one snapshot into the store may take (default 24 h): the master's
    /// `BGSAVE` and the transfer together.
    pub snapshot_timeout: Duration,
    /// How long `redis-check-rdb` may check one restored file (default 1 h).
    pub check_timeout: Duration,
}

impl Default for RedisStrategyOptions {
    fn default() -> Self {
        RedisStrategyOptions {
            start_timeout: Duration::from_secs(120),
            snapshot_timeout: Duration::from_secs(24 * 3600),
            check_timeout: Duration::from_secs(3600),
        }
    }
}

impl RedisStrategyOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`RedisStrategyOptions::start_timeout`].
    pub fn with_start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }
    /// Sets [`RedisStrategyOptions::snapshot_timeout`].
    pub fn with_snapshot_timeout(mut self, t: Duration) -> Self {
        self.snapshot_timeout = t;
        self
    }
}

/// Redis replication: RDB snapshots taken over `PSYNC` (with the master's replication id and
/// offset), restored through core's lifecycle, `REPLICAOF` with a least-privilege ACL user.
///
/// The server's configuration must `include` the handle's `config_dir` (`include
/// <config_dir>/*.conf`, last); this strategy writes only [`OVERRIDE_FILE`] there. Replication
/// users are saved with `ACL SAVE` when the server has an `aclfile`.
#[derive(Debug)]
pub struct RedisStrategy {
    pub(crate) handle: DatastoreHandle,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) opts: RedisStrategyOptions,
    pub(crate) change: ChangeLock,
    pub(crate) kind: DatastoreKind,
}

/// A replication position: the history (replication id) and the byte offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) replid: String,
    pub(crate) offset: u64,
}

impl Pos {
    pub(crate) fn parse(text: &str) -> Result<Pos> {
        let bad = || {
            Error::invalid(
                "Redis position",
                "expected <40 hex digit replication id>:<offset>",
            )
        };
        let (id, off) = text.split_once(':').ok_or_else(bad)?;
        if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Pos {
            replid: id.to_owned(),
            offset: off.parse().map_err(|_| bad())?,
        })
    }

    pub(crate) fn text(&self) -> String {
        format!("{}:{}", self.replid, self.offset)
    }
}

/// `INFO` fields.
pub(crate) struct Info(pub(crate) HashMap<String, String>);

impl Info {
    pub(crate) fn get(&self, k: &str) -> &str {
        self.0.get(k).map_or("", String::as_str)
    }
    pub(crate) fn num(&self, k: &str) -> u64 {
        self.get(k).parse().unwrap_or(0)
    }
    pub(crate) fn is_replica(&self) -> bool {
        self.get("role") == "slave"
    }
    /// This server's applied position.
    pub(crate) fn position(&self) -> Pos {
        Pos {
            replid: self.get("master_replid").to_owned(),
            offset: self.num("master_repl_offset"),
        }
    }
    /// Whether this server's history contains `t`: the same history at or past its offset, or
    /// the previous history (before a promotion) at an offset it had reached.
    pub(crate) fn reached(&self, t: &Pos) -> bool {
        let me = self.position();
        (me.replid == t.replid && me.offset >= t.offset)
            || (self.get("master_replid2") == t.replid && t.offset < self.num("second_repl_offset"))
    }
    /// Replicating and not in a full sync: the link is up.
    pub(crate) fn link_up(&self) -> bool {
        self.get("master_link_status") == "up" && self.get("master_sync_in_progress") == "0"
    }
}

pub(crate) fn reply_error(what: &str, detail: impl Into<String>) -> Error {
    Error::Datastore {
        message: format!("{what}: {}", detail.into()),
        source: None,
    }
}

impl RedisStrategy {
    /// A strategy acting on the server of `handle`, storing snapshots in `store`.
    pub fn new(
        handle: DatastoreHandle,
        store: Arc<dyn SnapshotStore>,
        opts: RedisStrategyOptions,
    ) -> Self {
        RedisStrategy {
            handle,
            store,
            opts,
            change: ChangeLock::new(),
            kind: "redis"
                .parse()
                .expect("\"redis\" is a valid datastore name"),
        }
    }

    /// The handle this strategy acts on.
    pub fn handle(&self) -> &DatastoreHandle {
        &self.handle
    }

    /// The account tools touching the data run as: the handle's `os_user` when root.
    pub(crate) fn tool_user(&self) -> Option<OsUser> {
        if OsUser::current().uid == 0 {
            self.handle.os_user
        } else {
            None
        }
    }

    pub(crate) async fn conn(&self) -> Result<Conn> {
        Conn::admin(&self.handle.admin).await
    }

    pub(crate) async fn call(&self, cmd: &Cmd) -> Result<Reply> {
        self.conn().await?.call(cmd).await
    }

    pub(crate) async fn info(&self, conn: &mut Conn, section: &'static str) -> Result<Info> {
        let text = conn.call(&commands::info(section)).await?.text();
        Ok(Info(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect(),
        ))
    }

    pub(crate) async fn config(&self, conn: &mut Conn, name: &'static str) -> Result<String> {
        let v = conn.call(&commands::config_get(name)).await?.texts();
        Ok(v.get(1).cloned().unwrap_or_default())
    }

    /// Waits (bounded by the start timeout) until the admin login answers `PING` (not
    /// `LOADING`).
    pub(crate) async fn wait_ping(&self) -> Result<()> {
        let until = deadline(self.opts.start_timeout);
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            let e = match self.call(&commands::ping()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if !backoff.tick(until).await {
                return Err(Error::Service {
                    message: format!(
                        "Redis did not answer within {:?}: {e}",
                        self.opts.start_timeout
                    ),
                });
            }
        }
    }

    pub(crate) fn position(&self, p: &Pos) -> Result<ReplicationPosition> {
        Ok(ReplicationPosition::Opaque(OpaquePosition::new(
            self.kind,
            p.text(),
        )?))
    }

    pub(crate) fn own_position(&self, txn: &ReplicationPosition) -> Result<Pos> {
        match txn {
            ReplicationPosition::Opaque(p) if p.datastore == self.kind => Pos::parse(p.value()),
            other => Err(Error::invalid(
                "position",
                format!("{other} is not a Redis position; this server cannot wait for it"),
            )),
        }
    }

    async fn read_only_locked(&self, read_only: bool) -> Result<()> {
        let v = if read_only {
            commands::FENCE_REPLICAS
        } else {
            "0"
        };
        self.call(&commands::config_set("min-replicas-to-write", v)?)
            .await
            .map(drop)
    }

    async fn status(&self) -> Result<ReplicationStatus> {
        let mut c = self.conn().await?;
        let i = self.info(&mut c, "replication").await?;
        let fence = self.config(&mut c, "min-replicas-to-write").await? == commands::FENCE_REPLICAS;
        let mut s = ReplicationStatus::default();
        let pos = self.position(&i.position()).ok();
        s.executed = pos.clone();
        if i.is_replica() {
            s.role = Some(Role::Replica);
            s.master = Some(trove_guest_core::wire::MasterAddress {
                host: i.get("master_host").to_owned(),
                port: i.get("master_port").parse().unwrap_or(0),
            });
            s.receiver_running = Some(i.link_up());
            s.applier_running = Some(i.link_up());
            s.read_only = Some(true);
            let read = i
                .num("slave_read_repl_offset")
                .max(i.num("master_repl_offset"));
            s.received = self
                .position(&Pos {
                    replid: i.get("master_replid").to_owned(),
                    offset: read,
                })
                .ok();
            if !i.link_up() {
                s.last_error = Some(format!("master link {}", i.get("master_link_status")));
            }
        } else {
            let replicas = u32::try_from(i.num("connected_slaves")).unwrap_or(u32::MAX);
            s.role = Some(if replicas > 0 {
                Role::Master
            } else {
                Role::Standalone
            });
            s.connected_replicas = Some(replicas);
            s.read_only = Some(fence);
            s.received = pos;
        }
        Ok(s)
    }

    async fn wait_position(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()> {
        let target = self.own_position(txn)?;
        let until = deadline(timeout);
        let mut backoff = Backoff::new(Duration::from_millis(200));
        let mut c = self.conn().await?;
        loop {
            if self.info(&mut c, "replication").await?.reached(&target) {
                return Ok(());
            }
            if !backoff.tick(until).await {
                return Err(Error::timeout(
                    format!("Redis to reach {}", target.text()),
                    timeout,
                ));
            }
        }
    }
}

#[async_trait]
impl ReplicationStrategy for RedisStrategy {
    fn datastore(&self) -> DatastoreKind {
        self.kind
    }

    /// Positions are replication id + offset, which play the part of GTIDs (a replica
    /// continues from the snapshot's position); there are no binlog files, slots or rewind.
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_gtid_positioning(true)
            .with_staging(true)
    }

    async fn recover(&self, opts: &RecoverOptions) -> Result<RecoveryReport> {
        let _g = self.change.begin("recover")?;
        lifecycle::recover(self, opts).await
    }

    /// Nothing to turn on (Redis replicates without settings); refused on a replica.
    async fn enable_as_master(&self, _opts: &EnableMasterOptions) -> Result<()> {
        let _g = self.change.begin("enable_as_master")?;
        let mut c = self.conn().await?;
        if self.info(&mut c, "replication").await?.is_replica() {
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Replica,
            });
        }
        Ok(())
    }

    /// Makes the replication user `trove_repl_<replica id>` and streams an RDB of the master,
    /// taken over `PSYNC` as that user, into the store; the position is the `+FULLRESYNC`
    /// reply's replication id and offset, which the RDB records too.
    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument> {
        let g = self.change.begin_owned("get_replication_snapshot")?;
        self.snapshot_locked(req, g).await
    }

    fn snapshot_href(&self, name: &str) -> Result<String> {
        self.store.snapshot_href(name)
    }

    async fn stage_snapshot(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        let _g = self.change.begin("stage_snapshot")?;
        lifecycle::stage(self, req).await
    }

    async fn attach_replication_slave(
        &self,
        snapshot: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        let _g = self.change.begin("attach_replication_slave")?;
        self.attach_locked(snapshot, req).await
    }

    async fn detach_replication_slave(&self, _opts: &DetachOptions) -> Result<DetachedReplica> {
        let _g = self.change.begin("detach_replication_slave")?;
        self.detach_locked().await
    }

    async fn cleanup_source_on_replica_detach(&self, replica: &DetachedReplica) -> Result<()> {
        let _g = self.change.begin("cleanup_source_on_replica_detach")?;
        if let Some(user) = &replica.replication_user {
            if !user.starts_with(commands::USER_PREFIX) {
                return Err(Error::invalid(
                    "replication user",
                    "not a user this strategy made",
                ));
            }
            self.drop_users(std::slice::from_ref(user)).await?;
        }
        Ok(())
    }

    /// Drops every replication user and the write fence; refused on a replica.
    async fn demote_replication_master(&self, _opts: &DemoteOptions) -> Result<()> {
        let _g = self.change.begin("demote_replication_master")?;
        let mut c = self.conn().await?;
        if self.info(&mut c, "replication").await?.is_replica() {
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Replica,
            });
        }
        let users = c.call(&commands::users()).await?.texts();
        let ours: Vec<String> = users
            .into_iter()
            .filter(|u| u.starts_with(commands::USER_PREFIX))
            .collect();
        self.drop_users(&ours).await?;
        self.read_only_locked(false).await
    }

    /// Redis has no read-only master: a fence (`min-replicas-to-write` above any replica
    /// count) makes it refuse writes with `NOREPLICAS`, for the administrator too. Not kept
    /// across a restart.
    async fn make_read_only(&self, read_only: bool) -> Result<()> {
        let _g = self.change.begin("make_read_only")?;
        self.read_only_locked(read_only).await
    }

    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        let mut c = self.conn().await?;
        let p = self.info(&mut c, "replication").await?.position();
        self.position(&p)
    }

    async fn wait_for_txn(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()> {
        self.wait_position(txn, timeout).await
    }

    async fn replication_status(&self) -> Result<ReplicationStatus> {
        self.status().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> Info {
        Info(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn offsets_compare_as_numbers_within_one_history() {
        let i = info(&[("master_replid", A), ("master_repl_offset", "100")]);
        assert!(i.reached(&Pos::parse(&format!("{A}:99")).unwrap()));
        assert!(i.reached(&Pos::parse(&format!("{A}:100")).unwrap()));
        assert!(
            !i.reached(&Pos::parse(&format!("{A}:1000")).unwrap()),
            "1000 > 100 though \"1000\" < \"100 \""
        );
        assert!(
            !i.reached(&Pos::parse(&format!("{B}:1")).unwrap()),
            "another history"
        );
    }

    #[test]
    fn a_promoted_server_reached_its_old_history_only_up_to_the_promotion() {
        let i = info(&[
            ("master_replid", B),
            ("master_repl_offset", "500"),
            ("master_replid2", A),
            ("second_repl_offset", "301"),
        ]);
        assert!(i.reached(&Pos::parse(&format!("{A}:300")).unwrap()));
        assert!(!i.reached(&Pos::parse(&format!("{A}:301")).unwrap()));
    }

    #[test]
    fn malformed_positions_are_refused() {
        for p in ["", "abc:1", A, &format!("{A}:x"), &format!("{A}:-1")] {
            assert!(Pos::parse(p).is_err(), "{p}");
        }
    }
}
