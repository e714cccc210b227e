//! The administrator connection over verified TLS on PostgreSQL 15: with an hba file that
//! admits TCP logins over `hostssl` only, a strategy whose `AdminConnection` verifies the
//! server's certificate against the CA for the server name runs its operations; the same
//! login with a wrong CA or a wrong server name fails with `Error::Tls` (without TLS the hba
//! refuses it), and a server offering no TLS is `TlsProblem::NotOffered`. A snapshot taken over
//! that admin connection runs `pg_basebackup` with `sslmode=verify-full` too.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use trove_guest_core::testkit::tls_checks::{self, tls_problem};

use trove_guest_core::testkit::{TestCa, short_tempdir};
use trove_guest_core::tls::AdminTls;
use trove_guest_core::{
    AdminConnection, EnableMasterOptions, OsUser, ReplicationStrategy, Secret, SnapshotRequest,
    SnapshotStore, TlsProblem,
};
use trove_guest_postgres::testkit::{ADMIN_USER, PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

const PASSWORD: &str = "admin-tls-test-password";

/// A strategy whose admin logs in over TCP (no socket) with `tls`.
fn strategy(
    server: &PostgresServer,
    store: Arc<dyn SnapshotStore>,
    tls: AdminTls,
) -> PostgresStrategy {
    let mut handle = server.handle();
    handle.admin = AdminConnection::new(
        "127.0.0.1",
        server.port(),
        ADMIN_USER,
        Secret::new(PASSWORD),
    )
    .with_tls(tls);
    PostgresStrategy::new(handle, store, PostgresStrategyOptions::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_connection_runs_over_verified_tls_and_refuses_certificates_that_do_not_verify() {
    common::init_tracing();
    let postgres = OsUser::lookup("postgres").unwrap();
    let certs = short_tempdir("tg-certs-").unwrap();
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = TestCa::generate(certs.path(), "good").unwrap();
    let other_ca = TestCa::generate(certs.path(), "other").unwrap();
    let cert = ca
        .server_certificate("db", &["db.example.test"], Some(postgres))
        .unwrap();
    let server = PostgresServer::start(
        PostgresOptions::new()
            .with_admin_password(Secret::new(PASSWORD))
            .with_tls(&cert.cert_file, &cert.key_file),
    )
    .await
    .unwrap();
    // TCP logins over TLS only.
    let hba_file = server
        .query_one("SELECT current_setting('hba_file')")
        .await
        .unwrap();
    let hba = std::fs::read_to_string(&hba_file).unwrap();
    let tcp = "host all all 127.0.0.1/32 scram-sha-256";
    assert!(hba.contains(tcp), "{hba}");
    let hostssl = format!("hostssl{}", &tcp[4..]);
    let replication = "hostssl replication all 127.0.0.1/32 scram-sha-256";
    std::fs::write(
        &hba_file,
        hba.replace(tcp, &format!("{hostssl}\n{replication}")),
    )
    .unwrap();
    server.query("SELECT pg_reload_conf()").await.unwrap();
    let (_store_dir, store) = common::local_store();
    let store: Arc<dyn SnapshotStore> = store;

    // Without TLS the hba refuses the login: the requirement is real.
    let e = strategy(&server, store.clone(), AdminTls::Off)
        .get_latest_txn_id()
        .await
        .expect_err("hostssl only");
    assert_eq!(tls_problem(&e), None, "a plain login refusal: {e}");
    assert!(e.to_string().contains("pg_hba.conf"), "{e}");

    // Verified TLS for the certificate's name (the connection goes to 127.0.0.1, which the
    // certificate does not name): the strategy's operations run.
    let s = strategy(
        &server,
        store.clone(),
        AdminTls::verify(ca.ca_file(), "db.example.test"),
    );
    s.enable_as_master(&EnableMasterOptions::new())
        .await
        .expect("enable as master over TLS");
    s.get_latest_txn_id().await.expect("position over TLS");
    let doc = s
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("admintls"))
        .await
        .expect("a snapshot over the hostssl-only admin login (pg_basebackup included)");
    assert!(doc.wal_position.is_some(), "{doc:?}");

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_connection_requiring_tls_to_a_server_without_tls_is_refused_as_not_offered() {
    let certs = short_tempdir("tg-certs-").unwrap();
    let ca = TestCa::generate(certs.path(), "good").unwrap();
    let server =
        PostgresServer::start(PostgresOptions::new().with_admin_password(Secret::new(PASSWORD)))
            .await
            .unwrap();
    let (_store_dir, store) = common::local_store();
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
