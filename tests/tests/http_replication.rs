//! Two guest agents over HTTP against real servers: snapshot, attach, detach, cleanup and
//! demote driven through the agents' HTTP API only; data checked on the servers themselves.

use std::time::Duration;

use trove_guest_agent::api::kinds;
use trove_guest_agent::api::{AttachQuery, SnapshotCall};
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::left_behind;
use trove_guest_core::{DatastoreKind, ReplicationPosition, Role};
use trove_guest_tests::{node, temp_store};

const CATCH_UP: Duration = Duration::from_secs(60);

async fn full_cycle_over_http(kind: DatastoreKind) {
    let store = temp_store();
    let master = node(kind, 1, &store, "products-m").await;
    let replica = node(kind, 2, &store, "products-s1").await;
    let dirs = [master.dir(), replica.dir()];

    let mdb = SampleDb::connect(kind, &master.server().handle().admin)
        .await
        .expect("connect to the master");
    mdb.create_schema().await.expect("schema");
    mdb.load(2000, |_| {})
        .await
        .expect("rows before the snapshot");

    // Snapshot on the master, through HTTP.
    master
        .client
        .enable_master()
        .await
        .expect("enable-master over HTTP");
    let mut events = Vec::new();
    let doc = master
        .client
        .snapshot(
            &SnapshotCall {
                replica_id: Some(replica.instance_id.clone()),
                replica_host: Some("127.0.0.1".into()),
                ..SnapshotCall::default()
            },
            &mut |e| events.push(e),
        )
        .await
        .expect("snapshot over HTTP");
    assert_eq!(doc.dataset.datastore, kind);
    assert!(
        store.store.owns(&doc.dataset.snapshot_href),
        "{}",
        doc.dataset.snapshot_href
    );
    assert!(!events.is_empty(), "the snapshot call streamed progress");
    let grant = doc
        .replication
        .as_ref()
        .expect("the document carries the replication grant");
    assert!(
        grant.password.is_some(),
        "the replica gets the password in transit"
    );
    match kind {
        DatastoreKind::Postgresql => assert!(doc.wal_position.is_some()),
        k if k.as_str() == "redis" => {
            let p = doc.position.as_ref().expect("an opaque position");
            assert_eq!(p.datastore, kind);
        }
        _ => assert!(doc.binlog_position.is_some()),
    }

    // Attach the replica, through HTTP.
    let outcome = replica
        .client
        .attach(&doc, &AttachQuery::default(), &mut |_| {})
        .await
        .expect("attach over HTTP");
    assert!(outcome.restored_bytes > 0);

    // Writes after the attach reach the replica; data equal.
    mdb.insert_rows(2000..2300)
        .await
        .expect("rows after attach");
    let txn = master
        .client
        .latest_txn()
        .await
        .expect("latest txn over HTTP");
    replica
        .client
        .wait_for_txn(&txn, CATCH_UP)
        .await
        .expect("the replica reaches the master's latest txn");
    let rdb = SampleDb::connect(kind, &replica.server().handle().admin)
        .await
        .expect("connect to the replica");
    let mf = mdb.fingerprint().await.expect("master checksums");
    assert_eq!(mf.0["products"].rows, 2300);
    assert_eq!(
        rdb.fingerprint().await.expect("replica checksums"),
        mf,
        "replica data equals master data"
    );
    let st = replica
        .client
        .status()
        .await
        .expect("replica status over HTTP");
    assert_eq!(st.role, Some(Role::Replica));
    assert_eq!(st.read_only, Some(true), "a replica refuses client writes");

    // detach_replication action on the replica, cleanup on the master.
    let detached = replica
        .client
        .detach_replication_action(&replica.instance_id)
        .await
        .expect("detach_replication action over HTTP");
    assert!(detached.was_replicating);
    master
        .client
        .cleanup(&detached)
        .await
        .expect("cleanup over HTTP");
    master
        .client
        .cleanup(&detached)
        .await
        .expect("a second cleanup is harmless");
    let st = replica.client.status().await.expect("status after detach");
    assert_eq!(st.role, Some(Role::Standalone));
    rdb.insert_rows(50_000..50_010)
        .await
        .expect("the detached replica accepts writes");
    mdb.insert_rows(2300..2310)
        .await
        .expect("master write after detach");
    let unreachable: ReplicationPosition = master.client.latest_txn().await.expect("latest txn");
    let err = replica
        .client
        .wait_for_txn(&unreachable, Duration::from_secs(2))
        .await
        .expect_err("the detached replica never gets the master's new rows");
    assert_eq!(err.kind(), Some(kinds::TIMEOUT), "{err}");
    assert_eq!(
        rdb.count("products").await.unwrap(),
        2310,
        "2300 replicated + 10 of its own"
    );

    // Demote the master, through HTTP.
    master.client.demote().await.expect("demote over HTTP");
    master
        .client
        .demote()
        .await
        .expect("a second demote is harmless");
    let st = master
        .client
        .status()
        .await
        .expect("master status after demote");
    assert_eq!(st.role, Some(Role::Standalone));
    assert_eq!(mdb.count("products").await.unwrap(), 2310, "no data lost");

    mdb.close().await;
    rdb.close().await;
    master.shutdown().await;
    replica.shutdown().await;
    for d in &dirs {
        let left = left_behind(d);
        assert!(left.is_empty(), "{left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_snapshot_attach_detach_cleanup_demote_over_http() {
    full_cycle_over_http(DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_snapshot_attach_detach_cleanup_demote_over_http() {
    full_cycle_over_http(DatastoreKind::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_snapshot_attach_detach_cleanup_demote_over_http() {
    full_cycle_over_http("redis".parse().expect("a datastore name")).await;
}
