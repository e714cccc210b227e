//! The MariaDB conformance backend shared by the live tests.

#![allow(dead_code, unreachable_pub)]

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use trove_guest_core::testkit::conformance::{ConformanceBackend, Fingerprint, TableFingerprint};
use trove_guest_core::{
    Capabilities, DetachedReplica, LocalSnapshotStore, ReplicationStrategy, Result, SnapshotStore,
};
use trove_guest_mysql::config::ALL_FILES;
use trove_guest_mysql::sql::{escape_like, quote_string};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};
use trove_guest_mysql::{MysqlOptions, MysqlStrategy};

pub const TABLES: [&str; 2] = ["t1", "t2"];
pub const PREFIX: &str = "trove_repl_";

/// Real MariaDB 10.11 servers from this crate's testkit, with `MysqlStrategy`.
pub struct MariaDb;

pub fn options_for(server: &MariaDbServer) -> MysqlOptions {
    MysqlOptions::new()
        .with_binlog_dir(server.binlog_dir())
        .with_relay_log_dir(server.relay_log_dir())
        .with_server_config(server.config_file())
}

pub fn strategy_for(server: &MariaDbServer, store: Arc<dyn SnapshotStore>) -> Arc<MysqlStrategy> {
    Arc::new(MysqlStrategy::new(
        server.handle(),
        store,
        options_for(server),
    ))
}

/// A snapshot store in a fresh temporary directory (removed when the `TempDir` is dropped).
pub fn store() -> (tempfile::TempDir, Arc<dyn SnapshotStore>) {
    let dir = tempfile::Builder::new()
        .prefix("tg-store-")
        .tempdir()
        .unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    (dir, Arc::new(store))
}

/// A started server with the conformance schema and rows `0..200`.
pub async fn master_with_rows(opts: MariaDbOptions) -> MariaDbServer {
    let master = MariaDbServer::start(opts).await.expect("start master");
    MariaDb.create_schema(&master).await.unwrap();
    MariaDb.insert_rows(&master, 0..200).await.unwrap();
    master
}

fn row_values(range: Range<u64>, f: impl Fn(u64) -> String) -> String {
    range.map(f).collect::<Vec<_>>().join(",")
}

#[async_trait]
impl ConformanceBackend for MariaDb {
    type Server = MariaDbServer;

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_gtid_positioning(true)
            .with_file_positioning(true)
            .with_staging(true)
    }

    async fn start_server(&self, server_id: u32) -> Result<MariaDbServer> {
        MariaDbServer::start(MariaDbOptions::new(server_id)).await
    }

    fn strategy(
        &self,
        server: &MariaDbServer,
        store: Arc<dyn SnapshotStore>,
    ) -> Arc<dyn ReplicationStrategy> {
        strategy_for(server, store)
    }

    async fn create_schema(&self, server: &MariaDbServer) -> Result<()> {
        server
            .execute(
                "CREATE DATABASE IF NOT EXISTS conf; \
                 CREATE TABLE IF NOT EXISTS conf.t1 (id BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL, \
                 n BIGINT NOT NULL) ENGINE=InnoDB; \
                 CREATE TABLE IF NOT EXISTS conf.t2 (id BIGINT PRIMARY KEY, payload TEXT NOT NULL) \
                 ENGINE=InnoDB",
            )
            .await
    }

    async fn insert_rows(&self, server: &MariaDbServer, ids: Range<u64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let t1 = row_values(ids.clone(), |i| {
            format!("({i}, 'row-{i}', {})", i * 7 % 1000)
        });
        let t2 = row_values(ids, |i| format!("({i}, REPEAT('p{i}', {}))", 1 + i % 20));
        server
            .execute(&format!(
                "START TRANSACTION; INSERT INTO conf.t1 VALUES {t1}; \
                 INSERT INTO conf.t2 VALUES {t2}; COMMIT"
            ))
            .await
    }

    async fn fingerprint(&self, server: &MariaDbServer) -> Result<Fingerprint> {
        let mut fp = Fingerprint::default();
        for t in TABLES {
            let rows = server
                .query_one(&format!("SELECT COUNT(*) FROM conf.{t}"))
                .await?
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            let sum = server.query(&format!("CHECKSUM TABLE conf.{t}")).await?;
            let checksum = sum
                .first()
                .and_then(|r| r.get(1).cloned().flatten())
                .unwrap_or_default();
            fp.0.insert(t.to_owned(), TableFingerprint { rows, checksum });
        }
        Ok(fp)
    }

    async fn replica_traces(
        &self,
        master: &MariaDbServer,
        replica: &DetachedReplica,
    ) -> Result<Vec<String>> {
        let Some(user) = &replica.replication_user else {
            return Ok(vec![]);
        };
        let rows = master
            .query(&format!(
                "SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User = {}",
                quote_string(user)
            ))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .map(|a| format!("account {a}"))
            .collect())
    }

    async fn replication_leftovers(&self, server: &MariaDbServer) -> Result<Vec<String>> {
        let mut left = Vec::new();
        if server
            .query_one("SELECT @@GLOBAL.log_bin")
            .await?
            .as_deref()
            == Some("1")
        {
            left.push("log_bin is ON".to_owned());
        }
        for r in server
            .query(&format!(
                "SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User LIKE {}",
                quote_string(&format!("{}%", escape_like(PREFIX)))
            ))
            .await?
        {
            if let Some(a) = r.into_iter().next().flatten() {
                left.push(format!("account {a}"));
            }
        }
        for f in ALL_FILES {
            if server.config_dir().join(f).exists() {
                left.push(format!("override file {f}"));
            }
        }
        if let Ok(entries) = std::fs::read_dir(server.binlog_dir()) {
            for e in entries.flatten() {
                left.push(format!("binlog file {}", e.file_name().to_string_lossy()));
            }
        }
        Ok(left)
    }
}

/// The same servers run in containers of the local engine ([`ContainerOptions::from_env`]):
/// `MysqlStrategy` controls them over the Docker API and runs mariabackup and mbstream by
/// `exec` in the server's container.
pub struct MariaDbInContainer;

/// Starts a containerised test server with `opts`.
pub async fn start_in_container(opts: MariaDbOptions) -> Result<MariaDbServer> {
    let c = trove_guest_mysql::testkit::ContainerOptions::from_env().await?;
    MariaDbServer::start(opts.in_container(c)).await
}

#[async_trait]
impl ConformanceBackend for MariaDbInContainer {
    type Server = MariaDbServer;

    fn capabilities(&self) -> Capabilities {
        MariaDb.capabilities()
    }

    async fn start_server(&self, server_id: u32) -> Result<MariaDbServer> {
        start_in_container(MariaDbOptions::new(server_id)).await
    }

    fn strategy(
        &self,
        server: &MariaDbServer,
        store: Arc<dyn SnapshotStore>,
    ) -> Arc<dyn ReplicationStrategy> {
        strategy_for(server, store)
    }

    async fn create_schema(&self, server: &MariaDbServer) -> Result<()> {
        MariaDb.create_schema(server).await
    }

    async fn insert_rows(&self, server: &MariaDbServer, ids: Range<u64>) -> Result<()> {
        MariaDb.insert_rows(server, ids).await
    }

    async fn fingerprint(&self, server: &MariaDbServer) -> Result<Fingerprint> {
        MariaDb.fingerprint(server).await
    }

    async fn replica_traces(
        &self,
        master: &MariaDbServer,
        replica: &DetachedReplica,
    ) -> Result<Vec<String>> {
        MariaDb.replica_traces(master, replica).await
    }

    async fn replication_leftovers(&self, server: &MariaDbServer) -> Result<Vec<String>> {
        MariaDb.replication_leftovers(server).await
    }
}

/// Bring your own servers: server id `N` is the [`ExistingServer`] described for it (by
/// `TROVE_GUEST_BYO_N_*` variables); an id without one is an error naming the variable.
pub struct MariaDbByo {
    pub servers: std::collections::BTreeMap<u32, trove_guest_mysql::testkit::ExistingServer>,
}

impl MariaDbByo {
    /// Servers 1..=3 from the environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Servers 1..=3 from `lookup`.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut servers = std::collections::BTreeMap::new();
        for id in 1..=3 {
            if let Some(s) = trove_guest_mysql::testkit::ExistingServer::from_vars(id, &lookup)? {
                servers.insert(id, s);
            }
        }
        Ok(MariaDbByo { servers })
    }
}

#[async_trait]
impl ConformanceBackend for MariaDbByo {
    type Server = MariaDbServer;

    fn capabilities(&self) -> Capabilities {
        MariaDb.capabilities()
    }

    async fn start_server(&self, server_id: u32) -> Result<MariaDbServer> {
        let Some(s) = self.servers.get(&server_id) else {
            return Err(trove_guest_core::Error::invalid(
                "bring-your-own server",
                format!("TROVE_GUEST_BYO_{server_id}_CONTAINER is not set"),
            ));
        };
        MariaDbServer::adopt(s.clone(), server_id).await
    }

    fn strategy(
        &self,
        server: &MariaDbServer,
        store: Arc<dyn SnapshotStore>,
    ) -> Arc<dyn ReplicationStrategy> {
        strategy_for(server, store)
    }

    async fn create_schema(&self, server: &MariaDbServer) -> Result<()> {
        MariaDb.create_schema(server).await
    }

    async fn insert_rows(&self, server: &MariaDbServer, ids: Range<u64>) -> Result<()> {
        MariaDb.insert_rows(server, ids).await
    }

    async fn fingerprint(&self, server: &MariaDbServer) -> Result<Fingerprint> {
        MariaDb.fingerprint(server).await
    }

    async fn replica_traces(
        &self,
        master: &MariaDbServer,
        replica: &DetachedReplica,
    ) -> Result<Vec<String>> {
        MariaDb.replica_traces(master, replica).await
    }

    async fn replication_leftovers(&self, server: &MariaDbServer) -> Result<Vec<String>> {
        MariaDb.replication_leftovers(server).await
    }
}
