//! The core conformance suite against real Redis 7 servers.

mod common;

use std::sync::Arc;

use trove_guest_core::strategy::Positioning;
use trove_guest_core::testkit::conformance::{self, Damage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_before_during_and_after_the_snapshot_reach_the_replica() {
    conformance::snapshot_under_writes_converges(Arc::new(common::Redis), Positioning::Gtid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_file_positioning_is_refused_as_unsupported() {
    conformance::snapshot_under_writes_converges(Arc::new(common::Redis), Positioning::BinlogFile)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_from_one_snapshot_both_converge() {
    conformance::two_replicas_from_one_snapshot(Arc::new(common::Redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_makes_the_replica_writable_and_cleanup_drops_its_acl_user() {
    conformance::detach_then_cleanup_forgets_replica(Arc::new(common::Redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_drops_replication_users_and_the_write_fence() {
    conformance::demote_restores_pre_replication_state(Arc::new(common::Redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_a_flipped_byte_is_refused_and_the_old_data_serves() {
    conformance::damaged_snapshot_is_refused(Arc::new(common::Redis), Damage::FlipByte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_snapshot_is_refused_and_the_old_data_serves() {
    conformance::damaged_snapshot_is_refused(Arc::new(common::Redis), Damage::Truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_txn_returns_when_applied_and_times_out_after_detach() {
    conformance::wait_for_txn_is_bounded(Arc::new(common::Redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_stages_the_rdb_while_the_master_streams_it_and_converges() {
    conformance::provision_overlaps_snapshot_and_restore(Arc::new(common::Redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_rdb_is_reused_and_an_attach_from_a_later_snapshot_discards_it() {
    conformance::staged_snapshot_serves_only_its_document(Arc::new(common::Redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_rdb_is_never_staged_and_the_old_data_serves() {
    conformance::damaged_snapshot_is_never_staged(Arc::new(common::Redis)).await;
}
