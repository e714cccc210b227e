//! `detach_replication_slave` (replica) and `cleanup_source_on_replica_detach` (master).

use trove_guest_core::{DetachOptions, DetachedReplica, Error, Result};

use crate::config::{REPLICA_FILE, REPLICATION_CA_FILE, remove_override};
use crate::sql::{Account, validate_user};
use crate::status::master_address;
use crate::strategy::MysqlStrategy;

impl MysqlStrategy {
    pub(crate) async fn detach_impl(&self, opts: &DetachOptions) -> Result<DetachedReplica> {
        if opts.for_failover {
            // Apply everything received before the relay log is reset with the connection.
            self.drain_locked(opts.timeout).await?;
        }
        tokio::time::timeout(opts.timeout, self.detach_steps())
            .await
            .map_err(|_| Error::timeout("replication to stop and reset", opts.timeout))?
    }

    async fn detach_steps(&self) -> Result<DetachedReplica> {
        let sql = self.sql().await?;
        let mut s = self.session().await?;
        let row = self.replica_row(&mut s, &sql).await?;
        let (user, master) = match &row {
            Some(r) => (
                r.non_empty(&["Master_User", "Source_User"])
                    .map(str::to_owned),
                master_address(r),
            ),
            None => (None, None),
        };
        if row.is_some() {
            s.exec(&sql.stop_replica()).await?;
            trove_guest_core::lifecycle::failpoint("detach.begun").await;
            s.exec(&sql.reset_replica_all()).await?;
        }
        s.exec_all(&sql.set_read_only(false)).await?;
        s.close().await;
        remove_override(&self.handle.config_dir, REPLICA_FILE)?;
        // The master's CA, written at attach, is no longer referenced once the replication
        // settings are reset.
        trove_guest_core::tls::remove_ca_file(&self.handle.config_dir.join(REPLICATION_CA_FILE))?;
        Ok(DetachedReplica::new(user, None, master, row.is_some()))
    }

    pub(crate) async fn cleanup_impl(&self, replica: &DetachedReplica) -> Result<()> {
        let Some(user) = &replica.replication_user else {
            return Ok(());
        };
        validate_user(user)?;
        if !user.starts_with(&self.opts.account_prefix) {
            return Err(Error::invalid(
                "replication user",
                format!(
                    "{user:?} was not made by this strategy (prefix {:?}); refusing to drop it",
                    self.opts.account_prefix
                ),
            ));
        }
        let sql = self.sql().await?;
        let mut s = self.session().await?;
        s.exec(&sql.set_session_log_bin(false)).await?;
        for row in s.rows(&sql.accounts_named(user)).await? {
            let host = row.get(&["host"]).unwrap_or("%");
            s.exec(&sql.drop_user(&Account::new(user, host)?)).await?;
        }
        // End the replica's binlog dump connection, if it is still there.
        for row in s.rows(&sql.connections_of(user)).await? {
            if let Some(id) = row.get(&["id"]).and_then(|v| v.parse().ok()) {
                let _ = s.exec(&sql.kill_connection(id)).await;
            }
        }
        s.close().await;
        Ok(())
    }
}
