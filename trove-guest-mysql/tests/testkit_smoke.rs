//! This crate's testkit MariaDB servers: they start, answer queries, start in parallel, and are
//! removed on drop.

use std::time::Instant;

use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testkit_mariadb_server_answers_queries_and_is_removed_on_drop() {
    let server = MariaDbServer::start(MariaDbOptions::new(7))
        .await
        .expect("start MariaDB");
    let version = server.query_one("SELECT VERSION()").await.unwrap().unwrap();
    assert!(version.contains("MariaDB"), "{version}");
    assert_eq!(
        server
            .query_one("SELECT @@server_id")
            .await
            .unwrap()
            .as_deref(),
        Some("7")
    );
    assert_eq!(
        server
            .query_one("SELECT @@character_set_server")
            .await
            .unwrap()
            .as_deref(),
        Some("utf8mb4")
    );
    assert_eq!(
        server
            .query_one("SELECT @@log_bin")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert!(server.socket().as_os_str().len() <= 107);
    // The service in the handle restarts it.
    server
        .handle()
        .service
        .restart()
        .await
        .expect("restart through the handle");
    assert_eq!(
        server.query_one("SELECT 1+1").await.unwrap().as_deref(),
        Some("2")
    );
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!dir.exists(), "instance directory removed on drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_start_in_parallel() {
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        MariaDbServer::start(MariaDbOptions::new(1).with_log_bin(true)),
        MariaDbServer::start(MariaDbOptions::new(2)),
        MariaDbServer::start(MariaDbOptions::new(3)),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    eprintln!("three MariaDB servers started in {:?}", started.elapsed());
    let ports = [a.port(), b.port(), c.port()];
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    assert_eq!(
        a.query_one("SELECT @@log_bin").await.unwrap().as_deref(),
        Some("1")
    );
    for s in [&a, &b, &c] {
        assert_eq!(s.query_one("SELECT 1").await.unwrap().as_deref(), Some("1"));
    }
}
