//! Status reporting on a live master/replica pair, and passwords kept out of logs, errors,
//! `Debug` output and stored snapshots. Its own test binary: it installs the process-wide
//! `tracing` subscriber that captures every log line.

mod common;

use std::time::{Duration, Instant};

use common::{MariaDb, master_with_rows, store, strategy_for};
use trove_guest_core::testkit::CapturedLog;
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{
    AttachRequest, DetachOptions, ErrorKind, ReplicationStrategy, ReplicationStrategyExt, Role,
    Secret, SnapshotRequest, TransportSecret,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_roles_and_passwords_stay_out_of_logs_errors_and_stored_snapshots() {
    let logs = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber here");

    // An admin password full of option-file and SQL metacharacters: the backup tool must still
    // log in through its private option file.
    let root_pw = Secret::new(r#"R00t"pw\#;'x"#);
    let (_d, store) = store();
    let master = master_with_rows(MariaDbOptions::new(1).with_root_password(root_pw.clone())).await;
    let ms = strategy_for(&master, store.clone());
    let before = ms.replication_status().await.unwrap();
    assert_eq!(before.role, Some(Role::Standalone));

    let t = Instant::now();
    let doc = ms
        .get_replication_snapshot(
            &SnapshotRequest::new()
                .with_replica_id("status")
                .with_replica_host("127.0.0.1"),
        )
        .await
        .expect("snapshot with a hostile admin password");
    let snapshot_time = t.elapsed();
    let repl_pw = doc
        .replication
        .as_ref()
        .unwrap()
        .password
        .clone()
        .unwrap()
        .0;
    assert_eq!(repl_pw.expose().len(), 32);
    let grants = master
        .query("SHOW GRANTS FOR 'trove_repl_status'@'127.0.0.1'")
        .await
        .unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    let grant = grants[0][0].clone().unwrap();
    assert!(
        grant.starts_with("GRANT REPLICATION SLAVE ON *.* TO `trove_repl_status`@`127.0.0.1`"),
        "least privilege, host restricted: {grant}"
    );

    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    let t = Instant::now();
    let outcome = rs
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach");
    let attach_time = t.elapsed();
    eprintln!(
        "timings: snapshot {snapshot_time:?} ({} bytes), attach {attach_time:?}",
        outcome.restored_bytes
    );
    MariaDb.insert_rows(&master, 200..210).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .unwrap();

    let m = ms.replication_status().await.unwrap();
    assert_eq!(m.role, Some(Role::Master));
    assert_eq!(m.connected_replicas, Some(1));
    let r = rs.replication_status().await.unwrap();
    assert_eq!(r.role, Some(Role::Replica));
    assert_eq!(r.receiver_running, Some(true));
    assert_eq!(r.applier_running, Some(true));
    assert_eq!(r.read_only, Some(true));
    assert_eq!(r.master.as_ref().map(|a| a.port), Some(master.port()));
    assert_eq!(r.executed, Some(ms.get_latest_txn_id().await.unwrap()));
    assert!(r.received.is_some());

    // A wrong password: attach fails (bounded), and no error or log shows a password.
    let replica2 = MariaDbServer::start(MariaDbOptions::new(3)).await.unwrap();
    let rs2 = strategy_for(&replica2, store.clone());
    let mut bad = doc.clone();
    let wrong = Secret::new("WrongPassw0rdWrongPassw0rdWrong1");
    bad.replication.as_mut().unwrap().password = Some(TransportSecret(wrong.clone()));
    let err = rs2
        .attach_replication_slave(
            &bad,
            &AttachRequest::new().with_timeout(Duration::from_secs(3)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("Access denied"), "{err}");

    let detached = rs
        .detach_replication_slave(&DetachOptions::new())
        .await
        .unwrap();
    assert_eq!(
        detached.replication_user.as_deref(),
        Some("trove_repl_status")
    );
    let r = rs.replication_status().await.unwrap();
    assert_eq!(r.role, Some(Role::Standalone));
    assert_eq!(r.read_only, Some(false));

    let stored = std::fs::read(doc.dataset.snapshot_href.strip_prefix("file://").unwrap()).unwrap();
    let text = logs.text();
    assert!(
        text.contains("CHANGE MASTER TO"),
        "statements are logged (redacted)"
    );
    for (what, secret) in [
        ("replication", &repl_pw),
        ("root", &root_pw),
        ("wrong", &wrong),
    ] {
        let s = secret.expose();
        assert!(!text.contains(s), "{what} password in the logs");
        assert!(!err.to_string().contains(s), "{what} password in an error");
        assert!(
            !format!("{err:?}").contains(s),
            "{what} password in an error's Debug"
        );
        assert!(
            !format!("{doc:?}").contains(s),
            "{what} password in the document's Debug"
        );
        assert!(
            !stored.windows(s.len()).any(|w| w == s.as_bytes()),
            "{what} password in the stored snapshot"
        );
    }
}
