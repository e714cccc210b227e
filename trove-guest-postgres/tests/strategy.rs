//! PostgreSQL-specific behaviour around the contract: settings applied with the fewest
//! restarts, read-only mode, incompatible snapshots, the instance's own settings on a standby.

mod common;

use std::time::{Duration, Instant};

use trove_guest_core::strategy::Role;
use trove_guest_core::wire::DatastoreKind;
use trove_guest_core::{
    AttachRequest, EnableMasterOptions, ErrorKind, OpaquePosition, ReplicationPosition,
    ReplicationStrategy, SnapshotRequest,
};
use trove_guest_postgres::objects;
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

#[tokio::test]
async fn enable_as_master_restarts_only_for_settings_that_need_it_and_is_idempotent() {
    common::init_tracing();
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = common::strategy(&m, store);
    let pid0 = m.service().pid().await;
    let t = Instant::now();
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    eprintln!("enable_as_master (with restart) took {:?}", t.elapsed());
    let pid1 = m.service().pid().await;
    assert_ne!(pid0, pid1, "wal_log_hints needs a restart");
    assert_eq!(m.query_one("SHOW wal_log_hints").await.unwrap(), "on");
    assert_eq!(m.query_one("SHOW wal_keep_size").await.unwrap(), "128MB");
    let t = Instant::now();
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    eprintln!(
        "enable_as_master again (reload only) took {:?}",
        t.elapsed()
    );
    assert_eq!(m.service().pid().await, pid1, "nothing changed: no restart");
    let hba = std::fs::read_to_string(m.query_one("SHOW hba_file").await.unwrap()).unwrap();
    assert_eq!(
        hba.matches(objects::HBA_BEGIN).count(),
        1,
        "one replication block"
    );
    assert!(hba.starts_with(objects::HBA_BEGIN), "the block comes first");
    assert_eq!(
        sm.replication_status().await.unwrap().role,
        Some(Role::Master)
    );
}

#[tokio::test]
async fn read_only_refuses_writes_ends_writing_sessions_and_can_be_undone() {
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    let sm = common::strategy(&m, store);

    // A session in the middle of a write transaction.
    let conninfo = m.conninfo();
    let (writer, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    writer
        .batch_execute("BEGIN; INSERT INTO accounts VALUES (1, 'a', 1);")
        .await
        .unwrap();

    sm.make_read_only(true).await.unwrap();
    let err = common::insert_rows(&m, 10..11)
        .await
        .expect_err("writes are refused");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(
        writer.batch_execute("COMMIT").await.is_err(),
        "the writing session was ended"
    );
    let _ = conn.await;
    let st = sm.replication_status().await.unwrap();
    assert_eq!(st.read_only, Some(true));
    assert_eq!(
        m.query_one("SELECT count(*) FROM accounts").await.unwrap(),
        "0"
    );

    sm.make_read_only(false).await.unwrap();
    common::insert_rows(&m, 10..11)
        .await
        .expect("writes accepted again");
    assert_eq!(
        sm.replication_status().await.unwrap().read_only,
        Some(false)
    );
}

#[tokio::test]
async fn snapshots_of_another_datastore_or_major_version_are_refused_untouched() {
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "compat").await;
    assert_eq!(doc.dataset.datastore_version, "postgresql-15");
    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    common::create_schema(&r).await.unwrap();
    let sr = common::strategy(&r, store);

    let mut other = doc.clone();
    other.dataset.datastore = DatastoreKind::Mariadb;
    let err = sr
        .attach_replication_slave(&other, &AttachRequest::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, trove_guest_core::Error::Incompatible { .. }),
        "{err}"
    );

    let mut older = doc.clone();
    older.dataset.datastore_version = "postgresql-14".into();
    let err = sr
        .attach_replication_slave(&older, &AttachRequest::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, trove_guest_core::Error::Incompatible { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);

    // Untouched: still the standalone server with its own table.
    assert_eq!(
        r.query_one("SELECT count(*) FROM accounts").await.unwrap(),
        "0"
    );
    assert_eq!(
        r.query_one("SELECT pg_is_in_recovery()").await.unwrap(),
        "f"
    );
}

#[tokio::test]
async fn a_standby_keeps_its_own_settings_not_the_masters() {
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    m.query("ALTER SYSTEM SET work_mem = '5MB'").await.unwrap();
    let sm = common::strategy(&m, store.clone());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let t = Instant::now();
    let doc = sm
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("own"))
        .await
        .unwrap();
    eprintln!(
        "snapshot of an empty cluster took {:?} ({} bytes)",
        t.elapsed(),
        doc.dataset.size_bytes.unwrap()
    );
    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    r.query("ALTER SYSTEM SET work_mem = '7MB'").await.unwrap();
    let sr = common::strategy(&r, store);
    let t = Instant::now();
    sr.attach_replication_slave(
        &doc,
        &AttachRequest::new().with_timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    eprintln!(
        "attach (verify, extract, swap, start, stream) took {:?}",
        t.elapsed()
    );
    assert_eq!(
        r.query_one("SHOW work_mem").await.unwrap(),
        "7MB",
        "its own ALTER SYSTEM"
    );
    assert_eq!(
        r.query_one("SHOW port").await.unwrap(),
        r.port().to_string()
    );
    assert_eq!(
        r.query_one("SELECT pg_is_in_recovery()").await.unwrap(),
        "t"
    );
    let st = sr.replication_status().await.unwrap();
    assert_eq!(st.role, Some(Role::Replica));
    assert_eq!(st.master.as_ref().map(|a| a.port), Some(m.port()));
    // pg_stat_wal_receiver's flushed position (flushed_lsn on 13+) and replay give the lag.
    assert_eq!(st.receiver_running, Some(true));
    assert!(
        matches!(st.received, Some(ReplicationPosition::PostgresqlLsn(l)) if l.0 > 0),
        "{st:?}"
    );
    assert!(st.lag_bytes.is_some(), "{st:?}");
}

#[tokio::test]
async fn a_standby_attached_again_from_a_newer_snapshot_streams_through_one_slot() {
    common::init_tracing();
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..100).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let first = common::master_snapshot(&sm, "again").await;
    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    let sr = common::strategy(&r, store.clone());
    let attach = AttachRequest::new().with_timeout(Duration::from_secs(60));
    sr.attach_replication_slave(&first, &attach).await.unwrap();
    common::insert_rows(&m, 100..200).await.unwrap();
    let req = SnapshotRequest::new().with_replica_id("again");
    let second = sm.get_replication_snapshot(&req).await.unwrap();
    common::insert_rows(&m, 200..250).await.unwrap();
    sr.attach_replication_slave(&second, &attach).await.unwrap();
    common::insert_rows(&m, 250..300).await.unwrap();
    common::assert_caught_up(&sr, &sm, &r, &m).await;
    let slots = m
        .query("SELECT slot_name || ':' || active FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(
        slots,
        vec![vec![Some("trove_slot_again_2:true".to_owned())]]
    );
}

#[tokio::test]
async fn a_position_of_a_datastore_core_does_not_know_is_refused_not_waited_for() {
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = common::strategy(&m, store);
    let redis = "redis".parse().unwrap();
    let opaque = ReplicationPosition::Opaque(OpaquePosition::new(redis, "replid:1").unwrap());
    let err = sm
        .wait_for_txn(&opaque, Duration::from_secs(30))
        .await
        .expect_err("a Redis position is not a PostgreSQL one");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}
