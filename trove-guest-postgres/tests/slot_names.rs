//! Slot names never collide across replica ids: the own slot of replica `node` on server 2 and
//! the snapshot slot of replica `node_2` are different slots, and cleaning up one replica
//! touches neither the slots nor the login of the other.

mod common;

use std::time::Duration;

use trove_guest_core::{
    AttachRequest, DetachOptions, ReplicationStrategy, ReplicationStrategyExt, SnapshotRequest,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

/// The first column of every row, sorted bytewise (not by the server's collation).
async fn column(m: &PostgresServer, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = m
        .query(sql)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    out.sort();
    out
}

async fn slots(m: &PostgresServer) -> Vec<String> {
    column(
        m,
        "SELECT slot_name || ':' || active FROM pg_replication_slots ORDER BY 1",
    )
    .await
}

async fn logins(m: &PostgresServer) -> Vec<String> {
    column(
        m,
        "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname::text, 'trove_repl_') \
         ORDER BY 1",
    )
    .await
}

#[tokio::test]
async fn replica_node_on_server_2_and_replica_node_2_never_share_a_slot() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..50).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let (r2, r3) = tokio::join!(
        PostgresServer::start(PostgresOptions::new().with_server_id(2)),
        PostgresServer::start(PostgresOptions::new().with_server_id(3))
    );
    let (r2, r3) = (r2.unwrap(), r3.unwrap());
    let (s2, s3) = (
        common::strategy(&r2, store.clone()),
        common::strategy(&r3, store.clone()),
    );
    let attach = AttachRequest::new().with_timeout(Duration::from_secs(60));

    // Replica `node` on server 2 streams through its own slot.
    let node = common::master_snapshot(&sm, "node").await;
    s2.attach_replication_slave(&node, &attach).await.unwrap();
    let own_of_node = slots(&m).await;
    assert_eq!(own_of_node.len(), 1, "{own_of_node:?}");
    let own_of_node = own_of_node[0].clone();
    assert!(own_of_node.ends_with(":true"), "{own_of_node}");

    // A snapshot for replica `node-2` gets a fresh slot of its own, not the active slot of
    // replica `node` on server 2.
    let node_2 = sm
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("node-2"))
        .await
        .unwrap();
    let snap_of_node_2 = node_2
        .replication
        .as_ref()
        .unwrap()
        .slot_name
        .clone()
        .unwrap();
    let mut expected = vec![own_of_node.clone(), format!("{snap_of_node_2}:false")];
    expected.sort();
    assert_eq!(
        slots(&m).await,
        expected,
        "the snapshot of node_2 made a new, idle slot"
    );

    // Replica `node_2` on server 3 attaches from it and streams.
    s3.attach_replication_slave(&node_2, &attach).await.unwrap();
    common::insert_rows(&m, 50..80).await.unwrap();
    common::assert_caught_up(&s3, &sm, &r3, &m).await;
    let before = slots(&m).await;
    assert_eq!(before.len(), 2, "one own slot per replica: {before:?}");
    assert!(before.iter().all(|s| s.ends_with(":true")), "{before:?}");

    // Replica `node` leaves: its slot and login go; `node_2` keeps both and streams on.
    let gone = s2
        .detach_replication_slave(&DetachOptions::new())
        .await
        .unwrap();
    assert!(gone.was_replicating);
    sm.cleanup_source_on_replica_detach(&gone).await.unwrap();
    let own_of_node_2: Vec<String> = before
        .iter()
        .filter(|s| **s != own_of_node)
        .cloned()
        .collect();
    assert_eq!(own_of_node_2.len(), 1, "{before:?}");
    assert_eq!(slots(&m).await, own_of_node_2, "only node's slot is gone");
    assert_eq!(
        logins(&m).await,
        ["trove_repl_node_2"],
        "node's login is gone, node_2's stays"
    );
    common::insert_rows(&m, 80..100).await.unwrap();
    s3.catch_up_with(&*sm, Duration::from_secs(60))
        .await
        .expect("replica node_2 still streams");
    common::assert_caught_up(&s3, &sm, &r3, &m).await;
}
