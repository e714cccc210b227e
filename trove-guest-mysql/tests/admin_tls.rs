//! The administrator connection over verified TLS on MariaDB 10.11: with an admin account that
//! requires TLS (`REQUIRE SSL`), a strategy whose `AdminConnection` verifies the server's
//! certificate against the CA for the server name runs its operations; the same login with a
//! wrong CA or a wrong server name fails with `Error::Tls` (and without TLS it is refused by
//! the server), and a server offering no TLS is `TlsProblem::NotOffered`. A snapshot taken over
//! that admin connection runs `mariabackup` over TLS too.

mod common;

use std::path::Path;
use std::sync::Arc;

use trove_guest_core::testkit::tls_checks::{self, tls_problem};

use common::options_for;
use trove_guest_core::testkit::{TestCa, short_tempdir};
use trove_guest_core::tls::AdminTls;
use trove_guest_core::{
    AdminConnection, ReplicationStrategy, Secret, SnapshotRequest, SnapshotStore, TlsProblem,
};
use trove_guest_mysql::MysqlStrategy;
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const ADMIN: &str = "tls_admin";
const PASSWORD: &str = "admin-tls-test-password";

/// A strategy whose admin logs in over TCP as the TLS-only account, with `tls`.
fn strategy(server: &MariaDbServer, store: Arc<dyn SnapshotStore>, tls: AdminTls) -> MysqlStrategy {
    let mut handle = server.handle();
    handle.admin = AdminConnection::new("127.0.0.1", server.port(), ADMIN, Secret::new(PASSWORD))
        .with_tls(tls);
    MysqlStrategy::new(handle, store, options_for(server))
}

async fn tls_only_admin(server: &MariaDbServer) {
    server
        .execute(&format!(
            "CREATE USER '{ADMIN}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL; \
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'%' WITH GRANT OPTION"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_connection_runs_over_verified_tls_and_refuses_certificates_that_do_not_verify() {
    let certs = short_tempdir("tg-certs-").unwrap();
    let ca = TestCa::generate(certs.path(), "good").unwrap();
    let other_ca = TestCa::generate(certs.path(), "other").unwrap();
    // The backup tool verifies the certificate for the host it connects to (127.0.0.1); the
    // agent's own sessions verify it for the server name.
    let cert = ca
        .server_certificate("db", &["db.example.test", "127.0.0.1"], None)
        .unwrap();
    let server = common::master_with_rows(MariaDbOptions::new(1).with_tls(
        &cert.cert_file,
        &cert.key_file,
        ca.ca_file(),
    ))
    .await;
    tls_only_admin(&server).await;
    let (_store_dir, store) = common::store();

    // Verified TLS for the certificate's name: the strategy's operations run.
    let s = strategy(
        &server,
        store.clone(),
        AdminTls::verify(ca.ca_file(), "db.example.test"),
    );
    s.make_read_only(true).await.expect("read-only over TLS");
    assert_eq!(
        server
            .query_one("SELECT @@global.read_only")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    s.get_latest_txn_id().await.expect("position over TLS");
    s.make_read_only(false).await.expect("writable over TLS");
    let doc = s
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("admintls"))
        .await
        .expect("a snapshot over the TLS-only admin account (mariabackup included)");
    assert!(doc.binlog_position.is_some(), "{doc:?}");

    // Without TLS the server refuses the account: the requirement is real.
    let e = strategy(&server, store.clone(), AdminTls::Off)
        .get_latest_txn_id()
        .await
        .expect_err("the account requires TLS");
    assert_eq!(tls_problem(&e), None, "a plain login refusal: {e}");
    assert!(e.to_string().contains("Access denied"), "{e}");

    // An unreadable CA file, a CA that did not sign the certificate, another name: refused.
    let with_tls = |tls: AdminTls| -> Arc<dyn ReplicationStrategy> {
        Arc::new(strategy(&server, store.clone(), tls))
    };
    tls_checks::admin_tls_refusals(
        &with_tls,
        certs.path(),
        ca.ca_file(),
        other_ca.ca_file(),
        "db.example.test",
    )
    .await;
    // A change asked for over a connection that does not verify never runs.
    let e = with_tls(AdminTls::verify(other_ca.ca_file(), "db.example.test"))
        .make_read_only(true)
        .await
        .expect_err("wrong CA");
    assert_eq!(
        tls_problem(&e),
        Some(TlsProblem::UntrustedCertificate),
        "{e}"
    );
    assert_eq!(
        server
            .query_one("SELECT @@global.read_only")
            .await
            .unwrap()
            .as_deref(),
        Some("0"),
        "nothing ran on a connection that did not verify"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_connection_requiring_tls_to_a_server_without_tls_is_refused_as_not_offered() {
    let certs = short_tempdir("tg-certs-").unwrap();
    let ca = TestCa::generate(certs.path(), "good").unwrap();
    let server = MariaDbServer::start(MariaDbOptions::new(1)).await.unwrap();
    server
        .execute(&format!(
            "CREATE USER '{ADMIN}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'%'"
        ))
        .await
        .unwrap();
    let (_store_dir, store) = common::store();
    let e = strategy(
        &server,
        store,
        AdminTls::verify(ca.ca_file(), "db.example.test"),
    )
    .get_latest_txn_id()
    .await
    .expect_err("no TLS offered");
    assert_eq!(tls_problem(&e), Some(TlsProblem::NotOffered), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_connection_over_the_socket_ignores_tls_settings() {
    // TLS applies to TCP: the socket login keeps working whatever AdminTls says (here a CA
    // file that does not even exist).
    let server = MariaDbServer::start(MariaDbOptions::new(1)).await.unwrap();
    let (_store_dir, store) = common::store();
    let mut handle = server.handle();
    assert!(
        handle.admin.socket.is_some(),
        "the testkit's admin uses the socket"
    );
    handle.admin.tls = AdminTls::verify(Path::new("/nonexistent/ca.pem"), "db.example.test");
    MysqlStrategy::new(handle, store, options_for(&server))
        .get_latest_txn_id()
        .await
        .expect("socket login without TLS");
}
