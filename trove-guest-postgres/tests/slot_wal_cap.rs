//! A master caps the WAL a replication slot may hold (`max_slot_wal_keep_size`), so a replica
//! that vanished without a detach cannot fill the primary's disk; demote lifts the cap again.

use std::sync::Arc;

use trove_guest_core::{
    DemoteOptions, EnableMasterOptions, LocalSnapshotStore, ReplicationStrategy,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

async fn cap(m: &PostgresServer) -> String {
    m.query_one("SHOW max_slot_wal_keep_size").await.unwrap()
}

#[tokio::test]
async fn enable_as_master_caps_slot_wal_and_demote_restores_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    assert_eq!(
        cap(&m).await,
        "-1",
        "a fresh server keeps slot WAL without limit"
    );

    let default = PostgresStrategy::new(m.handle(), store.clone(), PostgresStrategyOptions::new());
    default
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    assert_eq!(cap(&m).await, "8GB", "the documented default");
    default
        .demote_replication_master(&DemoteOptions::new())
        .await
        .unwrap();
    assert_eq!(cap(&m).await, "-1", "demote removes the cap");

    let configured = PostgresStrategy::new(
        m.handle(),
        store,
        PostgresStrategyOptions::new().with_max_slot_wal_keep_size(Some("512MB".into())),
    );
    configured
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    assert_eq!(cap(&m).await, "512MB", "the configured value");
    configured
        .demote_replication_master(&DemoteOptions::new())
        .await
        .unwrap();
    assert_eq!(cap(&m).await, "-1");
}
