//! `stage_snapshot`: the core lifecycle's stage flow over this crate's hooks
//! ([`crate::hooks`]): the snapshot is followed while the master still takes it, verified,
//! extracted, prepared and synced to disk in the work directory's staging area, and named by the
//! marker only then.

use trove_guest_core::lifecycle;
use trove_guest_core::{Result, StageRequest, StagedSnapshot};

use crate::strategy::PostgresStrategy;

impl PostgresStrategy {
    /// [`ReplicationStrategy::stage_snapshot`](trove_guest_core::ReplicationStrategy), under the
    /// strategy's change lock.
    pub(crate) async fn stage_locked(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        lifecycle::stage(self, req).await
    }
}
