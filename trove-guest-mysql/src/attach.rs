//! The replica side: `attach_replication_slave`'s checks and the MariaDB/MySQL parts of the
//! restore lifecycle.
//!
//! Before anything changes: another datastore or release series is refused
//! ([`Error::Incompatible`]), and so is a server holding transactions the snapshot's master
//! never had ([`Error::Diverged`]); this server's admin account is captured. Then the core
//! lifecycle ([`trove_guest_core::lifecycle::attach`]) restores, swaps, starts and replicates
//! over the hooks in [`crate::hooks`]: `mbstream -x` and `--prepare` into staging, the binlog
//! info file cross-checked with the document, the replica override, a first start that
//! replays the admin account, and `CHANGE MASTER TO` / `START SLAVE` with a bounded wait.

use std::path::{Path, PathBuf};
use std::time::Duration;

use trove_guest_core::error::IoResultExt;
use trove_guest_core::lifecycle;
use trove_guest_core::position::{BinlogCoordinates, MariaDbGtidList, MysqlGtidSet};
use trove_guest_core::wire::ReplicationTls;
use trove_guest_core::{
    AttachOutcome, AttachRequest, Error, Phase, Positioning, Progress, Result, Secret, SecretFile,
    SnapshotDocument,
};

use crate::config::{INIT_FILE, init_override, remove_override, replica_override, write_override};
use crate::flavor::{Flavor, FlavorKind};
use crate::sql::{
    Account, ChangeMaster, GtidStart, StartAt, validate_connect_host, validate_password,
};
use crate::strategy::{Backoff, MysqlStrategy};

/// MariaDB: the GTIDs of `replica` that `master` (its current `gtid_binlog_pos`) does not
/// cover; empty when the replica holds nothing the master lacks.
pub fn errant_mariadb(replica: &MariaDbGtidList, master: &MariaDbGtidList) -> Vec<String> {
    replica
        .gtids()
        .filter(|g| {
            !master
                .gtids()
                .any(|m| m.domain == g.domain && m.sequence >= g.sequence)
        })
        .map(|g| format!("{}-{}-{}", g.domain, g.server, g.sequence))
        .collect()
}

/// MariaDB, when the master cannot be asked: like [`errant_mariadb`] against the snapshot's
/// position, except that GTIDs beyond it from the server that wrote the snapshot's last GTID
/// of that domain count as the master's later transactions (a replica that already follows
/// this master and is attached again).
pub fn errant_mariadb_vs_snapshot(
    replica: &MariaDbGtidList,
    snapshot: &MariaDbGtidList,
) -> Vec<String> {
    replica
        .gtids()
        .filter(|g| {
            !snapshot
                .gtids()
                .any(|m| m.domain == g.domain && (m.sequence >= g.sequence || m.server == g.server))
        })
        .map(|g| format!("{}-{}-{}", g.domain, g.server, g.sequence))
        .collect()
}

/// MySQL: the transactions in `replica` that `master` (its current `gtid_executed`) lacks.
pub fn errant_mysql(replica: &MysqlGtidSet, master: &MysqlGtidSet) -> MysqlGtidSet {
    replica.difference(master)
}

/// MySQL, when the master cannot be asked: like [`errant_mysql`] against the snapshot's set,
/// except transactions of server UUIDs the snapshot already knows.
///
/// # Errors
///
/// [`Error::InvalidInput`] only if a set fails to re-parse (it cannot, for parsed input).
pub fn errant_mysql_vs_snapshot(
    replica: &MysqlGtidSet,
    snapshot: &MysqlGtidSet,
) -> Result<MysqlGtidSet> {
    let known: Vec<String> = snapshot
        .to_string()
        .split(',')
        .filter_map(|m| m.split(':').next().map(str::to_owned))
        .collect();
    let diff = replica.difference(snapshot).to_string();
    diff.split(',')
        .filter(|m| !m.is_empty())
        .filter(|m| {
            !known
                .iter()
                .any(|k| m.split(':').next() == Some(k.as_str()))
        })
        .collect::<Vec<_>>()
        .join(",")
        .parse()
}

/// The start position requested, resolved against the document.
pub(crate) enum Start {
    MariaGtid(MariaDbGtidList),
    MysqlGtid(MysqlGtidSet),
    File(BinlogCoordinates),
}

/// What one attach carries from its checks into the restore lifecycle's hooks: the validated
/// document, the start position, the replication credentials and this server's admin account.
/// Opaque: built by `attach_replication_slave` only.
pub struct AttachPlan {
    pub(crate) doc: SnapshotDocument,
    pub(crate) flavor: Flavor,
    pub(crate) start: Start,
    pub(crate) user: String,
    pub(crate) password: Secret,
    pub(crate) server_id: u32,
    /// This server's admin account, replayed on the first start of the restored data.
    pub(crate) admin_init: Secret,
    /// TLS to the master (verified before the plan was made), `None` for plaintext.
    pub(crate) tls: Option<ReplicationTls>,
}

impl MysqlStrategy {
    /// The checks before anything changes; then the core lifecycle does the rest over this
    /// crate's hooks.
    pub(crate) async fn attach_impl(
        &self,
        doc: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        let progress = &req.progress;
        doc.validate()?;
        let sql = self.sql().await?;
        let flavor = sql.flavor();
        flavor.check_restorable(
            doc.dataset.datastore,
            &doc.dataset.datastore_version,
            doc.dataset.server_version.as_deref(),
        )?;
        let href = &doc.dataset.snapshot_href;
        if !self.store.owns(href) {
            return Err(Error::invalid(
                "snapshot href",
                format!("{href:?} is not in this agent's snapshot store"),
            ));
        }
        let bp = doc
            .binlog_position
            .as_ref()
            .ok_or_else(|| Error::invalid("snapshot document", "binlog_position is missing"))?;
        let grant = doc
            .replication
            .as_ref()
            .ok_or_else(|| Error::invalid("snapshot document", "replication account is missing"))?;
        let password = grant.password.as_ref().map(|p| p.0.clone()).ok_or_else(|| {
            Error::invalid(
                "snapshot document",
                "replication.password is missing (password_ref is resolved by the agent, not here)",
            )
        })?;
        crate::sql::validate_user(&grant.user)?;
        validate_password(&password)?;
        validate_connect_host(&doc.master.host)?;
        let start = match (req.positioning, flavor.kind) {
            (Positioning::BinlogFile, _) => Start::File(BinlogCoordinates {
                log_file: bp.log_file.clone(),
                log_position: bp.log_position,
            }),
            (Positioning::Gtid, FlavorKind::MariaDb) => {
                Start::MariaGtid(bp.gtid_list.clone().ok_or_else(|| {
                    Error::invalid("snapshot document", "binlog_position.gtid_list is missing")
                })?)
            }
            (Positioning::Gtid, FlavorKind::Mysql) => {
                Start::MysqlGtid(bp.gtid_set.clone().ok_or_else(|| {
                    Error::invalid("snapshot document", "binlog_position.gtid_set is missing")
                })?)
            }
            (other, _) => {
                return Err(Error::unsupported(format!("positioning {other:?}")));
            }
        };

        // TLS: the master's certificate must verify from here before anything changes.
        let tls = self.verify_master_tls(doc).await?;

        // Errant transactions on this server.
        progress.phase(Phase::Prepare, "checking this server's GTID state");
        let mut s = self.session().await?;
        let vars = self.vars(&mut s, &sql).await?;
        s.close().await;
        let master_now = self
            .master_gtid(doc, &grant.user, &password, tls.as_ref())
            .await;
        match flavor.kind {
            FlavorKind::MariaDb => {
                let mine: MariaDbGtidList = vars.gtid.parse()?;
                let (errant, against) = match (&master_now, &bp.gtid_list) {
                    (Some(now), _) => {
                        let now: MariaDbGtidList = now.parse()?;
                        (errant_mariadb(&mine, &now), format!("the master's {now}"))
                    }
                    (None, Some(snap)) => (
                        errant_mariadb_vs_snapshot(&mine, snap),
                        format!("the snapshot's {snap}"),
                    ),
                    (None, None) => (Vec::new(), String::new()),
                };
                if !errant.is_empty() {
                    return Err(Error::Diverged {
                        detail: format!(
                            "this server has executed {} beyond {against}",
                            errant.join(",")
                        ),
                    });
                }
            }
            FlavorKind::Mysql => {
                let mine: MysqlGtidSet = vars.gtid.parse()?;
                let (errant, against) = match (&master_now, &bp.gtid_set) {
                    (Some(now), _) => {
                        let now: MysqlGtidSet = now.parse()?;
                        (errant_mysql(&mine, &now), format!("the master's {now}"))
                    }
                    (None, Some(snap)) => (
                        errant_mysql_vs_snapshot(&mine, snap)?,
                        format!("the snapshot's {snap}"),
                    ),
                    (None, None) => (MysqlGtidSet::default(), String::new()),
                };
                if !errant.is_empty() {
                    return Err(Error::Diverged {
                        detail: format!("{errant} are not in {against}"),
                    });
                }
            }
        }

        // The restore brings the master's privilege tables: remember how this server's own
        // admin account is defined, to replay it on the first start of the restored data.
        let admin_init = self.capture_admin_account().await?;
        let plan = AttachPlan {
            doc: doc.clone(),
            flavor,
            start,
            user: grant.user.clone(),
            password,
            server_id: req.server_id.unwrap_or(self.handle.server_id),
            admin_init,
            tls,
        };
        lifecycle::attach(self, &plan, doc, req).await
    }

    /// Positions the restored server on its master, starts replication and waits.
    pub(crate) async fn start_replication(
        &self,
        plan: &AttachPlan,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Option<trove_guest_core::ReplicationPosition>> {
        let sql = self.sql().await?;
        progress.phase(Phase::CatchUp, "starting replication");
        let mut s = self.session().await?;
        let _ = s.exec(&sql.stop_replica()).await;
        s.exec(&sql.reset_replica_all()).await?;
        let start_at = match &plan.start {
            Start::MariaGtid(g) => {
                s.exec_all(&sql.seed_gtid(GtidStart::MariaDb(g))?).await?;
                StartAt::Gtid
            }
            Start::MysqlGtid(g) => {
                s.exec_all(&sql.seed_gtid(GtidStart::Mysql(g))?).await?;
                StartAt::Gtid
            }
            Start::File(c) => StartAt::File(c),
        };
        s.exec(&sql.change_master(&ChangeMaster {
            host: &plan.doc.master.host,
            port: plan.doc.master.port,
            user: &plan.user,
            password: &plan.password,
            start: start_at,
            connect_retry: self.opts.connect_retry,
        })?)
        .await?;
        if let Some(statement) = self.replica_tls_statement(&sql, plan.tls.as_ref())? {
            s.exec(&statement).await?;
        }
        s.exec(&sql.start_replica()).await?;
        s.close().await;
        self.wait_replicating(&plan.start, &plan.doc.master, timeout)
            .await?;
        Ok(self.latest_txn_impl().await.ok())
    }

    /// The master's current GTID position, asked with the replication account (over TLS
    /// verified with the document's CA and server name when it carries them, as the
    /// replication itself: the account is TLS-only then); `None` (and a warning) when it
    /// cannot be reached, so the check falls back to the snapshot's position.
    async fn master_gtid(
        &self,
        doc: &SnapshotDocument,
        user: &str,
        password: &Secret,
        tls: Option<&ReplicationTls>,
    ) -> Option<String> {
        let sql = self.sql().await.ok()?;
        let asked = async {
            let mut s = crate::client::Session::open_remote(
                &doc.master.host,
                doc.master.port,
                user,
                password,
                tls,
                Duration::from_secs(5),
            )
            .await?;
            let row = s.one(&sql.master_gtid()).await?;
            s.close().await;
            Ok::<_, Error>(row.get(&["gtid"]).unwrap_or_default().to_owned())
        }
        .await;
        match asked {
            Ok(g) => {
                tracing::debug!(gtid = %g, tls = tls.is_some(), "asked the master for its GTID position");
                Some(g)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the master for its GTID position; checking against the snapshot's");
                None
            }
        }
    }

    /// This server's admin account as an init file (see [`crate::sql::Sql::admin_init_file`]).
    async fn capture_admin_account(&self) -> Result<Secret> {
        let sql = self.sql().await?;
        let mut s = self.session().await?;
        let current = s.one(&sql.current_user()).await?;
        let text = current.get(&["account"]).unwrap_or_default().to_owned();
        let (user, host) = text.rsplit_once('@').ok_or_else(|| {
            Error::invalid("admin account", format!("CURRENT_USER() returned {text:?}"))
        })?;
        let account = Account::new(user, host)?;
        if let Some(st) = sql.print_hashes_as_hex() {
            s.exec(&st).await?;
        }
        let first = |rows: Vec<crate::client::Row>| -> Vec<String> {
            rows.into_iter()
                .filter_map(|r| r.first().map(str::to_owned))
                .collect()
        };
        let create = first(s.rows(&sql.show_create_user(&account)).await?);
        let grants = first(s.rows(&sql.show_grants(&account)).await?);
        s.close().await;
        let create = create.into_iter().next().ok_or_else(|| {
            Error::invalid(
                "admin account",
                format!("SHOW CREATE USER for {account} was empty"),
            )
        })?;
        sql.admin_init_file(&account, &create, &grants)
    }

    /// The replica override for `plan`.
    pub(crate) fn replica_text(&self, plan: &AttachPlan) -> Result<String> {
        let relay_base = match &self.opts.relay_log_dir {
            Some(d) => {
                std::fs::create_dir_all(d).context(|| format!("create {}", d.display()))?;
                d.join("relay-bin")
            }
            None => PathBuf::from("relay-bin"),
        };
        let advertise = &self.handle.advertise;
        replica_override(
            plan.flavor,
            plan.server_id,
            &relay_base,
            Some((&advertise.host, advertise.port)),
        )
    }

    /// The first start of the restored data: the admin account is replayed through a one-start
    /// `init_file` override (a 0600 file in the work directory, swept by recovery if this
    /// process dies), and a real login is awaited before the override goes.
    pub(crate) async fn start_restored(&self, plan: &AttachPlan) -> Result<()> {
        let init_sql = SecretFile::new_in(
            &self.handle.work_dir,
            "admin-init.sql",
            plan.admin_init.expose(),
            self.handle.os_user,
        )?;
        write_override(
            &self.handle.config_dir,
            INIT_FILE,
            &init_override(init_sql.path())?,
        )?;
        // The socket accepts before the server has run its init file: wait for a real login
        // (which also proves the admin account was replayed) before removing the file.
        let started = match self.handle.service.start().await {
            Ok(()) => self.wait_for_login(self.opts.start_timeout).await,
            Err(e) => Err(e),
        };
        remove_override(&self.handle.config_dir, INIT_FILE)?;
        drop(init_sql);
        started
    }

    async fn wait_for_login(&self, timeout: Duration) -> Result<()> {
        let deadline = trove_guest_core::deadline(timeout);
        let mut poll = Backoff::new(self.opts.poll_interval);
        loop {
            let attempt = tokio::time::timeout(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
                self.session(),
            )
            .await;
            let e = match attempt {
                Ok(Ok(s)) => {
                    s.close().await;
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the login did not complete in time".to_owned(),
            };
            if !poll.tick(deadline).await {
                return Err(Error::Service {
                    message: format!("the restored server does not accept the admin login: {e}"),
                });
            }
        }
    }

    /// The replication wait: both threads running and the snapshot position applied, within
    /// `timeout`.
    async fn wait_replicating(
        &self,
        start: &Start,
        master: &trove_guest_core::wire::MasterAddress,
        timeout: Duration,
    ) -> Result<()> {
        let sql = self.sql().await?;
        let deadline = trove_guest_core::deadline(timeout);
        let mut last_error = String::new();
        let mut poll = Backoff::new(self.opts.poll_interval);
        loop {
            let mut s = self.session().await?;
            let row = self.replica_row(&mut s, &sql).await?;
            s.close().await;
            if let Some(row) = row {
                let io = row.get(&["Slave_IO_Running", "Replica_IO_Running"]) == Some("Yes");
                let sqlt = row.get(&["Slave_SQL_Running", "Replica_SQL_Running"]) == Some("Yes");
                if let Some(e) = row.non_empty(&["Last_IO_Error"]) {
                    last_error = e.to_owned();
                }
                if let Some(e) = crate::tls::io_thread_tls_failure(&row, master) {
                    return Err(e);
                }
                if let Some(e) = row.non_empty(&["Last_SQL_Error"])
                    && !sqlt
                {
                    return Err(Error::Datastore {
                        message: format!("replication stopped: {e}"),
                        source: None,
                    });
                }
                if io && sqlt {
                    break;
                }
            }
            if !poll.tick(deadline).await {
                return Err(Error::timeout(
                    format!("both replication threads to run (last error: {last_error:?})"),
                    timeout,
                ));
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let target = match start {
            Start::MariaGtid(g) => trove_guest_core::ReplicationPosition::MariadbGtid(g.clone()),
            Start::MysqlGtid(g) => trove_guest_core::ReplicationPosition::MysqlGtid(g.clone()),
            Start::File(c) => trove_guest_core::ReplicationPosition::Binlog(c.clone()),
        };
        self.wait_for_txn_impl(&target, remaining).await
    }
}

pub(crate) fn remove_backup_metadata(data: &Path) {
    if let Ok(entries) = std::fs::read_dir(data) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "backup-my.cnf"
                || name.starts_with("xtrabackup_")
                || name.starts_with("mariadb_backup_")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

pub(crate) fn clear_relay_logs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("relay-bin.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errant_gtids_are_what_the_master_lacks() {
        let master: MariaDbGtidList = "0-1-100,1-3-7".parse().unwrap();
        assert!(errant_mariadb(&"0-1-90".parse().unwrap(), &master).is_empty());
        assert!(errant_mariadb(&"".parse().unwrap(), &master).is_empty());
        assert_eq!(
            errant_mariadb(&"0-2-101".parse().unwrap(), &master),
            ["0-2-101"]
        );
        assert_eq!(
            errant_mariadb(&"0-1-5,2-2-1".parse().unwrap(), &master),
            ["2-2-1"]
        );
        let m: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10".parse().unwrap();
        let r: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-12".parse().unwrap();
        assert_eq!(
            errant_mysql(&r, &m).to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:11-12"
        );
        assert!(errant_mysql(&m, &r).is_empty());
        // Against the snapshot: later transactions of the snapshot's own servers are fine.
        let snap: MariaDbGtidList = "0-1-100".parse().unwrap();
        assert!(errant_mariadb_vs_snapshot(&"0-1-150".parse().unwrap(), &snap).is_empty());
        assert_eq!(
            errant_mariadb_vs_snapshot(&"0-2-150".parse().unwrap(), &snap),
            ["0-2-150"]
        );
        assert_eq!(
            errant_mariadb_vs_snapshot(&"9-1-1".parse().unwrap(), &snap),
            ["9-1-1"]
        );
        let other: MysqlGtidSet =
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-12,4e11fa47-71ca-11e1-9e33-c80aa9429562:1"
                .parse()
                .unwrap();
        assert_eq!(
            errant_mysql_vs_snapshot(&other, &m).unwrap().to_string(),
            "4e11fa47-71ca-11e1-9e33-c80aa9429562:1"
        );
    }
}
