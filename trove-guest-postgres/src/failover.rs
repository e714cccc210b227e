//! Switchover and failover calls (PostgreSQL): replica contexts, re-pointing a standby at a new
//! primary (following its timeline), the last transaction, fencing and stopping the receiver.
//!
//! **Fencing** (`fence_writes`): `default_transaction_read_only` can be turned off by any
//! session, so the fence is recovery itself: the primary is shut down cleanly (fast shutdown:
//! client sessions end, and the WAL senders send everything up to the shutdown checkpoint to
//! the connected standbys before the server exits) and started again in standby mode
//! (`standby.signal`) with no primary to stream from. A server in recovery refuses every write
//! whoever asks; no setting a session can change lifts that. Its replayed position is then
//! exactly the end of its WAL, which a candidate must reach. `unfence_writes` stops it, removes
//! `standby.signal` and starts it as a primary again on the same timeline; `attach_replica`
//! instead points it at the new primary, whose timeline it follows without a rewind when the
//! candidate had replayed all of its WAL.
//!
//! **TLS**: the new primary's context carries its CA and server name (never a key); a standby
//! re-pointed at it checks the certificate from its own host before anything changes
//! (`Error::Tls` otherwise, still following its old primary; a standby whose policy is
//! `ReplicaTlsPolicy::Required` refuses a context without TLS) and streams with
//! `sslmode=verify-full`.

use std::time::Duration;

use trove_guest_core::failover::{
    FenceOptions, LastTxn, ReplicaContext, ReplicaContextOptions, RepointOptions,
};
use trove_guest_core::poll::Backoff;
use trove_guest_core::position::WalPosition;
use trove_guest_core::strategy::Role;
use trove_guest_core::{AttachOutcome, DatastoreKind, Error, Lsn, ReplicationPosition, Result};

use crate::client::Db;
use crate::conf::{self, STANDBY_FILE};
use crate::names;
use crate::replica::data_dir_version;
use crate::sql;
use crate::strategy::{
    PostgresStrategy, RejoinOptions, StandbySource, flavor, in_recovery, unexpected,
};
use crate::timeline;

const STANDBY_SIGNAL: &str = "standby.signal";

/// A standby's WAL state.
struct StandbyWal {
    received: Option<Lsn>,
    replayed: Option<Lsn>,
    timeline: u32,
}

impl StandbyWal {
    /// The furthest position it holds.
    fn holds(&self) -> Lsn {
        self.received.max(self.replayed).unwrap_or_default()
    }
}

impl PostgresStrategy {
    async fn standby_wal(&self, db: &Db) -> Result<StandbyWal> {
        let row = db
            .one(
                "read the standby's WAL positions",
                sql::STANDBY_POSITIONS,
                &[],
            )
            .await?;
        let lsn = |i: usize| -> Result<Option<Lsn>> {
            row.get::<_, Option<String>>(i)
                .map(|s| s.parse())
                .transpose()
        };
        let control: i32 = row.get(2);
        let newest_history: String = row.get(3);
        let from_history = newest_history
            .strip_suffix(".history")
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .unwrap_or(0);
        Ok(StandbyWal {
            received: lsn(0)?,
            replayed: lsn(1)?,
            timeline: u32::try_from(control).unwrap_or(1).max(from_history),
        })
    }

    async fn receiver_status(&self, db: &Db) -> Result<Option<String>> {
        Ok(db
            .opt("read the WAL receiver", sql::WAL_RECEIVER_STATUS, &[])
            .await?
            .map(|r| r.get(0)))
    }

    /// The primary's timeline history, as `(parent timeline, switchpoint)` positions.
    async fn history(&self, db: &Db) -> Result<Vec<WalPosition>> {
        let row = db
            .one("read the WAL position", sql::CURRENT_WAL, &[])
            .await?;
        let tli = timeline::timeline_of_walfile(&row.get::<_, String>(1))?;
        if tli <= 1 {
            return Ok(Vec::new());
        }
        let text: String = db
            .one(
                "read the timeline history",
                sql::READ_DATA_FILE,
                &[&timeline::history_path(tli)],
            )
            .await?
            .get(0);
        Ok(timeline::parse_history(&text)?
            .into_iter()
            .map(|s| WalPosition {
                lsn: s.switchpoint,
                timeline: s.parent,
            })
            .collect())
    }

    /// A server fenced by `fence_writes`: in recovery, with no primary configured.
    fn fenced(&self) -> bool {
        self.handle.data_dir.join(STANDBY_SIGNAL).exists() && self.standby_state().is_none()
    }

    pub(crate) async fn context_impl(
        &self,
        opts: &ReplicaContextOptions,
    ) -> Result<ReplicaContext> {
        let source = self
            .grant_standby_from(&opts.replica_id, opts.replica_host.as_deref())
            .await?;
        let db = self.db().await?;
        let position = self.latest_position(&db).await?;
        let history = self.history(&db).await?;
        Ok(ReplicaContext::new(
            DatastoreKind::Postgresql,
            source.master,
            position,
            source.replication,
        )
        .with_history(history))
    }

    pub(crate) async fn last_txn_impl(&self) -> Result<LastTxn> {
        let db = self.db().await?;
        if !in_recovery(&db).await? {
            return Ok(LastTxn::new(self.latest_position(&db).await?));
        }
        let wal = self.standby_wal(&db).await?;
        let status = self.receiver_status(&db).await?;
        Ok(
            LastTxn::new(ReplicationPosition::PostgresqlWal(WalPosition {
                lsn: wal.replayed.unwrap_or_default(),
                timeline: wal.timeline,
            }))
            .with_source(self.standby_state().map(|s| s.master))
            .with_received(wal.received.map(ReplicationPosition::PostgresqlLsn))
            .with_receiver_running(status.as_deref() == Some("streaming")),
        )
    }

    pub(crate) async fn stop_receiver_locked(&self, opts: &FenceOptions) -> Result<()> {
        let db = self.db().await?;
        if !in_recovery(&db).await? {
            return Ok(());
        }
        if !flavor(&db).await?.standby_settings_reloadable() {
            return Err(Error::unsupported(
                "stopping the WAL receiver without a restart (PostgreSQL 13 and later)",
            ));
        }
        // Without its override file the standby has no primary_conninfo: the receiver stops
        // and what it flushed is replayed. The state file stays, naming the former source.
        if conf::remove_if_exists(&self.config_file(STANDBY_FILE))? {
            db.one("reload configuration", sql::RELOAD, &[]).await?;
        }
        db.one("resume WAL replay", sql::RESUME_REPLAY, &[]).await?;
        let deadline = trove_guest_core::deadline(opts.timeout);
        let mut poll = Backoff::new(Duration::from_millis(50));
        loop {
            let wal = self.standby_wal(&db).await?;
            let receiving = self.receiver_status(&db).await?.is_some();
            let applied = match (wal.received, wal.replayed) {
                (Some(r), Some(p)) => p >= r,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if !receiving && applied {
                return Ok(());
            }
            if !poll.tick(deadline).await {
                return Err(Error::timeout(
                    "the WAL receiver to stop and the received WAL to be replayed",
                    opts.timeout,
                ));
            }
        }
    }

    pub(crate) async fn fence_locked(&self, opts: &FenceOptions) -> Result<ReplicationPosition> {
        let db = self.db_wait().await?;
        if in_recovery(&db).await? {
            if !self.fenced() {
                return Err(Error::WrongRole {
                    expected: Role::Master,
                    actual: Role::Replica,
                });
            }
        } else {
            drop(db);
            let data = self.handle.data_dir.clone();
            tokio::time::timeout(opts.timeout, async {
                self.handle.service.stop().await?;
                self.write_data_file(&data, STANDBY_SIGNAL, "")?;
                self.handle.service.start().await
            })
            .await
            .map_err(|_| Error::timeout("the primary to restart in recovery", opts.timeout))??;
        }
        let db = self.db_wait().await?;
        if !in_recovery(&db).await? {
            return Err(unexpected("fence writes", "the server is not in recovery"));
        }
        let wal = self.standby_wal(&db).await?;
        let lsn = wal
            .replayed
            .ok_or_else(|| unexpected("fence writes", "no replayed position"))?;
        tracing::info!(%lsn, timeline = wal.timeline, "writes fenced (primary restarted in recovery)");
        Ok(ReplicationPosition::PostgresqlWal(WalPosition {
            lsn,
            timeline: wal.timeline,
        }))
    }

    pub(crate) async fn unfence_locked(&self) -> Result<()> {
        if !self.fenced() {
            return Ok(());
        }
        self.handle.service.stop().await?;
        conf::remove_if_exists(&self.handle.data_dir.join(STANDBY_SIGNAL))?;
        self.handle.service.start().await?;
        let db = self.db_wait().await?;
        if in_recovery(&db).await? {
            return Err(unexpected(
                "unfence writes",
                "the server is still in recovery",
            ));
        }
        Ok(())
    }

    pub(crate) async fn repoint_impl(
        &self,
        ctx: &ReplicaContext,
        opts: &RepointOptions,
    ) -> Result<AttachOutcome> {
        if ctx.datastore != DatastoreKind::Postgresql {
            return Err(Error::Incompatible {
                reason: format!(
                    "a {} source cannot be replicated by PostgreSQL",
                    ctx.datastore
                ),
            });
        }
        let grant = &ctx.replication;
        names::check_role(&grant.user)?;
        if let Some(slot) = &grant.slot_name {
            names::check_slot(slot)?;
        }
        let password = grant
            .password
            .as_ref()
            .map(|p| p.0.clone())
            .ok_or_else(|| Error::invalid("replica context", "replication.password is missing"))?;
        let target = match &ctx.position {
            ReplicationPosition::PostgresqlWal(w) => *w,
            other => {
                return Err(Error::invalid(
                    "replica context",
                    format!("{other} is not a PostgreSQL position with its timeline"),
                ));
            }
        };
        // TLS: the new primary's certificate must verify from here before anything changes;
        // on failure this server keeps following its old primary.
        let tls = self.verify_source_tls(ctx).await?;
        let db = self.db_wait().await?;
        if !in_recovery(&db).await? {
            // A former primary that was not fenced (it crashed, or was cut off): rewind.
            drop(db);
            let source = StandbySource::new(ctx.master.clone(), grant.clone());
            return self
                .rejoin_as_standby(&source, &RejoinOptions::new().with_timeout(opts.timeout))
                .await;
        }
        let _g = self.change.begin("attach_replica")?;
        let state = self.standby_state();
        let already = state
            .as_ref()
            .is_some_and(|s| s.master == ctx.master && s.user == grant.user)
            && self.config_file(STANDBY_FILE).exists()
            && self.receiver_status(&db).await?.as_deref() == Some("streaming");
        if already {
            // A repeated context carries a new password: the receiver must use it when it
            // reconnects.
            self.write_passfile(&grant.user, &password)?;
        } else {
            let wal = self.standby_wal(&db).await?;
            let holds = wal.holds();
            let fork = if wal.timeline == target.timeline {
                None
            } else {
                match ctx.history.iter().find(|h| h.timeline == wal.timeline) {
                    Some(h) => Some(h.lsn),
                    None => {
                        return Err(Error::Diverged {
                            detail: format!(
                                "this standby is on timeline {}, which is not in the history of \
                                 {}:{} (timeline {}): take a fresh snapshot on the new primary",
                                wal.timeline, ctx.master.host, ctx.master.port, target.timeline
                            ),
                        });
                    }
                }
            };
            if let Some(fork) = fork
                && holds > fork
            {
                return Err(Error::Diverged {
                    detail: format!(
                        "this standby holds WAL up to {holds} on timeline {}, past {fork} where \
                         {}:{} left that timeline: it cannot follow without a rewind; take a \
                         fresh snapshot on the new primary (or stop it and rejoin by pg_rewind)",
                        wal.timeline, ctx.master.host, ctx.master.port
                    ),
                });
            }
            let version = data_dir_version(&self.handle.data_dir)?;
            self.write_standby_config(
                &ctx.master,
                &grant.user,
                &password,
                grant.slot_name.as_deref(),
                version,
                false,
                tls.as_ref(),
            )?;
            if flavor(&db).await?.standby_settings_reloadable() {
                db.one("reload configuration", sql::RELOAD, &[]).await?;
            } else {
                drop(db);
                let db = self.restart().await?;
                return self.finish_repoint(&db, target, opts.timeout).await;
            }
        }
        self.finish_repoint(&db, target, opts.timeout).await
    }

    async fn finish_repoint(
        &self,
        db: &Db,
        target: WalPosition,
        timeout: Duration,
    ) -> Result<AttachOutcome> {
        let replay = self.wait_streaming(db, target.lsn, timeout).await?;
        Ok(AttachOutcome::new(
            0,
            Some(ReplicationPosition::PostgresqlLsn(replay)),
        ))
    }
}
