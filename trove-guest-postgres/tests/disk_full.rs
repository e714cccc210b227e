//! The work directory runs out of space while a snapshot is extracted into it (a small tmpfs
//! mounted over it): the attach fails with a typed error, the standby-to-be keeps serving its
//! old data, nothing is left in the work directory, and the same attach succeeds once there is
//! room.

mod common;

use std::sync::Arc;

use trove_guest_core::testkit::SmallDisk;
use trove_guest_core::{AttachRequest, ErrorKind, ReplicationStrategy};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_work_directory_fails_the_attach_and_the_server_keeps_its_data() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..300).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "disk-full").await;

    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    common::create_schema(&r).await.unwrap();
    common::insert_rows(&r, 0..3).await.unwrap();
    let before = common::fingerprint(&r).await.unwrap();
    let disk_dir = r.handle().data_dir.with_file_name("small-work");
    let disk = SmallDisk::mount(&disk_dir, "2m").expect("a 2 MiB tmpfs for the work directory");
    let mut handle = r.handle().with_work_dir(&disk_dir);
    if let Some(owner) = handle.os_user {
        owner.chown(&disk_dir).unwrap();
    }
    handle.server_id = 2;
    let rs = Arc::new(PostgresStrategy::new(
        handle,
        store.clone(),
        PostgresStrategyOptions::new().with_wal_keep_size_mb(128),
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
        common::fingerprint(&r).await.unwrap(),
        before,
        "the server still serves its old data"
    );
    let left: Vec<String> = std::fs::read_dir(&disk_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tg-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "nothing left behind");
    drop(disk);

    let rs = common::strategy(&r, store.clone());
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("the retried attach, with room");
    common::assert_caught_up(&rs, &sm, &r, &m).await;
}
