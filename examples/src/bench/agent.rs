//! The trove-guest rows run in child processes of the benchmark (`bench agent`), so each agent's
//! peak resident memory (`VmHWM`) is its own and not the benchmark's: one for the master's agent
//! (`get_replication_snapshot`) and one for the replica's (`attach_replication_slave`), or, for
//! the overlapped rows, one running `ReplicationStrategyExt::provision_from` with both strategies
//! (its peak memory is the two agents' together).
//!
//! The parent writes an [`AgentRequest`] as JSON to the child's stdin and reads an
//! [`AgentReport`] from its stdout. The snapshot document (with the replication password in
//! transit) goes only through these pipes. Handles carry no secret: the benchmark's servers
//! have passwordless local administrators.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use trove_guest_core::store::{Durability, ZstdSnapshotStore};
use trove_guest_core::{
    AdminConnection, AttachRequest, DatastoreHandle, DatastoreKind, DetachedReplica, Error,
    LocalSnapshotStore, OsUser, Phase, Progress, ReplicationStrategyExt, Result, ServiceControl,
    ServiceStatus, SnapshotDocument, SnapshotRequest, SnapshotStore, StageRequest, ToolCommand,
};

use super::pin::{Side, tool};
use super::usage::{Cost, Meter, peak_rss_kib};
use trove_guest_agent::backends;
use trove_guest_agent::config::MysqlSection;
use trove_guest_agent::testing::testbed::TestServer;

/// Where snapshots go, and whether they are compressed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreSpec {
    /// Root of the local snapshot store.
    pub root: PathBuf,
    /// Wrap the store in [`ZstdSnapshotStore`] with this many worker threads (`None`: plain).
    pub zstd_workers: Option<u32>,
    /// Restore from a complete local download instead of streaming
    /// ([`super::download_first::DownloadFirst`]).
    pub download_first: bool,
    /// Leave the store's writes to the kernel ([`Durability::PageCache`]) instead of fsyncing.
    #[serde(default)]
    pub page_cache: bool,
    /// Keep snapshots in S3 (segmented, followable) instead of under `root`.
    #[serde(default)]
    pub s3: Option<S3Spec>,
}

/// An S3 store on an S3-compatible endpoint; the credentials stay in their 0600 file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S3Spec {
    /// Endpoint URL (`http://127.0.0.1:<port>`).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// The 0600 credentials file.
    pub credentials_file: PathBuf,
}

impl StoreSpec {
    /// Opens the store.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be created.
    pub fn open(&self) -> Result<Arc<dyn SnapshotStore>> {
        if let Some(s3) = &self.s3 {
            let config = trove_guest_core::store::S3Config::new(&s3.bucket, &s3.credentials_file)
                .with_prefix(&s3.prefix)
                .with_endpoint(&s3.endpoint)
                .with_allow_http(true);
            let store: Arc<dyn SnapshotStore> =
                Arc::new(trove_guest_core::ObjectSnapshotStore::s3(&config)?);
            return Ok(match self.zstd_workers {
                Some(w) => Arc::new(ZstdSnapshotStore::new(store).with_workers(w)),
                None => store,
            });
        }
        let mut local = LocalSnapshotStore::new(&self.root)?;
        if self.page_cache {
            local = local.with_durability(Durability::PageCache);
        }
        let local = Arc::new(local);
        if self.download_first {
            let dir = self.root.with_extension("downloads");
            return Ok(Arc::new(super::download_first::DownloadFirst::new(
                local, dir,
            )?));
        }
        let local: Arc<dyn SnapshotStore> = local;
        Ok(match self.zstd_workers {
            Some(w) => Arc::new(ZstdSnapshotStore::new(local).with_workers(w)),
            None => local,
        })
    }
}

/// A server handle as plain data (no secret: the benchmark's admin logins have no password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandleSpec {
    /// The datastore.
    pub kind: DatastoreKind,
    /// Admin TCP host.
    pub host: String,
    /// Admin TCP port.
    pub port: u16,
    /// Admin socket (file or directory).
    pub socket: Option<PathBuf>,
    /// Admin user.
    pub user: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Override directory.
    pub config_dir: PathBuf,
    /// Staging directory.
    pub work_dir: PathBuf,
    /// Server id.
    pub server_id: u32,
    /// OS account (uid, gid) of the data directory.
    pub os_user: Option<(u32, u32)>,
    /// Programs directory.
    pub bin_dir: Option<PathBuf>,
    /// MariaDB: binary log directory.
    pub binlog_dir: Option<PathBuf>,
    /// MariaDB: relay log directory.
    pub relay_log_dir: Option<PathBuf>,
    /// MariaDB: the server's option file.
    pub server_config: Option<PathBuf>,
}

impl HandleSpec {
    /// Describes `server`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the admin login has a password (it would have to travel).
    pub fn of(server: &TestServer) -> Result<Self> {
        let h = server.handle();
        if !h.admin.password.is_empty() {
            return Err(Error::invalid(
                "benchmark server",
                "the admin login must be passwordless (local trust / socket)",
            ));
        }
        let m = server.mysql_section();
        Ok(HandleSpec {
            kind: server.kind(),
            host: h.admin.host.clone(),
            port: h.admin.port,
            socket: h.admin.socket.clone(),
            user: h.admin.user.clone(),
            data_dir: h.data_dir.clone(),
            config_dir: h.config_dir.clone(),
            work_dir: h.work_dir.clone(),
            server_id: h.server_id,
            os_user: h.os_user.map(|u| (u.uid, u.gid)),
            bin_dir: h.bin_dir.clone(),
            binlog_dir: m.binlog_dir,
            relay_log_dir: m.relay_log_dir,
            server_config: m.server_config,
        })
    }

    /// A handle on the described server whose service refuses to stop it (the benchmark owns
    /// the master process).
    pub fn handle(&self) -> DatastoreHandle {
        let mut admin = AdminConnection::new(
            self.host.clone(),
            self.port,
            self.user.clone(),
            trove_guest_core::Secret::new(""),
        );
        if let Some(s) = &self.socket {
            admin = admin.with_socket(s);
        }
        let mut h = DatastoreHandle::new(
            admin,
            &self.data_dir,
            &self.config_dir,
            Arc::new(RunningElsewhere) as Arc<dyn ServiceControl>,
        )
        .with_server_id(self.server_id)
        .with_work_dir(&self.work_dir);
        if let Some((uid, gid)) = self.os_user {
            h = h.with_os_user(OsUser { uid, gid });
        }
        if let Some(b) = &self.bin_dir {
            h = h.with_bin_dir(b);
        }
        h
    }

    fn mysql_section(&self) -> MysqlSection {
        MysqlSection {
            binlog_dir: self.binlog_dir.clone(),
            relay_log_dir: self.relay_log_dir.clone(),
            server_config: self.server_config.clone(),
        }
    }
}

/// The master's service as seen from the snapshot agent: running, and not ours to stop.
#[derive(Debug)]
struct RunningElsewhere;

#[async_trait]
impl ServiceControl for RunningElsewhere {
    async fn start(&self) -> Result<()> {
        Ok(())
    }
    async fn stop(&self) -> Result<()> {
        Err(Error::unsupported(
            "stopping the benchmark's master from the agent (enable it as master beforehand)",
        ))
    }
    async fn status(&self) -> Result<ServiceStatus> {
        Ok(ServiceStatus::Running)
    }
}

/// What a child agent is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub enum AgentRequest {
    /// `get_replication_snapshot` on the master.
    Snapshot {
        /// The master.
        master: Box<HandleSpec>,
        /// The store.
        store: StoreSpec,
        /// Snapshot name.
        name: String,
        /// Replica id (names the replication account).
        replica_id: String,
        /// `--parallel` for the backup tool.
        parallel: Option<u32>,
    },
    /// Start a fresh replica server, then `provision_from` the master: the snapshot and the
    /// replica's staging run together, then the attach.
    Provision {
        /// The master.
        master: Box<HandleSpec>,
        /// The store.
        store: StoreSpec,
        /// Snapshot name.
        name: String,
        /// Replica id (names the replication account).
        replica_id: String,
        /// `--parallel` for the backup tool (`None`: the strategy's default).
        parallel: Option<u32>,
        /// The replica's server id.
        server_id: u32,
    },
    /// The replica's half of a provisioning split over two processes (the two-host mode):
    /// start a fresh replica server, print `ready`, `stage_snapshot` the snapshot named `name`
    /// while the master's agent (another process) takes it, then read the master's snapshot
    /// document as a second line of stdin and `attach_replication_slave` with it.
    Stage {
        /// The master (only to know the snapshot's href in advance).
        master: Box<HandleSpec>,
        /// The store.
        store: StoreSpec,
        /// Snapshot name.
        name: String,
        /// The replica's server id.
        server_id: u32,
    },
    /// Start a fresh replica server, then `attach_replication_slave` on it.
    Attach {
        /// The datastore.
        kind: DatastoreKind,
        /// The store.
        store: StoreSpec,
        /// The snapshot document.
        doc: Box<SnapshotDocument>,
        /// The replica's server id.
        server_id: u32,
    },
}

/// What a child agent measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentReport {
    /// Wall time, CPU (the agent, the tools it ran and, for attach, the replica server) and
    /// phases of the call.
    pub cost: Cost,
    /// The agent process's `VmHWM`, KiB.
    pub peak_rss_kib: u64,
    /// The snapshot document (snapshot only).
    pub doc: Option<Box<SnapshotDocument>>,
    /// What the replica's detach (after the measurement) says the master must forget.
    #[serde(default)]
    pub detached: Option<DetachedReplica>,
}

/// Detaches the measured replica (outside the timing) so the master can drop exactly what it
/// made for it (account, snapshot and replica slots); `None` when the detach fails.
async fn detach_for_cleanup(
    strategy: &dyn trove_guest_core::ReplicationStrategy,
) -> Option<DetachedReplica> {
    match strategy
        .detach_replication_slave(&trove_guest_core::DetachOptions::new())
        .await
    {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("bench agent: detach of the measured replica failed: {e}");
            None
        }
    }
}

/// When each phase started.
type PhaseLog = Arc<Mutex<Vec<(Phase, Instant)>>>;

/// Records phase changes reported through [`Progress`].
fn phase_recorder() -> (Progress, PhaseLog) {
    let log = Arc::new(Mutex::new(Vec::<(Phase, Instant)>::new()));
    let sink = log.clone();
    let progress = Progress::new(move |e| {
        let mut l = sink.lock().expect("phase log");
        if l.last().map(|(p, _)| *p) != Some(e.phase) {
            l.push((e.phase, Instant::now()));
        }
    });
    (progress, log)
}

fn phases_of(
    prefix: &str,
    started: Instant,
    log: &[(Phase, Instant)],
    ended: Instant,
) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut cur = ("setup".to_owned(), started);
    for (p, t) in log {
        let d = (*t - cur.1).as_secs_f64();
        if !(cur.0 == "setup" && d < 0.001) {
            out.push((format!("{prefix}{}", cur.0), d));
        }
        cur = (format!("{p:?}").to_lowercase(), *t);
    }
    let d = (ended - cur.1).as_secs_f64();
    if cur.0 != "done" || d > 0.01 {
        out.push((format!("{prefix}{}", cur.0), d));
    }
    out
}

/// The process group of a test server's main process.
pub async fn server_pgid(server: &TestServer) -> Option<u32> {
    match server {
        TestServer::Mariadb(s) => std::fs::read_to_string(s.dir().join("mariadbd.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok()),
        TestServer::Postgres(s) => s.service().pid().await,
        TestServer::Redis(s) => s.pid(),
    }
}

/// The child side: reads a request from stdin, runs it, prints the report to stdout.
///
/// # Errors
///
/// Whatever the requested call fails with.
///
/// # Cancel safety
///
/// Not cancel safe.
pub async fn child_main() -> Result<()> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut input = String::new();
    stdin
        .read_line(&mut input)
        .await
        .map_err(|e| Error::io("read the agent request", e))?;
    let req: AgentRequest =
        serde_json::from_str(&input).map_err(|e| Error::invalid("agent request", e.to_string()))?;
    let report = match req {
        AgentRequest::Snapshot {
            master,
            store,
            name,
            replica_id,
            parallel,
        } => {
            let store = store.open()?;
            let strategy =
                backends::strategy(master.kind, master.handle(), store, &master.mysql_section())?;
            let (progress, log) = phase_recorder();
            let mut req = SnapshotRequest::new()
                .with_replica_id(replica_id)
                .with_replica_host("127.0.0.1")
                .with_snapshot_name(name)
                .with_progress(progress);
            if let Some(n) = parallel {
                req = req.with_parallel(n);
            }
            let meter = Meter::start(&[]);
            let started = Instant::now();
            let doc = strategy.get_replication_snapshot(&req).await?;
            let ended = Instant::now();
            let mut cost = meter.finish(&[]);
            cost.phases = phases_of("snapshot ", started, &log.lock().expect("log"), ended);
            AgentReport {
                cost,
                peak_rss_kib: peak_rss_kib().unwrap_or(0),
                doc: Some(Box::new(doc)),
                detached: None,
            }
        }
        AgentRequest::Provision {
            master,
            store,
            name,
            replica_id,
            parallel,
            server_id,
        } => {
            let store = store.open()?;
            let master_strategy = backends::strategy(
                master.kind,
                master.handle(),
                store.clone(),
                &master.mysql_section(),
            )?;
            let server = super::start_server(master.kind, server_id, false).await?;
            let strategy = server.strategy(store)?;
            let (snap_progress, snap_log) = phase_recorder();
            let (progress, log) = phase_recorder();
            let mut snap = SnapshotRequest::new()
                .with_replica_id(replica_id)
                .with_replica_host("127.0.0.1")
                .with_snapshot_name(name)
                .with_progress(snap_progress);
            if let Some(n) = parallel {
                snap = snap.with_parallel(n);
            }
            let req = AttachRequest::new().with_progress(progress);
            let before: Vec<u32> = server_pgid(&server).await.into_iter().collect();
            let meter = Meter::start(&before);
            let started = Instant::now();
            let provisioned = strategy
                .provision_from(&*master_strategy, &snap, &req)
                .await?;
            let ended = Instant::now();
            if provisioned.staged.is_none() {
                return Err(Error::Service {
                    message: "provision_from did not overlap the snapshot with staging".into(),
                });
            }
            let after: Vec<u32> = server_pgid(&server).await.into_iter().collect();
            let mut cost = meter.finish(&after);
            let snap_log = snap_log.lock().expect("log").clone();
            // The snapshot's phases end at its `Done` event; the replica's run to the end.
            let snap_end = snap_log
                .iter()
                .find(|(p, _)| *p == Phase::Done)
                .map_or(ended, |(_, t)| *t);
            cost.phases = phases_of("snapshot ", started, &snap_log, snap_end);
            cost.phases.extend(phases_of(
                "replica ",
                started,
                &log.lock().expect("log"),
                ended,
            ));
            let peak = peak_rss_kib().unwrap_or(0);
            let detached = detach_for_cleanup(&*strategy).await;
            drop(strategy);
            drop(server);
            AgentReport {
                cost,
                peak_rss_kib: peak,
                doc: Some(Box::new(provisioned.document)),
                detached,
            }
        }
        AgentRequest::Stage {
            master,
            store,
            name,
            server_id,
        } => {
            let store = store.open()?;
            let master_strategy = backends::strategy(
                master.kind,
                master.handle(),
                store.clone(),
                &master.mysql_section(),
            )?;
            let href = master_strategy.snapshot_href(&name)?;
            drop(master_strategy);
            let server = super::start_server(master.kind, server_id, false).await?;
            let strategy = server.strategy(store)?;
            let (progress, log) = phase_recorder();
            let before: Vec<u32> = server_pgid(&server).await.into_iter().collect();
            let mut out = tokio::io::stdout();
            out.write_all(b"ready\n")
                .await
                .map_err(|e| Error::io("tell the benchmark this agent is ready", e))?;
            out.flush()
                .await
                .map_err(|e| Error::io("tell the benchmark this agent is ready", e))?;
            let meter = Meter::start(&before);
            let started = Instant::now();
            let staged = strategy
                .stage_snapshot(&StageRequest::new(href).with_progress(progress.clone()))
                .await?;
            let mut line = String::new();
            stdin
                .read_line(&mut line)
                .await
                .map_err(|e| Error::io("read the snapshot document", e))?;
            let doc: SnapshotDocument = serde_json::from_str(&line)
                .map_err(|e| Error::invalid("snapshot document", e.to_string()))?;
            if !staged.matches(&doc) {
                return Err(Error::Service {
                    message: "the staged snapshot is not the one the master took".into(),
                });
            }
            let req = AttachRequest::new().with_progress(progress);
            strategy.attach_replication_slave(&doc, &req).await?;
            let ended = Instant::now();
            let after: Vec<u32> = server_pgid(&server).await.into_iter().collect();
            let mut cost = meter.finish(&after);
            cost.phases = phases_of("replica ", started, &log.lock().expect("log"), ended);
            let peak = peak_rss_kib().unwrap_or(0);
            let detached = detach_for_cleanup(&*strategy).await;
            drop(strategy);
            drop(server);
            AgentReport {
                cost,
                peak_rss_kib: peak,
                doc: None,
                detached,
            }
        }
        AgentRequest::Attach {
            kind,
            store,
            doc,
            server_id,
        } => {
            let store = store.open()?;
            let server = super::start_server(kind, server_id, false).await?;
            let strategy = server.strategy(store)?;
            let (progress, log) = phase_recorder();
            let req = AttachRequest::new().with_progress(progress);
            let before: Vec<u32> = server_pgid(&server).await.into_iter().collect();
            let meter = Meter::start(&before);
            let started = Instant::now();
            strategy.attach_replication_slave(&doc, &req).await?;
            let ended = Instant::now();
            let after: Vec<u32> = server_pgid(&server).await.into_iter().collect();
            let mut cost = meter.finish(&after);
            cost.phases = phases_of("attach ", started, &log.lock().expect("log"), ended);
            let peak = peak_rss_kib().unwrap_or(0);
            let detached = detach_for_cleanup(&*strategy).await;
            drop(strategy);
            drop(server);
            AgentReport {
                cost,
                peak_rss_kib: peak,
                doc: None,
                detached,
            }
        }
    };
    let json = serde_json::to_vec(&report).expect("report serializes");
    let mut out = tokio::io::stdout();
    out.write_all(&json)
        .await
        .map_err(|e| Error::io("write the agent report", e))?;
    out.flush()
        .await
        .map_err(|e| Error::io("write the agent report", e))?;
    Ok(())
}

/// The parent side: runs `exe agent` with `req` (on `side`'s CPU when given: the two-host mode)
/// and returns its report.
///
/// # Errors
///
/// [`Error::ToolFailed`] with the child's stderr tail when it fails; [`Error::Io`].
///
/// # Cancel safety
///
/// Cancel safe: dropping the future kills the child's process group.
pub async fn run_child(exe: &Path, req: &AgentRequest, side: Option<Side>) -> Result<AgentReport> {
    let mut child = agent_command(exe, side).spawn()?;
    let mut stdin = child.take_stdin().expect("stdin is piped");
    let mut stdout = child.take_stdout().expect("stdout is piped");
    let mut json = serde_json::to_vec(req).expect("request serializes");
    json.push(b'\n');
    let write = async {
        stdin
            .write_all(&json)
            .await
            .map_err(|e| Error::io("send the agent request", e))?;
        drop(stdin);
        Ok::<_, Error>(())
    };
    let read = async {
        let mut buf = Vec::new();
        (&mut stdout)
            .take(16 << 20)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io("read the agent report", e))?;
        Ok::<_, Error>(buf)
    };
    let (w, r) = tokio::join!(write, read);
    let status = child.wait().await;
    status?;
    w?;
    let out = r?;
    serde_json::from_slice(&out).map_err(|e| Error::invalid("agent report", e.to_string()))
}

fn agent_command(exe: &Path, side: Option<Side>) -> ToolCommand {
    match side {
        Some(side) => tool(exe, side, true),
        None => ToolCommand::new(exe),
    }
    .arg("agent")
    .stdin_piped()
    .stdout_piped()
}

/// Provisioning split over two agent processes, as on two hosts: the replica's agent
/// ([`AgentRequest::Stage`], on the replica's CPU) starts its server and begins staging; then the
/// master's agent ([`AgentRequest::Snapshot`], on the master's CPU) takes the snapshot the replica
/// follows; its document goes to the replica's agent, which attaches. Returns the master's and the
/// replica's reports; the replica's wall time runs from its `ready` to the end of the attach and
/// so covers the master's call.
///
/// # Errors
///
/// Either agent's failure; [`Error::Io`] on the pipes.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future kills both children's process groups.
pub async fn run_split(
    exe: &Path,
    stage: &AgentRequest,
    snapshot: &AgentRequest,
) -> Result<(AgentReport, AgentReport)> {
    let mut replica = agent_command(exe, Some(Side::Replica)).spawn()?;
    let mut stdin = replica.take_stdin().expect("stdin is piped");
    let stdout = replica.take_stdout().expect("stdout is piped");
    let mut stdout = tokio::io::BufReader::new(stdout);
    let mut json = serde_json::to_vec(stage).expect("request serializes");
    json.push(b'\n');
    stdin
        .write_all(&json)
        .await
        .map_err(|e| Error::io("send the replica agent's request", e))?;
    stdin
        .flush()
        .await
        .map_err(|e| Error::io("send the replica agent's request", e))?;
    let mut ready = String::new();
    stdout
        .read_line(&mut ready)
        .await
        .map_err(|e| Error::io("wait for the replica agent", e))?;
    if ready.trim() != "ready" {
        drop(stdin);
        drop(stdout);
        replica.wait().await?;
        return Err(Error::invalid("replica agent", "it did not get ready"));
    }
    // On an error, dropping the replica's agent kills it (it would wait for the abandoned
    // upload).
    let m = run_child(exe, snapshot, Some(Side::Master)).await?;
    let doc = m
        .doc
        .as_ref()
        .ok_or_else(|| Error::invalid("agent report", "no snapshot document"))?;
    let mut line = serde_json::to_vec(doc).expect("document serializes");
    line.push(b'\n');
    stdin
        .write_all(&line)
        .await
        .map_err(|e| Error::io("send the snapshot document", e))?;
    drop(stdin);
    let mut out = Vec::new();
    let read = (&mut stdout)
        .take(16 << 20)
        .read_to_end(&mut out)
        .await
        .map_err(|e| Error::io("read the replica agent's report", e));
    replica.wait().await?;
    read?;
    let r = serde_json::from_slice(&out)
        .map_err(|e| Error::invalid("replica agent report", e.to_string()))?;
    Ok((m, r))
}
