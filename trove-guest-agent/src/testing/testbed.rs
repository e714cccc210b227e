//! Real local servers with a guest agent each: what the demo and the live tests run.
//!
//! A [`Node`] is one throwaway server (the backends' testkits), the strategy acting on it, a guest agent
//! serving that strategy on a loopback port with a random bearer token, and a client of that
//! agent holding the token. Dropping a node stops
//! the agent and the server and removes the server's files; [`Node::shutdown`] does the same and
//! first aborts a replication change still running.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use trove_guest_core::{
    DatastoreHandle, DatastoreKind, Error, Result, Secret, SharedStrategy, SnapshotStore,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_redis::testkit::{RedisOptions, RedisServer};

use crate::agent::{AgentAuth, AgentOptions, GuestAgent, RunningAgent};
use crate::backends;
use crate::client::{AgentClient, ClientOptions};
use crate::config::MysqlSection;

/// A throwaway server of any datastore the examples run.
#[derive(Debug)]
pub enum TestServer {
    /// MariaDB.
    Mariadb(MariaDbServer),
    /// PostgreSQL.
    Postgres(PostgresServer),
    /// Redis.
    Redis(RedisServer),
}

impl TestServer {
    /// Starts a fresh standalone server of `kind` with `server_id`.
    ///
    /// # Errors
    ///
    /// The testkit's: [`Error::NotFound`] naming the Debian package when a program is missing,
    /// [`Error::Service`] when the server does not start.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled start can leave an instance directory behind.
    pub async fn start(kind: DatastoreKind, server_id: u32) -> Result<Self> {
        match kind {
            DatastoreKind::Postgresql => Ok(TestServer::Postgres(
                PostgresServer::start(PostgresOptions::new().with_server_id(server_id)).await?,
            )),
            DatastoreKind::Mariadb => Ok(TestServer::Mariadb(
                MariaDbServer::start(MariaDbOptions::new(server_id)).await?,
            )),
            k if k.as_str() == "redis" => Ok(TestServer::Redis(
                RedisServer::start(RedisOptions::new().with_server_id(server_id)).await?,
            )),
            other => Err(Error::unsupported(format!(
                "{other} test servers (the testkits run MariaDB, PostgreSQL and Redis)"
            ))),
        }
    }

    /// Like [`TestServer::start`]; with `in_container`, a MariaDB server runs in a container of
    /// the local engine (the testkit's `ContainerOptions::from_env`), controlled over the Docker
    /// API, its backup tools run by `exec`.
    ///
    /// # Errors
    ///
    /// As [`TestServer::start`]; [`Error::Unsupported`] for a containerised PostgreSQL.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn start_placed(
        kind: DatastoreKind,
        server_id: u32,
        in_container: bool,
    ) -> Result<Self> {
        if !in_container {
            return Self::start(kind, server_id).await;
        }
        match kind {
            DatastoreKind::Mariadb => {
                let c = trove_guest_mysql::testkit::ContainerOptions::from_env().await?;
                Ok(TestServer::Mariadb(
                    MariaDbServer::start(MariaDbOptions::new(server_id).in_container(c)).await?,
                ))
            }
            other => Err(Error::unsupported(format!(
                "{other} test servers in containers (the testkit runs MariaDB in containers)"
            ))),
        }
    }

    /// The datastore.
    pub fn kind(&self) -> DatastoreKind {
        match self {
            TestServer::Mariadb(_) => DatastoreKind::Mariadb,
            TestServer::Postgres(_) => DatastoreKind::Postgresql,
            TestServer::Redis(_) => "redis".parse().expect("a valid datastore name"),
        }
    }

    /// The handle strategies act on.
    pub fn handle(&self) -> DatastoreHandle {
        match self {
            TestServer::Mariadb(s) => s.handle(),
            TestServer::Postgres(s) => s.handle(),
            TestServer::Redis(s) => s.handle(),
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match self {
            TestServer::Mariadb(s) => s.port(),
            TestServer::Postgres(s) => s.port(),
            TestServer::Redis(s) => s.port(),
        }
    }

    /// Stops the server (it stays stopped; the directory stays until the server is dropped).
    ///
    /// # Errors
    ///
    /// The service's error when the server does not stop.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn stop(&self) -> Result<()> {
        match self {
            TestServer::Mariadb(s) => s.stop().await,
            TestServer::Postgres(s) => s.stop().await,
            TestServer::Redis(s) => s.stop().await,
        }
    }

    /// The instance directory (removed when the server is dropped).
    pub fn dir(&self) -> PathBuf {
        match self {
            TestServer::Mariadb(s) => s.dir().to_path_buf(),
            TestServer::Postgres(s) => s.instance_dir().to_path_buf(),
            TestServer::Redis(s) => s.instance_dir().to_path_buf(),
        }
    }

    /// The `[mysql]` settings matching the testkit's instance layout (binary and relay logs
    /// outside the datadir, the instance option file for the backup tool).
    pub fn mysql_section(&self) -> MysqlSection {
        match self {
            TestServer::Mariadb(s) => MysqlSection {
                binlog_dir: Some(s.binlog_dir()),
                relay_log_dir: Some(s.relay_log_dir()),
                server_config: Some(s.config_file()),
            },
            TestServer::Postgres(_) | TestServer::Redis(_) => MysqlSection::default(),
        }
    }

    /// The strategy acting on this server, storing snapshots in `store`.
    ///
    /// # Errors
    ///
    /// What the backend's constructor reports.
    pub fn strategy(&self, store: Arc<dyn SnapshotStore>) -> Result<SharedStrategy> {
        self.strategy_with(self.handle(), store)
    }

    /// The strategy acting on this server through `handle` (this server's handle, changed: a
    /// wrapped service control, say).
    ///
    /// # Errors
    ///
    /// What the backend's constructor reports.
    pub fn strategy_with(
        &self,
        handle: DatastoreHandle,
        store: Arc<dyn SnapshotStore>,
    ) -> Result<SharedStrategy> {
        backends::strategy(self.kind(), handle, store, &self.mysql_section())
    }
}

/// A server, its strategy and its guest agent.
#[derive(Debug)]
pub struct Node {
    /// The control plane's name of the instance.
    pub name: String,
    /// The instance id the agent answers to.
    pub instance_id: String,
    /// The strategy the agent serves.
    pub strategy: SharedStrategy,
    /// A client of the agent.
    pub client: AgentClient,
    /// The agent's change slot: give it to another front end of this strategy
    /// ([`crate::rpc::TroveRpcServer::with_changes`]) to share the one change lock.
    pub changes: crate::changes::ChangeSlot,
    token: Secret,
    agent: Option<RunningAgent>,
    server: Option<TestServer>,
}

impl Node {
    /// Serves `server` with a guest agent on a free loopback port.
    ///
    /// # Errors
    ///
    /// The backend constructor's errors; [`Error::Io`] when no port can be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the server is dropped (stopped and removed) on cancel.
    pub async fn serve(
        server: TestServer,
        store: Arc<dyn SnapshotStore>,
        name: &str,
        instance_id: &str,
    ) -> Result<Self> {
        let strategy = server.strategy(store.clone())?;
        Self::serve_strategy(server, strategy, store, name, instance_id).await
    }

    /// Serves `strategy` (acting on `server`, built by the caller, for example with a wrapped
    /// service control) with a guest agent on a free loopback port, with a random token the
    /// node's client holds.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no port can be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the server is dropped (stopped and removed) on cancel.
    pub async fn serve_strategy(
        server: TestServer,
        strategy: SharedStrategy,
        store: Arc<dyn SnapshotStore>,
        name: &str,
        instance_id: &str,
    ) -> Result<Self> {
        let token = Secret::random(32);
        let options =
            AgentOptions::new(instance_id).with_auth(AgentAuth::new().with_token(token.clone()));
        let agent = GuestAgent::new(strategy.clone(), store, options);
        let changes = agent.changes();
        let agent = agent
            .spawn("127.0.0.1:0".parse().expect("loopback address"))
            .await
            .map_err(|e| Error::io("bind the guest agent on 127.0.0.1", e))?;
        let client =
            AgentClient::with_options(agent.url(), &ClientOptions::new().with_token(token.clone()))
                .map_err(|e| Error::invalid("the agent's client", e.to_string()))?;
        Ok(Node {
            name: name.to_owned(),
            instance_id: instance_id.to_owned(),
            strategy,
            client,
            changes,
            token,
            agent: Some(agent),
            server: Some(server),
        })
    }

    /// The server.
    pub fn server(&self) -> &TestServer {
        self.server
            .as_ref()
            .expect("the server runs until shutdown")
    }

    /// The agent's bearer token (for requests made without [`Node::client`]).
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// The agent's base URL.
    pub fn url(&self) -> &str {
        self.client.base()
    }

    /// The server's instance directory.
    pub fn dir(&self) -> PathBuf {
        self.server().dir()
    }

    /// Stops the agent (aborting a running change), then the server, and removes its files.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: whatever is left is stopped and removed on drop.
    pub async fn shutdown(mut self) {
        if let Some(agent) = self.agent.take() {
            let _ = agent.shutdown().await;
        }
        if let Some(server) = self.server.take() {
            // The testkit's drop signals the server, waits for it and removes the directory.
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
    }
}

/// What is left of `path`: the path itself if it exists, and every process whose command line
/// mentions it. Empty when nothing is left.
pub fn left_behind(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if path.exists() {
        out.push(format!("directory {} still exists", path.display()));
    }
    out.extend(processes_mentioning(path));
    out
}

/// Processes whose command line mentions `path`, described.
pub fn processes_mentioning(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let needle = path.to_string_lossy().into_owned();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&needle) {
                    out.push(format!("process {pid} still runs: {}", cmd.trim()));
                }
            }
        }
    }
    out
}
