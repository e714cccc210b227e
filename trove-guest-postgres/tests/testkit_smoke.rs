//! The testkit starts real PostgreSQL 15 servers that answer queries and vanish on drop.

use std::time::Instant;

use trove_guest_core::testkit::{PostgresOptions, PostgresServer};

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
