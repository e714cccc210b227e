//! `cleanup_source_on_replica_detach` removes what belongs to the detached replica and nothing
//! of another replica whose id merely looks related.

use std::sync::Arc;

use trove_guest_core::{
    DetachedReplica, EnableMasterOptions, LocalSnapshotStore, ReplicationStrategy,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

async fn slots(m: &PostgresServer) -> Vec<String> {
    m.query("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

#[tokio::test]
async fn cleanup_of_replica_node_2_leaves_the_slot_of_replica_node_alone() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(store_dir.path()).unwrap());
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = PostgresStrategy::new(m.handle(), store, PostgresStrategyOptions::new());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    // Two standbys that need no snapshot (the rejoin path): `node` and `node_2`, each with a
    // login and a slot named after its id.
    let node = sm.grant_standby("node").await.unwrap();
    let node_2 = sm.grant_standby("node-2").await.unwrap();
    assert_eq!(
        node.replication.slot_name.as_deref(),
        Some("trove_snap_node")
    );
    assert_eq!(
        node_2.replication.slot_name.as_deref(),
        Some("trove_snap_node_2")
    );

    // `node_2` detached: the master forgets it, and only it.
    let detached = DetachedReplica::new(
        Some(node_2.replication.user.clone()),
        node_2.replication.slot_name.clone(),
        None,
        true,
    );
    sm.cleanup_source_on_replica_detach(&detached)
        .await
        .unwrap();
    assert_eq!(
        slots(&m).await,
        ["trove_snap_node"],
        "replica node keeps its slot"
    );
    let roles = m
        .query("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname::text, 'trove_repl_') ORDER BY 1")
        .await
        .unwrap();
    let roles: Vec<String> = roles.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(roles, ["trove_repl_node"], "only node_2's login is gone");
}
