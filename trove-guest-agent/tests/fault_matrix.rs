//! The kill -9 fault matrix: every failpoint × {agent killed, host killed} × {MariaDB,
//! PostgreSQL}, each against real servers served by real `guest_agent` processes (built with the
//! `failpoints` feature). See `trove_guest_agent::testing::faults` for what a cell does and checks.
//!
//! CI runs a subset that still covers every step, both faults and both datastores: each step on
//! both datastores, MariaDB with one fault and PostgreSQL with the other (alternating by step).
//! The other half is `#[ignore]`d; the full matrix:
//!
//! ```text
//! TROVE_GUEST_MATRIX_REPORT=target/matrix.jsonl \
//!   cargo test -p trove-guest-agent --features failpoints --test fault_matrix -- --include-ignored
//! cargo run -p trove-guest-examples --bin reliability_report -- target/matrix.jsonl > RELIABILITY.md
//! ```
//!
//! Each cell is listed explicitly so it has its own name, filter and result. Other knobs:
//! `TROVE_GUEST_MATRIX_PARK_SECS` (how long to wait for the agent to park, default 180),
//! `TROVE_GUEST_AGENT_BIN` (run a copy of the agent binary: with a target directory shared by
//! several checkouts, the one cargo built may be replaced by another build meanwhile).

use trove_guest_agent::testing::faults::{CellSpec, Fault, run_cell};
use trove_guest_core::DatastoreKind;

const AGENT: &str = env!("CARGO_BIN_EXE_guest_agent");

/// The agent binary: `TROVE_GUEST_AGENT_BIN` when set (a copy made right after the build, when
/// a shared target directory may be rebuilt by others meanwhile), else the one cargo built.
fn agent() -> std::path::PathBuf {
    std::env::var_os("TROVE_GUEST_AGENT_BIN").map_or_else(|| AGENT.into(), Into::into)
}

async fn cell(step: &'static str, fault: Fault, kind: DatastoreKind) {
    let rec = run_cell(CellSpec::new(step, fault, kind), &agent()).await;
    assert!(
        rec.passed(),
        "{step} x {fault} x {kind}: the server must serve its old data or the complete new \
         replica, nothing may be left over, and the same call must succeed again: {rec:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_agent_killed_at_attach_staged_recovers_to_old_data_or_new_replica() {
    cell("attach.staged", Fault::AgentKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_killed_at_attach_staged_recovers_to_old_data_or_new_replica() {
    cell("attach.staged", Fault::HostKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_agent_killed_at_attach_staged_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.staged",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_host_killed_at_attach_staged_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.staged",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_agent_killed_at_attach_stopped_recovers_to_old_data_or_new_replica() {
    cell("attach.stopped", Fault::AgentKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_host_killed_at_attach_stopped_recovers_to_old_data_or_new_replica() {
    cell("attach.stopped", Fault::HostKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_agent_killed_at_attach_stopped_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.stopped",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_host_killed_at_attach_stopped_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.stopped",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_agent_killed_at_attach_swapped_recovers_to_old_data_or_new_replica() {
    cell("attach.swapped", Fault::AgentKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_killed_at_attach_swapped_recovers_to_old_data_or_new_replica() {
    cell("attach.swapped", Fault::HostKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_agent_killed_at_attach_swapped_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.swapped",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_host_killed_at_attach_swapped_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.swapped",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_agent_killed_at_attach_configured_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.configured",
        Fault::AgentKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_host_killed_at_attach_configured_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.configured",
        Fault::HostKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_agent_killed_at_attach_configured_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.configured",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_host_killed_at_attach_configured_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.configured",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_agent_killed_at_attach_started_recovers_to_old_data_or_new_replica() {
    cell("attach.started", Fault::AgentKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_killed_at_attach_started_recovers_to_old_data_or_new_replica() {
    cell("attach.started", Fault::HostKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_agent_killed_at_attach_started_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.started",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_host_killed_at_attach_started_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.started",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_agent_killed_at_attach_replicating_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.replicating",
        Fault::AgentKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_host_killed_at_attach_replicating_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.replicating",
        Fault::HostKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_agent_killed_at_attach_replicating_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.replicating",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_host_killed_at_attach_replicating_recovers_to_old_data_or_new_replica() {
    cell(
        "attach.replicating",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_agent_killed_at_stage_extracting_recovers_to_old_data_or_new_replica() {
    cell(
        "stage.extracting",
        Fault::AgentKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_killed_at_stage_extracting_recovers_to_old_data_or_new_replica() {
    cell(
        "stage.extracting",
        Fault::HostKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_agent_killed_at_stage_extracting_recovers_to_old_data_or_new_replica() {
    cell(
        "stage.extracting",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_host_killed_at_stage_extracting_recovers_to_old_data_or_new_replica() {
    cell(
        "stage.extracting",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_agent_killed_at_stage_prepared_recovers_to_old_data_or_new_replica() {
    cell("stage.prepared", Fault::AgentKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_host_killed_at_stage_prepared_recovers_to_old_data_or_new_replica() {
    cell("stage.prepared", Fault::HostKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_agent_killed_at_stage_prepared_recovers_to_old_data_or_new_replica() {
    cell(
        "stage.prepared",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_host_killed_at_stage_prepared_recovers_to_old_data_or_new_replica() {
    cell(
        "stage.prepared",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_agent_killed_at_snapshot_streaming_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.streaming",
        Fault::AgentKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_killed_at_snapshot_streaming_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.streaming",
        Fault::HostKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_agent_killed_at_snapshot_streaming_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.streaming",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_host_killed_at_snapshot_streaming_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.streaming",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_agent_killed_at_snapshot_uploaded_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.uploaded",
        Fault::AgentKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_host_killed_at_snapshot_uploaded_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.uploaded",
        Fault::HostKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_agent_killed_at_snapshot_uploaded_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.uploaded",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_host_killed_at_snapshot_uploaded_recovers_to_old_data_or_new_replica() {
    cell(
        "snapshot.uploaded",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_agent_killed_at_detach_begun_recovers_to_old_data_or_new_replica() {
    cell("detach.begun", Fault::AgentKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_killed_at_detach_begun_recovers_to_old_data_or_new_replica() {
    cell("detach.begun", Fault::HostKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_agent_killed_at_detach_begun_recovers_to_old_data_or_new_replica() {
    cell(
        "detach.begun",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_host_killed_at_detach_begun_recovers_to_old_data_or_new_replica() {
    cell("detach.begun", Fault::HostKilled, DatastoreKind::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_agent_killed_at_demote_begun_recovers_to_old_data_or_new_replica() {
    cell("demote.begun", Fault::AgentKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_host_killed_at_demote_begun_recovers_to_old_data_or_new_replica() {
    cell("demote.begun", Fault::HostKilled, DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_agent_killed_at_demote_begun_recovers_to_old_data_or_new_replica() {
    cell(
        "demote.begun",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_host_killed_at_demote_begun_recovers_to_old_data_or_new_replica() {
    cell("demote.begun", Fault::HostKilled, DatastoreKind::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn mariadb_agent_killed_at_enable_master_begun_recovers_to_old_data_or_new_replica() {
    cell(
        "enable_master.begun",
        Fault::AgentKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_host_killed_at_enable_master_begun_recovers_to_old_data_or_new_replica() {
    cell(
        "enable_master.begun",
        Fault::HostKilled,
        DatastoreKind::Mariadb,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_agent_killed_at_enable_master_begun_recovers_to_old_data_or_new_replica() {
    cell(
        "enable_master.begun",
        Fault::AgentKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full matrix only: cargo test ... -- --include-ignored"]
async fn postgresql_host_killed_at_enable_master_begun_recovers_to_old_data_or_new_replica() {
    cell(
        "enable_master.begun",
        Fault::HostKilled,
        DatastoreKind::Postgresql,
    )
    .await;
}
