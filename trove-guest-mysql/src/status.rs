//! `replication_status`, `get_latest_txn_id` and `wait_for_txn` (always bounded).

use std::time::Duration;

use trove_guest_core::position::{BinlogCoordinates, MariaDbGtidList, MysqlGtidSet};
use trove_guest_core::wire::MasterAddress;
use trove_guest_core::{Error, ReplicationPosition, ReplicationStatus, Result, Role};

use crate::client::{Row, Session};
use crate::flavor::FlavorKind;
use crate::sql::{GtidStart, Sql};
use crate::strategy::{Backoff, MysqlStrategy};

/// Extra time the client allows a server-side wait before giving up on the connection.
const CLIENT_MARGIN: Duration = Duration::from_secs(5);

fn timeout_err(txn: &ReplicationPosition, timeout: Duration) -> Error {
    Error::timeout(format!("this server to apply {txn}"), timeout)
}

/// The master a replica status row names (MySQL 8.0.22+ calls the columns `Source_*`).
pub(crate) fn master_address(r: &Row) -> Option<MasterAddress> {
    r.non_empty(&["Master_Host", "Source_Host"])
        .map(|h| MasterAddress {
            host: h.to_owned(),
            port: r
                .get(&["Master_Port", "Source_Port"])
                .and_then(|p| p.parse().ok())
                .unwrap_or(3306),
        })
}

/// Whether binary log coordinates `mine` are at or past `target`. Files of one base name are
/// ordered by their numeric extension (`binlog.999999` < `binlog.1000000`), not as text.
fn binlog_reached(mine: &BinlogCoordinates, target: &BinlogCoordinates) -> bool {
    let split = |f: &str| -> Option<(String, u64)> {
        let (base, ext) = f.rsplit_once('.')?;
        Some((base.to_owned(), ext.parse().ok()?))
    };
    match (
        split(mine.log_file.as_str()),
        split(target.log_file.as_str()),
    ) {
        (Some((mb, mn)), Some((tb, tn))) if mb == tb => {
            (mn, mine.log_position) >= (tn, target.log_position)
        }
        _ => (&mine.log_file, mine.log_position) >= (&target.log_file, target.log_position),
    }
}

/// What a replica status row (`SHOW SLAVE STATUS` / `SHOW REPLICA STATUS`) says, as text the
/// server sent: unparseable values are left unknown, never guessed.
pub(crate) fn replica_fields(st: &mut ReplicationStatus, r: &Row, kind: FlavorKind) {
    st.role = Some(Role::Replica);
    st.master = master_address(r);
    st.receiver_running = Some(r.get(&["Slave_IO_Running", "Replica_IO_Running"]) == Some("Yes"));
    st.applier_running = Some(r.get(&["Slave_SQL_Running", "Replica_SQL_Running"]) == Some("Yes"));
    st.lag_seconds = r
        .get(&["Seconds_Behind_Master", "Seconds_Behind_Source"])
        .and_then(|v| v.parse().ok());
    st.last_error = r
        .non_empty(&["Last_IO_Error"])
        .or_else(|| r.non_empty(&["Last_SQL_Error"]))
        .map(str::to_owned);
    st.received = match kind {
        FlavorKind::MariaDb => r
            .get(&["Gtid_IO_Pos"])
            .and_then(|g| g.parse().ok())
            .map(ReplicationPosition::MariadbGtid),
        FlavorKind::Mysql => r
            .get(&["Retrieved_Gtid_Set"])
            .and_then(|g| g.parse().ok())
            .map(ReplicationPosition::MysqlGtid),
    };
}

impl MysqlStrategy {
    async fn binlog_coordinates(
        &self,
        s: &mut Session,
        sql: &Sql,
    ) -> Result<Option<BinlogCoordinates>> {
        let Some(row) = s.row(&sql.binlog_status()).await? else {
            return Ok(None);
        };
        let (Some(file), Some(pos)) = (row.non_empty(&["File"]), row.get(&["Position"])) else {
            return Ok(None);
        };
        Ok(Some(BinlogCoordinates {
            log_file: file.parse()?,
            log_position: pos
                .parse()
                .map_err(|_| Error::invalid("binlog position", pos.to_owned()))?,
        }))
    }

    fn gtid_position(kind: FlavorKind, text: &str) -> Result<ReplicationPosition> {
        Ok(match kind {
            FlavorKind::MariaDb => ReplicationPosition::MariadbGtid(text.parse()?),
            FlavorKind::Mysql => ReplicationPosition::MysqlGtid(text.parse()?),
        })
    }

    pub(crate) async fn latest_txn_impl(&self) -> Result<ReplicationPosition> {
        let sql = self.sql().await?;
        let mut s = self.session().await?;
        let vars = self.vars(&mut s, &sql).await?;
        let pos = if !vars.gtid.is_empty() {
            Self::gtid_position(sql.flavor().kind, &vars.gtid)?
        } else if let Some(c) = self.binlog_coordinates(&mut s, &sql).await? {
            ReplicationPosition::Binlog(c)
        } else {
            Self::gtid_position(sql.flavor().kind, "")?
        };
        s.close().await;
        Ok(pos)
    }

    pub(crate) async fn wait_for_txn_impl(
        &self,
        txn: &ReplicationPosition,
        timeout: Duration,
    ) -> Result<()> {
        let sql = self.sql().await?;
        let kind = sql.flavor().kind;
        let deadline = trove_guest_core::deadline(timeout);
        let mut s = self.session().await?;
        let result = match (txn, kind) {
            (ReplicationPosition::MariadbGtid(g), FlavorKind::MariaDb) => {
                let vars = self.vars(&mut s, &sql).await?;
                let mine: MariaDbGtidList = vars.gtid.parse()?;
                if mine.contains(g) {
                    Ok(())
                } else {
                    self.server_wait(&mut s, &sql, GtidStart::MariaDb(g), txn, timeout)
                        .await
                }
            }
            (ReplicationPosition::MysqlGtid(g), FlavorKind::Mysql) => {
                let vars = self.vars(&mut s, &sql).await?;
                let mine: MysqlGtidSet = vars.gtid.parse()?;
                if mine.contains(g) {
                    Ok(())
                } else {
                    self.server_wait(&mut s, &sql, GtidStart::Mysql(g), txn, timeout)
                        .await
                }
            }
            (ReplicationPosition::Binlog(c), _) => {
                self.wait_position(&mut s, &sql, c, txn, timeout, deadline)
                    .await
            }
            (other, _) => Err(Error::invalid(
                "transaction position",
                format!("{other} is not a {} position", sql.flavor().datastore()),
            )),
        };
        s.close().await;
        result
    }

    async fn server_wait(
        &self,
        s: &mut Session,
        sql: &Sql,
        target: GtidStart<'_>,
        txn: &ReplicationPosition,
        timeout: Duration,
    ) -> Result<()> {
        let st = sql.wait_for_gtid(target, timeout)?;
        let row = tokio::time::timeout(timeout + CLIENT_MARGIN, s.one(&st))
            .await
            .map_err(|_| timeout_err(txn, timeout))??;
        match row.get(&["r"]) {
            Some("0") => Ok(()),
            _ => Err(timeout_err(txn, timeout)),
        }
    }

    async fn wait_position(
        &self,
        s: &mut Session,
        sql: &Sql,
        c: &BinlogCoordinates,
        txn: &ReplicationPosition,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let mut poll = Backoff::new(self.opts.poll_interval);
        // On the master itself: compare with its own binary log until it gets there.
        if self.replica_row(s, sql).await?.is_none() {
            loop {
                if let Some(mine) = self.binlog_coordinates(s, sql).await?
                    && binlog_reached(&mine, c)
                {
                    return Ok(());
                }
                if !poll.tick(deadline).await {
                    return Err(timeout_err(txn, timeout));
                }
            }
        }
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let st = sql.wait_for_position(c, remaining);
            let row = tokio::time::timeout(remaining + CLIENT_MARGIN, s.one(&st))
                .await
                .map_err(|_| timeout_err(txn, timeout))??;
            match row.get(&["r"]).and_then(|r| r.parse::<i64>().ok()) {
                Some(n) if n >= 0 => return Ok(()),
                Some(_) => return Err(timeout_err(txn, timeout)),
                // NULL: replication not running (yet); poll until the deadline.
                None => {
                    if !poll.tick(deadline).await {
                        return Err(timeout_err(txn, timeout));
                    }
                }
            }
        }
    }

    pub(crate) async fn status_impl(&self) -> Result<ReplicationStatus> {
        let sql = self.sql().await?;
        let kind = sql.flavor().kind;
        let mut s = self.session().await?;
        let vars = self.vars(&mut s, &sql).await?;
        let row = self.replica_row(&mut s, &sql).await?;
        let replicas = s
            .row(&sql.connected_replicas())
            .await?
            .and_then(|r| r.get(&["n"]).and_then(|n| n.parse().ok()));
        s.close().await;
        let mut st = ReplicationStatus::default();
        st.read_only = Some(vars.read_only);
        st.connected_replicas = replicas;
        st.executed = self.latest_txn_impl().await.ok();
        match row {
            Some(r) => replica_fields(&mut st, &r, kind),
            None => {
                st.role = Some(if vars.log_bin {
                    Role::Master
                } else {
                    Role::Standalone
                });
            }
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, pos: u64) -> BinlogCoordinates {
        BinlogCoordinates {
            log_file: file.parse().unwrap(),
            log_position: pos,
        }
    }

    #[test]
    fn binlog_files_compare_by_number_not_as_text() {
        assert!(binlog_reached(&at("b.000002", 4), &at("b.000001", 900)));
        assert!(binlog_reached(&at("b.000001", 900), &at("b.000001", 900)));
        assert!(!binlog_reached(&at("b.000001", 899), &at("b.000001", 900)));
        // Past the sixth digit the extension grows: text order would say not reached.
        assert!(binlog_reached(&at("b.1000000", 4), &at("b.999999", 900)));
        assert!(!binlog_reached(&at("b.999999", 900), &at("b.1000000", 4)));
    }
}
