//! The PostgreSQL hooks of the core restore lifecycle ([`trove_guest_core::lifecycle`]): what
//! differs from other datastores, nothing more.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use trove_guest_core::lifecycle::RestoreHooks;
use trove_guest_core::{
    DatastoreHandle, Progress, RecoveryAction, ReplicationPosition, Result, SnapshotStore,
};

use crate::replica::{AttachPlan, STANDBY_FILES, data_dir_version};
use crate::strategy::PostgresStrategy;

#[async_trait]
impl RestoreHooks for PostgresStrategy {
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
        self.extract_into(href, reader, total, dir, progress).await
    }

    async fn prepare(&self, href: &str, dir: &Path, _progress: &Progress) -> Result<()> {
        // The running server's major version, read without asking the server.
        let major = data_dir_version(&self.handle.data_dir)?.major();
        self.prepare_dir(dir, major, href)
    }

    fn sync_staged(&self) -> bool {
        true
    }

    fn check_restored(&self, plan: &AttachPlan, dir: &Path) -> Result<()> {
        self.prepare_dir(dir, plan.version.major(), &plan.doc.dataset.snapshot_href)
    }

    fn config_files(&self) -> Vec<PathBuf> {
        STANDBY_FILES
            .iter()
            .chain([&crate::conf::REWIND_FILE])
            .map(|f| self.config_file(f))
            .collect()
    }

    async fn configure(&self, plan: &AttachPlan, previous: &Path, staged: bool) -> Result<()> {
        self.configure_standby(plan, previous, staged)
    }

    async fn start(&self, _plan: &AttachPlan) -> Result<()> {
        self.handle.service.start().await?;
        self.connect_restored().await.map(drop)
    }

    async fn replicate(
        &self,
        plan: &AttachPlan,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Option<ReplicationPosition>> {
        self.wait_restored_streaming(plan, timeout, progress).await
    }

    async fn rolled_back(&self, plan: &AttachPlan) {
        self.drop_claimed_slot(plan).await;
    }

    async fn committed(&self, plan: &AttachPlan) {
        // Streaming from its own slot: the snapshot's slot has done its job and would pin WAL.
        self.release_snapshot_slot(&plan.doc, &plan.user, &plan.password, &plan.snapshot_slot)
            .await;
    }

    async fn wait_serving(&self) -> Result<()> {
        self.db_wait().await.map(drop)
    }

    async fn reconcile(&self) -> Result<Vec<RecoveryAction>> {
        self.reconcile_standby_config().await
    }

    async fn abandon_snapshot(&self, detail: &serde_json::Value) -> Result<Vec<RecoveryAction>> {
        self.abandon_snapshot_made(detail).await
    }
}
