//! `demote_replication_master`: back to the pre-replication state.
//!
//! Drops every account with the strategy's prefix (they are recognisably ours), removes the
//! master override file, restarts when binary logging was on (it is not dynamic), and deletes
//! the binary logs made under our base name.

use std::path::PathBuf;

use trove_guest_core::{DemoteOptions, Error, Result, Role};

use crate::config::{LOG_BIN_WAS_ON, MASTER_FILE, remove_override};
use crate::sql::Account;
use crate::strategy::MysqlStrategy;

impl MysqlStrategy {
    pub(crate) async fn demote_impl(&self, opts: &DemoteOptions) -> Result<()> {
        let sql = self.sql().await?;
        let mut s = self.session().await?;
        if self.replica_row(&mut s, &sql).await?.is_some() {
            s.close().await;
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Replica,
            });
        }
        s.exec(&sql.set_session_log_bin(false)).await?;
        for row in s
            .rows(&sql.accounts_with_prefix(&self.opts.account_prefix))
            .await?
        {
            let (Some(user), Some(host)) = (row.get(&["user"]), row.get(&["host"])) else {
                continue;
            };
            for c in s.rows(&sql.connections_of(user)).await? {
                if let Some(id) = c.get(&["id"]).and_then(|v| v.parse().ok()) {
                    let _ = s.exec(&sql.kill_connection(id)).await;
                }
            }
            s.exec(&sql.drop_user(&Account::new(user, host)?)).await?;
        }
        trove_guest_core::lifecycle::failpoint("demote.begun").await;
        let vars = self.vars(&mut s, &sql).await?;
        s.close().await;
        let path = self.handle.config_dir.join(MASTER_FILE);
        let was_on = std::fs::read_to_string(&path).is_ok_and(|t| t.contains(LOG_BIN_WAS_ON));
        let had_file = remove_override(&self.handle.config_dir, MASTER_FILE)?;
        let mut log_bin_on = vars.log_bin;
        if vars.log_bin && had_file {
            tracing::info!("restarting the server to apply the removal of the master override");
            self.handle.service.restart().await?;
            let mut s = self.session().await?;
            let after = self.vars(&mut s, &sql).await?;
            s.close().await;
            log_bin_on = after.log_bin;
            if after.log_bin && !was_on {
                return Err(Error::Datastore {
                    message: "binary logging is still on after removing the override and \
                              restarting"
                        .into(),
                    source: None,
                });
            }
        } else if vars.log_bin {
            tracing::info!(
                "binary logging is on in the server's own configuration (or the MySQL 8 \
                 default); demote leaves it as enable_as_master found it"
            );
        }
        // Files are deleted only when the server no longer writes binary logs.
        if opts.purge_logs && !log_bin_on {
            self.purge_binlog_files()?;
        }
        Ok(())
    }

    /// The binary log files made under our base name (binary logging must be off).
    pub fn binlog_files(&self) -> Vec<PathBuf> {
        let dir = self
            .opts
            .binlog_dir
            .clone()
            .unwrap_or_else(|| self.handle.data_dir.clone());
        let prefix = format!("{}.", self.opts.binlog_basename);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&prefix).is_some_and(|ext| {
                    ext == "index" || ext == "state" || ext.bytes().all(|b| b.is_ascii_digit())
                })
            })
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }

    fn purge_binlog_files(&self) -> Result<()> {
        for f in self.binlog_files() {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", f.display()), e)),
            }
        }
        Ok(())
    }
}
