//! `wait_for_txn` by binary log coordinates on the master itself returns once the master's own
//! binary log gets there, not only when it already is there; a position of another datastore is
//! refused at once.

use std::sync::Arc;
use std::time::Duration;

use trove_guest_core::position::BinlogCoordinates;
use trove_guest_core::{
    ErrorKind, LocalSnapshotStore, OpaquePosition, ReplicationPosition, ReplicationStrategy,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};
use trove_guest_mysql::{MysqlOptions, MysqlStrategy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_waiting_for_a_later_binlog_position_returns_when_it_writes_it() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(store_dir.path()).unwrap());
    let master = Arc::new(
        MariaDbServer::start(MariaDbOptions::new(1).with_log_bin(true))
            .await
            .expect("start master"),
    );
    let ms = MysqlStrategy::new(
        master.handle(),
        store,
        MysqlOptions::new().with_binlog_dir(master.binlog_dir()),
    );
    let row = master.query("SHOW MASTER STATUS").await.unwrap();
    let (file, pos) = (
        row[0][0].clone().expect("binlog file"),
        row[0][1].clone().expect("binlog position"),
    );
    let target = ReplicationPosition::Binlog(BinlogCoordinates {
        log_file: file.parse().unwrap(),
        log_position: pos.parse::<u64>().unwrap() + 1,
    });
    let writer = tokio::spawn({
        let master = master.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            master.execute("CREATE DATABASE written_later").await
        }
    });
    ms.wait_for_txn(&target, Duration::from_secs(60))
        .await
        .expect("the master reaches the position once it writes");
    writer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_of_a_datastore_core_does_not_know_is_refused_not_waited_for() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(store_dir.path()).unwrap());
    let master = MariaDbServer::start(MariaDbOptions::new(1).with_log_bin(true))
        .await
        .expect("start master");
    let ms = MysqlStrategy::new(
        master.handle(),
        store,
        MysqlOptions::new().with_binlog_dir(master.binlog_dir()),
    );
    let redis = "redis".parse().unwrap();
    let opaque = ReplicationPosition::Opaque(OpaquePosition::new(redis, "replid:1").unwrap());
    let err = ms
        .wait_for_txn(&opaque, Duration::from_secs(30))
        .await
        .expect_err("a Redis position is not a MariaDB one");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}
