//! A snapshot document whose GTID position is not the one the backup recorded is refused before
//! anything is swapped in: a replica seeded with a later position would silently skip the
//! transactions in between.

mod common;

use common::{MariaDb, strategy_for};
use trove_guest_core::position::MariaDbGtidList;
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{
    AttachRequest, EnableMasterOptions, ErrorKind, ReplicationStrategy, SnapshotRequest,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_claiming_a_later_gtid_than_the_backup_is_refused_and_the_data_kept() {
    let (_store_dir, store) = common::store();
    let master = MariaDbServer::start(MariaDbOptions::new(1))
        .await
        .expect("start master");
    let ms = strategy_for(&master, store.clone());
    // Binary logging on first, so the rows are transactions with GTIDs.
    ms.enable_as_master(&EnableMasterOptions::new())
        .await
        .expect("enable_as_master");
    MariaDb.create_schema(&master).await.unwrap();
    MariaDb.insert_rows(&master, 0..200).await.unwrap();
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("gtidcheck"))
        .await
        .expect("snapshot");
    // The master moves on; the forged document claims one more of its transactions.
    MariaDb.insert_rows(&master, 200..210).await.unwrap();
    let taken = doc
        .binlog_position
        .as_ref()
        .and_then(|b| b.gtid_list.clone())
        .expect("the document carries the backup's GTID");
    assert!(!taken.is_empty(), "the backup holds GTIDs");
    let later: MariaDbGtidList = taken
        .gtids()
        .map(|g| format!("{}-{}-{}", g.domain, g.server, g.sequence + 1))
        .collect::<Vec<_>>()
        .join(",")
        .parse()
        .unwrap();
    let mut forged = doc.clone();
    forged.binlog_position.as_mut().unwrap().gtid_list = Some(later);

    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    MariaDb.create_schema(&replica).await.unwrap();
    MariaDb.insert_rows(&replica, 0..7).await.unwrap();
    let before = MariaDb.fingerprint(&replica).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    let err = rs
        .attach_replication_slave(&forged, &AttachRequest::new())
        .await
        .expect_err("the document's GTID is not the backup's");
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert_eq!(
        MariaDb.fingerprint(&replica).await.unwrap(),
        before,
        "nothing was swapped in"
    );
}
