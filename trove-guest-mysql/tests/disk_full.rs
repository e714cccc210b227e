//! The work directory runs out of space while a snapshot is extracted into it (a small tmpfs
//! mounted over it): the attach fails with a typed error, the replica keeps serving its old
//! data, nothing is left in the work directory, and the same attach succeeds once there is room.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{MariaDb, options_for};
use trove_guest_core::testkit::SmallDisk;
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{AttachRequest, ErrorKind, ReplicationStrategy, SnapshotRequest};
use trove_guest_mysql::MysqlStrategy;
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

fn tg_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tg-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_work_directory_fails_the_attach_and_the_replica_keeps_its_data() {
    let (_store_dir, store) = common::store();
    let master = common::master_with_rows(MariaDbOptions::new(1)).await;
    let ms = common::strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("disk-full"))
        .await
        .expect("snapshot");

    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    MariaDb.create_schema(&replica).await.unwrap();
    MariaDb.insert_rows(&replica, 0..5).await.unwrap();
    let before = MariaDb.fingerprint(&replica).await.unwrap();
    let disk_dir = replica.dir().join("small-work");
    let disk = SmallDisk::mount(&disk_dir, "2m").expect("a 2 MiB tmpfs for the work directory");
    let rs = Arc::new(MysqlStrategy::new(
        replica.handle().with_work_dir(&disk_dir),
        store.clone(),
        options_for(&replica),
    ));

    let err = rs
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect_err("a snapshot larger than the work directory cannot be restored there");
    assert!(
        matches!(err.kind(), ErrorKind::ToolFailed | ErrorKind::Internal),
        "a typed tool or I/O failure: {err}"
    );
    assert_eq!(
        MariaDb.fingerprint(&replica).await.unwrap(),
        before,
        "the replica still serves its old data"
    );
    assert_eq!(
        tg_entries(&disk_dir),
        Vec::<String>::new(),
        "nothing left behind"
    );
    drop(disk);

    // With room (the default work directory, on the data directory's file system) the same
    // attach succeeds.
    let rs = common::strategy_for(&replica, store.clone());
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("the retried attach");
    assert_eq!(
        MariaDb.fingerprint(&replica).await.unwrap(),
        MariaDb.fingerprint(&master).await.unwrap()
    );
}
