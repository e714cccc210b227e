//! `stage_snapshot`: the core lifecycle's stage flow over this crate's hooks
//! ([`crate::hooks`]): the snapshot is followed, extracted and prepared into the work
//! directory's staging area and named by the marker only once complete.

use trove_guest_core::lifecycle;
use trove_guest_core::{Result, StageRequest, StagedSnapshot};

use crate::strategy::MysqlStrategy;

impl MysqlStrategy {
    pub(crate) async fn stage_impl(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        lifecycle::stage(self, req).await
    }
}
