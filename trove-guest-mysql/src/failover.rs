//! Switchover and failover calls (MariaDB): replica contexts, re-pointing by GTID without a
//! snapshot, the last transaction, fencing and draining the relay log.
//!
//! **Fencing** (`fence_writes`): `read_only = ON` (refuses writes of accounts without
//! `READ_ONLY ADMIN`), then every client session holding a transaction or running a statement
//! is killed, then a session owned by the strategy takes the global read lock
//! (`FLUSH TABLES WITH READ LOCK`), which blocks every write, privileged sessions included,
//! for as long as the strategy holds it. `unfence_writes` releases it and turns `read_only`
//! off; `attach_replica` releases it after `read_only` is on and sessions waiting on the lock
//! are killed, so none of them writes on the new replica. The lock lives in this process: an
//! agent that dies leaves the server `read_only` but no longer locked.
//!
//! **Errant transactions**: a replica's own GTIDs (its server id in `gtid_binlog_state`)
//! beyond the baseline recorded when it was last re-pointed (a former master's own history)
//! were written on the replica itself; such a server is never chosen by a failover and is
//! refused by `attach_replica`.
//!
//! **TLS**: a source whose handle has a [`ServerTls`](trove_guest_core::ServerTls) puts its CA
//! certificate and server name (never a key) into the context's grant and makes the account
//! `REQUIRE SSL`, as its snapshots do. The re-pointed server checks that certificate from its
//! own host before anything changes (`Error::Tls` otherwise, still following its old source),
//! writes the CA next to its configuration and replicates with `MASTER_SSL=1`,
//! `MASTER_SSL_CA`, `MASTER_SSL_VERIFY_SERVER_CERT=1`. A server whose policy is
//! [`ReplicaTlsPolicy::Required`](trove_guest_core::ReplicaTlsPolicy::Required) refuses a
//! context without TLS.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use trove_guest_core::failover::{FenceOptions, LastTxn, ReplicaContext, ReplicaContextOptions};
use trove_guest_core::position::MariaDbGtidList;
use trove_guest_core::strategy::Role;
use trove_guest_core::wire::ReplicationGrant;
use trove_guest_core::{
    AttachOutcome, Error, ReplicationPosition, Result, Secret, TransportSecret,
};

use crate::attach::errant_mariadb;
use crate::client::{Row, Session};
use crate::config::{REPLICA_FILE, replica_override, write_override};
use crate::snapshot::replication_user;
use crate::sql::{
    Account, ChangeMaster, GtidStart, Sql, StartAt, validate_connect_host, validate_password,
    validate_user,
};
use crate::status::master_address;
use crate::strategy::{Backoff, MysqlStrategy, truthy};

/// This server's own GTIDs (per domain, the highest sequence) when it became a replica: its
/// own history as a former master, which is not errant.
const BASELINE_FILE: &str = "trove-guest-own-gtids.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Baseline {
    server_id: u32,
    own: Vec<(u32, u64)>,
}

/// MariaDB's GTID state.
#[derive(Debug, Clone)]
struct GtidState {
    binlog_pos: MariaDbGtidList,
    /// `(domain, server, sequence)` of every `gtid_binlog_state` entry.
    binlog_state: Vec<(u32, u32, u64)>,
    slave_pos: MariaDbGtidList,
    current_pos: MariaDbGtidList,
    log_bin: bool,
    server_id: u32,
}

fn parse_state(text: &str) -> Result<Vec<(u32, u32, u64)>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut f = part.split('-').map(str::parse::<u64>);
        match (f.next(), f.next(), f.next()) {
            (Some(Ok(d)), Some(Ok(s)), Some(Ok(n))) => out.push((
                u32::try_from(d).map_err(|_| Error::invalid("gtid_binlog_state", part))?,
                u32::try_from(s).map_err(|_| Error::invalid("gtid_binlog_state", part))?,
                n,
            )),
            _ => return Err(Error::invalid("gtid_binlog_state", part.to_owned())),
        }
    }
    Ok(out)
}

fn running(row: &Row) -> (bool, bool) {
    (
        row.get(&["Slave_IO_Running", "Replica_IO_Running"]) == Some("Yes"),
        row.get(&["Slave_SQL_Running", "Replica_SQL_Running"]) == Some("Yes"),
    )
}

impl MysqlStrategy {
    async fn gtid_state(&self, s: &mut Session, sql: &Sql) -> Result<GtidState> {
        let r = s.one(&sql.gtid_state()).await?;
        let text = |c: &str| -> String {
            r.get(&[c])
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect()
        };
        Ok(GtidState {
            binlog_pos: text("binlog_pos").parse()?,
            binlog_state: parse_state(&text("binlog_state"))?,
            slave_pos: text("slave_pos").parse()?,
            current_pos: text("current_pos").parse()?,
            log_bin: truthy(r.get(&["log_bin"])),
            server_id: text("server_id").parse().unwrap_or(0),
        })
    }

    fn require_mariadb(&self, sql: &Sql) -> Result<()> {
        if sql.flavor().is_mariadb() {
            Ok(())
        } else {
            Err(Error::unsupported(
                "switchover and failover on MySQL (MariaDB only for now)",
            ))
        }
    }

    fn baseline(&self) -> Option<Baseline> {
        let text = std::fs::read_to_string(self.handle.config_dir.join(BASELINE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The GTIDs this server wrote itself beyond its baseline (only a replica can have any).
    fn errant(&self, st: &GtidState) -> Vec<String> {
        let base = self.baseline().filter(|b| b.server_id == st.server_id);
        st.binlog_state
            .iter()
            .filter(|(_, server, _)| *server == st.server_id)
            .filter(|(d, _, n)| {
                let allowed = base
                    .as_ref()
                    .and_then(|b| b.own.iter().find(|(bd, _)| bd == d).map(|(_, s)| *s))
                    .unwrap_or(0);
                *n > allowed
            })
            .map(|(d, s, n)| format!("{d}-{s}-{n}"))
            .collect()
    }

    fn write_baseline(&self, st: &GtidState) -> Result<()> {
        let own = st
            .binlog_state
            .iter()
            .filter(|(_, s, _)| *s == st.server_id)
            .map(|(d, _, n)| (*d, *n))
            .collect();
        let b = Baseline {
            server_id: st.server_id,
            own,
        };
        let json =
            serde_json::to_string(&b).map_err(|e| Error::invalid("baseline", e.to_string()))?;
        write_override(&self.handle.config_dir, BASELINE_FILE, &json)
    }

    pub(crate) async fn last_txn_impl(&self) -> Result<LastTxn> {
        let sql = self.sql().await?;
        self.require_mariadb(&sql)?;
        let mut s = self.session().await?;
        let st = self.gtid_state(&mut s, &sql).await?;
        let row = self.replica_row(&mut s, &sql).await?;
        s.close().await;
        let Some(row) = row else {
            return Ok(LastTxn::new(ReplicationPosition::MariadbGtid(
                st.current_pos,
            )));
        };
        let received = row
            .get(&["Gtid_IO_Pos"])
            .map(|g| g.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .map(|g| g.parse::<MariaDbGtidList>())
            .transpose()?
            .map(ReplicationPosition::MariadbGtid);
        let (io, _) = running(&row);
        Ok(
            LastTxn::new(ReplicationPosition::MariadbGtid(st.slave_pos.clone()))
                .with_source(master_address(&row))
                .with_received(received)
                .with_errant(self.errant(&st))
                .with_receiver_running(io),
        )
    }

    pub(crate) async fn context_impl(
        &self,
        opts: &ReplicaContextOptions,
    ) -> Result<ReplicaContext> {
        let sql = self.sql().await?;
        self.require_mariadb(&sql)?;
        let user = replication_user(&self.opts.account_prefix, &opts.replica_id)?;
        let account = Account::new(&user, opts.replica_host.as_deref().unwrap_or("%"))?;
        let mut s = self.session().await?;
        if let Some(row) = self.replica_row(&mut s, &sql).await?
            && running(&row) != (false, false)
        {
            s.close().await;
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Replica,
            });
        }
        let st = self.gtid_state(&mut s, &sql).await?;
        if !st.log_bin {
            s.close().await;
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Standalone,
            });
        }
        s.close().await;
        // TLS: what the replica gets to verify this server (its CA and server name, never a
        // key), checked against the running server before the account is made.
        let tls = self.replication_tls().await?;
        let password = Secret::random(crate::sql::MAX_PASSWORD_LEN);
        let mut s = self.session().await?;
        s.exec(&sql.set_session_log_bin(false)).await?;
        s.exec(&sql.create_user(&account, &password)).await?;
        s.exec(&sql.set_password(&account, &password)).await?;
        s.exec(&sql.grant_replication(&account)).await?;
        if tls.is_some() {
            s.exec(&sql.require_tls(&account)).await?;
        }
        s.close().await;
        let forked_at = (!st.slave_pos.is_empty())
            .then(|| ReplicationPosition::MariadbGtid(st.slave_pos.clone()));
        Ok(ReplicaContext::new(
            sql.flavor().datastore(),
            self.handle.advertise.clone(),
            ReplicationPosition::MariadbGtid(st.binlog_pos),
            ReplicationGrant {
                user,
                password: Some(TransportSecret(password)),
                password_ref: None,
                slot_name: None,
                replica_host: opts.replica_host.clone(),
                tls,
            },
        )
        .with_forked_at(forked_at))
    }

    /// Kills the client sessions holding or running writes.
    async fn kill_writers(&self, s: &mut Session, sql: &Sql) -> Result<usize> {
        let mut n = 0;
        for row in s.rows(&sql.writing_sessions()).await? {
            if let Some(id) = row.get(&["id"]).and_then(|v| v.parse().ok())
                && s.exec(&sql.kill_connection(id)).await.is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    pub(crate) async fn fence_impl(&self, opts: &FenceOptions) -> Result<ReplicationPosition> {
        let sql = self.sql().await?;
        self.require_mariadb(&sql)?;
        let mut held = self.fence.lock().await;
        if let Some(lock) = held.as_mut() {
            let st = self.gtid_state(lock, &sql).await?;
            return Ok(ReplicationPosition::MariadbGtid(st.binlog_pos));
        }
        let fenced = tokio::time::timeout(opts.timeout, async {
            let mut s = self.session().await?;
            if self.replica_row(&mut s, &sql).await?.is_some() {
                s.close().await;
                return Err(Error::WrongRole {
                    expected: Role::Master,
                    actual: Role::Replica,
                });
            }
            s.exec_all(&sql.set_read_only(true)).await?;
            let killed = self.kill_writers(&mut s, &sql).await?;
            s.close().await;
            let mut lock = self.session().await?;
            lock.exec(&sql.lock_wait_timeout(opts.timeout)).await?;
            lock.exec(&sql.global_read_lock()).await?;
            let st = self.gtid_state(&mut lock, &sql).await?;
            tracing::info!(killed, position = %st.binlog_pos, "writes fenced");
            Ok::<_, Error>((lock, st.binlog_pos))
        })
        .await
        .map_err(|_| Error::timeout("writing sessions to end (fencing)", opts.timeout))??;
        *held = Some(fenced.0);
        Ok(ReplicationPosition::MariadbGtid(fenced.1))
    }

    /// Releases the global read lock if this strategy holds it.
    async fn release_fence(&self, sql: &Sql) -> Result<()> {
        if let Some(mut lock) = self.fence.lock().await.take() {
            lock.exec(&sql.unlock_tables()).await?;
            lock.close().await;
        }
        Ok(())
    }

    pub(crate) async fn unfence_impl(&self) -> Result<()> {
        let sql = self.sql().await?;
        self.release_fence(&sql).await?;
        let mut s = self.session().await?;
        if self.replica_row(&mut s, &sql).await?.is_none() {
            s.exec_all(&sql.set_read_only(false)).await?;
        }
        s.close().await;
        Ok(())
    }

    /// Stops the receiver and waits until the applier has applied the whole relay log.
    pub(crate) async fn drain_locked(&self, timeout: Duration) -> Result<()> {
        let sql = self.sql().await?;
        let deadline = trove_guest_core::deadline(timeout);
        let mut s = self.session().await?;
        if self.replica_row(&mut s, &sql).await?.is_none() {
            s.close().await;
            return Ok(());
        }
        s.exec(&sql.stop_replica_receiver()).await?;
        let mut poll = Backoff::new(self.opts.poll_interval);
        loop {
            let Some(row) = self.replica_row(&mut s, &sql).await? else {
                break;
            };
            let (_, applier) = running(&row);
            let state = row
                .get(&["Slave_SQL_Running_State", "Replica_SQL_Running_State"])
                .unwrap_or_default();
            if !applier {
                if let Some(e) = row.non_empty(&["Last_SQL_Error"]) {
                    s.close().await;
                    return Err(Error::Datastore {
                        message: format!("the applier stopped: {e}"),
                        source: None,
                    });
                }
                // Stopped by an operator: nothing more will be applied.
                break;
            }
            if state.contains("read all relay log") {
                break;
            }
            if !poll.tick(deadline).await {
                s.close().await;
                return Err(Error::timeout(
                    format!("the relay log to be applied (applier: {state:?})"),
                    timeout,
                ));
            }
        }
        s.close().await;
        Ok(())
    }

    pub(crate) async fn stop_receiver_impl(&self, opts: &FenceOptions) -> Result<LastTxn> {
        let sql = self.sql().await?;
        self.require_mariadb(&sql)?;
        self.drain_locked(opts.timeout).await?;
        self.last_txn_impl().await
    }

    pub(crate) async fn repoint_impl(
        &self,
        ctx: &ReplicaContext,
        opts: &trove_guest_core::failover::RepointOptions,
    ) -> Result<AttachOutcome> {
        let sql = self.sql().await?;
        self.require_mariadb(&sql)?;
        if ctx.datastore != sql.flavor().datastore() {
            return Err(Error::Incompatible {
                reason: format!(
                    "a {} source cannot be replicated by {}",
                    ctx.datastore,
                    sql.flavor().datastore()
                ),
            });
        }
        let grant = &ctx.replication;
        let password = grant
            .password
            .as_ref()
            .map(|p| p.0.clone())
            .ok_or_else(|| Error::invalid("replica context", "replication.password is missing"))?;
        validate_user(&grant.user)?;
        validate_password(&password)?;
        validate_connect_host(&ctx.master.host)?;
        let deadline = trove_guest_core::deadline(opts.timeout);
        // TLS: the new source's certificate must verify from here before anything changes;
        // on failure this server keeps following its old source.
        let tls = self.verify_source_tls(ctx).await?;

        let mut s = self.session().await?;
        let row = self.replica_row(&mut s, &sql).await?;
        // Always reconfigured, even when it already follows this source: a repeated context
        // carries a new password, which the replica must use when it reconnects.
        {
            let st = self.gtid_state(&mut s, &sql).await?;
            if row.is_some() {
                let own = self.errant(&st);
                if !own.is_empty() {
                    s.close().await;
                    return Err(Error::Diverged {
                        detail: format!(
                            "this replica executed {} itself; it cannot follow {}:{} without a \
                             fresh snapshot",
                            own.join(","),
                            ctx.master.host,
                            ctx.master.port
                        ),
                    });
                }
            }
            let mine = st.current_pos.clone();
            let now = match &ctx.position {
                ReplicationPosition::MariadbGtid(g) => g.clone(),
                other => {
                    s.close().await;
                    return Err(Error::invalid(
                        "replica context",
                        format!("{other} is not a MariaDB GTID position"),
                    ));
                }
            };
            let errant = match &ctx.forked_at {
                // Beyond the fork, only the source's own later transactions (received from it
                // earlier) may be here: never this server's own.
                Some(ReplicationPosition::MariadbGtid(fork)) => mine
                    .gtids()
                    .filter(|g| {
                        let past_fork = !fork
                            .gtids()
                            .any(|f| f.domain == g.domain && f.sequence >= g.sequence);
                        let from_source = g.server != st.server_id
                            && now
                                .gtids()
                                .any(|n| n.domain == g.domain && n.sequence >= g.sequence);
                        past_fork && !from_source
                    })
                    .map(|g| format!("{}-{}-{}", g.domain, g.server, g.sequence))
                    .collect(),
                _ => errant_mariadb(&mine, &now),
            };
            if !errant.is_empty() {
                s.close().await;
                return Err(Error::Diverged {
                    detail: format!(
                        "this server has {} which {}:{} lacks (its history forked at {}): it \
                         cannot rejoin; take a fresh snapshot on the new master \
                         (get_replication_snapshot) and attach_replication_slave here",
                        errant.join(","),
                        ctx.master.host,
                        ctx.master.port,
                        ctx.forked_at
                            .as_ref()
                            .map_or_else(|| "its start".to_owned(), ToString::to_string),
                    ),
                });
            }
            // From here on the server is a replica: refuse writes first; on a former master,
            // end anything that waits on the fence lock, then release it.
            s.exec_all(&sql.set_read_only(true)).await?;
            if row.is_none() {
                self.kill_writers(&mut s, &sql).await?;
            }
            self.release_fence(&sql).await?;
            let _ = s.exec(&sql.stop_replica()).await;
            s.exec(&sql.reset_replica_all()).await?;
            s.exec_all(&sql.seed_gtid(GtidStart::MariaDb(&mine))?)
                .await?;
            self.write_replica_override(sql)?;
            self.write_baseline(&st)?;
            s.exec(&sql.change_master(&ChangeMaster {
                host: &ctx.master.host,
                port: ctx.master.port,
                user: &grant.user,
                password: &password,
                start: StartAt::Gtid,
                connect_retry: self.opts.connect_retry,
            })?)
            .await?;
            if let Some(statement) = self.replica_tls_statement(&sql, tls.as_ref())? {
                s.exec(&statement).await?;
            }
            s.exec(&sql.start_replica()).await?;
        }
        // Bounded: both threads run, then the source's position is applied.
        let mut poll = Backoff::new(self.opts.poll_interval);
        loop {
            let row = self.replica_row(&mut s, &sql).await?;
            let state = row.as_ref().map(running).unwrap_or_default();
            if state == (true, true) {
                break;
            }
            let err = row
                .as_ref()
                .and_then(|r| r.non_empty(&["Last_IO_Error", "Last_SQL_Error"]))
                .unwrap_or_default()
                .to_owned();
            if let Some(e) = row
                .as_ref()
                .and_then(|r| crate::tls::io_thread_tls_failure(r, &ctx.master))
            {
                s.close().await;
                return Err(e);
            }
            if !poll.tick(deadline).await {
                s.close().await;
                return Err(Error::timeout(
                    format!("replication from the new source to run (last error: {err:?})"),
                    opts.timeout,
                ));
            }
        }
        s.close().await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.wait_for_txn_impl(&ctx.position, left).await?;
        Ok(AttachOutcome::new(0, self.latest_txn_impl().await.ok()))
    }

    fn write_replica_override(&self, sql: Sql) -> Result<()> {
        let relay_base = match &self.opts.relay_log_dir {
            Some(d) => d.join("relay-bin"),
            None => std::path::PathBuf::from("relay-bin"),
        };
        let advertise = &self.handle.advertise;
        let text = replica_override(
            sql.flavor(),
            self.handle.server_id,
            &relay_base,
            Some((&advertise.host, advertise.port)),
        )?;
        write_override(&self.handle.config_dir, REPLICA_FILE, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_state_lists_every_server_of_every_domain() {
        assert_eq!(
            parse_state("0-1-10,0-3-11,2-2-5").unwrap(),
            vec![(0, 1, 10), (0, 3, 11), (2, 2, 5)]
        );
        assert!(parse_state("").unwrap().is_empty());
        assert!(parse_state("0-x-1").is_err());
    }
}
