//! The replica side: `attach_replication_slave`.
//!
//! Order of work, so that a failure before the swap leaves the previous datadir untouched and
//! the server running:
//!
//! 1. refuse another datastore or release series ([`Error::Incompatible`]), and a server
//!    holding transactions the snapshot's master never had ([`Error::Diverged`]);
//! 2. use the copy [`stage_snapshot`](trove_guest_core::ReplicationStrategy::stage_snapshot)
//!    left in the staging directory under `work_dir` when its marker names the document's
//!    snapshot and the store still holds exactly that snapshot; otherwise discard it (marker
//!    first) and stream `store.get` (size and SHA-256 verified while reading) into
//!    `mbstream -x` there, then `--prepare` ([`crate::restore`]); a verification failure aborts
//!    the extraction and becomes [`Error::Integrity`];
//! 3. cross-check the restored binlog info file with the document (both ways), then remove
//!    the staging marker;
//! 4. stop the server, rename the datadir aside, rename the staging directory in, write the
//!    replica override, start (on a failed start the old datadir is put back and started);
//! 5. seed the GTID state, `CHANGE MASTER TO`, `START SLAVE`, and wait (bounded) until both
//!    threads run and the snapshot position is applied. The old datadir is removed only then:
//!    when this step fails it is put back (with its replica override) and started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use trove_guest_core::error::IoResultExt;
use trove_guest_core::position::{BinlogCoordinates, MariaDbGtidList, MysqlGtidSet};
use trove_guest_core::staging::remove_dir_if_exists;
use trove_guest_core::store::Expected;
use trove_guest_core::{
    AttachOutcome, AttachRequest, Error, Phase, Positioning, Result, Secret, SecretFile,
    SnapshotDocument,
};

use crate::config::{
    INIT_FILE, REPLICA_FILE, init_override, remove_override, replica_override, write_override,
};
use crate::flavor::FlavorKind;
use crate::restore::{ReadFrom, check_binlog_info};
use crate::sql::{
    Account, ChangeMaster, GtidStart, StartAt, validate_connect_host, validate_password,
};
use crate::strategy::{Backoff, MysqlStrategy};

const STAGING: &str = ".tg-restore";
const OLD_DATA: &str = ".tg-old-data";

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
enum Start {
    MariaGtid(MariaDbGtidList),
    MysqlGtid(MysqlGtidSet),
    File(BinlogCoordinates),
}

impl MysqlStrategy {
    pub(crate) fn staging_dir(&self) -> PathBuf {
        self.handle.work_dir.join(STAGING)
    }

    fn old_data_dir(&self) -> PathBuf {
        self.handle.work_dir.join(OLD_DATA)
    }

    /// Puts back a datadir left aside by an interrupted swap.
    pub(crate) fn recover_interrupted_swap(&self) -> Result<()> {
        let old = self.old_data_dir();
        if !self.handle.data_dir.exists() && old.exists() {
            tracing::warn!("restoring the datadir left aside by an interrupted attach");
            std::fs::rename(&old, &self.handle.data_dir)
                .context(|| format!("rename {} back", old.display()))?;
        }
        remove_dir_if_exists(&old)
    }

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

        // 1. Errant transactions on this server.
        progress.phase(Phase::Prepare, "checking this server's GTID state");
        let mut s = self.session().await?;
        let vars = self.vars(&mut s, &sql).await?;
        s.close().await;
        let master_now = self.master_gtid(doc, &grant.user, &password).await;
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

        // 2. The snapshot in staging: the copy staged earlier when it is this document's
        // snapshot, else extracted now (verified as it is read) and prepared.
        self.recover_interrupted_swap()?;
        let staging = self.staging_dir();
        let restored_bytes = match self.staged_for(doc).await {
            Some(staged) => {
                tracing::info!(%href, bytes = staged.size, "using the staged copy of the snapshot");
                progress.phase(Phase::Restore, format!("using the staged copy of {href}"));
                staged.size
            }
            None => {
                self.discard_staged()?;
                std::fs::create_dir_all(&staging)
                    .context(|| format!("create {}", staging.display()))?;
                let expected = Expected {
                    size: doc.dataset.size_bytes,
                    sha256: doc.dataset.sha256.clone(),
                };
                match self
                    .extract_and_prepare(
                        href,
                        ReadFrom::Complete(&expected),
                        &staging,
                        flavor,
                        progress,
                    )
                    .await
                {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = remove_dir_if_exists(&staging);
                        return Err(e);
                    }
                }
            }
        };

        // 3. The restored position must be the one the document carries, whichever way the
        // snapshot got into staging. From here on the staging directory is no staged copy any
        // more: it is swapped in, or discarded.
        let checked = check_binlog_info(&staging, doc, flavor);
        if let Err(e) = checked.and_then(|()| self.remove_staged_marker()) {
            let _ = self.discard_staged();
            return Err(e);
        }

        // 4. Swap.
        progress.phase(
            Phase::Start,
            "swapping the datadir and starting as a replica",
        );
        let server_id = req.server_id.unwrap_or(self.handle.server_id);
        let previous_replica_file = self.swap_in(&staging, server_id, &admin_init).await?;

        // 5. Replicate. The previous datadir is kept until this succeeded: on any failure
        // here it is put back and started, like after a failed start.
        match self
            .replicate(doc, req, &start, &grant.user, &password)
            .await
        {
            Ok(applied) => {
                let old = self.old_data_dir();
                let _ = tokio::task::spawn_blocking(move || remove_dir_if_exists(&old)).await;
                progress.phase(Phase::Done, "replicating");
                Ok(AttachOutcome::new(restored_bytes, applied))
            }
            Err(e) => {
                tracing::error!(error = %e, "the restored server does not replicate; putting the old datadir back");
                match self.put_old_back(previous_replica_file.as_deref()).await {
                    Ok(()) => Err(e),
                    Err(rb) => Err(Error::Service {
                        message: format!(
                            "the restored server does not replicate ({e}), and putting the \
                             previous datadir back failed: {rb}"
                        ),
                    }),
                }
            }
        }
    }

    /// Step 5: position the restored server on its master, start replication and wait.
    async fn replicate(
        &self,
        doc: &SnapshotDocument,
        req: &AttachRequest,
        start: &Start,
        user: &str,
        password: &Secret,
    ) -> Result<Option<trove_guest_core::ReplicationPosition>> {
        let progress = &req.progress;
        let sql = self.sql().await?;
        progress.phase(Phase::CatchUp, "starting replication");
        let mut s = self.session().await?;
        let _ = s.exec(&sql.stop_replica()).await;
        s.exec(&sql.reset_replica_all()).await?;
        let start_at = match start {
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
            host: &doc.master.host,
            port: doc.master.port,
            user,
            password,
            start: start_at,
            connect_retry: self.opts.connect_retry,
        })?)
        .await?;
        s.exec(&sql.start_replica()).await?;
        s.close().await;
        self.wait_replicating(start, req.timeout).await?;
        Ok(self.latest_txn_impl().await.ok())
    }

    /// Step 4: stop, swap, write the replica override, start; on a failed start put the old
    /// datadir back.
    /// The master's current GTID position, asked with the replication account; `None` (and a
    /// warning) when it cannot be reached, so the check falls back to the snapshot's position.
    async fn master_gtid(
        &self,
        doc: &SnapshotDocument,
        user: &str,
        password: &Secret,
    ) -> Option<String> {
        let sql = self.sql().await.ok()?;
        let asked = async {
            let mut s = crate::client::Session::open_remote(
                &doc.master.host,
                doc.master.port,
                user,
                password,
                Duration::from_secs(5),
            )
            .await?;
            let row = s.one(&sql.master_gtid()).await?;
            s.close().await;
            Ok::<_, Error>(row.get(&["gtid"]).unwrap_or_default().to_owned())
        }
        .await;
        match asked {
            Ok(g) => Some(g),
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

    /// Returns the replica override the previous datadir had (for [`Self::put_old_back`]); the
    /// previous datadir stays aside until the caller removes it.
    async fn swap_in(
        &self,
        staging: &Path,
        server_id: u32,
        admin_init: &Secret,
    ) -> Result<Option<String>> {
        let data = &self.handle.data_dir;
        let old = self.old_data_dir();
        let relay_base = match &self.opts.relay_log_dir {
            Some(d) => {
                std::fs::create_dir_all(d).context(|| format!("create {}", d.display()))?;
                d.join("relay-bin")
            }
            None => PathBuf::from("relay-bin"),
        };
        let flavor = self.flavor().await?;
        let advertise = &self.handle.advertise;
        let text = replica_override(
            flavor,
            server_id,
            &relay_base,
            Some((&advertise.host, advertise.port)),
        )?;
        // The replica override of an earlier attach belongs to the current datadir: put it back
        // with that datadir if this attach fails.
        let previous_replica_file =
            match std::fs::read_to_string(self.handle.config_dir.join(REPLICA_FILE)) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(format!("read {REPLICA_FILE}"), e)),
            };
        self.handle.service.stop().await?;
        std::fs::rename(data, &old).context(|| format!("move {} aside", data.display()))?;
        if let Err(e) = std::fs::rename(staging, data) {
            std::fs::rename(&old, data).context(|| format!("put {} back", data.display()))?;
            let _ = self.handle.service.start().await;
            return Err(Error::io(
                format!("move the restored data to {}", data.display()),
                e,
            ));
        }
        // Any failure from here on (a config write as much as a failed start) puts the old
        // datadir and its configuration back and starts the server again.
        if let Err(e) = self.start_restored(&text, admin_init).await {
            tracing::error!(error = %e, "restored server did not start; putting the old datadir back");
            self.put_old_back(previous_replica_file.as_deref()).await?;
            return Err(e);
        }
        Ok(previous_replica_file)
    }

    /// Undoes [`Self::swap_in`]: stops the server, moves the restored datadir away, puts the
    /// previous one and its replica override (`previous_replica_file`; none: removed) back and
    /// starts the server.
    async fn put_old_back(&self, previous_replica_file: Option<&str>) -> Result<()> {
        let data = &self.handle.data_dir;
        let old = self.old_data_dir();
        let _ = self.handle.service.stop().await;
        let _ = remove_override(&self.handle.config_dir, INIT_FILE);
        let failed = self.handle.work_dir.join(".tg-failed-restore");
        let _ = remove_dir_if_exists(&failed);
        std::fs::rename(data, &failed).context(|| format!("move {} aside", data.display()))?;
        std::fs::rename(&old, data).context(|| format!("put {} back", data.display()))?;
        match previous_replica_file {
            Some(t) => write_override(&self.handle.config_dir, REPLICA_FILE, t)?,
            None => {
                remove_override(&self.handle.config_dir, REPLICA_FILE)?;
            }
        }
        // Relay logs of the restored server do not belong to the previous datadir (a previous
        // replica re-fetches through relay_log_recovery).
        if let Some(d) = &self.opts.relay_log_dir {
            clear_relay_logs(d);
        }
        self.handle.service.start().await?;
        let _ = remove_dir_if_exists(&failed);
        Ok(())
    }

    /// The part of the swap after the restored datadir is in place: its configuration, a start
    /// and a real admin login. The caller rolls back on any error.
    async fn start_restored(&self, replica_text: &str, admin_init: &Secret) -> Result<()> {
        let data = &self.handle.data_dir;
        // The backup's own metadata files have served their purpose.
        remove_backup_metadata(data);
        // Relay logs of an earlier replication would not match the restored data.
        if let Some(d) = &self.opts.relay_log_dir {
            clear_relay_logs(d);
        }
        write_override(&self.handle.config_dir, REPLICA_FILE, replica_text)?;
        let init_sql = SecretFile::new("admin-init.sql", admin_init.expose(), self.handle.os_user)?;
        write_override(
            &self.handle.config_dir,
            INIT_FILE,
            &init_override(init_sql.path())?,
        )?;
        // The socket accepts before the server has run its init file: wait for a real login
        // (which also proves the admin account was replayed) before removing the file.
        let started = match self.handle.service.start().await {
            Ok(()) => self.wait_for_login(Duration::from_secs(120)).await,
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
            // Each attempt is bounded too: a server that accepts and never answers would
            // otherwise hold this loop past its deadline.
            let attempt = match tokio::time::timeout_at(deadline, self.session()).await {
                Ok(r) => r,
                Err(_) => Err(Error::timeout("the admin login", timeout)),
            };
            match attempt {
                Ok(s) => {
                    s.close().await;
                    return Ok(());
                }
                Err(e) => {
                    if !poll.tick(deadline).await {
                        return Err(Error::Service {
                            message: format!(
                                "the restored server does not accept the admin login: {e}"
                            ),
                        });
                    }
                }
            }
        }
    }

    /// Step 5's wait: both threads running and the snapshot position applied, within
    /// `timeout`.
    async fn wait_replicating(&self, start: &Start, timeout: Duration) -> Result<()> {
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

fn remove_backup_metadata(data: &Path) {
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

fn clear_relay_logs(dir: &Path) {
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
