//! Switchover on live MariaDB 10.11 with TLS on every server: the new master's replica
//! contexts carry its CA and server name (never a key), the accounts it makes require TLS, and
//! the re-pointed servers replicate with `MASTER_SSL=1` and the certificate verified. A
//! context whose CA or server name does not verify, or one without TLS given to a server that
//! requires it, is refused with `Error::Tls` while the server keeps replicating from its
//! current master (whether the context comes from that master or from another server).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MariaDb, options_for};
use mysql_async::prelude::Queryable;
use trove_guest_core::failover::{
    Member, ReplicaContext, ReplicaContextOptions, RepointOptions, SwitchoverOptions, switchover,
};
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::testkit::{TestCa, short_tempdir};
use trove_guest_core::{
    AttachRequest, DetachOptions, EnableMasterOptions, Error, ReplicationStrategy,
    ReplicationStrategyExt, ServerTls, SnapshotRequest, TlsProblem,
};
use trove_guest_mysql::MysqlStrategy;
use trove_guest_mysql::config::REPLICATION_CA_FILE;
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const WAIT: Duration = Duration::from_secs(60);
const IDS: [&str; 3] = ["m1", "r2", "r3"];

/// `SHOW SLAVE STATUS` of `server`, by column name (`None` when it is no replica).
async fn slave_status(server: &MariaDbServer) -> Option<mysql_async::Row> {
    let opts = mysql_async::OptsBuilder::default()
        .socket(Some(server.socket().to_string_lossy().into_owned()))
        .user(Some("root"))
        .prefer_socket(false);
    let mut conn = tokio::time::timeout(WAIT, mysql_async::Conn::new(opts))
        .await
        .expect("connect in time")
        .expect("connect");
    let row: Option<mysql_async::Row> = conn.query_first("SHOW SLAVE STATUS").await.unwrap();
    let _ = conn.disconnect().await;
    row
}

fn column(row: &mysql_async::Row, name: &str) -> String {
    row.get_opt::<Option<String>, _>(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .unwrap_or_else(|e| panic!("column {name}: {e}"))
        .unwrap_or_default()
}

/// The replica follows `master` with TLS on and the master's certificate verified against
/// the CA it wrote next to its configuration.
async fn follows_over_verified_tls(replica: &MariaDbServer, master: &MariaDbServer) {
    let row = slave_status(replica).await.expect("a replica");
    assert_eq!(column(&row, "Master_Port"), master.port().to_string());
    assert_eq!(column(&row, "Master_SSL_Allowed"), "Yes");
    assert_eq!(column(&row, "Master_SSL_Verify_Server_Cert"), "Yes");
    assert_eq!(
        column(&row, "Master_SSL_CA_File"),
        replica
            .config_dir()
            .join(REPLICATION_CA_FILE)
            .display()
            .to_string()
    );
    assert_eq!(column(&row, "Slave_IO_Running"), "Yes");
    assert_eq!(column(&row, "Slave_SQL_Running"), "Yes");
}

fn tls_problem(e: &Error) -> Option<TlsProblem> {
    match e {
        Error::Tls { problem, .. } => Some(*problem),
        _ => None,
    }
}

async fn ssl_type(server: &MariaDbServer, user: &str) -> Option<String> {
    server
        .query_one(&format!(
            "SELECT ssl_type FROM mysql.user WHERE User = '{user}'"
        ))
        .await
        .unwrap()
}

struct Cluster {
    _certs: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
    ca: TestCa,
    other_ca: TestCa,
    servers: Vec<MariaDbServer>,
    strategies: Vec<Arc<MysqlStrategy>>,
}

impl Cluster {
    fn member(&self, i: usize) -> Member<'_> {
        Member::new(IDS[i], &*self.strategies[i])
    }
}

/// Three servers serving TLS with certificates of one CA (valid for `localhost` and
/// `127.0.0.1`); server 1 the master (rows 0..100), 2 and 3 its replicas from snapshots over
/// verified TLS. Every server binary-logs what it applies, so any can be promoted.
async fn tls_cluster() -> Cluster {
    let certs = short_tempdir("tg-certs-").unwrap();
    let ca = TestCa::generate(certs.path(), "good").unwrap();
    let other_ca = TestCa::generate(certs.path(), "other").unwrap();
    let names = ["localhost", "127.0.0.1"];
    let opts = |id: u32| {
        let cert = ca
            .server_certificate(&format!("server{id}"), &names, None)
            .unwrap();
        MariaDbOptions::new(id)
            .with_log_bin(true)
            .with_setting("log_slave_updates", "ON")
            .with_tls(&cert.cert_file, &cert.key_file, ca.ca_file())
    };
    let (a, b, c) = tokio::join!(
        MariaDbServer::start(opts(1)),
        MariaDbServer::start(opts(2)),
        MariaDbServer::start(opts(3))
    );
    let servers = vec![a.unwrap(), b.unwrap(), c.unwrap()];
    let (store_dir, store) = common::store();
    let strategies: Vec<_> = servers
        .iter()
        .map(|s| {
            Arc::new(MysqlStrategy::new(
                s.handle()
                    .with_tls(ServerTls::new(ca.ca_file()).with_server_name("localhost")),
                store.clone(),
                options_for(s),
            ))
        })
        .collect();
    MariaDb.create_schema(&servers[0]).await.unwrap();
    MariaDb.insert_rows(&servers[0], 0..100).await.unwrap();
    strategies[0]
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    for i in 1..3 {
        let doc = strategies[0]
            .get_replication_snapshot(&SnapshotRequest::new().with_replica_id(format!("snap{i}")))
            .await
            .unwrap();
        strategies[i]
            .attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
            .await
            .unwrap();
        follows_over_verified_tls(&servers[i], &servers[0]).await;
    }
    Cluster {
        _certs: certs,
        _store_dir: store_dir,
        ca,
        other_ca,
        servers,
        strategies,
    }
}

/// `ctx` is refused with `expected` by server `i`, which keeps replicating from `master`.
async fn refused_and_still_following(
    c: &Cluster,
    i: usize,
    master: usize,
    ctx: &ReplicaContext,
    expected: TlsProblem,
    next_rows: std::ops::Range<u64>,
) {
    let e = c.strategies[i]
        .attach_replica(ctx, &RepointOptions::new().with_timeout(WAIT))
        .await
        .expect_err("the re-point must be refused");
    assert_eq!(tls_problem(&e), Some(expected), "{e}");
    follows_over_verified_tls(&c.servers[i], &c.servers[master]).await;
    MariaDb
        .insert_rows(&c.servers[master], next_rows)
        .await
        .unwrap();
    c.strategies[i]
        .catch_up_with(&*c.strategies[master], WAIT)
        .await
        .expect("the replica still replicates from its master");
    assert_eq!(
        MariaDb.fingerprint(&c.servers[master]).await.unwrap(),
        MariaDb.fingerprint(&c.servers[i]).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_repoints_replicas_over_verified_tls_and_refuses_contexts_that_do_not_verify() {
    let c = tls_cluster().await;

    let report = switchover(
        c.member(0),
        c.member(1),
        &[c.member(2)],
        &SwitchoverOptions::new().with_repoint(RepointOptions::new().with_timeout(WAIT)),
    )
    .await
    .expect("switchover");
    eprintln!(
        "switchover over TLS: writes unavailable {:?}, total {:?}",
        report.write_unavailable, report.elapsed
    );
    assert_eq!(report.new_master, "r2");
    assert!(
        report.not_repointed.is_empty(),
        "{:?}",
        report.not_repointed
    );

    // Both re-pointed servers follow r2 over TLS, verifying its certificate, with accounts
    // that require TLS.
    for i in [0, 2] {
        follows_over_verified_tls(&c.servers[i], &c.servers[1]).await;
        let user = format!("{}{}", common::PREFIX, IDS[i]);
        assert_eq!(
            ssl_type(&c.servers[1], &user).await.as_deref(),
            Some("ANY"),
            "{user} requires TLS"
        );
        let ca_copy = c.servers[i].config_dir().join(REPLICATION_CA_FILE);
        assert_eq!(std::fs::read_to_string(&ca_copy).unwrap(), c.ca.ca_pem());
    }
    // Rows written on the new master arrive on the re-pointed servers.
    MariaDb.insert_rows(&c.servers[1], 200..260).await.unwrap();
    for i in [0, 2] {
        c.strategies[i]
            .catch_up_with(&*c.strategies[1], WAIT)
            .await
            .expect("catch up with the new master");
        assert_eq!(
            MariaDb.fingerprint(&c.servers[1]).await.unwrap(),
            MariaDb.fingerprint(&c.servers[i]).await.unwrap()
        );
    }

    // The context: the CA and the name, never a key.
    let ctx = c.strategies[1]
        .get_replica_context(&ReplicaContextOptions::new("r3-probe"))
        .await
        .unwrap();
    let tls = ctx.replication.tls.clone().expect("a TLS section");
    assert_eq!(tls.ca_certificate, c.ca.ca_pem());
    assert_eq!(tls.server_name, "localhost");
    let json = serde_json::to_string(&ctx).unwrap();
    assert!(!json.contains("PRIVATE KEY"), "no key in the context");
    assert_eq!(
        ssl_type(&c.servers[1], &ctx.replication.user)
            .await
            .as_deref(),
        Some("ANY")
    );

    // A wrong CA, a wrong server name, no TLS at all: refused before anything changes.
    let mut wrong_ca = ctx.clone();
    wrong_ca.replication.tls.as_mut().unwrap().ca_certificate = c.other_ca.ca_pem();
    refused_and_still_following(
        &c,
        2,
        1,
        &wrong_ca,
        TlsProblem::UntrustedCertificate,
        260..280,
    )
    .await;
    // The same from another source: r3 keeps following its old master r2.
    c.strategies[0]
        .detach_replication_slave(&DetachOptions::new().with_for_failover(true))
        .await
        .expect("m1 leaves r2");
    let mut elsewhere = c.strategies[0]
        .get_replica_context(&ReplicaContextOptions::new("r3-elsewhere"))
        .await
        .expect("m1 serves contexts");
    assert_eq!(elsewhere.master.port, c.servers[0].port());
    elsewhere.replication.tls.as_mut().unwrap().ca_certificate = c.other_ca.ca_pem();
    refused_and_still_following(
        &c,
        2,
        1,
        &elsewhere,
        TlsProblem::UntrustedCertificate,
        280..290,
    )
    .await;
    let mut wrong_name = ctx.clone();
    wrong_name.replication.tls.as_mut().unwrap().server_name = "db.elsewhere.invalid".into();
    refused_and_still_following(&c, 2, 1, &wrong_name, TlsProblem::NameMismatch, 290..300).await;
    let mut plaintext = ctx.clone();
    plaintext.replication.tls = None;
    refused_and_still_following(&c, 2, 1, &plaintext, TlsProblem::Required, 300..320).await;
    assert_eq!(
        std::fs::read_to_string(c.servers[2].config_dir().join(REPLICATION_CA_FILE)).unwrap(),
        c.ca.ca_pem(),
        "the refused contexts left the CA file alone"
    );
}
