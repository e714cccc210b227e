//! Standbys from one snapshot each stream through a slot of their own.

mod common;

use std::time::Duration;

use trove_guest_core::{AttachRequest, ReplicationStrategy, ReplicationStrategyExt};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

#[tokio::test]
async fn each_standby_streams_through_its_own_slot_and_the_snapshot_slot_is_released() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..100).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "pair").await;
    let snapshot_slot = doc.replication.as_ref().unwrap().slot_name.clone().unwrap();
    assert_eq!(snapshot_slot, "trove_snap_pair");

    let (r1, r2) = tokio::join!(
        PostgresServer::start(PostgresOptions::new().with_server_id(2)),
        PostgresServer::start(PostgresOptions::new().with_server_id(3))
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    let (s1, s2) = (
        common::strategy(&r1, store.clone()),
        common::strategy(&r2, store.clone()),
    );
    let req = AttachRequest::new().with_timeout(Duration::from_secs(120));
    let (a, b) = tokio::join!(
        s1.attach_replication_slave(&doc, &req),
        s2.attach_replication_slave(&doc, &req)
    );
    a.expect("attach 1");
    b.expect("attach 2");
    common::insert_rows(&m, 100..150).await.unwrap();
    s1.catch_up_with(&*sm, Duration::from_secs(60))
        .await
        .unwrap();
    s2.catch_up_with(&*sm, Duration::from_secs(60))
        .await
        .unwrap();

    let slots = m
        .query("SELECT slot_name, active FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap();
    let slots: Vec<(String, String)> = slots
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        slots,
        vec![
            ("trove_slot_pair_2".to_owned(), "t".to_owned()),
            ("trove_slot_pair_3".to_owned(), "t".to_owned()),
        ],
        "one active slot per standby, the snapshot's slot released"
    );
    let senders = m
        .query_one("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        .await
        .unwrap();
    assert_eq!(senders, "2", "both standbys stream");
    let st = s1.replication_status().await.unwrap();
    assert_eq!(st.receiver_running, Some(true));
    let st = sm.replication_status().await.unwrap();
    assert_eq!(st.connected_replicas, Some(2));
    assert_eq!(
        common::fingerprint(&r1).await.unwrap(),
        common::fingerprint(&m).await.unwrap()
    );
    assert_eq!(
        common::fingerprint(&r2).await.unwrap(),
        common::fingerprint(&m).await.unwrap()
    );
}
