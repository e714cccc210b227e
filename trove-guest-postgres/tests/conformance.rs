//! The core conformance suite against real PostgreSQL 15 servers.

mod common;

use std::sync::Arc;

use trove_guest_core::strategy::Positioning;
use trove_guest_core::testkit::conformance::{self, Damage, StoreKind};

#[tokio::test]
async fn rows_written_before_during_and_after_the_snapshot_reach_the_standby() {
    conformance::snapshot_under_writes_converges(Arc::new(common::Pg), Positioning::Gtid).await;
}

#[tokio::test]
async fn binlog_file_positioning_is_refused_as_unsupported() {
    conformance::snapshot_under_writes_converges(Arc::new(common::Pg), Positioning::BinlogFile)
        .await;
}

#[tokio::test]
async fn two_standbys_from_one_snapshot_both_converge() {
    conformance::two_replicas_from_one_snapshot(Arc::new(common::Pg)).await;
}

#[tokio::test]
async fn detach_promotes_and_cleanup_drops_slot_and_login() {
    conformance::detach_then_cleanup_forgets_replica(Arc::new(common::Pg)).await;
}

#[tokio::test]
async fn demote_removes_slots_roles_hba_block_and_settings() {
    conformance::demote_restores_pre_replication_state(Arc::new(common::Pg)).await;
}

#[tokio::test]
async fn snapshot_with_a_flipped_byte_is_refused_and_the_old_datadir_serves() {
    conformance::damaged_snapshot_is_refused(Arc::new(common::Pg), Damage::FlipByte).await;
}

#[tokio::test]
async fn truncated_snapshot_is_refused_and_the_old_datadir_serves() {
    conformance::damaged_snapshot_is_refused(Arc::new(common::Pg), Damage::Truncate).await;
}

#[tokio::test]
async fn wait_for_txn_returns_when_applied_and_times_out_after_detach() {
    conformance::wait_for_txn_is_bounded(Arc::new(common::Pg)).await;
}

#[tokio::test]
async fn provision_stages_the_snapshot_while_the_master_takes_it_and_converges() {
    conformance::provision_overlaps_snapshot_and_restore(Arc::new(common::Pg)).await;
}

#[tokio::test]
async fn a_staged_snapshot_is_reused_and_an_attach_from_a_later_snapshot_discards_it() {
    conformance::staged_snapshot_serves_only_its_document(Arc::new(common::Pg)).await;
}

#[tokio::test]
async fn a_damaged_snapshot_is_never_staged_and_the_old_datadir_serves() {
    conformance::damaged_snapshot_is_never_staged(Arc::new(common::Pg)).await;
}

// The same suite with snapshots in S3 (a local moto server): segmented uploads, followed by the
// standby while the master uploads, and a damaged segment refused.

#[tokio::test]
async fn s3_rows_written_before_during_and_after_the_snapshot_reach_the_standby() {
    conformance::snapshot_under_writes_converges_in(
        Arc::new(common::Pg),
        Positioning::Gtid,
        StoreKind::S3,
    )
    .await;
}

#[tokio::test]
async fn s3_provision_follows_the_upload() {
    conformance::provision_overlaps_snapshot_and_restore_in(Arc::new(common::Pg), StoreKind::S3)
        .await;
}

#[tokio::test]
async fn s3_snapshot_with_a_flipped_byte_is_refused() {
    conformance::damaged_snapshot_is_refused_in(
        Arc::new(common::Pg),
        Damage::FlipByte,
        StoreKind::S3,
    )
    .await;
}

#[tokio::test]
async fn s3_truncated_snapshot_is_refused() {
    conformance::damaged_snapshot_is_refused_in(
        Arc::new(common::Pg),
        Damage::Truncate,
        StoreKind::S3,
    )
    .await;
}
