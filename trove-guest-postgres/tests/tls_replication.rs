//! Streaming replication over verified TLS on PostgreSQL 15: the primary's document carries its
//! CA and server name (never a key), its hba admits replication logins over `hostssl` only, the
//! standby connects with `sslmode=verify-full`; a wrong CA, a wrong server name or a document
//! without TLS is refused with `Error::Tls` while the standby keeps serving its old data; so is
//! a replica context (switchover, failover) whose CA does not verify or that has no TLS. A
//! primary named its server's certificate and key refuses to snapshot when the server serves
//! another certificate or the key file is open to others.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use futures::future::BoxFuture;
use trove_guest_core::testkit::tls_checks::{self, CertificateCase, tls_problem};

use trove_guest_core::failover::{ReplicaContextOptions, RepointOptions};
use trove_guest_core::testkit::{TestCa, TestCertificate, short_tempdir};
use trove_guest_core::{
    AttachRequest, EnableMasterOptions, OsUser, ReplicationStrategy, ServerTls, SnapshotDocument,
    SnapshotRequest, SnapshotStore, TlsProblem,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

fn tls_strategy(
    server: &PostgresServer,
    store: Arc<dyn SnapshotStore>,
    tls: ServerTls,
) -> Arc<PostgresStrategy> {
    Arc::new(PostgresStrategy::new(
        server.handle().with_tls(tls),
        store,
        PostgresStrategyOptions::new().with_wal_keep_size_mb(128),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn refused_and_still_streaming(
    rs: &Arc<PostgresStrategy>,
    ms: &Arc<PostgresStrategy>,
    master: &PostgresServer,
    replica: &PostgresServer,
    doc: &SnapshotDocument,
    expected: TlsProblem,
    next_rows: std::ops::Range<u64>,
) {
    let e = rs
        .attach_replication_slave(doc, &AttachRequest::new())
        .await
        .expect_err("the standby must refuse");
    assert_eq!(tls_problem(&e), Some(expected), "{e}");
    common::insert_rows(master, next_rows).await.unwrap();
    common::assert_caught_up(rs, ms, replica, master).await;
    assert_eq!(
        streaming_over_tls(master).await,
        "true",
        "still streaming over TLS"
    );
}

/// `true` when the primary has exactly one WAL sender and its connection uses TLS.
async fn streaming_over_tls(master: &PostgresServer) -> String {
    master
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false)::text || ':' || count(*)::text \
             FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
        )
        .await
        .unwrap()
        .strip_suffix(":1")
        .unwrap_or("no single WAL sender")
        .to_owned()
}

/// A directory the `postgres` account can read, with a CA generated for this run.
struct Certs {
    dir: tempfile::TempDir,
    ca: TestCa,
    postgres: OsUser,
}

impl Certs {
    fn new() -> Self {
        common::init_tracing();
        let postgres = OsUser::lookup("postgres").unwrap();
        let dir = short_tempdir("tg-certs-").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ca = TestCa::generate(dir.path(), "good").unwrap();
        Certs { dir, ca, postgres }
    }

    /// A certificate for `localhost` and `127.0.0.1` whose key belongs to `postgres`.
    fn server(&self, stem: &str) -> TestCertificate {
        self.ca
            .server_certificate(stem, &["localhost", "127.0.0.1"], Some(self.postgres))
            .unwrap()
    }

    /// A server serving `cert`, with the test schema and `rows` rows.
    async fn start(
        &self,
        id: u32,
        cert: &TestCertificate,
        rows: std::ops::Range<u64>,
    ) -> PostgresServer {
        let server = PostgresServer::start(
            PostgresOptions::new()
                .with_server_id(id)
                .with_tls(&cert.cert_file, &cert.key_file),
        )
        .await
        .unwrap();
        if !rows.is_empty() {
            common::create_schema(&server).await.unwrap();
            common::insert_rows(&server, rows).await.unwrap();
        }
        server
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_stream_over_verified_tls_and_refuse_certificates_that_do_not_verify() {
    let c = Certs::new();
    let ca = &c.ca;
    let other_ca = TestCa::generate(c.dir.path(), "other").unwrap();
    let (mcert, rcert) = (c.server("master"), c.server("replica"));
    let (_store_dir, store) = common::local_store();
    let master = c.start(1, &mcert, 0..100).await;
    let ms = tls_strategy(
        &master,
        store.clone(),
        ServerTls::new(ca.ca_file()).with_server_name("localhost"),
    );
    ms.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let hba = master
        .query_one("SELECT current_setting('hba_file')")
        .await
        .unwrap();
    let hba = std::fs::read_to_string(hba).unwrap();
    assert!(hba.contains("hostssl replication +"), "{hba}");
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("tls1"))
        .await
        .expect("snapshot");

    // The document: the CA and the name, never a key.
    let tls = doc
        .replication
        .as_ref()
        .unwrap()
        .tls
        .clone()
        .expect("tls section");
    assert_eq!(tls.ca_certificate, ca.ca_pem());
    assert_eq!(tls.server_name, "localhost");
    let json = serde_json::to_string(&doc).unwrap();
    assert!(!json.contains("PRIVATE KEY"), "no key in the document");

    let replica = c.start(2, &rcert, 0..0).await;
    let rs = tls_strategy(&replica, store.clone(), ServerTls::new(ca.ca_file()));
    if let Err(e) = rs
        .attach_replication_slave(
            &doc,
            &AttachRequest::new().with_timeout(std::time::Duration::from_secs(60)),
        )
        .await
    {
        panic!("attach over TLS: {e}\nreplica log:\n{}", replica.log_text());
    }
    common::insert_rows(&master, 100..150).await.unwrap();
    common::assert_caught_up(&rs, &ms, &replica, &master).await;
    assert_eq!(streaming_over_tls(&master).await, "true");
    let conninfo = replica
        .query_one("SELECT current_setting('primary_conninfo')")
        .await
        .unwrap();
    assert!(
        conninfo.contains("sslmode='verify-full'") && conninfo.contains("sslrootcert='"),
        "{conninfo}"
    );

    // A wrong CA, a server name the certificate is not valid for, a document without TLS on a
    // standby that requires it: refused before anything changes; the standby keeps streaming.
    let tampered = tls_checks::tampered_documents(&doc, &other_ca.ca_pem());
    for ((bad, problem), rows) in tampered.iter().zip([150..170, 170..190, 190..210]) {
        refused_and_still_streaming(&rs, &ms, &master, &replica, bad, *problem, rows).await;
    }

    // Re-pointing (switchover, failover): the context carries the CA and the name; one that
    // does not verify, or has no TLS, is refused before anything changes.
    let ctx = ms
        .get_replica_context(&ReplicaContextOptions::new("tls-ctx"))
        .await
        .unwrap();
    assert_eq!(
        ctx.replication
            .tls
            .as_ref()
            .map(|t| t.ca_certificate.clone()),
        Some(ca.ca_pem())
    );
    let mut wrong_ca = ctx.clone();
    wrong_ca.replication.tls.as_mut().unwrap().ca_certificate = other_ca.ca_pem();
    let mut plaintext = ctx.clone();
    plaintext.replication.tls = None;
    for (ctx, expected, rows) in [
        (wrong_ca, TlsProblem::UntrustedCertificate, 210..220),
        (plaintext, TlsProblem::Required, 220..230),
    ] {
        let e = rs
            .attach_replica(&ctx, &RepointOptions::new())
            .await
            .expect_err("the standby must refuse the context");
        assert_eq!(tls_problem(&e), Some(expected), "{e}");
        common::insert_rows(&master, rows).await.unwrap();
        common::assert_caught_up(&rs, &ms, &replica, &master).await;
        assert_eq!(streaming_over_tls(&master).await, "true");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_removes_the_primarys_ca_file_from_the_standby() {
    let c = Certs::new();
    let ca = &c.ca;
    let (mcert, rcert) = (c.server("master"), c.server("replica"));
    let (_store_dir, store) = common::local_store();
    let master = c.start(1, &mcert, 0..50).await;
    let ms = tls_strategy(
        &master,
        store.clone(),
        ServerTls::new(ca.ca_file()).with_server_name("localhost"),
    );
    ms.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("tls3"))
        .await
        .expect("snapshot");
    let replica = c.start(2, &rcert, 0..0).await;
    let rs = tls_strategy(&replica, store.clone(), ServerTls::new(ca.ca_file()));
    if let Err(e) = rs
        .attach_replication_slave(
            &doc,
            &AttachRequest::new().with_timeout(std::time::Duration::from_secs(60)),
        )
        .await
    {
        panic!("attach over TLS: {e}\nreplica log:\n{}", replica.log_text());
    }
    common::assert_caught_up(&rs, &ms, &replica, &master).await;
    // The CA file the standby verifies with: the one `sslrootcert` names.
    let conninfo = replica
        .query_one("SELECT current_setting('primary_conninfo')")
        .await
        .unwrap();
    let ca_copy = conninfo
        .split("sslrootcert='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no sslrootcert in {conninfo}"));
    assert_eq!(std::fs::read_to_string(&ca_copy).unwrap(), ca.ca_pem());

    rs.detach_replication_slave(&trove_guest_core::DetachOptions::new())
        .await
        .expect("detach");
    assert!(!ca_copy.exists(), "the primary's CA outlived the detach");
    assert_eq!(
        replica
            .query_one("SELECT pg_is_in_recovery()::text")
            .await
            .unwrap(),
        "false"
    );
}

/// How many roles and slots of the replica id `id` the primary has (`roles:slots`).
async fn roles_and_slots_of(master: &PostgresServer, id: &str) -> String {
    master
        .query_one(&format!(
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE '%{id}%')::text || ':' || \
             (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%{id}%')::text"
        ))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_named_its_certificate_and_key_refuses_to_snapshot_unless_it_serves_them() {
    let c = Certs::new();
    let (ca, postgres, certs) = (&c.ca, c.postgres, &c.dir);
    // The server's key belongs to its account (PostgreSQL insists), not to the agent's: the
    // handle's os_user is accepted as the key's owner.
    let (mcert, rotated) = (c.server("master"), c.server("rotated"));
    let (_store_dir, store) = common::local_store();
    let master = c.start(1, &mcert, 0..50).await;
    assert_eq!(master.handle().os_user, Some(postgres));
    let named = |cert: &std::path::Path, key: &std::path::Path| {
        tls_strategy(
            &master,
            store.clone(),
            ServerTls::new(ca.ca_file())
                .with_server_name("localhost")
                .with_certificate(cert, key),
        )
    };
    named(&mcert.cert_file, &mcert.key_file)
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let named = |cert: &std::path::Path, key: &std::path::Path| {
        let s: Arc<dyn ReplicationStrategy> = named(cert, key);
        s
    };
    let made = || -> BoxFuture<'_, String> { Box::pin(roles_and_slots_of(&master, "tlscert")) };
    let case = CertificateCase {
        served: &mcert,
        rotated: &rotated,
        dir: certs.path(),
        key_owner: Some(postgres),
    };
    let doc = tls_checks::server_certificate_checks(&named, &made, case).await;
    let tls = doc.replication.as_ref().unwrap().tls.clone().expect("tls");
    assert_eq!(tls.ca_certificate, ca.ca_pem());
}
