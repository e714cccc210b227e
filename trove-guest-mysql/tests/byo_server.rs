//! "Bring your own server": the conformance suite against servers the user already runs,
//! described by `TROVE_GUEST_BYO_N_*` variables (see `trove_guest_mysql::testkit::ExistingServer`
//! and the README's testing section).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{MariaDbByo, start_in_container};
use trove_guest_core::Positioning;
use trove_guest_core::testkit::conformance;
use trove_guest_mysql::testkit::{ContainerOptions, MariaDbOptions};

/// Proves the path: two containerised servers are started separately (as a user would run
/// them), described only through the variables, adopted by the suite, and the snapshot flow
/// converges; the adopted containers are left running when the suite lets go of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_against_servers_started_separately() {
    let engine = ContainerOptions::from_env().await.unwrap();
    // Started apart from the suite (their owner removes them at the end of this test).
    let own1 = start_in_container(MariaDbOptions::new(1)).await.unwrap();
    let own2 = start_in_container(MariaDbOptions::new(2)).await.unwrap();
    let mut vars = HashMap::new();
    vars.insert(
        "TROVE_GUEST_CONTAINER_SOCKET".to_string(),
        engine.socket.display().to_string(),
    );
    vars.insert(
        "TROVE_GUEST_CONTAINER_CLIENT".to_string(),
        engine.client.display().to_string(),
    );
    for (id, s) in [(1, &own1), (2, &own2)] {
        let c = s.container().unwrap();
        vars.insert(
            format!("TROVE_GUEST_BYO_{id}_CONTAINER"),
            c.container().into(),
        );
        vars.insert(
            format!("TROVE_GUEST_BYO_{id}_DIR"),
            s.dir().display().to_string(),
        );
        vars.insert(format!("TROVE_GUEST_BYO_{id}_PORT"), s.port().to_string());
    }
    let byo = MariaDbByo::from_vars(|k| vars.get(k).cloned()).unwrap();
    assert_eq!(byo.servers.len(), 2);
    conformance::snapshot_under_writes_converges(Arc::new(byo), Positioning::Gtid).await;
    // The suite dropped its adopted servers: the containers still run and answer.
    for s in [&own1, &own2] {
        assert_eq!(
            s.query_one("SELECT 1").await.unwrap().as_deref(),
            Some("1"),
            "an adopted server was stopped or removed"
        );
    }
}

/// The suite against the user's own servers, from the environment (see the README):
/// `cargo test -p trove-guest-mysql --test byo_server -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TROVE_GUEST_BYO_1_* and TROVE_GUEST_BYO_2_* describing your servers (README)"]
async fn byo_snapshot_under_writes_converges() {
    let byo = MariaDbByo::from_env().unwrap();
    conformance::snapshot_under_writes_converges(Arc::new(byo), Positioning::Gtid).await;
}
