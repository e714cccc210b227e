//! A restored standby that never streams gives way to the previous data directory.

mod common;

use std::time::Duration;

use trove_guest_core::{AttachRequest, ReplicationStrategy};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

#[tokio::test]
async fn a_restored_standby_that_cannot_stream_gives_way_to_the_previous_data_directory() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..100).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "nostream").await;
    // The master still lets the replica's login in (its slot can be claimed) but no longer
    // accepts its replication connections.
    let hba = m.query("SHOW hba_file").await.unwrap()[0][0]
        .clone()
        .unwrap();
    let text = std::fs::read_to_string(&hba).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("host replication"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, text, "the replication entries are gone");
    std::fs::write(&hba, kept).unwrap();
    m.query("SELECT pg_reload_conf()").await.unwrap();

    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    common::create_schema(&r).await.unwrap();
    common::insert_rows(&r, 0..7).await.unwrap();
    let before = common::fingerprint(&r).await.unwrap();
    let rs = common::strategy(&r, store.clone());
    rs.attach_replication_slave(
        &doc,
        &AttachRequest::new().with_timeout(Duration::from_secs(5)),
    )
    .await
    .expect_err("the standby cannot stream");
    assert_eq!(
        common::fingerprint(&r)
            .await
            .expect("the server runs after the failed attach"),
        before,
        "the previous data directory is back"
    );
    let slots = m
        .query("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(
        slots
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<Vec<_>>(),
        ["trove_snap_nostream"],
        "the slot this attach claimed is dropped again; the snapshot's stays"
    );
}
