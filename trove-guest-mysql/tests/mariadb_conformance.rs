//! The core conformance suite against real MariaDB 10.11 servers with mariabackup.

mod common;

use std::sync::Arc;

use common::MariaDb;
use trove_guest_core::Positioning;
use trove_guest_core::testkit::conformance::{self, Damage, StoreKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_under_writes_converges_by_gtid() {
    conformance::snapshot_under_writes_converges(Arc::new(MariaDb), Positioning::Gtid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_under_writes_converges_by_binlog_file_and_offset() {
    conformance::snapshot_under_writes_converges(Arc::new(MariaDb), Positioning::BinlogFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_from_one_snapshot_both_converge() {
    conformance::two_replicas_from_one_snapshot(Arc::new(MariaDb)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_then_cleanup_forgets_the_replica() {
    conformance::detach_then_cleanup_forgets_replica(Arc::new(MariaDb)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_restores_the_pre_replication_state() {
    conformance::demote_restores_pre_replication_state(Arc::new(MariaDb)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_a_flipped_byte_is_refused() {
    conformance::damaged_snapshot_is_refused(Arc::new(MariaDb), Damage::FlipByte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_snapshot_is_refused() {
    conformance::damaged_snapshot_is_refused(Arc::new(MariaDb), Damage::Truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_txn_returns_when_reached_and_times_out_otherwise() {
    conformance::wait_for_txn_is_bounded(Arc::new(MariaDb)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_stages_the_snapshot_while_the_master_takes_it() {
    conformance::provision_overlaps_snapshot_and_restore(Arc::new(MariaDb)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_snapshot_serves_only_the_document_naming_it() {
    conformance::staged_snapshot_serves_only_its_document(Arc::new(MariaDb)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_never_staged() {
    conformance::damaged_snapshot_is_never_staged(Arc::new(MariaDb)).await;
}

// The same suite with snapshots in S3 (a local moto server): segmented uploads, followed by the
// replica while the master uploads, and a damaged segment refused.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_snapshot_under_writes_converges_by_gtid() {
    conformance::snapshot_under_writes_converges_in(
        Arc::new(MariaDb),
        Positioning::Gtid,
        StoreKind::S3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_provision_follows_the_upload() {
    conformance::provision_overlaps_snapshot_and_restore_in(Arc::new(MariaDb), StoreKind::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_snapshot_with_a_flipped_byte_is_refused() {
    conformance::damaged_snapshot_is_refused_in(Arc::new(MariaDb), Damage::FlipByte, StoreKind::S3)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_truncated_snapshot_is_refused() {
    conformance::damaged_snapshot_is_refused_in(Arc::new(MariaDb), Damage::Truncate, StoreKind::S3)
        .await;
}
