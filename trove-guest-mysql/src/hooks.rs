//! The MariaDB / MySQL hooks of the core restore lifecycle
//! ([`trove_guest_core::lifecycle`]): what differs from other datastores, nothing more.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use trove_guest_core::lifecycle::RestoreHooks;
use trove_guest_core::{
    DatastoreHandle, Progress, RecoveryAction, ReplicationPosition, Result, SnapshotStore,
};

use crate::attach::{AttachPlan, clear_relay_logs, remove_backup_metadata};
use crate::config::{INIT_FILE, REPLICA_FILE, REPLICATION_CA_FILE, write_override};
use crate::restore::check_binlog_info;
use crate::strategy::MysqlStrategy;

#[async_trait]
impl RestoreHooks for MysqlStrategy {
    type Plan = AttachPlan;

    fn handle(&self) -> &DatastoreHandle {
        &self.handle
    }

    fn store(&self) -> &dyn SnapshotStore {
        &*self.store
    }

    async fn extract(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        dir: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let flavor = self.flavor().await?;
        self.extract_stream(href, reader, total, dir, flavor, progress)
            .await
    }

    async fn prepare(&self, href: &str, dir: &Path, progress: &Progress) -> Result<()> {
        let flavor = self.flavor().await?;
        self.prepare_restored(href, dir, flavor, progress).await
    }

    fn check_restored(&self, plan: &AttachPlan, dir: &Path) -> Result<()> {
        check_binlog_info(dir, &plan.doc, plan.flavor)
    }

    fn config_files(&self) -> Vec<PathBuf> {
        [REPLICA_FILE, INIT_FILE, REPLICATION_CA_FILE]
            .iter()
            .map(|f| self.handle.config_dir.join(f))
            .collect()
    }

    async fn configure(&self, plan: &AttachPlan, _previous: &Path, _staged: bool) -> Result<()> {
        // The backup's own metadata files have served their purpose.
        remove_backup_metadata(&self.handle.data_dir);
        // Relay logs of an earlier replication would not match the restored data.
        if let Some(d) = &self.opts.relay_log_dir {
            clear_relay_logs(d);
        }
        let text = self.replica_text(plan)?;
        write_override(&self.handle.config_dir, REPLICA_FILE, &text)
    }

    async fn start(&self, plan: &AttachPlan) -> Result<()> {
        self.start_restored(plan).await
    }

    async fn replicate(
        &self,
        plan: &AttachPlan,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Option<ReplicationPosition>> {
        self.start_replication(plan, timeout, progress).await
    }

    async fn rolled_back(&self, _plan: &AttachPlan) {
        // Relay logs of the restored server do not belong to the previous data directory (a
        // previous replica re-fetches through relay_log_recovery).
        if let Some(d) = &self.opts.relay_log_dir {
            clear_relay_logs(d);
        }
    }

    fn transient_files(&self) -> Vec<PathBuf> {
        vec![self.handle.config_dir.join(INIT_FILE)]
    }

    async fn abandon_snapshot(&self, detail: &serde_json::Value) -> Result<Vec<RecoveryAction>> {
        let sql = self.sql().await?;
        crate::unreturned::abandon(self.store.clone(), &self.handle.admin, sql, detail).await
    }
}
