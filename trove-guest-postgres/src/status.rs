//! Read-only mode, positions, bounded waits and replication status.

use std::time::{Duration, Instant};

use trove_guest_core::position::WalPosition;
use trove_guest_core::strategy::Role;
use trove_guest_core::wire::MasterAddress;
use trove_guest_core::{Error, Lsn, ReplicationPosition, ReplicationStatus, Result};

use crate::client::Db;
use crate::conf::{self, MASTER_FILE, READ_ONLY_FILE};
use crate::sql;
use crate::strategy::{PostgresStrategy, flavor, in_recovery, reload_and_settle, setting};
use crate::timeline;

/// Where a server is in WAL terms.
enum Where {
    /// A primary: its insert position, timeline and that timeline's history.
    Primary {
        lsn: Lsn,
        timeline: u32,
        history: Vec<timeline::Switch>,
    },
    /// A standby: what it has replayed.
    Standby { replayed: Option<Lsn> },
}

pub(crate) fn parse_lsn(s: Option<String>) -> Result<Option<Lsn>> {
    s.map(|t| t.parse()).transpose()
}

impl PostgresStrategy {
    /// `make_read_only(true)`: `default_transaction_read_only = on` in an override file
    /// (reloaded) and every client session that is writing (holds a transaction id) ended.
    /// A session can still opt out with `SET default_transaction_read_only = off`; roles that
    /// must not write at all need their privileges revoked, which this call does not do.
    pub(crate) async fn read_only_locked(&self, read_only: bool) -> Result<()> {
        let db = self.db().await?;
        let file = self.config_file(READ_ONLY_FILE);
        if read_only {
            conf::write_atomic(
                &file,
                &conf::render_settings(
                    "trove-guest: refuse client writes",
                    &[("default_transaction_read_only", "on".to_owned())],
                ),
                0o644,
                self.file_owner(),
            )?;
        } else {
            conf::remove_if_exists(&file)?;
        }
        reload_and_settle(&db, &["default_transaction_read_only"], &file, read_only).await?;
        if read_only {
            db.one("end writing sessions", sql::TERMINATE_WRITERS, &[])
                .await?;
        }
        Ok(())
    }

    async fn locate(&self, db: &Db) -> Result<Where> {
        if in_recovery(db).await? {
            let row = db
                .one("read the replay position", sql::REPLAY_POSITION, &[])
                .await?;
            return Ok(Where::Standby {
                replayed: parse_lsn(row.get(0))?,
            });
        }
        let row = db
            .one("read the WAL position", sql::CURRENT_WAL, &[])
            .await?;
        let lsn: Lsn = row.get::<_, String>(0).parse()?;
        let tli = timeline::timeline_of_walfile(&row.get::<_, String>(1))?;
        let history = if tli > 1 {
            let path = timeline::history_path(tli);
            let text: String = db
                .one("read the timeline history", sql::READ_DATA_FILE, &[&path])
                .await?
                .get(0);
            timeline::parse_history(&text)?
        } else {
            Vec::new()
        };
        Ok(Where::Primary {
            lsn,
            timeline: tli,
            history,
        })
    }

    pub(crate) async fn latest_position(&self, db: &Db) -> Result<ReplicationPosition> {
        Ok(match self.locate(db).await? {
            Where::Primary { lsn, timeline, .. } => {
                ReplicationPosition::PostgresqlWal(WalPosition { lsn, timeline })
            }
            Where::Standby { replayed } => {
                ReplicationPosition::PostgresqlLsn(replayed.unwrap_or_default())
            }
        })
    }

    /// Whether this server has applied `(tli, lsn)`; `tli` None means "any timeline".
    async fn has_applied(&self, db: &Db, tli: Option<u32>, lsn: Lsn) -> Result<bool> {
        Ok(match self.locate(db).await? {
            Where::Standby { replayed } => replayed.is_some_and(|r| r >= lsn),
            Where::Primary {
                lsn: mine,
                timeline: my_tli,
                history,
            } => match tli {
                None => lsn <= mine,
                Some(t) => timeline::contains(my_tli, mine, &history, t, lsn),
            },
        })
    }

    pub(crate) async fn wait_for_position(
        &self,
        txn: &ReplicationPosition,
        timeout: Duration,
    ) -> Result<()> {
        let (tli, lsn) = match txn {
            ReplicationPosition::PostgresqlLsn(l) => (None, *l),
            ReplicationPosition::PostgresqlWal(w) => (Some(w.timeline), w.lsn),
            other => {
                return Err(Error::invalid(
                    "replication position",
                    format!("{other} is not a PostgreSQL position"),
                ));
            }
        };
        let started = Instant::now();
        let db = self.db().await?;
        loop {
            // Compared as numbers (and timelines), never as text.
            if self.has_applied(&db, tli, lsn).await? {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::timeout(
                    format!("this server to apply {txn}"),
                    timeout,
                ));
            }
            let left = timeout.saturating_sub(started.elapsed());
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
    }

    pub(crate) async fn status(&self) -> Result<ReplicationStatus> {
        let db = self.db().await?;
        let mut st = ReplicationStatus::default();
        let read_only = setting(&db, "default_transaction_read_only").await? == "on";
        match self.locate(&db).await? {
            Where::Standby { replayed } => {
                st.role = Some(Role::Replica);
                st.read_only = Some(true);
                st.executed = replayed.map(ReplicationPosition::PostgresqlLsn);
                let receiver_sql = flavor(&db).await?.wal_receiver_sql();
                if let Some(r) = db.opt("read the WAL receiver", receiver_sql, &[]).await? {
                    let status: Option<String> = r.get(0);
                    let flushed = parse_lsn(r.get(2))?;
                    let host: Option<String> = r.get(3);
                    let port: Option<i32> = r.get(4);
                    st.receiver_running = Some(status.as_deref() == Some("streaming"));
                    st.received = flushed.map(ReplicationPosition::PostgresqlLsn);
                    if let (Some(f), Some(rp)) = (flushed, replayed) {
                        st.lag_bytes = Some(f.0.saturating_sub(rp.0));
                    }
                    if let (Some(host), Some(port)) = (host, port) {
                        st.master = Some(MasterAddress {
                            host,
                            port: u16::try_from(port).unwrap_or(0),
                        });
                    }
                } else {
                    st.receiver_running = Some(false);
                }
                let r = db
                    .one("read the replay state", sql::REPLAY_STATE, &[])
                    .await?;
                let paused: bool = r.get(0);
                st.applier_running = Some(!paused);
                st.lag_seconds = r.get::<_, Option<f64>>(1);
            }
            Where::Primary { lsn, timeline, .. } => {
                st.role = Some(if self.config_file(MASTER_FILE).exists() {
                    Role::Master
                } else {
                    Role::Standalone
                });
                st.read_only = Some(read_only);
                st.executed = Some(ReplicationPosition::PostgresqlWal(WalPosition {
                    lsn,
                    timeline,
                }));
                let r = db
                    .one("read the WAL senders", sql::REPLICATION_SENDERS, &[])
                    .await?;
                let n: i64 = r.get(0);
                let lag: i64 = r.get(1);
                st.connected_replicas = Some(u32::try_from(n).unwrap_or(u32::MAX));
                if n > 0 {
                    st.lag_bytes = Some(lag.max(0) as u64);
                }
            }
        }
        Ok(st)
    }
}
