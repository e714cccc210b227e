//! A snapshot that fails after its slot was made leaves no slot (it would pin WAL for good) and
//! no login behind, and never touches those of an earlier snapshot for the same replica.

use std::sync::Arc;

use trove_guest_core::testkit::{PostgresOptions, PostgresServer};
use trove_guest_core::{
    EnableMasterOptions, LocalSnapshotStore, ReplicationStrategy, SnapshotRequest,
};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

async fn names(m: &PostgresServer) -> (Vec<String>, Vec<String>) {
    let col = |rows: Vec<Vec<Option<String>>>| -> Vec<String> {
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    };
    let slots = m
        .query("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap();
    let roles = m
        .query(
            "SELECT rolname::text FROM pg_roles \
             WHERE starts_with(rolname::text, 'trove_repl_') ORDER BY 1",
        )
        .await
        .unwrap();
    (col(slots), col(roles))
}

#[tokio::test]
async fn a_failed_snapshot_leaves_no_slot_or_login_of_its_own_behind() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(store_dir.path()).unwrap());
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = PostgresStrategy::new(m.handle(), store, PostgresStrategyOptions::new());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    sm.get_replication_snapshot(
        &SnapshotRequest::new()
            .with_replica_id("r1")
            .with_snapshot_name("taken"),
    )
    .await
    .expect("first snapshot");
    let before = names(&m).await;
    assert_eq!(
        before,
        (
            vec!["trove_slot_r1".to_owned()],
            vec!["trove_repl_r1".to_owned()]
        )
    );

    // The store refuses the name (taken): the backup fails after the slot was made.
    for replica in ["r2", "r1"] {
        sm.get_replication_snapshot(
            &SnapshotRequest::new()
                .with_replica_id(replica)
                .with_snapshot_name("taken"),
        )
        .await
        .expect_err("the snapshot name is taken");
        assert_eq!(
            names(&m).await,
            before,
            "after a failed snapshot for {replica}: only the first snapshot's slot and login"
        );
    }
}
