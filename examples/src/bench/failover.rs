//! Switchover and failover timings (`bench failover`): the write-unavailability window of a
//! switchover and the time to a writable new master after a failover starts, on a master and
//! two replicas of each datastore, median of several runs.
//!
//! Writes are the application's: on MariaDB an account without `READ_ONLY ADMIN` (the
//! administrator bypasses `read_only` and would write on a replica).
//!
//! **Switchover window**: a client writes one row per statement to the master over a
//! persistent connection (reopened after a failure), each write bounded by a 20 ms client
//! timeout (a write blocked by the fence counts as refused when it
//! times out; it is never committed). From the start of the first write that was not
//! acknowledged, the client writes to the candidate until one is accepted: the window is the
//! time between the two. Switchovers go back and forth on one cluster.
//!
//! **Failover**: the master's server is killed with SIGKILL; the clock starts when
//! [`trove_guest_core::failover::failover`] is called and stops when a write on the winner is
//! accepted (a client retrying every millisecond), on a fresh cluster each run.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use trove_guest_core::failover::{
    FailoverOptions, Member, RepointOptions, SwitchoverOptions, failover, switchover,
};
use trove_guest_core::{
    AttachRequest, DatastoreKind, EnableMasterOptions, Error, LocalSnapshotStore,
    ReplicationStrategyExt as _, Result, SharedStrategy, SnapshotRequest, SnapshotStore,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};
use trove_guest_postgres::testkit::{ClusterInit, PostgresOptions, PostgresServer};

use super::report::median;
use trove_guest_agent::backends;
use trove_guest_agent::config::MysqlSection;

const WAIT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IDS: [&str; 3] = ["m1", "r2", "r3"];

/// One server of the benchmark cluster.
enum Server {
    Mariadb(MariaDbServer),
    Postgres(PostgresServer),
}

impl Server {
    async fn start(kind: DatastoreKind, id: u32) -> Result<Self> {
        Ok(match kind {
            DatastoreKind::Postgresql => {
                let init = if id == 1 {
                    ClusterInit::Fresh
                } else {
                    ClusterInit::Template
                };
                Server::Postgres(
                    PostgresServer::start(
                        PostgresOptions::new().with_server_id(id).with_init(init),
                    )
                    .await?,
                )
            }
            _ => Server::Mariadb(
                MariaDbServer::start(
                    MariaDbOptions::new(id)
                        .with_log_bin(true)
                        .with_setting("log_slave_updates", "ON"),
                )
                .await?,
            ),
        })
    }

    fn strategy(&self, store: Arc<dyn SnapshotStore>) -> Result<SharedStrategy> {
        match self {
            Server::Mariadb(s) => backends::strategy(
                DatastoreKind::Mariadb,
                s.handle(),
                store,
                &MysqlSection {
                    binlog_dir: Some(s.binlog_dir()),
                    relay_log_dir: Some(s.relay_log_dir()),
                    server_config: Some(s.config_file()),
                },
            ),
            Server::Postgres(s) => backends::strategy(
                DatastoreKind::Postgresql,
                s.handle(),
                store,
                &MysqlSection::default(),
            ),
        }
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        match self {
            Server::Mariadb(s) => s.execute(sql).await,
            Server::Postgres(s) => s.query(sql).await.map(|_| ()),
        }
    }

    fn table(&self) -> &'static str {
        match self {
            Server::Mariadb(_) => "bench.bench_writes",
            Server::Postgres(_) => "bench_writes",
        }
    }

    async fn create_table(&self) -> Result<()> {
        if let Server::Mariadb(_) = self {
            // The application's account: no READ_ONLY ADMIN, as applications run.
            self.execute(
                "CREATE DATABASE bench; CREATE USER 'bench'@'localhost'; \
                 GRANT INSERT, SELECT ON bench.* TO 'bench'@'localhost'",
            )
            .await?;
        }
        self.execute(&format!(
            "CREATE TABLE {} (id BIGINT PRIMARY KEY)",
            self.table()
        ))
        .await
    }

    fn insert(&self, id: u64) -> String {
        format!("INSERT INTO {} VALUES ({id})", self.table())
    }

    /// A connection of the application (MariaDB: the unprivileged `bench` account).
    async fn connect(&self) -> Option<AppConn> {
        match self {
            Server::Mariadb(s) => {
                let opts = mysql_async::OptsBuilder::default()
                    .socket(Some(s.socket().to_string_lossy().into_owned()))
                    .user(Some("bench"));
                mysql_async::Conn::new(opts)
                    .await
                    .ok()
                    .map(AppConn::Mariadb)
            }
            Server::Postgres(s) => {
                let (client, conn) = tokio_postgres::connect(&s.conninfo(), tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                Some(AppConn::Postgres(client))
            }
        }
    }

    fn kill(&self) -> Result<()> {
        let pid_file = match self {
            Server::Mariadb(s) => s.dir().join("mariadbd.pid"),
            Server::Postgres(s) => s.data_dir().join("postmaster.pid"),
        };
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| Error::io(format!("read {}", pid_file.display()), e))?;
        let pid: i32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| Error::invalid("pid file", text.clone()))?;
        // The whole process group: PostgreSQL's backends die with their postmaster.
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
            .map_err(|e| Error::Service {
                message: format!("SIGKILL {pid}: {e}"),
            })
    }
}

/// An application connection.
enum AppConn {
    Mariadb(mysql_async::Conn),
    Postgres(tokio_postgres::Client),
}

/// The application: one persistent connection per server, reopened after a failure; each
/// write bounded by [`WRITE_TIMEOUT`] (connecting by [`CONNECT_TIMEOUT`]).
#[derive(Default)]
struct App {
    conns: [Option<AppConn>; 3],
}

impl App {
    /// One write of row `id` on server `i`; true when acknowledged.
    async fn write(&mut self, c: &Cluster, i: usize, id: u64) -> bool {
        if self.conns[i].is_none() {
            self.conns[i] = tokio::time::timeout(CONNECT_TIMEOUT, c.servers[i].connect())
                .await
                .ok()
                .flatten();
        }
        let sql = c.servers[i].insert(id);
        let ok = match self.conns[i].as_mut() {
            None => false,
            Some(AppConn::Mariadb(conn)) => {
                use mysql_async::prelude::Queryable as _;
                matches!(
                    tokio::time::timeout(WRITE_TIMEOUT, conn.query_drop(&sql)).await,
                    Ok(Ok(()))
                )
            }
            Some(AppConn::Postgres(client)) => matches!(
                tokio::time::timeout(WRITE_TIMEOUT, client.batch_execute(&sql)).await,
                Ok(Ok(()))
            ),
        };
        if !ok {
            self.conns[i] = None;
        }
        ok
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    servers: Vec<Server>,
    strategies: Vec<SharedStrategy>,
}

impl Cluster {
    async fn start(kind: DatastoreKind) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("scratch directory", e))?;
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalSnapshotStore::new(dir.path())?);
        let (a, b, c) = tokio::join!(
            Server::start(kind, 1),
            Server::start(kind, 2),
            Server::start(kind, 3)
        );
        let servers = vec![a?, b?, c?];
        let strategies = servers
            .iter()
            .map(|s| s.strategy(store.clone()))
            .collect::<Result<Vec<_>>>()?;
        servers[0].create_table().await?;
        strategies[0]
            .enable_as_master(&EnableMasterOptions::new())
            .await?;
        for i in 1..3 {
            let doc = strategies[0]
                .get_replication_snapshot(
                    &SnapshotRequest::new().with_replica_id(format!("snap{i}")),
                )
                .await?;
            strategies[i]
                .attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
                .await?;
        }
        Ok(Cluster {
            _dir: dir,
            servers,
            strategies,
        })
    }

    fn member(&self, i: usize) -> Member<'_> {
        Member::new(IDS[i], &*self.strategies[i])
    }
}

/// The medians of one datastore, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverTimings {
    /// The datastore.
    pub datastore: DatastoreKind,
    /// Switchover write-unavailability windows measured by the client.
    pub switchover_window: Vec<f64>,
    /// The same windows as the orchestration reports them (fence start to promoted).
    pub switchover_reported: Vec<f64>,
    /// Failover: from the call to the first accepted write on the winner.
    pub failover_writable: Vec<f64>,
}

/// Runs `reps` switchovers and `reps` failovers on `kind`.
///
/// # Errors
///
/// Any error of the servers or of the flows.
///
/// # Cancel safety
///
/// Not cancel safe: servers are stopped when dropped.
pub async fn run(kind: DatastoreKind, reps: u32) -> Result<FailoverTimings> {
    let mut t = FailoverTimings {
        datastore: kind,
        switchover_window: Vec::new(),
        switchover_reported: Vec::new(),
        failover_writable: Vec::new(),
    };
    let c = Cluster::start(kind).await?;
    let mut next_id = 1u64;
    let (mut master, mut candidate) = (0usize, 1usize);
    for _ in 0..reps {
        let (window, reported) = one_switchover(&c, master, candidate, &mut next_id).await?;
        t.switchover_window.push(window);
        t.switchover_reported.push(reported);
        std::mem::swap(&mut master, &mut candidate);
    }
    drop(c);
    for _ in 0..reps {
        let c = Cluster::start(kind).await?;
        for id in 0..50 {
            c.servers[0].execute(&c.servers[0].insert(id)).await?;
        }
        for i in 1..3 {
            c.strategies[i]
                .catch_up_with(&*c.strategies[0], WAIT)
                .await?;
        }
        c.servers[0].kill()?;
        let started = Instant::now();
        let members = [c.member(1), c.member(2)];
        let fo = FailoverOptions::new();
        let flow = failover(&members, &fo);
        let probe = async {
            let mut app = App::default();
            let mut id = 1_000_000u64;
            loop {
                for i in 1..3 {
                    if app.write(&c, i, id).await {
                        return started.elapsed();
                    }
                    id += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let (report, writable) = tokio::join!(flow, tokio::time::timeout(WAIT, probe));
        report?;
        let writable = writable.map_err(|_| Error::timeout("a writable new master", WAIT))?;
        t.failover_writable.push(writable.as_secs_f64());
    }
    Ok(t)
}

/// One switchover from `master` to `candidate` under writes: `(client window, reported)`.
async fn one_switchover(
    c: &Cluster,
    master: usize,
    candidate: usize,
    next_id: &mut u64,
) -> Result<(f64, f64)> {
    let others: Vec<Member<'_>> = (0..3)
        .filter(|i| *i != master && *i != candidate)
        .map(|i| c.member(i))
        .collect();
    let base = *next_id;
    *next_id += 1_000_000;
    let client = async {
        let mut app = App::default();
        let mut id = base;
        // Write to the master until a write is not acknowledged...
        let refused_at = loop {
            let at = Instant::now();
            if !app.write(c, master, id).await {
                break at;
            }
            id += 1;
        };
        // ...then to the candidate until one is.
        loop {
            id += 1;
            if app.write(c, candidate, id).await {
                return refused_at.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let flow = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        switchover(
            c.member(master),
            c.member(candidate),
            &others,
            &SwitchoverOptions::new().with_repoint(RepointOptions::new().with_timeout(WAIT)),
        )
        .await
    };
    let (window, report) = tokio::join!(tokio::time::timeout(WAIT, client), flow);
    let report = report?;
    let window = window.map_err(|_| Error::timeout("writes on the new master", WAIT))?;
    if !report.not_repointed.is_empty() {
        return Err(Error::Service {
            message: format!("not re-pointed: {:?}", report.not_repointed),
        });
    }
    Ok((window.as_secs_f64(), report.write_unavailable.as_secs_f64()))
}

/// The Markdown rows of the results: medians and ranges in milliseconds.
pub fn markdown(results: &[FailoverTimings]) -> String {
    let ms = |v: &[f64]| {
        let med = median(v.iter().copied()).map_or("-".into(), |m| format!("{:.0}", m * 1e3));
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min) * 1e3;
        let hi = v.iter().copied().fold(0.0, f64::max) * 1e3;
        format!("{med} ({lo:.0}–{hi:.0}, n={})", v.len())
    };
    let mut s = String::from(
        "| datastore | switchover write-unavailability window, ms (client) | same, as reported (fence → promoted) | failover: call → first accepted write, ms |\n|---|---|---|---|\n",
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.datastore,
            ms(&r.switchover_window),
            ms(&r.switchover_reported),
            ms(&r.failover_writable)
        ));
    }
    s
}
