//! [`Instance`]: a throwaway server served by a `guest_agent` process, and what kills it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use trove_guest_core::testkit::conformance::Fingerprint;
use trove_guest_core::{DatastoreKind, Error, Result, Secret};

use super::Fault;
use crate::client::{AgentClient, ClientOptions};
use crate::config::AgentConfig;
use crate::testing::sample::SampleDb;
use crate::testing::testbed::TestServer;

/// Options of [`Instance::create`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InstanceOptions {
    /// The agent binary (`env!("CARGO_BIN_EXE_guest_agent")` in the examples' tests).
    pub agent_bin: PathBuf,
    /// The server id.
    pub server_id: u32,
    /// The snapshot store directory (shared by a master's and its replicas' agents).
    pub store_dir: PathBuf,
    /// The port replicas are told to connect to (a [`TcpProxy`] in front of the server, say);
    /// default the server's own.
    ///
    /// [`TcpProxy`]: trove_guest_core::testkit::TcpProxy
    pub advertise_port: Option<u16>,
}

impl InstanceOptions {
    /// An instance with server id `server_id` whose agent is `agent_bin`, storing snapshots in
    /// `store_dir`.
    pub fn new(
        agent_bin: impl Into<PathBuf>,
        server_id: u32,
        store_dir: impl Into<PathBuf>,
    ) -> Self {
        InstanceOptions {
            agent_bin: agent_bin.into(),
            server_id,
            store_dir: store_dir.into(),
            advertise_port: None,
        }
    }

    /// Sets [`InstanceOptions::advertise_port`].
    pub fn with_advertise_port(mut self, port: u16) -> Self {
        self.advertise_port = Some(port);
        self
    }
}

/// A throwaway server served by a `guest_agent` process. Dropping it kills the agent and every
/// process of the instance and removes the instance.
pub struct Instance {
    server: Option<TestServer>,
    kind: DatastoreKind,
    opts: InstanceOptions,
    agent_dir: PathBuf,
    config_path: PathBuf,
    config_template: String,
    work_dir: PathBuf,
    config_dir: PathBuf,
    pid_file: PathBuf,
    client: AgentClient,
    agent: Option<Child>,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("kind", &self.kind)
            .field("dir", &self.dir())
            .field("agent", &self.client.base())
            .finish()
    }
}

/// Where the `advertise` line goes in the generated configuration.
const ADVERTISE_MARK: &str = "# @advertise@\n";

fn free_port() -> Result<u16> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind 127.0.0.1:0", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("local address", e))?
        .port())
}

/// Writes `contents` to a new file only its owner can read.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn toml_str(p: &Path) -> String {
    // Paths here are temp directories of this process: no quotes or backslashes in them.
    format!("\"{}\"", p.display())
}

/// The last `n` bytes of `text` without terminal colour codes.
fn tail(text: &str, n: usize) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let mut start = plain.len().saturating_sub(n);
    while !plain.is_char_boundary(start) {
        start += 1;
    }
    plain[start..].to_owned()
}

/// Makes this process the reaper of orphaned descendants (once).
///
/// A killed agent's server is reparented to the nearest subreaper; without one it goes to init,
/// which in a container may never reap it, and the zombie keeps its pid "alive" for a lock file
/// check (PostgreSQL's `postmaster.pid`). A real host crash leaves no process at all: being the
/// subreaper lets [`reap`] clear what a simulated crash killed.
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "could not become the child subreaper");
        }
    });
}

/// Reaps `pid` if it is a dead child of this process (an orphan reparented here); anything else
/// is left alone.
fn reap(pid: u32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

impl Instance {
    /// Starts a fresh server of `kind`, stops it and writes the configuration of an agent that
    /// will run it (the agent is not started: see [`Instance::start_agent`]).
    ///
    /// # Errors
    ///
    /// The testkit's (server does not start, program missing); [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled create can leave the instance directory behind.
    pub async fn create(kind: DatastoreKind, opts: InstanceOptions) -> Result<Self> {
        become_subreaper();
        let server = TestServer::start(kind, opts.server_id).await?;
        let dir = server.dir();
        let handle = server.handle();
        let agent_dir = dir.join("agent");
        for sub in ["", "tmp", "failpoints"] {
            let p = agent_dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::io(format!("mkdir {}", p.display()), e))?;
        }
        // Secret files of PostgreSQL tools are made for the postgres account under TMPDIR.
        std::fs::set_permissions(
            agent_dir.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(|e| Error::io("chmod the agent's TMPDIR", e))?;
        let pid_file = agent_dir.join("server.pid");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?)
            .parse()
            .expect("a loopback address");
        let advertise = ADVERTISE_MARK;
        let text = match &server {
            TestServer::Redis(_) => {
                return Err(Error::unsupported(
                    "the fault matrix for Redis (its agent configuration is not written yet)",
                ));
            }
            TestServer::Mariadb(s) => {
                s.stop().await?;
                let mut args = vec![format!("--defaults-file={}", s.config_file().display())];
                if nix::unistd::geteuid().is_root() {
                    args.push("--user=root".into());
                }
                format!(
                    "instance_id = \"matrix-{id}\"\nlisten = \"{listen}\"\n\n\
                     [datastore]\ntype = \"mariadb\"\ndata_dir = {data}\nconfig_dir = {conf}\n\
                     work_dir = {work}\nserver_id = {id}\n{advertise}\n\
                     [datastore.admin]\nport = {port}\nsocket = {sock}\nuser = \"root\"\n\n\
                     [service]\nkind = \"process\"\nprogram = \"/usr/sbin/mariadbd\"\n\
                     args = {args:?}\nready_unix = {sock}\npid_file = {pid}\n\n\
                     [snapshot_store]\nurl = \"file://{store}\"\n\n\
                     [credentials]\nsecret_dir = \"{store}.secrets\"\n\n\
                     [mysql]\nbinlog_dir = {binlog}\nrelay_log_dir = {relay}\nserver_config = {cnf}\n",
                    id = opts.server_id,
                    data = toml_str(&s.data_dir()),
                    conf = toml_str(&s.config_dir()),
                    work = toml_str(&handle.work_dir),
                    port = s.port(),
                    sock = toml_str(&s.socket()),
                    pid = toml_str(&pid_file),
                    store = opts.store_dir.display(),
                    binlog = toml_str(&s.binlog_dir()),
                    relay = toml_str(&s.relay_log_dir()),
                    cnf = toml_str(&s.config_file()),
                )
            }
            TestServer::Postgres(s) => {
                let command = s.service().command().clone();
                s.stop().await?;
                let args: Vec<String> = command
                    .get_args()
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                let bin_dir = handle
                    .bin_dir
                    .clone()
                    .or_else(|| command.program().parent().map(Path::to_path_buf))
                    .unwrap_or_default();
                let run_as = if nix::unistd::geteuid().is_root() {
                    "run_as = \"postgres\"\n"
                } else {
                    ""
                };
                let os_user = if nix::unistd::geteuid().is_root() {
                    "os_user = \"postgres\"\n"
                } else {
                    ""
                };
                format!(
                    "instance_id = \"matrix-{id}\"\nlisten = \"{listen}\"\n\n\
                     [datastore]\ntype = \"postgresql\"\ndata_dir = {data}\nconfig_dir = {conf}\n\
                     work_dir = {work}\nbin_dir = {bin}\n{os_user}server_id = {id}\n{advertise}\n\
                     [datastore.admin]\nport = {port}\nsocket = {sock}\nuser = \"{user}\"\n\n\
                     [service]\nkind = \"process\"\nprogram = {program}\nargs = {args:?}\n\
                     {run_as}ready_unix = {ready}\nstop_signal = \"SIGINT\"\npid_file = {pid}\n\n\
                     [snapshot_store]\nurl = \"file://{store}\"\n\n\
                     [credentials]\nsecret_dir = \"{store}.secrets\"\n",
                    id = opts.server_id,
                    data = toml_str(&s.data_dir()),
                    conf = toml_str(&handle.config_dir),
                    work = toml_str(&handle.work_dir),
                    bin = toml_str(&bin_dir),
                    port = s.port(),
                    sock = toml_str(&s.socket_dir()),
                    user = handle.admin.user,
                    program = toml_str(command.program()),
                    ready = toml_str(&s.socket_dir().join(format!(".s.PGSQL.{}", s.port()))),
                    pid = toml_str(&pid_file),
                    store = opts.store_dir.display(),
                )
            }
        };
        // The agent asks for a token, as a deployed one does; the harness's client holds it.
        let token = Secret::random(32);
        let token_path = agent_dir.join("agent.token");
        write_private(&token_path, token.expose())?;
        let text = format!("{text}\n[auth]\ntoken_file = {}\n", toml_str(&token_path));
        let client = AgentClient::with_options(
            format!("http://{listen}"),
            &ClientOptions::new().with_token(token),
        )
        .map_err(|e| Error::invalid("the agent's client", e.to_string()))?;
        let config_path = agent_dir.join("agent.toml");
        let instance = Instance {
            config_template: text,
            kind,
            agent_dir,
            config_path,
            work_dir: handle.work_dir.clone(),
            config_dir: handle.config_dir.clone(),
            pid_file,
            client,
            agent: None,
            server: Some(server),
            opts,
        };
        instance.write_config()?;
        Ok(instance)
    }

    fn write_config(&self) -> Result<()> {
        let advertise = self
            .opts
            .advertise_port
            .map(|p| format!("advertise = {{ host = \"127.0.0.1\", port = {p} }}\n"))
            .unwrap_or_default();
        let text = self.config_template.replace(ADVERTISE_MARK, &advertise);
        std::fs::write(&self.config_path, text)
            .map_err(|e| Error::io(format!("write {}", self.config_path.display()), e))?;
        // Fail here, not in the agent, on a configuration this harness got wrong.
        AgentConfig::load(&self.config_path).map(drop)
    }

    /// Tells replicas to connect to `port` on 127.0.0.1 instead of the server's own port (a
    /// [`TcpProxy`] in front of it); takes effect at the next agent start.
    ///
    /// [`TcpProxy`]: trove_guest_core::testkit::TcpProxy
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the configuration cannot be written.
    pub fn advertise_through(&mut self, port: u16) -> Result<()> {
        self.opts.advertise_port = Some(port);
        self.write_config()
    }

    /// The datastore.
    pub fn kind(&self) -> DatastoreKind {
        self.kind
    }

    /// The instance directory.
    pub fn dir(&self) -> PathBuf {
        self.server
            .as_ref()
            .map(TestServer::dir)
            .unwrap_or_default()
    }

    /// The server (its handle, port, layout).
    pub fn server(&self) -> &TestServer {
        self.server.as_ref().expect("the server lives until drop")
    }

    /// A client of the agent.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// The directory the agent's failpoints mark where they parked.
    pub fn failpoint_dir(&self) -> PathBuf {
        self.agent_dir.join("failpoints")
    }

    /// The agent's log (stdout and stderr of every agent this instance started).
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.agent_dir.join("agent.log")).unwrap_or_default()
    }

    /// Starts an agent with the failpoints `failpoints` armed and waits (bounded) until it
    /// serves.
    ///
    /// # Errors
    ///
    /// [`Error::Service`] with the tail of the agent's log when it exits (for example because
    /// its recovery failed) or does not serve within two minutes; [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the agent process is kept and killed on drop.
    pub async fn start_agent(&mut self, failpoints: &[&str]) -> Result<()> {
        // The server's port was free when the testkit chose it; between the testkit's stop and
        // this start another test's server or an outgoing connection may hold it for a moment.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.start_agent_once(failpoints).await {
                Err(Error::Service { message })
                    if attempt < 4
                        && (message.contains("Address already in use")
                            || message.contains("could not bind IPv4 address")) =>
                {
                    tracing::info!(attempt, "the server's port is taken for now: trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                other => return other,
            }
        }
    }

    async fn start_agent_once(&mut self, failpoints: &[&str]) -> Result<()> {
        let log_path = self.agent_dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("open {}", log_path.display()), e))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::io("clone the log handle", e))?;
        let mut cmd = Command::new(&self.opts.agent_bin);
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("TMPDIR", self.agent_dir.join("tmp"))
            .env("RUST_LOG", "info")
            .env("TROVE_GUEST_FAILPOINT_DIR", self.failpoint_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if failpoints.is_empty() {
            cmd.env_remove("TROVE_GUEST_FAILPOINTS");
        } else {
            cmd.env("TROVE_GUEST_FAILPOINTS", failpoints.join(","));
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("run {}", self.opts.agent_bin.display()), e))?;
        self.agent = Some(child);
        let started = Instant::now();
        loop {
            if self.client.status().await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.agent.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.agent = None;
                return Err(Error::Service {
                    message: format!(
                        "guest_agent exited ({status}) before serving; its log ends: {}",
                        tail(&self.agent_log(), 800)
                    ),
                });
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(Error::Service {
                    message: format!(
                        "guest_agent not serving after 120 s; its log ends: {}",
                        tail(&self.agent_log(), 800)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the agent cleanly (SIGTERM: it stops its server) and waits for it, bounded.
    ///
    /// # Errors
    ///
    /// None: what cannot be signalled is already gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let started = Instant::now();
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if started.elapsed() > Duration::from_secs(90) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The server's pid as recorded in the agent's pid file, if that process still runs.
    pub fn server_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(&self.pid_file).ok()?;
        let pid: u32 = text.split_whitespace().next()?.parse().ok()?;
        runs(pid).then_some(pid)
    }

    /// Applies `fault` (see [`Fault`]) and waits until what it killed is gone (bounded).
    ///
    /// # Errors
    ///
    /// None: what cannot be signalled is already gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn kill(&mut self, fault: Fault) {
        let agent_pid = self.agent.as_ref().map(Child::id);
        let tools: Vec<u32> = agent_pid.map(children_of).unwrap_or_default();
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if fault == Fault::AgentKilled {
            return;
        }
        let server = self.server_pid();
        if let Some(pid) = server {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        for t in &tools {
            let _ = killpg(Pid::from_raw(*t as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(*t as i32), Signal::SIGKILL);
        }
        self.kill_everything_of_the_instance().await;
        // Nothing of the instance may survive as a zombie either (see `become_subreaper`).
        let started = Instant::now();
        for pid in server.into_iter().chain(tools) {
            while exists(pid) && started.elapsed() < Duration::from_secs(30) {
                reap(pid);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    async fn kill_everything_of_the_instance(&self) {
        let dir = self.dir();
        let started = Instant::now();
        loop {
            let left = pids_mentioning(&dir);
            if left.is_empty() || started.elapsed() > Duration::from_secs(30) {
                return;
            }
            for pid in left {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                reap(pid);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// "Reboots" after `fault`: after a host crash the server is started the way a boot would
    /// (its failure is ignored: the data directory may be aside), then a fresh agent without
    /// failpoints starts; it recovers before it serves.
    ///
    /// # Errors
    ///
    /// As [`Instance::start_agent`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn reboot(&mut self, fault: Fault) -> Result<()> {
        if fault == Fault::HostKilled {
            self.boot_server().await;
        }
        self.start_agent(&[]).await
    }

    async fn boot_server(&self) {
        let service = match AgentConfig::load(&self.config_path).and_then(|c| c.service()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "boot: no service");
                return;
            }
        };
        match tokio::time::timeout(Duration::from_secs(90), service.start()).await {
            Ok(Ok(())) => tracing::info!("boot: the server started"),
            Ok(Err(e)) => tracing::info!(error = %e, "boot: the server did not start"),
            Err(_) => tracing::info!("boot: the server did not start in 90 s"),
        }
        // Init, not this process, owns the server from now on: the service is never dropped,
        // so nothing kills its process group; the agent adopts it through the pid file.
        std::mem::forget(service);
    }

    /// A sample-data connection to the server.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when it cannot connect.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn sample(&self) -> Result<SampleDb> {
        SampleDb::connect(self.kind, &self.server().handle().admin).await
    }

    /// The sample data's fingerprint, waiting (bounded, 90 s) until the server answers.
    ///
    /// # Errors
    ///
    /// The last error when the server does not answer in time.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn fingerprint(&self) -> Result<Fingerprint> {
        let started = Instant::now();
        loop {
            let attempt = async {
                let db = self.sample().await?;
                let fp = db.fingerprint().await;
                db.close().await;
                fp
            }
            .await;
            match attempt {
                Ok(fp) => return Ok(fp),
                Err(e) if started.elapsed() > Duration::from_secs(90) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Writes the sample schema and rows `ids` (bounded retries while the server starts).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn load(&self, ids: std::ops::Range<u64>) -> Result<()> {
        let db = self.sample().await?;
        db.create_schema().await?;
        let mut at = ids.start;
        while at < ids.end {
            let end = (at + 1000).min(ids.end);
            db.insert_rows(at..end).await?;
            at = end;
        }
        db.close().await;
        Ok(())
    }

    /// Processes of this instance other than its agent and the one server its pid file names:
    /// a tool of the killed agent still running, or a second server on the same data.
    pub fn stray_processes(&self) -> Vec<String> {
        let agent = self.agent.as_ref().map(Child::id);
        let server = self.server_pid();
        pids_mentioning(&self.dir())
            .into_iter()
            .filter(|p| Some(*p) != agent && Some(*p) != server)
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                let program = cmd.split_whitespace().next().unwrap_or("?").to_owned();
                format!("process still runs: {program} (pid {p})")
            })
            .collect()
    }

    /// What an interrupted change may have left: processes other than the agent and its
    /// server, staging / old-data / failed directories
    /// (`.tg-*`) in the work directory, secret files in the agent's temporary directory,
    /// partial uploads (`.partial-*`) in the store, and stale override files.
    ///
    /// # Errors
    ///
    /// None: unreadable places are reported as leftovers.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn leftovers(&self) -> Vec<String> {
        let mut out = self.stray_processes();
        for (dir, what, pred) in [
            (
                self.work_dir.clone(),
                "work directory",
                (|n: &str| n.starts_with(".tg-")) as fn(&str) -> bool,
            ),
            (
                self.agent_dir.join("tmp"),
                "agent TMPDIR (secret files)",
                |_| true,
            ),
            (self.opts.store_dir.clone(), "snapshot store", |n: &str| {
                n.starts_with(".partial-") || n.starts_with(".manifest-partial-")
            }),
        ] {
            match std::fs::read_dir(&dir) {
                Ok(entries) => {
                    for e in entries.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if pred(&name) {
                            out.push(format!("{what}: {name}"));
                        }
                    }
                }
                Err(e) => out.push(format!("{what} {} unreadable: {e}", dir.display())),
            }
        }
        match self.kind {
            DatastoreKind::Postgresql => {
                let standby_file = self
                    .config_dir
                    .join(trove_guest_postgres::objects::STANDBY_FILE)
                    .exists();
                if let Ok(in_recovery) = self.pg_query("SELECT pg_is_in_recovery()::text").await {
                    let in_recovery = in_recovery.first().is_some_and(|v| v == "true");
                    if standby_file != in_recovery {
                        out.push(format!(
                            "stale override: standby file present = {standby_file} but in \
                             recovery = {in_recovery}"
                        ));
                    }
                }
            }
            _ => {
                let init = self.config_dir.join(trove_guest_mysql::config::INIT_FILE);
                if init.exists() {
                    out.push(format!(
                        "stale override: {}",
                        trove_guest_mysql::config::INIT_FILE
                    ));
                }
            }
        }
        out
    }

    /// PostgreSQL: the first column of every row of `sql` (a fixed test query).
    async fn pg_query(&self, sql: &str) -> Result<Vec<String>> {
        match self.server() {
            TestServer::Postgres(s) => Ok(s
                .query(sql)
                .await?
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect()),
            TestServer::Mariadb(_) | TestServer::Redis(_) => {
                Err(Error::unsupported("PostgreSQL query on another datastore"))
            }
        }
    }

    /// PostgreSQL: the slots of snapshots (`trove_snap_*`) on this server; empty on MariaDB.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn snapshot_slots(&self) -> Result<BTreeSet<String>> {
        if self.kind != DatastoreKind::Postgresql {
            return Ok(BTreeSet::new());
        }
        let prefix = trove_guest_postgres::objects::SNAPSHOT_SLOT_PREFIX;
        Ok(self
            .pg_query("SELECT slot_name::text FROM pg_replication_slots")
            .await?
            .into_iter()
            .filter(|s| s.starts_with(prefix))
            .collect())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.server_pid() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let dir = self.dir();
        let started = Instant::now();
        loop {
            let left = pids_mentioning(&dir);
            if left.is_empty() || started.elapsed() > Duration::from_secs(30) {
                break;
            }
            for pid in left {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                reap(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.server.take());
    }
}

/// Whether `pid` runs (exists, not a zombie).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Whether `pid` exists at all (zombies included).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Live processes whose command line mentions `path` or a path under it (never this process).
pub fn pids_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let mut out = Vec::new();
    if needle.is_empty() {
        return out;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !runs(pid) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && cmd.windows(needle.len() + 1).any(|w| {
                // The path itself or something under it, not a longer name sharing its prefix.
                w[..needle.len()] == *needle && matches!(w[needle.len()], b'/' | 0)
            })
        {
            out.push(pid);
        }
    }
    out
}

/// The live children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}
