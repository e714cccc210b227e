//! A failure after the restored datadir was swapped in (here: writing an override file) puts the
//! previous datadir and its replica configuration back and leaves the server running.

mod common;

use std::time::Duration;

use common::{MariaDb, strategy_for};
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{
    AttachRequest, ReplicationStrategy, ReplicationStrategyExt, SnapshotRequest,
};
use trove_guest_mysql::config::{INIT_FILE, REPLICA_FILE};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

/// Makes `write_override(name)` fail: its temp file path is taken by a non-empty directory
/// (a name MariaDB's `!includedir` ignores).
fn block_override(server: &MariaDbServer, name: &str) -> std::path::PathBuf {
    let blocker = server.config_dir().join(format!(".{name}.tmp"));
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    blocker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_swap_puts_the_old_datadir_and_replica_config_back_running() {
    let (_store_dir, store) = common::store();
    let master = common::master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("rollback"))
        .await
        .expect("snapshot");

    // A standalone server with its own rows: the first attach fails after the swap.
    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    MariaDb.create_schema(&replica).await.unwrap();
    MariaDb.insert_rows(&replica, 0..7).await.unwrap();
    let before = MariaDb.fingerprint(&replica).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    let blocker = block_override(&replica, REPLICA_FILE);
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect_err("the replica override cannot be written");
    assert_eq!(
        MariaDb
            .fingerprint(&replica)
            .await
            .expect("the server runs again after the failed attach"),
        before,
        "the previous datadir is back"
    );
    assert!(
        !replica.config_dir().join(REPLICA_FILE).exists(),
        "no replica override is left for a server that had none"
    );
    std::fs::remove_dir_all(&blocker).unwrap();

    // Attached and replicating; a repeated attach fails after the swap.
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach");
    let replica_conf = std::fs::read_to_string(replica.config_dir().join(REPLICA_FILE)).unwrap();
    let _blocker = block_override(&replica, INIT_FILE);
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect_err("the init override cannot be written");
    assert_eq!(
        std::fs::read_to_string(replica.config_dir().join(REPLICA_FILE))
            .expect("the replica override of the previous datadir is back"),
        replica_conf
    );
    MariaDb.insert_rows(&master, 200..250).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .expect("the previous datadir still replicates");
    assert_eq!(
        MariaDb.fingerprint(&master).await.unwrap(),
        MariaDb.fingerprint(&replica).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_server_that_cannot_replicate_gives_way_to_the_old_datadir() {
    let (_store_dir, store) = common::store();
    let master = common::master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("unreachable"))
        .await
        .expect("snapshot");
    // The document names a master nobody listens on: replication never starts.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut unreachable = doc.clone();
    unreachable.master.port = nobody.local_addr().unwrap().port();
    drop(nobody);

    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    MariaDb.create_schema(&replica).await.unwrap();
    MariaDb.insert_rows(&replica, 0..7).await.unwrap();
    let before = MariaDb.fingerprint(&replica).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    rs.attach_replication_slave(
        &unreachable,
        &AttachRequest::new().with_timeout(Duration::from_secs(3)),
    )
    .await
    .expect_err("the master cannot be reached");
    assert_eq!(
        MariaDb
            .fingerprint(&replica)
            .await
            .expect("the server runs after the failed attach"),
        before,
        "the previous datadir is back"
    );
    assert!(
        !replica.config_dir().join(REPLICA_FILE).exists(),
        "no replica override is left for a server that had none"
    );
}
