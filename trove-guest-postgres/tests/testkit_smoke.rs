//! The testkit starts real PostgreSQL 15 servers that answer queries and vanish on drop.

use std::time::{Duration, Instant};

use trove_guest_core::ServiceControl;
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

#[tokio::test]
async fn testkit_server_starts_answers_a_query_and_is_removed_on_drop() {
    let t = Instant::now();
    let server = PostgresServer::start(PostgresOptions::new())
        .await
        .expect("start a throwaway PostgreSQL 15");
    eprintln!("first server (with template) started in {:?}", t.elapsed());
    let version = server
        .query_one("SHOW server_version_num")
        .await
        .expect("query");
    assert!(version.starts_with("15"), "PostgreSQL 15, got {version}");
    let handle = server.handle();
    assert_eq!(handle.admin.port, server.port());
    assert!(handle.data_dir.join("PG_VERSION").exists());
    let dir = server.instance_dir().to_path_buf();

    // Several at once start in a few seconds.
    let t = Instant::now();
    let (a, b, c) = tokio::join!(
        PostgresServer::start(PostgresOptions::new().with_server_id(2)),
        PostgresServer::start(PostgresOptions::new().with_server_id(3)),
        PostgresServer::start(PostgresOptions::new().with_server_id(4)),
    );
    let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
    eprintln!("three more servers started in {:?}", t.elapsed());
    let mut ports = vec![server.port(), a.port(), b.port(), c.port()];
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "every server has its own port");

    // The service restarts the same server.
    handle
        .service
        .restart()
        .await
        .expect("restart through the handle");
    server
        .wait_ready(std::time::Duration::from_secs(30))
        .await
        .expect("ready after restart");
    assert_eq!(
        server.query_one("SELECT 41 + 1").await.expect("query"),
        "42"
    );

    let t = Instant::now();
    drop(server);
    eprintln!("stop and remove took {:?}", t.elapsed());
    assert!(!dir.exists(), "instance directory removed on drop");
}

#[tokio::test]
async fn a_missing_postgres_binary_fails_with_the_package_name() {
    let err = PostgresServer::start(PostgresOptions::new().with_bin_dir("/nonexistent/pg/bin"))
        .await
        .expect_err("no binaries there");
    let msg = err.to_string();
    assert!(msg.contains("postgresql-15"), "{msg}");
    assert!(msg.contains("/nonexistent/pg/bin/postgres"), "{msg}");
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Dropping a server on a current-thread runtime while another task is in the middle of a
/// service call (holding the service's lock, waiting for the postmaster to exit) must not wait
/// for that task: it cannot run until the drop returns.
#[test]
fn dropping_a_server_while_a_task_holds_its_service_does_not_deadlock() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = PostgresServer::start(PostgresOptions::new())
                .await
                .expect("start a throwaway PostgreSQL 15");
            let pid = server.service().pid().await.expect("running");
            let dir = server.instance_dir().to_path_buf();
            let service = server.handle().service;
            let stopping = tokio::spawn(async move { service.stop().await });
            // Let the stop take the service's lock and wait for the postmaster to exit.
            let mut held = false;
            for _ in 0..1000 {
                tokio::task::yield_now().await;
                let probe = tokio::time::timeout(Duration::ZERO, server.service().pid()).await;
                if probe.is_err() {
                    held = true;
                    break;
                }
            }
            assert!(held, "the stop never held the service's lock");
            drop(server);
            let _ = done_tx.send((pid, dir));
            stopping
                .await
                .unwrap()
                .expect("the stop finishes after the drop");
        });
    });
    let (pid, dir) = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dropping the server returned (no deadlock on the service's lock)");
    assert!(!running(pid), "the postmaster was stopped");
    assert!(!dir.exists(), "instance directory removed on drop");
}

/// A server started through `service()` directly (not the handle) is still stopped on drop.
#[tokio::test]
async fn a_server_restarted_through_service_is_stopped_on_drop() {
    let server = PostgresServer::start(PostgresOptions::new())
        .await
        .expect("start a throwaway PostgreSQL 15");
    server.handle().service.stop().await.expect("stop");
    server
        .service()
        .start()
        .await
        .expect("start again directly");
    server
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");
    let pid = server.service().pid().await.expect("running");
    drop(server);
    assert!(!running(pid), "the postmaster was stopped");
}
