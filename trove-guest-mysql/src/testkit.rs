//! Throwaway MariaDB servers for tests (feature `testkit`), built on core's generic harness
//! ([`trove_guest_core::testkit`]).
//!
//! [`MariaDbServer::start`] copies a datadir template (initialised once per machine and MariaDB
//! build with `mariadb-install-db`, then reused with `cp -a`, 0.02–0.05 s) into a short instance
//! directory under the temp dir, writes the instance's own option file and starts `mariadbd`
//! through [`LocalProcess`] on a free loopback port. The instance layout is
//!
//! ```text
//! /tmp/tgm-XXXXXX/
//!   my.cnf        the instance option file (always passed first as --defaults-file)
//!   conf.d/       override files (the handle's config_dir; included by my.cnf)
//!   data/         datadir
//!   binlog/       binary logs (outside the datadir)
//!   relay/        relay logs (outside the datadir)
//!   tmp/          tmpdir
//!   work/         the handle's work_dir (staging for restores)
//!   sock          the server socket
//! ```
//!
//! Dropping the server sends `SIGTERM` to it, waits for it to exit and removes the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flavor::Flavor;
use crate::sql::{Account, Sql};
use mysql_async::prelude::Queryable;
use tokio::sync::OnceCell;
use trove_guest_core::error::IoResultExt;
use trove_guest_core::service::Signal;
use trove_guest_core::testkit::{
    PORT_ATTEMPTS, StopOptions, TestService, free_port, has_exited, is_port_conflict, is_root,
    missing_program, require_program, stop_blocking,
};
use trove_guest_core::{
    AdminConnection, ContainerExec, ContainerService, ContainerSpec, DatastoreHandle, Error,
    LocalProcess, OsUser, Readiness, Result, Secret, ServiceControl, ToolCommand, ToolPlace,
};

/// The server program.
pub const MARIADBD: &str = "/usr/sbin/mariadbd";
/// The datadir initialiser.
pub const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";

/// How long one test connection may take to log in.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a test server is set up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MariaDbOptions {
    /// `server_id` (default 1).
    pub server_id: u32,
    /// Start with binary logging on (`log_bin` in `binlog/`, ROW format). Default off: a fresh
    /// standalone server, as a strategy's `enable_as_master` expects to find it.
    pub log_bin: bool,
    /// A root password; empty (passwordless local root) when absent.
    pub root_password: Option<Secret>,
    /// Extra `[mysqld]` settings, `name = value`, written into the instance option file.
    pub settings: Vec<(String, String)>,
    /// `innodb_buffer_pool_size` (default `64M`).
    pub buffer_pool: String,
    /// `innodb_log_file_size` (default `32M`): small redo logs keep backups and prepare short.
    pub redo_log_size: String,
    /// How long to wait for the server to accept connections (default 60 s).
    pub start_timeout: Duration,
    /// Run the server in a container (see [`ContainerOptions`]) instead of as a host process.
    pub container: Option<ContainerOptions>,
}

/// The image tag of the local MariaDB test image ([`ContainerOptions::from_env`] builds it
/// when missing).
pub const MARIADB_TEST_IMAGE: &str = "localhost/trove-guest-mariadb:10.11";
/// The `mysql` account of the test image (Debian's MariaDB packages): uid and gid.
pub const IMAGE_MYSQL_USER: OsUser = OsUser { uid: 100, gid: 101 };

/// Where and how a containerised test server runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ContainerOptions {
    /// The engine's Docker-API socket.
    pub socket: PathBuf,
    /// The image (MariaDB server, mariabackup, mbstream).
    pub image: String,
    /// The command-line client used for `exec` (`podman` or `docker`).
    pub client: PathBuf,
}

static ENGINE: OnceCell<ContainerOptions> = OnceCell::const_new();

impl ContainerOptions {
    /// The engine and image from the environment, prepared once per test process:
    /// `TROVE_GUEST_CONTAINER_SOCKET` names a running engine's socket (Docker, or
    /// `podman system service`); when unset, a private `podman system service` is started
    /// (it exits by itself two minutes after its last request). `TROVE_GUEST_MARIADB_IMAGE`
    /// names the image (default [`MARIADB_TEST_IMAGE`], built from Debian packages by
    /// `trove-guest-mysql/testkit/build-mariadb-image.sh` when missing, about 2 minutes once).
    /// `TROVE_GUEST_CONTAINER_CLIENT` names the exec client (default `podman`).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when podman is missing; [`Error::Service`] when the engine does not
    /// answer or the image cannot be built.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: an engine or image build may be left running.
    pub async fn from_env() -> Result<Self> {
        ENGINE
            .get_or_try_init(|| async {
                let client = std::env::var_os("TROVE_GUEST_CONTAINER_CLIENT")
                    .map_or_else(|| PathBuf::from("podman"), PathBuf::from);
                let image = std::env::var("TROVE_GUEST_MARIADB_IMAGE")
                    .unwrap_or_else(|_| MARIADB_TEST_IMAGE.to_string());
                let socket = match std::env::var_os("TROVE_GUEST_CONTAINER_SOCKET") {
                    Some(s) => PathBuf::from(s),
                    None => start_private_engine().await?,
                };
                let probe = ContainerService::new(&socket, "probe")?;
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match probe.client()?.ping().await {
                        Ok(_) => break,
                        Err(e) if Instant::now() > deadline => {
                            return Err(Error::Service {
                                message: format!(
                                    "no container engine answers on {}: {e}",
                                    socket.display()
                                ),
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                let exists = tokio::time::timeout(
                    Duration::from_secs(30),
                    probe.client()?.inspect_image(&image),
                )
                .await;
                if !matches!(exists, Ok(Ok(_))) {
                    let script = concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/testkit/build-mariadb-image.sh"
                    );
                    ToolCommand::new("sh")
                        .arg(script)
                        .arg(&image)
                        .timeout(Duration::from_secs(900))
                        .run()
                        .await
                        .map_err(|e| Error::Service {
                            message: format!("building test image {image} failed: {e}"),
                        })?;
                }
                Ok(ContainerOptions {
                    socket,
                    image,
                    client,
                })
            })
            .await
            .cloned()
    }

    fn exec_args(&self) -> Vec<String> {
        let url = format!("unix://{}", self.socket.display());
        if self
            .client
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("podman"))
        {
            vec!["--remote".into(), "--url".into(), url]
        } else {
            vec!["--host".into(), url]
        }
    }
}

async fn start_private_engine() -> Result<PathBuf> {
    require_program("/usr/bin/podman", "podman")?;
    // Directories of private engines that have exited (nothing answers on their socket).
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Old enough that its engine, which exits two minutes after its last request, had
            // its socket long ago: a younger one may belong to a process still starting it.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600));
            if name.starts_with("tg-podman-")
                && old
                && std::os::unix::net::UnixStream::connect(e.path().join("podman.sock")).is_err()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("tg-podman-")
        .tempdir()
        .context(|| "create the engine directory".into())?
        .keep();
    let conf = dir.join("containers.conf");
    // Explicit limits and runc: the defaults fail on hosts whose cgroups or limits crun cannot
    // handle.
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .context(|| format!("write {}", conf.display()))?;
    let socket = dir.join("podman.sock");
    let child = std::process::Command::new("/usr/bin/podman")
        .args(["system", "service", "--time=120"])
        .arg(format!("unix://{}", socket.display()))
        .env("CONTAINERS_CONF", &conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::io("start podman system service", e))?;
    // It exits by itself when idle; it is not waited for.
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(Error::Service {
                message: "podman system service did not create its socket in 30 s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(socket)
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            server_id: 1,
            log_bin: false,
            root_password: None,
            settings: Vec::new(),
            buffer_pool: "64M".into(),
            redo_log_size: "32M".into(),
            start_timeout: Duration::from_secs(60),
            container: None,
        }
    }
}

impl MariaDbOptions {
    /// Defaults with the given server id.
    pub fn new(server_id: u32) -> Self {
        MariaDbOptions {
            server_id,
            ..Self::default()
        }
    }
    /// Sets [`MariaDbOptions::log_bin`].
    pub fn with_log_bin(mut self, on: bool) -> Self {
        self.log_bin = on;
        self
    }
    /// Sets [`MariaDbOptions::root_password`].
    pub fn with_root_password(mut self, password: Secret) -> Self {
        self.root_password = Some(password);
        self
    }
    /// Runs the server in a container.
    pub fn in_container(mut self, container: ContainerOptions) -> Self {
        self.container = Some(container);
        self
    }
    /// Serves TLS with the certificate and key in these PEM files (`ssl_cert`, `ssl_key`),
    /// trusting client certificates of `ca_file` (`ssl_ca`).
    pub fn with_tls(
        self,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
        ca_file: impl AsRef<Path>,
    ) -> Self {
        let text = |p: &Path| p.display().to_string();
        self.with_setting("ssl_cert", text(cert_file.as_ref()))
            .with_setting("ssl_key", text(key_file.as_ref()))
            .with_setting("ssl_ca", text(ca_file.as_ref()))
    }
    /// Adds a `[mysqld]` setting.
    pub fn with_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// A running throwaway MariaDB server. Dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct MariaDbServer {
    dir: PathBuf,
    port: u16,
    service: ServerService,
    handle: DatastoreHandle,
    password: Secret,
}

/// What runs the server.
#[derive(Debug)]
enum ServerService {
    Local(Arc<TestService>),
    /// The container, its engine, and whether this test kit created it (only then is it
    /// removed on drop).
    Container(Arc<ContainerService>, ContainerOptions, bool),
}

/// A server the user already runs in a container ("bring your own server"), described by
/// environment variables so the conformance suite can run against it. For server id `N`:
///
/// | variable | meaning |
/// |---|---|
/// | `TROVE_GUEST_CONTAINER_SOCKET` | the engine's Docker-API socket (shared) |
/// | `TROVE_GUEST_CONTAINER_CLIENT` | exec client, `podman` (default) or `docker` (shared) |
/// | `TROVE_GUEST_BYO_N_CONTAINER` | the server's container |
/// | `TROVE_GUEST_BYO_N_TOOLS_CONTAINER` | where the backup tools run (default: the server's) |
/// | `TROVE_GUEST_BYO_N_DIR` | the instance directory on the host, bind-mounted at the same path |
/// | `TROVE_GUEST_BYO_N_PORT` | the server's port on 127.0.0.1 |
/// | `TROVE_GUEST_BYO_N_PASSWORD_FILE` | root's password (first line; a 0600 file), optional |
/// | `TROVE_GUEST_BYO_N_OS_USER` | the container's database account, `uid:gid` (default `100:101`) |
///
/// The instance directory has the test kit's layout: `my.cnf` (the server's option file),
/// `data/`, `conf.d/` (included by `my.cnf`), `binlog/`, `relay/`, `work/`, `tmp/` and the
/// server's socket `sock`. The suite changes the server (schema, binary logging, replication):
/// give it fresh servers. It never creates, stops for good, or removes them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExistingServer {
    /// The engine and exec client.
    pub engine: ContainerOptions,
    /// The server's container.
    pub container: String,
    /// The backup tools' container.
    pub tools_container: String,
    /// The instance directory (same path on the host and in the containers).
    pub dir: PathBuf,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// Root's password.
    pub password: Secret,
    /// The container's database account.
    pub os_user: OsUser,
}

impl ExistingServer {
    /// The server with id `server_id` from the environment (see the type's documentation);
    /// `None` when `TROVE_GUEST_BYO_<id>_CONTAINER` is unset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the variable that is missing or malformed.
    pub fn from_env(server_id: u32) -> Result<Option<Self>> {
        Self::from_vars(server_id, |k| std::env::var(k).ok())
    }

    /// Like [`ExistingServer::from_env`], reading the variables through `lookup`.
    ///
    /// # Errors
    ///
    /// As [`ExistingServer::from_env`].
    pub fn from_vars(
        server_id: u32,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>> {
        let var = |k: &str| lookup(&format!("TROVE_GUEST_BYO_{server_id}_{k}"));
        let Some(container) = var("CONTAINER") else {
            return Ok(None);
        };
        let need = |k: &str| {
            var(k).ok_or_else(|| {
                Error::invalid(
                    "bring-your-own server",
                    format!("TROVE_GUEST_BYO_{server_id}_{k} is not set"),
                )
            })
        };
        let socket = lookup("TROVE_GUEST_CONTAINER_SOCKET").ok_or_else(|| {
            Error::invalid(
                "bring-your-own server",
                "TROVE_GUEST_CONTAINER_SOCKET is not set",
            )
        })?;
        let client = lookup("TROVE_GUEST_CONTAINER_CLIENT")
            .map_or_else(|| PathBuf::from("podman"), PathBuf::from);
        let port = need("PORT")?.parse().map_err(|_| {
            Error::invalid(
                "bring-your-own server",
                format!("TROVE_GUEST_BYO_{server_id}_PORT is not a port"),
            )
        })?;
        let password = match var("PASSWORD_FILE") {
            Some(f) => {
                let text = std::fs::read_to_string(&f).context(|| format!("read {f}"))?;
                Secret::new(text.lines().next().unwrap_or_default())
            }
            None => Secret::new(""),
        };
        let os_user = match var("OS_USER") {
            None => IMAGE_MYSQL_USER,
            Some(u) => {
                let parsed = u.split_once(':').and_then(|(a, b)| {
                    Some(OsUser {
                        uid: a.parse().ok()?,
                        gid: b.parse().ok()?,
                    })
                });
                parsed.ok_or_else(|| {
                    Error::invalid(
                        "bring-your-own server",
                        format!("TROVE_GUEST_BYO_{server_id}_OS_USER {u:?}: expected uid:gid"),
                    )
                })?
            }
        };
        Ok(Some(ExistingServer {
            engine: ContainerOptions {
                socket: PathBuf::from(socket),
                image: String::new(),
                client,
            },
            tools_container: var("TOOLS_CONTAINER").unwrap_or_else(|| container.clone()),
            container,
            dir: PathBuf::from(need("DIR")?),
            port,
            password,
            os_user,
        }))
    }
}

static TEMPLATE: OnceCell<PathBuf> = OnceCell::const_new();

struct CnfPaths<'a> {
    dir: &'a Path,
    data: &'a Path,
    port: u16,
    server_id: u32,
}

fn write_cnf(p: &CnfPaths<'_>, opts: &MariaDbOptions) -> Result<PathBuf> {
    let d = p.dir.display();
    let mut cnf = format!(
        "# Throwaway test server written by the trove-guest-mysql testkit.\n\
         [mysqld]\n\
         datadir = {data}\n\
         socket = {d}/sock\n\
         pid_file = {d}/mariadbd.pid\n\
         port = {port}\n\
         bind_address = 127.0.0.1\n\
         tmpdir = {d}/tmp\n\
         skip_name_resolve\n\
         character_set_server = utf8mb4\n\
         collation_server = utf8mb4_general_ci\n\
         innodb_buffer_pool_size = {bp}\n\
         innodb_log_file_size = {redo}\n\
         innodb_flush_log_at_trx_commit = 2\n\
         performance_schema = OFF\n\
         server_id = {sid}\n\
         relay_log = {d}/relay/relay-bin\n\
         relay_log_index = {d}/relay/relay-bin.index\n",
        data = p.data.display(),
        port = p.port,
        bp = opts.buffer_pool,
        redo = opts.redo_log_size,
        sid = p.server_id,
    );
    if opts.log_bin {
        cnf.push_str(&format!(
            "log_bin = {d}/binlog/mysql-bin\nlog_bin_index = {d}/binlog/mysql-bin.index\nbinlog_format = ROW\n"
        ));
    }
    for (k, v) in &opts.settings {
        cnf.push_str(&format!("{k} = {v}\n"));
    }
    cnf.push_str(&format!(
        "\n[client]\nsocket = {d}/sock\nuser = root\ndefault_character_set = utf8mb4\n\n!includedir {d}/conf.d\n"
    ));
    let path = p.dir.join("my.cnf");
    std::fs::write(&path, cnf).context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Stops and removes instances left by test processes that died without dropping their
/// servers (killed by a timeout, say): each instance records its owner's pid in `owner.pid`.
fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("tgm-") || name.starts_with("tgm-tpl-") {
            continue;
        }
        let dir = e.path();
        let read_pid = |f: &str| -> Option<u32> {
            std::fs::read_to_string(dir.join(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let Some(owner) = read_pid("owner.pid") else {
            continue;
        };
        if !has_exited(owner) {
            continue;
        }
        if let Some(pid) = read_pid("mariadbd.pid") {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
            if ours && !has_exited(pid) {
                stop_blocking(
                    pid,
                    &StopOptions::new(Signal::SIGTERM, Duration::from_secs(10)),
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Initialises (once per machine and MariaDB build) the template datadir and returns it.
async fn template() -> Result<PathBuf> {
    TEMPLATE
        .get_or_try_init(|| async {
            let _ = tokio::task::spawn_blocking(reap_orphans).await;
            require_program(MARIADBD, "mariadb-server")?;
            require_program(MARIADB_INSTALL_DB, "mariadb-server")?;
            let meta = std::fs::metadata(MARIADBD).context(|| format!("stat {MARIADBD}"))?;
            let stamp = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let final_dir =
                std::env::temp_dir().join(format!("tg-mariadb-tpl-{}-{stamp}", meta.len()));
            if final_dir.join("data").join(".tg-complete").exists() {
                return Ok(final_dir.join("data"));
            }
            let tmp = tempfile::Builder::new()
                .prefix("tgm-tpl-")
                .tempdir()
                .context(|| "create template dir".to_owned())?;
            let dir = tmp.path();
            let data = dir.join("data");
            for sub in ["data", "tmp", "conf.d"] {
                std::fs::create_dir_all(dir.join(sub)).context(|| format!("mkdir {sub}"))?;
            }
            let cnf = write_cnf(
                &CnfPaths {
                    dir,
                    data: &data,
                    port: 0,
                    server_id: 1,
                },
                &MariaDbOptions::default(),
            )?;
            let mut cmd = ToolCommand::new(MARIADB_INSTALL_DB)
                .arg(format!("--defaults-file={}", cnf.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .arg(format!("--datadir={}", data.display()));
            if is_root() {
                cmd = cmd.arg("--user=root");
            }
            cmd.run().await.map_err(|e| match e {
                Error::NotFound { .. } => missing_program(MARIADB_INSTALL_DB, "mariadb-server"),
                other => other,
            })?;
            std::fs::write(data.join(".tg-complete"), b"").context(|| "mark template".into())?;
            let kept = tmp.keep();
            match std::fs::rename(&kept, &final_dir) {
                Ok(()) => Ok(final_dir.join("data")),
                Err(_) if final_dir.join("data").join(".tg-complete").exists() => {
                    // Another process won the race; use its template.
                    let _ = std::fs::remove_dir_all(&kept);
                    Ok(final_dir.join("data"))
                }
                Err(e) => Err(Error::io(
                    format!("rename template to {}", final_dir.display()),
                    e,
                )),
            }
        })
        .await
        .cloned()
}

impl MariaDbServer {
    /// Starts a fresh server: copies the template datadir, writes the option file and waits
    /// until the server accepts connections.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the Debian package when `mariadbd` or `mariadb-install-db` is
    /// missing; [`Error::Service`] when the server does not start; [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled start may leave an instance directory behind.
    pub async fn start(opts: MariaDbOptions) -> Result<Self> {
        let template = template().await?;
        let dir = tempfile::Builder::new()
            .prefix("tgm-")
            .tempdir()
            .context(|| "create instance dir".into())?
            .keep();
        match Self::start_in(dir.clone(), &template, &opts).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    async fn start_in_container(
        dir: PathBuf,
        template: &Path,
        opts: &MariaDbOptions,
        c: &ContainerOptions,
    ) -> Result<Self> {
        for sub in ["conf.d", "binlog", "relay", "tmp", "work"] {
            std::fs::create_dir_all(dir.join(sub))
                .context(|| format!("mkdir {}", dir.join(sub).display()))?;
        }
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
            .context(|| "write owner.pid".into())?;
        let data = dir.join("data");
        ToolCommand::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&data)
            .run()
            .await?;
        let port = free_port()?;
        // The instance directory is mounted at the same path in the container, so the option
        // file's paths hold on both sides.
        write_cnf(
            &CnfPaths {
                dir: &dir,
                data: &data,
                port,
                server_id: opts.server_id,
            },
            opts,
        )?;
        ToolCommand::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", IMAGE_MYSQL_USER.uid, IMAGE_MYSQL_USER.gid))
            .arg(&dir)
            .run()
            .await?;
        let name = format!(
            "trove-{}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        );
        let socket = dir.join("sock");
        let service = Arc::new(
            ContainerService::new(&c.socket, &name)?
                .with_readiness(Readiness::Unix(socket.clone()))
                .with_start_timeout(opts.start_timeout)
                .with_stop_grace(Duration::from_secs(30)),
        );
        let spec = ContainerSpec::new(
            &c.image,
            vec![
                "mariadbd".into(),
                format!("--defaults-file={}", dir.join("my.cnf").display()),
                "--user=mysql".into(),
            ],
        )
        .with_bind(&dir, &dir)
        .with_host_network(true);
        service.create(&spec).await?;
        let tools = ToolPlace::Container(
            ContainerExec::new(&c.socket, &name)
                .with_client(&c.client)
                .with_mount(&dir, &dir),
        );
        let admin =
            AdminConnection::new("127.0.0.1", port, "root", Secret::new("")).with_socket(&socket);
        let handle = DatastoreHandle::new(
            admin,
            &data,
            dir.join("conf.d"),
            service.clone() as Arc<dyn ServiceControl>,
        )
        .with_server_id(opts.server_id)
        .with_work_dir(dir.join("work"))
        .with_os_user(IMAGE_MYSQL_USER)
        .with_tools(tools);
        let mut server = MariaDbServer {
            dir,
            port,
            service: ServerService::Container(service.clone(), c.clone(), true),
            handle,
            password: Secret::new(""),
        };
        service.start().await?;
        server.wait_answering(opts.start_timeout).await?;
        if let Some(pw) = &opts.root_password {
            server.set_root_password(pw.clone()).await?;
        }
        Ok(server)
    }

    /// Adopts a server the user runs ([`ExistingServer`]): starts its container when stopped
    /// and waits until it answers. Dropping the returned server leaves container and files in
    /// place.
    ///
    /// # Errors
    ///
    /// The container's [`ContainerError`](trove_guest_core::ContainerError) as
    /// [`Error::Service`]; [`Error::Datastore`] when it does not answer.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the container may be left starting.
    pub async fn adopt(existing: ExistingServer, server_id: u32) -> Result<Self> {
        let dir = existing.dir.clone();
        let socket = dir.join("sock");
        let service = Arc::new(
            ContainerService::new(&existing.engine.socket, &existing.container)?
                .with_readiness(Readiness::Unix(socket.clone()))
                .with_stop_grace(Duration::from_secs(30)),
        );
        let tools = ToolPlace::Container(
            ContainerExec::new(&existing.engine.socket, &existing.tools_container)
                .with_client(&existing.engine.client)
                .with_mount(&dir, &dir),
        );
        let admin = AdminConnection::new(
            "127.0.0.1",
            existing.port,
            "root",
            existing.password.clone(),
        )
        .with_socket(&socket);
        let handle = DatastoreHandle::new(
            admin,
            dir.join("data"),
            dir.join("conf.d"),
            service.clone() as Arc<dyn ServiceControl>,
        )
        .with_server_id(server_id)
        .with_work_dir(dir.join("work"))
        .with_os_user(existing.os_user)
        .with_tools(tools);
        let server = MariaDbServer {
            dir,
            port: existing.port,
            service: ServerService::Container(service.clone(), existing.engine.clone(), false),
            handle,
            password: existing.password.clone(),
        };
        service.start().await?;
        server.wait_answering(Duration::from_secs(60)).await?;
        Ok(server)
    }

    /// The container the server runs in, when it does.
    pub fn container(&self) -> Option<&ContainerService> {
        match &self.service {
            ServerService::Container(s, _, _) => Some(s),
            ServerService::Local(_) => None,
        }
    }

    async fn start_in(dir: PathBuf, template: &Path, opts: &MariaDbOptions) -> Result<Self> {
        if let Some(c) = &opts.container {
            return Self::start_in_container(dir, template, opts, c).await;
        }
        for sub in ["conf.d", "binlog", "relay", "tmp", "work"] {
            std::fs::create_dir_all(dir.join(sub))
                .context(|| format!("mkdir {}", dir.join(sub).display()))?;
        }
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
            .context(|| "write owner.pid".into())?;
        let data = dir.join("data");
        ToolCommand::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&data)
            .run()
            .await?;
        let socket = dir.join("sock");
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let cnf = write_cnf(
                &CnfPaths {
                    dir: &dir,
                    data: &data,
                    port,
                    server_id: opts.server_id,
                },
                opts,
            )?;
            let mut cmd =
                ToolCommand::new(MARIADBD).arg(format!("--defaults-file={}", cnf.display()));
            if is_root() {
                cmd = cmd.arg("--user=root");
            }
            let process = LocalProcess::new(cmd, Readiness::Unix(socket.clone()))
                .with_start_timeout(opts.start_timeout);
            let service = Arc::new(TestService::new(process));
            match service.start().await {
                Ok(()) => {
                    let admin = AdminConnection::new("127.0.0.1", port, "root", Secret::new(""))
                        .with_socket(&socket);
                    let handle = DatastoreHandle::new(
                        admin,
                        &data,
                        dir.join("conf.d"),
                        service.clone() as Arc<dyn ServiceControl>,
                    )
                    .with_server_id(opts.server_id)
                    .with_work_dir(dir.join("work"));
                    let mut server = MariaDbServer {
                        dir,
                        port,
                        service: ServerService::Local(service),
                        handle,
                        password: Secret::new(""),
                    };
                    // The socket accepts connections before the server has finished starting,
                    // and mariadbd defers SIGTERM until it has: wait for a real answer, so a
                    // server handed out can always be stopped at once.
                    server.wait_answering(opts.start_timeout).await?;
                    if let Some(pw) = &opts.root_password {
                        server.set_root_password(pw.clone()).await?;
                    }
                    return Ok(server);
                }
                Err(Error::NotFound { .. }) => {
                    return Err(missing_program(MARIADBD, "mariadb-server"));
                }
                Err(e) => {
                    if is_port_conflict(&e.to_string()) {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Service {
            message: "no free port".into(),
        }))
    }

    async fn wait_answering(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.conn().await {
                Ok(mut c) => {
                    let probe = Sql::server_identity();
                    let answered = c.query_drop(probe.expose_text()).await.is_ok();
                    let _ = c.disconnect().await;
                    if answered {
                        return Ok(());
                    }
                }
                Err(e) if started.elapsed() > timeout => return Err(e),
                Err(_) => {}
            }
            if started.elapsed() > timeout {
                return Err(Error::timeout("the test server to answer a query", timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn set_root_password(&mut self, pw: Secret) -> Result<()> {
        let mut conn = self.conn().await?;
        let root = Account::new("root", "localhost")?;
        let sql = Sql::new(Flavor::mariadb(10, 11, 0));
        conn.query_drop(Sql::session_setup().expose_text())
            .await
            .map_err(|e| Error::datastore("test server session setup", e))?;
        // The statement carries the password: it is never logged.
        conn.query_drop(sql.set_password(&root, &pw).expose_text())
            .await
            .map_err(|_| Error::Datastore {
                // The statement holds the password: neither it nor the server's message is kept.
                message: "could not set the test server's root password".into(),
                source: None,
            })?;
        let _ = conn.disconnect().await;
        self.password = pw.clone();
        self.handle.admin.password = pw;
        Ok(())
    }

    /// A [`DatastoreHandle`] for this server (admin root over the socket; `config_dir` is
    /// `conf.d/`, included by the instance option file; `work_dir` is on the datadir's
    /// filesystem; `service` restarts this server).
    pub fn handle(&self) -> DatastoreHandle {
        self.handle.clone()
    }

    /// The TCP port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The instance option file (pass it first as `--defaults-file=` to any MariaDB program).
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    /// The override directory (`conf.d/`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("conf.d")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where binary logs of this instance go (outside the datadir).
    pub fn binlog_dir(&self) -> PathBuf {
        self.dir.join("binlog")
    }

    /// Where relay logs of this instance go (outside the datadir).
    pub fn relay_log_dir(&self) -> PathBuf {
        self.dir.join("relay")
    }

    /// A `mysql://` URL reaching this server over TCP as root (password included when set; a
    /// test convenience, never for logs).
    pub fn url(&self) -> String {
        if self.password.is_empty() {
            format!("mysql://root@127.0.0.1:{}/", self.port)
        } else {
            format!(
                "mysql://root:{}@127.0.0.1:{}/",
                self.password.expose(),
                self.port
            )
        }
    }

    async fn conn(&self) -> Result<mysql_async::Conn> {
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(self.socket().to_string_lossy().into_owned()))
            .user(Some("root"))
            .pass(if self.password.is_empty() {
                None
            } else {
                Some(self.password.expose().to_owned())
            })
            .prefer_socket(false);
        let what = format!("connect to test server on port {}", self.port);
        match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
            Ok(r) => r.map_err(|e| Error::datastore(what, e)),
            Err(_) => Err(Error::timeout(what, CONNECT_TIMEOUT)),
        }
    }

    /// Runs `sql` (one or more statements) and returns the rows of the last result set as
    /// text (`None` for SQL `NULL`).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when the server rejects the statement.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the connection is dropped.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut conn = self.conn().await?;
        let rows: Vec<mysql_async::Row> = conn
            .query(sql)
            .await
            .map_err(|e| Error::datastore(format!("test query {sql:?}"), e))?;
        let _ = conn.disconnect().await;
        Ok(rows
            .into_iter()
            .map(|r| r.unwrap().into_iter().map(value_text).collect())
            .collect())
    }

    /// Runs `sql` and returns the first column of the first row, if any.
    ///
    /// # Errors
    ///
    /// As [`MariaDbServer::query`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn query_one(&self, sql: &str) -> Result<Option<String>> {
        Ok(self
            .query(sql)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten())
    }

    /// Runs statements that return no rows.
    ///
    /// # Errors
    ///
    /// As [`MariaDbServer::query`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn execute(&self, sql: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        conn.query_drop(sql)
            .await
            // Only the statement's first word: test statements may carry a password.
            .map_err(|e| {
                let verb = sql.split_whitespace().next().unwrap_or_default();
                Error::datastore(format!("test statement {verb} ..."), e)
            })?;
        let _ = conn.disconnect().await;
        Ok(())
    }

    /// Stops the server (`SIGTERM`, waits).
    ///
    /// # Errors
    ///
    /// [`Error::Service`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn stop(&self) -> Result<()> {
        match &self.service {
            ServerService::Local(s) => s.stop().await,
            ServerService::Container(s, _, _) => s.stop().await,
        }
    }

    /// Starts the server again after [`MariaDbServer::stop`].
    ///
    /// # Errors
    ///
    /// [`Error::Service`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn restart(&self) -> Result<()> {
        match &self.service {
            ServerService::Local(s) => s.restart().await,
            ServerService::Container(s, _, _) => s.restart().await,
        }
    }
}

fn value_text(v: mysql_async::Value) -> Option<String> {
    use mysql_async::Value;
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(f) => Some(f.to_string()),
        other => Some(format!("{other:?}")),
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        if let ServerService::Container(_, _, false) = &self.service {
            // Not ours: the container and its files stay as the user left them.
            return;
        }
        if let ServerService::Container(s, c, true) = &self.service {
            // The test created this container: remove it (bounded by the engine's stop
            // timeout), then its files.
            let _ = std::process::Command::new(&c.client)
                .args(c.exec_args())
                .args(["rm", "-f", "-t", "10", s.container()])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        let ServerService::Local(service) = &self.service else {
            return;
        };
        let pid = service.pid();
        if pid != 0 {
            stop_blocking(
                pid,
                &StopOptions::new(Signal::SIGTERM, Duration::from_secs(30)),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
