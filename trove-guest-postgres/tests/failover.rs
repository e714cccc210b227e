//! The failover path: a standby is promoted and the former primary rejoins it by pg_rewind.

mod common;

use std::time::{Duration, Instant};

use trove_guest_core::strategy::Role;
use trove_guest_core::{
    AttachRequest, DetachOptions, EnableMasterOptions, ErrorKind, ReplicationStrategy,
    ReplicationStrategyExt,
};
use trove_guest_postgres::testkit::{ClusterInit, PostgresOptions, PostgresServer};
use trove_guest_postgres::{RejoinOptions, objects};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn former_primary_rejoins_the_promoted_standby_by_rewind_and_receives_new_writes() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    // A system identifier of its own, so nothing from another test can be mixed in.
    let old = PostgresServer::start(PostgresOptions::new().with_init(ClusterInit::Fresh))
        .await
        .unwrap();
    common::create_schema(&old).await.unwrap();
    common::insert_rows(&old, 0..200).await.unwrap();
    let s_old = common::strategy(&old, store.clone());
    let doc = common::master_snapshot(&s_old, "successor").await;
    let new = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    let s_new = common::strategy(&new, store.clone());
    s_new
        .attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
        .await
        .unwrap();
    common::insert_rows(&old, 200..300).await.unwrap();
    s_new.catch_up_with(&*s_old, WAIT).await.unwrap();

    // Failover: the standby is promoted; the old primary still takes a few writes that the
    // new primary never sees (the histories diverge, so a rewind is required).
    let detached = s_new
        .detach_replication_slave(&DetachOptions::new())
        .await
        .unwrap();
    assert!(detached.was_replicating);
    common::insert_rows(&old, 300..310).await.unwrap();
    common::insert_rows(&new, 1000..1100).await.unwrap();

    s_new
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let source = s_new.grant_standby("former-primary").await.unwrap();
    let t = Instant::now();
    s_old
        .rejoin_as_standby(&source, &RejoinOptions::new().with_timeout(WAIT))
        .await
        .expect("the former primary rejoins by rewind");
    eprintln!(
        "rejoin (stop, pg_rewind, start, stream) took {:?}",
        t.elapsed()
    );

    let st = s_old.replication_status().await.unwrap();
    assert_eq!(st.role, Some(Role::Replica));
    assert_eq!(st.receiver_running, Some(true));
    common::insert_rows(&new, 2000..2050).await.unwrap();
    s_old.catch_up_with(&*s_new, WAIT).await.unwrap();
    let fp_old = common::fingerprint(&old).await.unwrap();
    assert_eq!(
        fp_old,
        common::fingerprint(&new).await.unwrap(),
        "rejoined standby equals the new primary"
    );
    assert_eq!(fp_old.0["accounts"].rows, 300 + 100 + 50);
    let diverged = old
        .query_one("SELECT count(*) FROM accounts WHERE id BETWEEN 300 AND 309")
        .await
        .unwrap();
    assert_eq!(
        diverged, "0",
        "the old primary's diverging writes were rewound away"
    );
    // Its own configuration survived pg_rewind (it still listens on its own port).
    assert_eq!(
        old.query_one("SHOW port").await.unwrap(),
        old.port().to_string()
    );
    // The replication password went to pg_rewind and the standby through the passfile only.
    let pw = source.replication.password.as_ref().unwrap().0.expose();
    let auto_conf = std::fs::read_to_string(old.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto_conf.contains(pw),
        "postgresql.auto.conf holds the password"
    );
    assert!(!old.log_text().contains(pw) && !new.log_text().contains(pw));
    let handle = old.handle();
    for name in [objects::STANDBY_FILE, "trove-replication-standby.json"] {
        let text = std::fs::read_to_string(handle.config_dir.join(name)).unwrap();
        assert!(!text.contains(pw), "{name} holds the password");
    }
    let slot_active = new
        .query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'trove_snap_former_primary'",
        )
        .await
        .unwrap();
    assert_eq!(
        slot_active, "t",
        "the rejoined standby streams through its slot"
    );
}

#[tokio::test]
async fn rejoin_without_a_common_history_asks_for_a_fresh_snapshot() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    // Two unrelated clusters: pg_rewind cannot rewind one onto the other.
    let a = PostgresServer::start(PostgresOptions::new().with_init(ClusterInit::Fresh))
        .await
        .unwrap();
    let b = PostgresServer::start(PostgresOptions::new().with_init(ClusterInit::Fresh))
        .await
        .unwrap();
    common::create_schema(&a).await.unwrap();
    common::insert_rows(&a, 0..10).await.unwrap();
    let sa = common::strategy(&a, store.clone());
    let sb = common::strategy(&b, store.clone());
    sa.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    sb.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let source = sb.grant_standby("stranger").await.unwrap();
    let err = sa
        .rejoin_as_standby(
            &source,
            &RejoinOptions::new().with_timeout(Duration::from_secs(20)),
        )
        .await
        .expect_err("rewind between unrelated clusters is impossible");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("fresh snapshot"), "{msg}");
    // The server runs again, read-only, with its data.
    a.wait_ready(WAIT).await.unwrap();
    assert_eq!(
        a.query_one("SELECT count(*) FROM accounts").await.unwrap(),
        "10"
    );
    assert_eq!(
        a.query_one("SELECT pg_is_in_recovery()").await.unwrap(),
        "t"
    );
}

#[tokio::test]
async fn a_standby_promoted_by_a_detach_for_failover_can_be_rewound_onto_its_old_primary() {
    use trove_guest_core::failover::{ReplicaContextOptions, RepointOptions};
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let primary = PostgresServer::start(PostgresOptions::new().with_init(ClusterInit::Fresh))
        .await
        .unwrap();
    common::create_schema(&primary).await.unwrap();
    common::insert_rows(&primary, 0..100).await.unwrap();
    let s_primary = common::strategy(&primary, store.clone());
    let doc = common::master_snapshot(&s_primary, "promoted").await;
    let standby = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    let s_standby = common::strategy(&standby, store.clone());
    s_standby
        .attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
        .await
        .unwrap();
    let rewind_file = standby.handle().config_dir.join(objects::REWIND_FILE);
    assert!(rewind_file.exists(), "a standby is made rewindable");

    // Promoted by a detach for failover, it takes writes of its own while the primary goes
    // on: the histories diverge.
    s_standby
        .detach_replication_slave(&DetachOptions::new().with_for_failover(true))
        .await
        .unwrap();
    assert!(
        rewind_file.exists(),
        "a detach for failover keeps it rewindable"
    );
    common::insert_rows(&standby, 5000..5010).await.unwrap();
    common::insert_rows(&primary, 100..200).await.unwrap();

    // Pointed at its old primary again: rewound (its own writes gone), then it streams.
    let ctx = s_primary
        .get_replica_context(&ReplicaContextOptions::new("promoted-back"))
        .await
        .unwrap();
    s_standby
        .attach_replica(&ctx, &RepointOptions::default())
        .await
        .expect("the promoted standby is rewound and follows its old primary");
    common::insert_rows(&primary, 200..250).await.unwrap();
    s_standby.catch_up_with(&*s_primary, WAIT).await.unwrap();
    assert_eq!(
        common::fingerprint(&standby).await.unwrap(),
        common::fingerprint(&primary).await.unwrap()
    );
    assert_eq!(
        standby
            .query_one("SELECT count(*) FROM accounts WHERE id >= 5000")
            .await
            .unwrap(),
        "0",
        "its own writes were rewound away"
    );

    // A plain detach leaves a standalone server, which keeps no WAL for a rewind, and drops
    // the slot it streamed through on the primary itself (Trove 26 never sends the cleanup).
    let streaming = primary
        .query_one("SELECT slot_name FROM pg_replication_slots WHERE active")
        .await
        .unwrap();
    s_standby
        .detach_replication_slave(&DetachOptions::new())
        .await
        .unwrap();
    assert!(!rewind_file.exists(), "a plain detach removes it");
    let left = primary
        .query(&format!(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name = '{streaming}'"
        ))
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "the slot {streaming} the standby streamed through is gone before any cleanup"
    );
}
