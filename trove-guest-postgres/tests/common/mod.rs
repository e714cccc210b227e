//! The PostgreSQL backend of the conformance suite, on real PostgreSQL 15 test servers.
#![allow(dead_code, unreachable_pub)]

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use trove_guest_core::strategy::Capabilities;
use trove_guest_core::testkit::conformance::{ConformanceBackend, Fingerprint, TableFingerprint};
use trove_guest_core::{
    DetachedReplica, EnableMasterOptions, LocalSnapshotStore, ReplicationStrategy,
    ReplicationStrategyExt, Result, SnapshotDocument, SnapshotRequest, SnapshotStore,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions, objects};

pub const TABLES: [&str; 2] = ["accounts", "events"];

pub struct Pg;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A strategy on `server` (kept concrete for the PostgreSQL-only calls).
pub fn strategy(server: &PostgresServer, store: Arc<dyn SnapshotStore>) -> Arc<PostgresStrategy> {
    Arc::new(PostgresStrategy::new(
        server.handle(),
        store,
        PostgresStrategyOptions::new().with_wal_keep_size_mb(128),
    ))
}

/// A snapshot store in a fresh temporary directory (removed when the `TempDir` is dropped).
pub fn local_store() -> (tempfile::TempDir, Arc<LocalSnapshotStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    (dir, store)
}

/// Makes `master` a replication master and takes a snapshot for the replica `replica_id`.
pub async fn master_snapshot(master: &PostgresStrategy, replica_id: &str) -> SnapshotDocument {
    master
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    master
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id(replica_id))
        .await
        .unwrap()
}

/// Waits (up to a minute) until `replica` has applied everything `master` has, then checks that
/// their data is equal.
pub async fn assert_caught_up(
    replica: &PostgresStrategy,
    master: &PostgresStrategy,
    replica_server: &PostgresServer,
    master_server: &PostgresServer,
) {
    replica
        .catch_up_with(master, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        fingerprint(replica_server).await.unwrap(),
        fingerprint(master_server).await.unwrap()
    );
}

pub async fn create_schema(server: &PostgresServer) -> Result<()> {
    server
        .query(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
             CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL);",
        )
        .await
        .map(|_| ())
}

pub async fn insert_rows(server: &PostgresServer, ids: Range<u64>) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let (a, b) = (ids.start, ids.end - 1);
    server
        .query(&format!(
            "BEGIN;
             INSERT INTO accounts SELECT g, 'owner-' || md5(g::text), g * 7 FROM generate_series({a}, {b}) g;
             INSERT INTO events SELECT g, 'k' || (g % 5), jsonb_build_object('id', g, 'h', md5((g * 3)::text)) FROM generate_series({a}, {b}) g;
             COMMIT;"
        ))
        .await
        .map(|_| ())
}

pub async fn fingerprint(server: &PostgresServer) -> Result<Fingerprint> {
    let mut fp = Fingerprint::default();
    for t in TABLES {
        let row = server
            .query(&format!(
                "SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY id)), '') FROM {t} x"
            ))
            .await?;
        let row = &row[0];
        fp.0.insert(
            t.to_owned(),
            TableFingerprint {
                rows: row[0].as_deref().unwrap_or("0").parse().expect("count"),
                checksum: row[1].clone().unwrap_or_default(),
            },
        );
    }
    Ok(fp)
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub async fn replica_traces(
    master: &PostgresServer,
    replica: &DetachedReplica,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(slot) = &replica.slot_name {
        let n = master
            .query_one(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = {}",
                lit(slot)
            ))
            .await?;
        if n != "0" {
            out.push(format!("slot {slot}"));
        }
    }
    if let Some(user) = &replica.replication_user {
        let n = master
            .query_one(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = {}",
                lit(user)
            ))
            .await?;
        if n != "0" {
            out.push(format!("role {user}"));
        }
    }
    Ok(out)
}

pub async fn replication_leftovers(server: &PostgresServer) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in server
        .query(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'trove%' ORDER BY 1",
        )
        .await?
    {
        out.push(format!("slot {}", r[0].clone().unwrap_or_default()));
    }
    for r in server
        .query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'trove%' ORDER BY 1")
        .await?
    {
        out.push(format!("role {}", r[0].clone().unwrap_or_default()));
    }
    let hba = server.query_one("SHOW hba_file").await?;
    let text = std::fs::read_to_string(&hba).expect("read hba file");
    if text.contains(objects::HBA_BEGIN) || text.contains("trove_replication") {
        out.push("pg_hba replication block".into());
    }
    let handle = server.handle();
    for f in [
        objects::MASTER_FILE,
        objects::STANDBY_FILE,
        objects::PASSFILE,
    ] {
        if handle.config_dir.join(f).exists() {
            out.push(format!("override file {f}"));
        }
    }
    if server.query_one("SHOW wal_log_hints").await? != "off" {
        out.push("wal_log_hints still on".into());
    }
    if server.query_one("SHOW wal_keep_size").await? != "0" {
        out.push("wal_keep_size still set".into());
    }
    Ok(out)
}

#[async_trait]
impl ConformanceBackend for Pg {
    type Server = PostgresServer;

    fn capabilities(&self) -> Capabilities {
        // LSN positioning through the slot is the only kind: the contract's default, Gtid.
        Capabilities::none()
            .with_gtid_positioning(true)
            .with_slots(true)
            .with_rewind(true)
            .with_staging(true)
    }

    async fn start_server(&self, server_id: u32) -> Result<PostgresServer> {
        init_tracing();
        PostgresServer::start(PostgresOptions::new().with_server_id(server_id)).await
    }

    fn strategy(
        &self,
        server: &PostgresServer,
        store: Arc<dyn SnapshotStore>,
    ) -> Arc<dyn ReplicationStrategy> {
        strategy(server, store)
    }

    async fn create_schema(&self, server: &PostgresServer) -> Result<()> {
        create_schema(server).await
    }

    async fn insert_rows(&self, server: &PostgresServer, ids: Range<u64>) -> Result<()> {
        insert_rows(server, ids).await
    }

    async fn fingerprint(&self, server: &PostgresServer) -> Result<Fingerprint> {
        fingerprint(server).await
    }

    async fn replica_traces(
        &self,
        master: &PostgresServer,
        replica: &DetachedReplica,
    ) -> Result<Vec<String>> {
        replica_traces(master, replica).await
    }

    async fn replication_leftovers(&self, server: &PostgresServer) -> Result<Vec<String>> {
        replication_leftovers(server).await
    }
}
