//! Throwaway PostgreSQL servers for tests (feature `testkit`), built on core's generic harness
//! ([`trove_guest_core::testkit`]).
//!
//! [`PostgresServer::start`] copies a template cluster (initialised once per process with
//! `initdb`) into a short directory under `/tmp`, writes the instance's own configuration
//! *outside* the data directory (so `pg_basebackup` and `pg_rewind` cannot overwrite it) and starts
//! `postgres` as a [`LocalProcess`] on a free loopback port plus a Unix socket directory. Dropping
//! the server stops it (fast shutdown) and removes its directory.
//!
//! Layout of an instance directory (`/tmp/tg-pg-XXXXXX`):
//!
//! ```text
//! data/             the data directory (owned by the postgres account, 0700)
//! postgresql.conf   main configuration (config_file), includes conf.d last
//! pg_hba.conf       hba_file: local trust (or scram-sha-256 with an admin password), TCP
//!                   scram-sha-256
//! pg_ident.conf     ident_file (empty)
//! conf.d/           DatastoreHandle::config_dir (strategy override files)
//! log/              server log files (logging_collector)
//! s/                the Unix socket directory
//! ```
//!
//! With [`PostgresOptions::with_admin_password`] the administrator has a SCRAM-SHA-256 password
//! and every connection, local ones included, must give it. The password is set before the
//! server first starts, as a verifier computed here and fed to single-user mode on stdin: it is
//! never on a command line, in the environment, in a log or in `postgresql.auto.conf`.
//!
//! PostgreSQL refuses to run as root: when this process is root, `initdb` and `postgres` run as
//! the `postgres` OS account; otherwise as the current user.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use trove_guest_core::error::IoResultExt;
use trove_guest_core::service::Signal;
use trove_guest_core::testkit::{
    PORT_ATTEMPTS, StopOptions, TestService, free_port, has_exited, is_port_conflict, is_root,
    require_program, short_tempdir, stop_blocking, tail,
};
use trove_guest_core::{
    AdminConnection, DatastoreHandle, Error, LocalProcess, OsUser, Readiness, Result, Secret,
    ServiceControl, ToolCommand,
};

use crate::sql;

/// Where Debian's PostgreSQL 15 programs live.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The superuser the test clusters are initialised with (no password and local trust, unless
/// [`PostgresOptions::with_admin_password`]).
pub const ADMIN_USER: &str = "postgres";

/// How a test server's data directory is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClusterInit {
    /// Copy a template cluster initialised once per process (fast; all copies share one
    /// system identifier).
    #[default]
    Template,
    /// Run `initdb` for this server (about a second; a unique system identifier).
    Fresh,
}

/// Options for [`PostgresServer::start`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The server id recorded in the [`DatastoreHandle`] (PostgreSQL itself has none).
    pub server_id: u32,
    /// Directory of the PostgreSQL programs (default [`DEFAULT_BIN_DIR`]).
    pub bin_dir: PathBuf,
    /// Extra `name = value` lines for the main configuration (values written as given).
    pub settings: Vec<(String, String)>,
    /// Template copy or fresh `initdb`.
    pub init: ClusterInit,
    /// The administrator's password; `None` (the default) for local trust.
    pub admin_password: Option<Secret>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            server_id: 1,
            bin_dir: PathBuf::from(DEFAULT_BIN_DIR),
            settings: Vec::new(),
            init: ClusterInit::Template,
            admin_password: None,
        }
    }
}

impl PostgresOptions {
    /// Defaults: server id 1, Debian's PostgreSQL 15, template copy.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`PostgresOptions::server_id`].
    pub fn with_server_id(mut self, id: u32) -> Self {
        self.server_id = id;
        self
    }
    /// Sets [`PostgresOptions::bin_dir`].
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = dir.into();
        self
    }
    /// Adds a configuration line `name = value` (the value is written as given, so quote
    /// strings: `"'on'"`).
    pub fn with_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
    /// Serves TLS (`ssl = on`) with the certificate and key in these PEM files (the key must
    /// be owned by the server's account and mode 0600).
    pub fn with_tls(self, cert_file: impl AsRef<Path>, key_file: impl AsRef<Path>) -> Self {
        let quoted = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "''"));
        self.with_setting("ssl", "on")
            .with_setting("ssl_cert_file", quoted(cert_file.as_ref()))
            .with_setting("ssl_key_file", quoted(key_file.as_ref()))
    }
    /// Sets [`PostgresOptions::init`].
    pub fn with_init(mut self, init: ClusterInit) -> Self {
        self.init = init;
        self
    }
    /// Gives the administrator a SCRAM-SHA-256 password and requires it for every connection
    /// (local ones too); the [`DatastoreHandle`] carries it.
    pub fn with_admin_password(mut self, password: Secret) -> Self {
        self.admin_password = Some(password);
        self
    }
}

/// A running throwaway PostgreSQL server; dropped = stopped and removed.
pub struct PostgresServer {
    dir: Option<tempfile::TempDir>,
    port: u16,
    service: Arc<LocalProcess>,
    control: Arc<TestService>,
    handle: DatastoreHandle,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("dir", &self.instance_dir())
            .field("port", &self.port)
            .finish()
    }
}

/// The OS account PostgreSQL programs run as: `postgres` when we are root, else ourselves.
fn server_user() -> Result<OsUser> {
    if is_root() {
        OsUser::lookup("postgres").map_err(|_| Error::NotFound {
            what: "OS user \"postgres\" (install the postgresql-15 package: apt-get install -y \
                   postgresql-15)"
                .into(),
        })
    } else {
        Ok(OsUser::current())
    }
}

fn program(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    require_program(bin_dir.join(name), "postgresql-15")
}

fn mkdir(path: &Path, mode: u32, owner: Option<OsUser>) -> Result<()> {
    std::fs::create_dir_all(path).context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {}", path.display()))?;
    if let Some(o) = owner {
        o.chown(path)?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32, owner: Option<OsUser>) -> Result<()> {
    std::fs::write(path, contents).context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {}", path.display()))?;
    if let Some(o) = owner {
        o.chown(path)?;
    }
    Ok(())
}

async fn initdb(bin_dir: &Path, data: &Path, user: OsUser, cwd: &Path) -> Result<()> {
    let initdb = program(bin_dir, "initdb")?;
    mkdir(data, 0o700, Some(user))?;
    ToolCommand::new(initdb)
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            ADMIN_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ])
        .current_dir(cwd)
        .run_as(Some(user))
        .run()
        .await
}

/// The template cluster of this process (initialised on first use).
static TEMPLATE: OnceCell<std::result::Result<PathBuf, String>> = OnceCell::const_new();

/// Removes templates left by processes that no longer run.
fn remove_stale_templates() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("tg-pgtpl-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

async fn template(bin_dir: &Path, user: OsUser) -> Result<PathBuf> {
    let r = TEMPLATE
        .get_or_init(|| async {
            remove_stale_templates();
            let make = async {
                let dir = short_tempdir(&format!("tg-pgtpl-{}-", std::process::id()))?;
                let data = dir.path().join("data");
                initdb(bin_dir, &data, user, dir.path()).await?;
                // Kept for the life of the process; removed by the next process's sweep.
                Ok::<_, Error>(dir.keep())
            };
            make.await.map_err(|e| e.to_string())
        })
        .await;
    match r {
        Ok(p) => Ok(p.join("data")),
        Err(e) => Err(Error::Service {
            message: format!("initialising the PostgreSQL template cluster failed: {e}"),
        }),
    }
}

fn main_config(dir: &Path, port: u16, opts: &PostgresOptions) -> String {
    let d = dir.display();
    let mut s = format!(
        "# trove-guest testkit instance configuration (outside the data directory)\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{d}/s'\n\
         hba_file = '{d}/pg_hba.conf'\n\
         ident_file = '{d}/pg_ident.conf'\n\
         max_connections = 40\n\
         shared_buffers = 16MB\n\
         fsync = off\n\
         logging_collector = on\n\
         log_directory = '{d}/log'\n\
         log_filename = 'postgresql.log'\n\
         log_min_messages = info\n\
         log_connections = off\n\
         dynamic_shared_memory_type = posix\n\
         timezone = 'UTC'\n\
         lc_messages = 'C'\n"
    );
    for (k, v) in &opts.settings {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s.push_str(&format!("include_dir = '{d}/conf.d'\n"));
    s
}

const HBA: &str = "# trove-guest testkit: local administration, passwords over TCP\n\
local all all trust\n\
local replication all trust\n\
host all all 127.0.0.1/32 scram-sha-256\n";

const HBA_PASSWORD: &str = "# trove-guest testkit: passwords everywhere\n\
local all all scram-sha-256\n\
local replication all scram-sha-256\n\
host all all 127.0.0.1/32 scram-sha-256\n";

/// Sets the administrator's password in a stopped cluster: single-user mode reads an `ALTER
/// ROLE` carrying a SCRAM-SHA-256 verifier from stdin (no network, no command-line secret).
async fn set_admin_password(
    postgres: &Path,
    data: &Path,
    password: &Secret,
    user: OsUser,
    cwd: &Path,
) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
    let mut tool = ToolCommand::new(postgres)
        .args(["--single", "-D"])
        .arg(data)
        .args(["-c", "log_statement=none", "-c", "logging_collector=off"])
        .arg(ADMIN_USER)
        .current_dir(cwd)
        .run_as(Some(user))
        .stdin_piped()
        .spawn()?;
    let mut stdin = tool.take_stdin().expect("stdin is piped");
    let statement = format!("{};\n", sql::set_admin_password(ADMIN_USER, &verifier)?);
    stdin
        .write_all(statement.as_bytes())
        .await
        .context(|| "write to postgres --single".to_owned())?;
    drop(stdin);
    tool.wait().await
}

impl PostgresServer {
    /// Starts a fresh server and waits until it accepts queries.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the package when a PostgreSQL program or the `postgres` account
    /// is missing; [`Error::Service`] when the server does not start; [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled start leaves the temp directory behind (the server process
    /// is killed with it).
    pub async fn start(opts: PostgresOptions) -> Result<Self> {
        let postgres = program(&opts.bin_dir, "postgres")?;
        let user = server_user()?;
        let owner = is_root().then_some(user);
        let dir = short_tempdir("tg-pg-")?;
        let path = dir.path().to_path_buf();
        let data = path.join("data");
        match opts.init {
            ClusterInit::Template => {
                let tpl = template(&opts.bin_dir, user).await?;
                ToolCommand::new("cp")
                    .arg("-a")
                    .arg(&tpl)
                    .arg(&data)
                    .run()
                    .await?;
            }
            ClusterInit::Fresh => initdb(&opts.bin_dir, &data, user, &path).await?,
        }
        mkdir(&path.join("conf.d"), 0o755, owner)?;
        mkdir(&path.join("s"), 0o755, owner)?;
        mkdir(&path.join("log"), 0o700, owner)?;
        let hba = match &opts.admin_password {
            Some(pw) => {
                set_admin_password(&postgres, &data, pw, user, &path).await?;
                HBA_PASSWORD
            }
            None => HBA,
        };
        write_file(&path.join("pg_hba.conf"), hba, 0o640, owner)?;
        write_file(&path.join("pg_ident.conf"), "", 0o640, owner)?;
        let conf = path.join("postgresql.conf");

        let mut attempt = 0;
        let (port, control) = loop {
            attempt += 1;
            let port = free_port()?;
            write_file(&conf, &main_config(&path, port, &opts), 0o644, owner)?;
            let cmd = ToolCommand::new(&postgres)
                .arg("-D")
                .arg(&data)
                .arg("-c")
                .arg(format!("config_file={}", conf.display()))
                .current_dir(&path)
                .run_as(Some(user));
            let socket = path.join("s").join(format!(".s.PGSQL.{port}"));
            let service =
                LocalProcess::new(cmd, Readiness::Unix(socket)).with_stop_signal(Signal::SIGINT);
            let service = Arc::new(TestService::new(service));
            match service.start().await {
                Ok(()) => break (port, service),
                Err(e) => {
                    let log = std::fs::read_to_string(path.join("log/postgresql.log"))
                        .unwrap_or_default();
                    let _ = std::fs::remove_file(path.join("log/postgresql.log"));
                    let message = format!("{e}; server log: {}", tail(&log, 2000));
                    if attempt < PORT_ATTEMPTS && is_port_conflict(&message) {
                        continue;
                    }
                    return Err(Error::Service { message });
                }
            }
        };

        let password = opts
            .admin_password
            .clone()
            .unwrap_or_else(|| Secret::new(""));
        let admin = AdminConnection::new("127.0.0.1", port, ADMIN_USER, password)
            .with_socket(path.join("s"));
        let handle = DatastoreHandle::new(
            admin,
            &data,
            path.join("conf.d"),
            control.clone() as Arc<dyn ServiceControl>,
        )
        .with_server_id(opts.server_id)
        .with_os_user(user)
        .with_bin_dir(&opts.bin_dir)
        .with_work_dir(&path);
        let server = PostgresServer {
            dir: Some(dir),
            port,
            service: control.process().clone(),
            control,
            handle,
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    /// Waits until the server answers a query (it may accept connections while starting up).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when it does not answer within `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.query("SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > timeout => {
                    return Err(Error::timeout(
                        format!("PostgreSQL on port {} to answer ({e})", self.port),
                        timeout,
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The handle a strategy acts on (admin superuser over the socket directory, the data and
    /// config directories, the service, `os_user` and `bin_dir`).
    pub fn handle(&self) -> DatastoreHandle {
        self.handle.clone()
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance directory.
    pub fn instance_dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/"), |d| d.path())
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.instance_dir().join("s")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.handle.data_dir.clone()
    }

    /// The directory holding the server's log files.
    pub fn log_dir(&self) -> PathBuf {
        self.instance_dir().join("log")
    }

    /// The main configuration file (outside the data directory).
    pub fn config_file(&self) -> PathBuf {
        self.instance_dir().join("postgresql.conf")
    }

    /// The service controlling the server process. Starting or stopping it through this (rather
    /// than the handle's service) is fine: dropping the server still stops whatever postmaster
    /// runs on its data directory.
    pub fn service(&self) -> &Arc<LocalProcess> {
        &self.service
    }

    /// A libpq connection string for the administrator over the socket directory. It holds no
    /// password: with [`PostgresOptions::with_admin_password`], use [`PostgresServer::query`].
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user={ADMIN_USER} dbname=postgres",
            self.socket_dir().display(),
            self.port
        )
    }

    async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(self.socket_dir())
            .port(self.port)
            .user(ADMIN_USER)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(10));
        if !self.handle.admin.password.is_empty() {
            cfg.password(self.handle.admin.password.expose());
        }
        let what = format!("connect to PostgreSQL on port {}", self.port);
        let bound = Duration::from_secs(30);
        let (client, conn) =
            match tokio::time::timeout(bound, cfg.connect(tokio_postgres::NoTls)).await {
                Ok(r) => r.map_err(|e| Error::datastore(what, e))?,
                Err(_) => return Err(Error::timeout(what, bound)),
            };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Runs `sql` (one or more statements, simple protocol) as the administrator in database
    /// `postgres` and returns the rows of every statement as text.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when the connection or a statement fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for writes: a statement may or may not have run.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let client = self.connect("postgres").await?;
        let msgs = client.simple_query(sql).await.map_err(|e| {
            let detail = match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            };
            Error::datastore(format!("test query failed: {detail}"), e)
        })?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// Runs `sql` and returns the first column of the first row.
    ///
    /// # Errors
    ///
    /// As [`PostgresServer::query`]; [`Error::NotFound`] when there is no row or it is NULL.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for writes.
    pub async fn query_one(&self, sql: &str) -> Result<String> {
        self.query(sql)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .ok_or_else(|| Error::NotFound {
                what: "a row from the test query".into(),
            })
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    ///
    /// # Errors
    ///
    /// [`Error::Service`] when it does not stop.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn stop(&self) -> Result<()> {
        self.service.stop().await
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.log_dir()) {
            for e in entries.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    out.push_str(&t);
                }
            }
        }
        out
    }
}

/// Whether `pid` is a live (not zombie) process whose command line names `data_dir`: a
/// postmaster of this instance, not a recycled pid.
fn is_postmaster_of(pid: u32, data_dir: &Path) -> bool {
    if pid == 0 || has_exited(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = data_dir.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

/// The postmaster running on `data_dir`, from `postmaster.pid` (first line), if it is alive.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    is_postmaster_of(pid, data_dir).then_some(pid)
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Fast shutdown of the postmaster without a runtime and without the LocalProcess lock
        // (a task on this very thread may hold it, e.g. in the middle of a stop): the pid comes
        // from the atomic kept on start/stop, or from `postmaster.pid` when the server was
        // started through `service()` directly; either is checked against /proc first.
        let data = self.handle.data_dir.clone();
        let recorded = self.control.pid();
        let pid = if is_postmaster_of(recorded, &data) {
            Some(recorded)
        } else {
            postmaster_pid(&data)
        };
        if let Some(pid) = pid {
            // The postmaster leads its process group (LocalProcess spawns it so): whatever of
            // it is left after the fast shutdown goes with the group.
            stop_blocking(
                pid,
                &StopOptions::new(Signal::SIGINT, Duration::from_secs(15)).to_leader_only(),
            );
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir.path());
            drop(dir);
        }
    }
}
