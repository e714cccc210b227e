//! Replication over verified TLS on MariaDB 10.11: the master's document carries its CA and
//! server name (never a key), the replication account requires TLS, the replica verifies the
//! master's certificate; a wrong CA, a wrong server name or a document without TLS is refused
//! with `Error::Tls` while the replica keeps serving (and replicating) its old data. Before
//! attaching, the replica asks the master for its GTID state over the same verified TLS (the
//! replication account is TLS-only), without falling back to the snapshot's position. A master
//! named its server's certificate and key refuses to snapshot when the server serves another
//! certificate or the key file is open to others.

mod common;

use std::sync::Arc;

use futures::future::BoxFuture;
use std::time::Duration;
use trove_guest_core::testkit::tls_checks::{self, CertificateCase, tls_problem};

use common::{MariaDb, options_for};
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::testkit::{CapturedLog, TestCa, TestCertificate, short_tempdir};
use trove_guest_core::{
    AttachRequest, ReplicationStrategy, ReplicationStrategyExt, ServerTls, SnapshotDocument,
    SnapshotRequest, SnapshotStore, TlsProblem,
};
use trove_guest_mysql::MysqlStrategy;
use trove_guest_mysql::config::REPLICATION_CA_FILE;
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

fn tls_strategy(
    server: &MariaDbServer,
    store: Arc<dyn SnapshotStore>,
    tls: ServerTls,
) -> Arc<MysqlStrategy> {
    Arc::new(MysqlStrategy::new(
        server.handle().with_tls(tls),
        store,
        options_for(server),
    ))
}

/// Installs (once per test binary) a global debug-level subscriber writing into a buffer (a
/// global one: per-thread subscribers miss events whose callsite interest another test thread
/// already cached).
fn capture_logs() -> CapturedLog {
    static CAPTURED: std::sync::OnceLock<CapturedLog> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = CapturedLog::default();
            let sink = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
            captured
        })
        .clone()
}

async fn refused_and_still_replicating(
    rs: &Arc<MysqlStrategy>,
    ms: &Arc<MysqlStrategy>,
    master: &MariaDbServer,
    replica: &MariaDbServer,
    doc: &SnapshotDocument,
    expected: TlsProblem,
    next_rows: std::ops::Range<u64>,
) {
    let e = rs
        .attach_replication_slave(doc, &AttachRequest::new())
        .await
        .expect_err("the replica must refuse");
    assert_eq!(tls_problem(&e), Some(expected), "{e}");
    MariaDb.insert_rows(master, next_rows).await.unwrap();
    rs.catch_up_with(&**ms, Duration::from_secs(60))
        .await
        .expect("the replica still replicates from its old configuration");
    assert_eq!(
        MariaDb.fingerprint(master).await.unwrap(),
        MariaDb.fingerprint(replica).await.unwrap()
    );
}

/// A CA generated for this run and the servers' certificates it issues.
struct Certs {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Certs {
    fn new() -> Self {
        let dir = short_tempdir("tg-certs-").unwrap();
        let ca = TestCa::generate(dir.path(), "good").unwrap();
        Certs { dir, ca }
    }

    /// A certificate for `localhost` and `127.0.0.1`.
    fn server(&self, stem: &str) -> TestCertificate {
        self.ca
            .server_certificate(stem, &["localhost", "127.0.0.1"], None)
            .unwrap()
    }

    /// Options of a server with id `id` serving `cert`.
    fn options(&self, id: u32, cert: &TestCertificate) -> MariaDbOptions {
        MariaDbOptions::new(id).with_tls(&cert.cert_file, &cert.key_file, self.ca.ca_file())
    }

    /// A master with rows, serving `cert`.
    async fn master(&self, cert: &TestCertificate) -> MariaDbServer {
        common::master_with_rows(self.options(1, cert)).await
    }

    /// An empty server with id 2, serving `cert`.
    async fn replica(&self, cert: &TestCertificate) -> MariaDbServer {
        MariaDbServer::start(self.options(2, cert)).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_replicate_over_verified_tls_and_refuse_certificates_that_do_not_verify() {
    let log = capture_logs();
    let c = Certs::new();
    let ca = &c.ca;
    let other_ca = TestCa::generate(c.dir.path(), "other").unwrap();
    let (mcert, rcert) = (c.server("master"), c.server("replica"));

    let (_store_dir, store) = common::store();
    let master = c.master(&mcert).await;
    let master_tls = ServerTls::new(ca.ca_file()).with_server_name("localhost");
    let ms = tls_strategy(&master, store.clone(), master_tls);
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
    let key_body = std::fs::read_to_string(&mcert.key_file).unwrap();
    let key_line = key_body.lines().nth(1).unwrap();
    assert!(!json.contains(key_line), "no key material in the document");
    // The replication account requires TLS.
    let user = &doc.replication.as_ref().unwrap().user;
    assert_eq!(
        master
            .query_one(&format!(
                "SELECT ssl_type FROM mysql.user WHERE User = '{user}'"
            ))
            .await
            .unwrap()
            .as_deref(),
        Some("ANY")
    );

    // The replica verifies the master and replicates over TLS.
    let replica = c.replica(&rcert).await;
    let rs = tls_strategy(&replica, store.clone(), ServerTls::new(ca.ca_file()));
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach over TLS");
    // The pre-attach GTID look-up logged in to the master over TLS (its account is TLS-only)
    // and did not fall back to the snapshot's position.
    let text = log.text();
    assert!(
        text.lines()
            .any(|l| l.contains("asked the master for its GTID position") && l.contains("tls=true")),
        "the replica asked the master over TLS: {text}"
    );
    assert!(
        !text.contains("cannot ask the master for its GTID position"),
        "no fallback to the snapshot's position: {text}"
    );
    MariaDb.insert_rows(&master, 200..260).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .expect("catch up");
    assert_eq!(
        MariaDb.fingerprint(&master).await.unwrap(),
        MariaDb.fingerprint(&replica).await.unwrap()
    );
    let ca_copy = replica.config_dir().join(REPLICATION_CA_FILE);
    assert_eq!(std::fs::read_to_string(&ca_copy).unwrap(), ca.ca_pem());
    // The replica's IO thread is connected with the account that requires TLS, verifying.
    let status = replica
        .query("SHOW SLAVE STATUS")
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("replica status");
    let flat: Vec<String> = status.into_iter().flatten().collect();
    assert!(
        flat.iter().any(|v| v == &ca_copy.display().to_string()),
        "Master_SSL_CA names the written CA: {flat:?}"
    );
    assert_eq!(
        master
            .query_one(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE User = '{user}' AND Command LIKE 'Binlog Dump%'"
            ))
            .await
            .unwrap()
            .as_deref(),
        Some("1"),
        "the master serves the replica with the TLS-only account"
    );

    // A wrong CA, a server name the certificate is not valid for, a document without TLS on a
    // replica that requires it: refused before anything changes; the replica keeps replicating.
    let tampered = tls_checks::tampered_documents(&doc, &other_ca.ca_pem());
    for ((bad, problem), rows) in tampered.iter().zip([260..280, 280..300, 300..320]) {
        refused_and_still_replicating(&rs, &ms, &master, &replica, bad, *problem, rows).await;
    }
    assert_eq!(std::fs::read_to_string(&ca_copy).unwrap(), ca.ca_pem());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_certificate_lacks_its_address_refuses_to_hand_out_tls_documents() {
    let c = Certs::new();
    let ca = &c.ca;
    // Valid for localhost only; replicas connect to 127.0.0.1.
    let mcert = ca
        .server_certificate("master", &["localhost"], None)
        .unwrap();
    let (_store_dir, store) = common::store();
    let master = c.master(&mcert).await;
    let ms = tls_strategy(
        &master,
        store,
        ServerTls::new(ca.ca_file()).with_server_name("localhost"),
    );
    let e = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("tls2"))
        .await
        .expect_err("the certificate is not valid for the advertised address");
    assert_eq!(tls_problem(&e), Some(TlsProblem::NameMismatch), "{e}");
}

/// Every file under `dir` (recursively, symlinks not followed) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file()
                && std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_removes_the_masters_ca_file_and_no_replica_file_keeps_the_replication_password() {
    let c = Certs::new();
    let ca = &c.ca;
    let (mcert, rcert) = (c.server("master"), c.server("replica"));
    let (_store_dir, store) = common::store();
    let master = c.master(&mcert).await;
    let ms = tls_strategy(
        &master,
        store.clone(),
        ServerTls::new(ca.ca_file()).with_server_name("localhost"),
    );
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("tls3"))
        .await
        .expect("snapshot");
    let password = doc
        .replication
        .as_ref()
        .and_then(|r| r.password.as_ref())
        .expect("the password in the document (no secret store here)")
        .0
        .expose()
        .to_owned();
    let replica = c.replica(&rcert).await;
    let rs = tls_strategy(&replica, store.clone(), ServerTls::new(ca.ca_file()));
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach over TLS");
    MariaDb.insert_rows(&master, 200..220).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .expect("catch up");
    let ca_copy = replica.config_dir().join(REPLICATION_CA_FILE);
    assert!(
        ca_copy.is_file(),
        "the replica verifies with the master's CA"
    );
    // While it replicates, MariaDB keeps the password in master.info (the search finds it).
    let holders = files_containing(&replica.data_dir(), password.as_bytes());
    assert!(
        holders
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "master.info")),
        "MariaDB keeps the replication password in master.info while replicating: {holders:?}"
    );

    rs.detach_replication_slave(&trove_guest_core::DetachOptions::new())
        .await
        .expect("detach");
    assert!(!ca_copy.exists(), "the master's CA outlived the detach");
    for dir in [replica.data_dir(), replica.config_dir()] {
        let left = files_containing(&dir, password.as_bytes());
        assert!(
            left.is_empty(),
            "files still holding the replication password after detach: {left:?}"
        );
    }
    // Detaching again (nothing to detach, no CA) succeeds.
    rs.detach_replication_slave(&trove_guest_core::DetachOptions::new())
        .await
        .expect("a second detach");
}

/// How many accounts of the replica id `id` the master has.
async fn accounts_of(master: &MariaDbServer, id: &str) -> String {
    master
        .query_one(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User LIKE '%{id}'"
        ))
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_named_its_certificate_and_key_refuses_to_snapshot_unless_it_serves_them() {
    let c = Certs::new();
    let (ca, certs) = (&c.ca, &c.dir);
    let mcert = c.server("master");
    // Issued by the same CA for the same names: it verifies, but the server does not serve it.
    let rotated = c.server("rotated");
    let (_store_dir, store) = common::store();
    let master = c.master(&mcert).await;
    let named = |cert: &std::path::Path, key: &std::path::Path| {
        tls_strategy(
            &master,
            store.clone(),
            ServerTls::new(ca.ca_file())
                .with_server_name("localhost")
                .with_certificate(cert, key),
        )
    };
    let named = |cert: &std::path::Path, key: &std::path::Path| {
        let s: Arc<dyn ReplicationStrategy> = named(cert, key);
        s
    };
    let made = || -> BoxFuture<'_, String> { Box::pin(accounts_of(&master, "tlscert")) };
    let case = CertificateCase {
        served: &mcert,
        rotated: &rotated,
        dir: certs.path(),
        key_owner: None,
    };
    let doc = tls_checks::server_certificate_checks(&named, &made, case).await;
    // Its document carries the CA and the name only, no path of the server's files.
    let tls = doc.replication.as_ref().unwrap().tls.clone().expect("tls");
    assert_eq!(tls.ca_certificate, ca.ca_pem());
    let json = serde_json::to_string(&doc).unwrap();
    assert!(
        !json.contains("master.pem"),
        "no path of the server's files: {json}"
    );
}
