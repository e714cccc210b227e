//! The master side: `enable_as_master` and `get_replication_snapshot`.
//!
//! The snapshot streams `mariabackup`/`xtrabackup --backup --stream=xbstream` from the tool's
//! stdout straight into the snapshot store (SHA-256 computed on the way, no temporary copy),
//! checks the tool's exit status, and only then commits the upload. The binlog position comes
//! from the backup's own `xtrabackup_binlog_info` / `mariadb_backup_binlog_info`, read out of
//! the stream as it passes ([`crate::xbstream::BinlogInfoTap`]); the replica cross-checks it
//! against the file it extracts. The replication account is made after the backup, with
//! `sql_log_bin = 0`, so it is neither in the snapshot nor replicated: the master alone holds it.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use trove_guest_core::error::IoResultExt;
use trove_guest_core::lifecycle::WorkLayout;
use trove_guest_core::wire::{BinlogPosition, Dataset, ReplicationGrant};
use trove_guest_core::{
    EnableMasterOptions, Error, Phase, Result, Secret, SecretFile, SnapshotDocument,
    SnapshotRequest, TransportSecret,
};

use crate::commands::{BackupArgs, backup_command, tool_option_file};
use crate::config::{LOG_BIN_WAS_ON, MASTER_FILE, binlog_base, master_override, write_override};
use crate::flavor::FlavorKind;
use crate::sql::{Account, validate_host};
use crate::strategy::MysqlStrategy;
use crate::unreturned::UnreturnedSnapshot;
use crate::xbstream::{BinlogInfo, BinlogInfoTap};

/// The replication account name for a replica id: `<prefix><id>` when that is a valid name of
/// at most 32 characters, else `<prefix>` plus a hash of the id.
///
/// # Errors
///
/// [`Error::InvalidInput`] for an id that is empty, over 128 bytes, or holds characters other
/// than `[A-Za-z0-9_-]`.
pub fn replication_user(prefix: &str, replica_id: &str) -> Result<String> {
    if replica_id.is_empty()
        || replica_id.len() > 128
        || !replica_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(Error::invalid(
            "replica id",
            format!("{replica_id:?} must be 1 to 128 of letters, digits, '_', '-'"),
        ));
    }
    let direct = format!("{prefix}{replica_id}");
    let name = if direct.len() <= crate::sql::MAX_USER_LEN {
        direct
    } else {
        let h = hex::encode(Sha256::digest(replica_id.as_bytes()));
        let room = crate::sql::MAX_USER_LEN.saturating_sub(prefix.len()).max(8);
        format!("{prefix}{}", &h[..room.min(h.len())])
    };
    crate::sql::validate_user(&name)?;
    Ok(name)
}

fn random_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(12)
        .map(|b| (b as char).to_ascii_lowercase())
        .collect()
}

impl MysqlStrategy {
    pub(crate) async fn enable_master_impl(&self, opts: &EnableMasterOptions) -> Result<()> {
        let sql = self.sql().await?;
        let flavor = sql.flavor();
        let mut s = self.session().await?;
        let vars = self.vars(&mut s, &sql).await?;
        let ours = self.handle.config_dir.join(MASTER_FILE).exists();
        let needs_restart =
            !vars.log_bin || (flavor.kind == FlavorKind::Mysql && !vars.gtid_mode_on);
        if needs_restart || ours {
            let base = binlog_base(self.opts.binlog_dir.as_deref(), &self.opts.binlog_basename);
            if let Some(dir) = &self.opts.binlog_dir {
                std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
            }
            let path = self.handle.config_dir.join(MASTER_FILE);
            // Keep what the first call saw: a repeated call finds log_bin on because of us.
            let was_on = if ours {
                std::fs::read_to_string(&path)
                    .context(|| format!("read {}", path.display()))?
                    .contains(LOG_BIN_WAS_ON)
            } else {
                vars.log_bin
            };
            let text = master_override(flavor, self.handle.server_id, &base, was_on)?;
            write_override(&self.handle.config_dir, MASTER_FILE, &text)?;
            trove_guest_core::lifecycle::failpoint("enable_master.begun").await;
        }
        if needs_restart {
            if !opts.allow_restart {
                s.close().await;
                return Err(Error::unsupported(
                    "turning binary logging on needs a restart, which the request does not allow",
                ));
            }
            s.close().await;
            tracing::info!("restarting the server to turn binary logging on");
            self.handle.service.restart().await?;
            s = self.session().await?;
            let after = self.vars(&mut s, &sql).await?;
            if !after.log_bin {
                s.close().await;
                return Err(Error::Datastore {
                    message: format!(
                        "binary logging is still off after a restart: does the server's \
                         configuration include {}?",
                        self.handle.config_dir.display()
                    ),
                    source: None,
                });
            }
        }
        let vars = self.vars(&mut s, &sql).await?;
        if !vars.binlog_format.eq_ignore_ascii_case("ROW") {
            s.exec(&sql.set_binlog_format_row()).await?;
        }
        if vars.server_id != self.handle.server_id {
            s.exec(&sql.set_server_id(self.handle.server_id)).await?;
        }
        s.close().await;
        Ok(())
    }

    pub(crate) async fn snapshot_impl(
        &self,
        req: &SnapshotRequest,
        lock: trove_guest_core::lifecycle::OwnedChangeGuard,
    ) -> Result<SnapshotDocument> {
        let progress = &req.progress;
        progress.phase(Phase::Prepare, "checking binary logging");
        self.enable_master_impl(&EnableMasterOptions::new()).await?;
        let sql = self.sql().await?;
        let flavor = sql.flavor();

        let replica_id = req.replica_id.clone().unwrap_or_else(random_id);
        let user = replication_user(&self.opts.account_prefix, &replica_id)?;
        let host = req.replica_host.clone().unwrap_or_else(|| "%".to_owned());
        validate_host(&host)?;
        let account = Account::new(&user, &host)?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = req
            .snapshot_name
            .clone()
            .unwrap_or_else(|| format!("{}-{replica_id}-{millis}", flavor.datastore()));

        // TLS: what replicas get to verify this server, checked against the running server
        // before any backup is taken.
        let tls = self.replication_tls().await?;

        let mut s = self.session().await?;
        let server_version = s
            .one(&crate::sql::Sql::server_identity())
            .await?
            .get(&["version"])
            .unwrap_or_default()
            .to_owned();
        s.close().await;

        // Stream the backup into the store.
        progress.phase(
            Phase::Backup,
            format!("{} --backup into {name}", flavor.backup_tool()),
        );
        let scratch = tempfile::Builder::new()
            .prefix(trove_guest_core::lifecycle::BACKUP_SCRATCH_PREFIX)
            .tempdir_in(&self.handle.work_dir)
            .context(|| format!("create scratch dir in {}", self.handle.work_dir.display()))?;
        // Paths inside the option file are the tool's: mapped into its container when it runs
        // in one.
        let server_config = self
            .opts
            .server_config
            .as_deref()
            .map(|p| self.handle.tools.path_for_tool(p))
            .transpose()?;
        let mut admin = self.handle.admin.clone();
        if let Some(sock) = &admin.socket {
            admin.socket = Some(self.handle.tools.path_for_tool(sock)?);
        }
        if let trove_guest_core::tls::AdminTls::Verify(v) = &mut admin.tls {
            v.ca_file = self.handle.tools.path_for_tool(&v.ca_file)?;
        }
        let secret = SecretFile::new_in(
            &self.handle.work_dir,
            "backup.cnf",
            &tool_option_file(server_config.as_deref(), &admin)?,
            None,
        )?;
        let tool_path = self.backup_tool(flavor);
        let cmd = backup_command(&BackupArgs {
            tool: &tool_path,
            defaults_file: secret.path(),
            data_dir: &self.handle.data_dir,
            scratch_dir: scratch.path(),
            log_copy_interval_ms: self.opts.log_copy_interval_ms,
            parallel: Some(req.parallel.unwrap_or(self.opts.backup_parallel).max(1)),
        });
        let started = std::time::Instant::now();
        let mut tool = self.handle.tool(cmd)?.spawn().map_err(|e| match e {
            Error::NotFound { what } => Error::NotFound {
                what: format!(
                    "{what} (MariaDB: Debian package mariadb-backup; MySQL: Percona XtraBackup)"
                ),
            },
            other => other,
        })?;
        let stdout = tool.take_stdout().expect("stdout is piped");
        let mut tap = BinlogInfoTap::new(stdout);
        let pending = match self.store.put(&name, &mut tap, progress).await {
            Ok(p) => p,
            Err(e) => {
                // Nobody reads the pipe any more: kill the tool (dropping it kills its group).
                drop(tap);
                drop(tool);
                return Err(e);
            }
        };
        // The producer's exit status decides before anything becomes visible; on failure the
        // pending upload is dropped, which discards it.
        tool.wait().await?;
        trove_guest_core::lifecycle::failpoint("snapshot.uploaded").await;
        let (info_name, info_text) = tap.binlog_info()?;
        let info = BinlogInfo::parse(info_text)?;
        tracing::debug!(file = info_name, position = %info.log_file, "backup binlog position");
        let (gtid_list, gtid_set) = match flavor.kind {
            FlavorKind::MariaDb => (Some(info.mariadb_gtid()?), None),
            FlavorKind::Mysql => {
                let g = info.mysql_gtid()?;
                (None, (!g.is_empty()).then_some(g))
            }
        };
        // From the commit on, a failure or a cancellation removes the snapshot (and the
        // account, once made) again: without the document nobody can use them.
        let mut unreturned = UnreturnedSnapshot::new(
            self.store.clone(),
            pending.snapshot().href.clone(),
            self.handle.admin.clone(),
            sql,
            lock,
            WorkLayout::new(&self.handle.work_dir).journal(),
        )?;
        let stored = match pending.commit().await {
            Ok(s) => s,
            Err(e) => {
                unreturned.clean_up().await;
                return Err(e);
            }
        };
        tracing::info!(
            href = %stored.href,
            bytes = stored.size,
            seconds = started.elapsed().as_secs_f64(),
            "snapshot stored"
        );

        // The replica's account: replication only, random password, not binary-logged.
        progress.phase(Phase::Prepare, format!("replication account {account}"));
        let password = Secret::random(crate::sql::MAX_PASSWORD_LEN);
        let made = async {
            let mut s = self.session().await?;
            let existed = s
                .rows(&sql.accounts_named(account.user()))
                .await?
                .iter()
                .any(|r| r.get(&["host"]) == Some(account.host()));
            if !existed {
                unreturned.creates_account(account.clone())?;
            }
            s.exec(&sql.set_session_log_bin(false)).await?;
            s.exec(&sql.create_user(&account, &password)).await?;
            s.exec(&sql.set_password(&account, &password)).await?;
            s.exec(&sql.grant_replication(&account)).await?;
            if tls.is_some() {
                s.exec(&sql.require_tls(&account)).await?;
            }
            s.close().await;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = made {
            unreturned.clean_up().await;
            return Err(e);
        }
        let _lock = unreturned.disarm();

        progress.phase(Phase::Done, "snapshot ready");
        Ok(SnapshotDocument {
            master: self.handle.advertise.clone(),
            dataset: Dataset {
                datastore: flavor.datastore(),
                datastore_version: flavor.datastore_version(),
                dataset_size: SnapshotDocument::gib_rounded_up(stored.size).max(1),
                snapshot_href: stored.href.clone(),
                size_bytes: Some(stored.size),
                sha256: Some(stored.sha256.clone()),
                server_version: Some(server_version),
                format: Some("xbstream".into()),
                compression: None,
            },
            binlog_position: Some(BinlogPosition {
                log_file: info.log_file,
                log_position: info.log_position,
                gtid_list,
                gtid_set,
            }),
            wal_position: None,
            position: None,
            replication: Some(ReplicationGrant {
                user,
                password: Some(TransportSecret(password)),
                password_ref: None,
                slot_name: None,
                replica_host: req.replica_host.clone(),
                tls,
            }),
            extra: serde_json::Map::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_user_names_are_prefixed_valid_and_bounded() {
        assert_eq!(
            replication_user("trove_repl_", "conf-writes").unwrap(),
            "trove_repl_conf-writes"
        );
        let long = replication_user("trove_repl_", &"r".repeat(100)).unwrap();
        assert!(
            long.starts_with("trove_repl_") && long.len() <= 32,
            "{long}"
        );
        assert_ne!(
            long,
            replication_user("trove_repl_", &"s".repeat(100)).unwrap()
        );
        for bad in ["", "a'b", "a b", "x\0", "a\\b"] {
            assert!(replication_user("trove_repl_", bad).is_err(), "{bad:?}");
        }
    }
}
