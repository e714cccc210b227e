//! Live MariaDB behaviour beyond the conformance suite: refusals (incompatible snapshot, errant
//! transactions) and a repeated attach.

mod common;

use std::time::Duration;

use common::{MariaDb, master_with_rows, store, strategy_for};
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{
    AttachRequest, DatastoreKind, ReplicationStrategy, ReplicationStrategyExt, SnapshotRequest,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_refuses_snapshots_of_another_datastore_or_series_and_keeps_the_data() {
    let (_d, store) = store();
    let master = master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("incompat"))
        .await
        .expect("snapshot");
    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    MariaDb.create_schema(&replica).await.unwrap();
    MariaDb.insert_rows(&replica, 0..3).await.unwrap();
    let rs = strategy_for(&replica, store.clone());

    let mut other = doc.clone();
    other.dataset.datastore = DatastoreKind::Mysql;
    other.dataset.datastore_version = "mysql-8.0".into();
    let err = rs
        .attach_replication_slave(&other, &AttachRequest::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, trove_guest_core::Error::Incompatible { .. }),
        "{err}"
    );

    let mut newer = doc.clone();
    newer.dataset.datastore_version = "mariadb-11.4".into();
    newer.dataset.server_version = Some("11.4.2-MariaDB".into());
    let err = rs
        .attach_replication_slave(&newer, &AttachRequest::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, trove_guest_core::Error::Incompatible { .. }),
        "{err}"
    );

    let fp = MariaDb.fingerprint(&replica).await.unwrap();
    assert_eq!(fp.total_rows(), 6, "the replica's own data is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_refuses_a_server_with_transactions_the_master_never_had() {
    let (_d, store) = store();
    let master = master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("errant"))
        .await
        .expect("snapshot");
    // A former server with binary logging and its own writes in a domain the master lacks.
    let replica = MariaDbServer::start(MariaDbOptions::new(2).with_log_bin(true))
        .await
        .unwrap();
    replica
        .execute("SET SESSION gtid_domain_id = 9; CREATE DATABASE own_writes")
        .await
        .unwrap();
    let rs = strategy_for(&replica, store.clone());
    let err = rs
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, trove_guest_core::Error::Diverged { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("9-2-1"), "{err}");
    assert!(
        replica
            .query_one("SHOW DATABASES LIKE 'own_writes'")
            .await
            .unwrap()
            .is_some(),
        "nothing was restored over the diverged server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_a_replica_again_restores_again_and_converges() {
    let (_d, store) = store();
    let master = master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("again"))
        .await
        .expect("snapshot");
    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    let rs = trove_guest_mysql::MysqlStrategy::connect(
        replica.handle(),
        store.clone(),
        common::options_for(&replica),
    )
    .await
    .unwrap();
    assert_eq!(rs.datastore(), DatastoreKind::Mariadb);
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach");
    MariaDb.insert_rows(&master, 200..300).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .unwrap();
    // The replica is now past the snapshot, with the master's transactions only.
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("a repeated attach restores again");
    MariaDb.insert_rows(&master, 300..310).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        MariaDb.fingerprint(&master).await.unwrap(),
        MariaDb.fingerprint(&replica).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_round_trip_through_a_real_server() {
    use trove_guest_mysql::sql::{quote_ident, quote_string};
    let server = MariaDbServer::start(MariaDbOptions::new(1)).await.unwrap();
    let long = "'\\\"".repeat(20_000);
    for v in [
        "O'Brien",
        "\\'; DROP USER root; --",
        "a\\\\b\\",
        "nul\0byte",
        "a\nb\r\u{1a}",
        "say \"hi\" `x`",
        "ünïcødé ✓",
        long.as_str(),
    ] {
        let got = server
            .query(&format!("SELECT HEX({})", quote_string(v)))
            .await
            .unwrap();
        let hex: String = v.bytes().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            got[0][0].as_deref(),
            Some(hex.as_str()),
            "{:?}",
            &v[..v.len().min(30)]
        );
    }
    let t = quote_ident("we`ird tab'le").unwrap();
    server
        .execute(&format!(
            "CREATE DATABASE q; CREATE TABLE q.{t} (id INT); INSERT INTO q.{t} VALUES (1)"
        ))
        .await
        .unwrap();
    assert_eq!(
        server
            .query_one("SELECT table_name FROM information_schema.tables WHERE table_schema = 'q'")
            .await
            .unwrap()
            .as_deref(),
        Some("we`ird tab'le")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pt_table_checksum_agrees_the_replica_matches_and_catches_one_changed_row() {
    use trove_guest_core::ToolCommand;
    const PT: &str = "/usr/bin/pt-table-checksum";
    assert!(
        std::path::Path::new(PT).exists(),
        "{PT} is missing: install the Debian package percona-toolkit"
    );
    let (_d, store) = store();
    let master = master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("ptcheck"))
        .await
        .unwrap();
    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .unwrap();
    // pt-table-checksum reaches the replica over TCP (report_host/report_port, written by
    // attach) with the same login; this account replicates to it.
    master
        .execute(
            "CREATE USER 'ptc'@'127.0.0.1' IDENTIFIED BY 'ptc-pass'; \
             GRANT ALL PRIVILEGES ON *.* TO 'ptc'@'127.0.0.1'",
        )
        .await
        .unwrap();
    MariaDb.insert_rows(&master, 200..260).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .unwrap();
    let run = || {
        ToolCommand::new(PT)
            .arg("--no-version-check")
            .arg("--recursion-method=hosts")
            .arg("--no-check-binlog-format")
            .arg("--databases=conf")
            .arg("--replicate=percona.checksums")
            .arg(format!("h=127.0.0.1,P={},u=ptc,p=ptc-pass", master.port()))
            .run_capture(1 << 20)
    };
    // Exit status 0: no differences, no errors.
    let out =
        String::from_utf8_lossy(&run().await.expect("pt-table-checksum: no diffs")).into_owned();
    assert!(out.contains("conf.t1") && out.contains("conf.t2"), "{out}");

    replica
        .execute("SET SESSION sql_log_bin = 0; UPDATE conf.t1 SET v = 'changed' WHERE id = 7")
        .await
        .unwrap();
    let err = run()
        .await
        .expect_err("a changed row on the replica is found");
    assert!(
        matches!(err, trove_guest_core::Error::ToolFailed { .. }),
        "{err}"
    );
    // Any failure (a lost replica, a connection error) is a ToolFailed; the DIFFS bit (16) of
    // pt-table-checksum's exit status is what says the changed row was found.
    let trove_guest_core::Error::ToolFailed { status, .. } = &err else {
        unreachable!()
    };
    let code: u32 = status
        .rsplit(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("an exit code in {status:?}"));
    assert_eq!(code & 16, 16, "pt-table-checksum found a difference: {err}");
}
