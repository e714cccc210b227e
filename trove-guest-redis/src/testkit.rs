//! Throwaway Redis servers for tests (feature `testkit`), built on core's harness
//! ([`trove_guest_core::testkit`]).
//!
//! [`RedisServer::start`] writes a configuration into a short directory under `/tmp` and starts
//! `redis-server` as a [`LocalProcess`] on a free loopback port. Dropping the server stops it
//! and removes its directory. Layout:
//!
//! ```text
//! redis.conf   main configuration; includes conf.d/*.conf last
//! users.acl    aclfile (0600): `default` off, the administrator (password as SHA-256)
//! conf.d/      DatastoreHandle::config_dir (the strategy's override file)
//! data/        the data directory (dump.rdb)
//! redis.log    the server log
//! redis.sock   the Unix socket the administrator uses
//! ```
//!
//! When this process is root the server runs as the `redis` account.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

use crate::commands;
use crate::resp::{Conn, Reply};

/// The administrator of test servers.
pub const ADMIN_USER: &str = "admin";

/// Options for [`RedisServer::start`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// The server id recorded in the handle (Redis has none).
    pub server_id: u32,
    /// Where `redis-server` and `redis-check-rdb` are (default `/usr/bin`).
    pub bin_dir: PathBuf,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            server_id: 1,
            bin_dir: PathBuf::from("/usr/bin"),
        }
    }
}

impl RedisOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`RedisOptions::server_id`].
    pub fn with_server_id(mut self, id: u32) -> Self {
        self.server_id = id;
        self
    }
}

/// A running throwaway Redis server; dropped = stopped and removed.
pub struct RedisServer {
    dir: Option<tempfile::TempDir>,
    port: u16,
    control: Arc<TestService>,
    handle: DatastoreHandle,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("dir", &self.instance_dir())
            .field("port", &self.port)
            .finish()
    }
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

fn mkdir(path: &Path, owner: Option<OsUser>) -> Result<()> {
    std::fs::create_dir_all(path).context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .context(|| format!("chmod {}", path.display()))?;
    if let Some(o) = owner {
        o.chown(path)?;
    }
    Ok(())
}

fn main_config(d: &Path, port: u16) -> String {
    let d = d.display();
    format!(
        "# trove-guest testkit instance\n\
         bind 127.0.0.1\nport {port}\nunixsocket {d}/redis.sock\nunixsocketperm 700\n\
         daemonize no\ndir {d}/data\ndbfilename dump.rdb\nlogfile {d}/redis.log\n\
         appendonly no\nsave 3600 1\nrepl-diskless-sync-delay 0\naclfile {d}/users.acl\n\
         include {d}/conf.d/*.conf\n"
    )
}

impl RedisServer {
    /// Starts a fresh, empty server and waits until the administrator's login answers.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the package when `redis-server` is missing;
    /// [`Error::Service`] when the server does not start; [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled start leaves the temp directory behind.
    pub async fn start(opts: RedisOptions) -> Result<Self> {
        let server = require_program(opts.bin_dir.join("redis-server"), "redis-server")?;
        require_program(opts.bin_dir.join("redis-check-rdb"), "redis-tools")?;
        let user = if is_root() {
            Some(OsUser::lookup("redis").map_err(|_| Error::NotFound {
                what: "OS user \"redis\" (install the redis-server package)".into(),
            })?)
        } else {
            None
        };
        let dir = short_tempdir("tg-redis-")?;
        let path = dir.path().to_path_buf();
        if let Some(u) = user {
            u.chown(&path)?;
        }
        mkdir(&path.join("data"), user)?;
        mkdir(&path.join("conf.d"), user)?;
        let password = Secret::random(32);
        write_file(
            &path.join("users.acl"),
            &commands::admin_acl_file(ADMIN_USER, &password)?,
            0o600,
            user,
        )?;
        let conf = path.join("redis.conf");
        let log = path.join("redis.log");
        let mut attempt = 0;
        let (port, control) = loop {
            attempt += 1;
            let port = free_port()?;
            write_file(&conf, &main_config(&path, port), 0o600, user)?;
            let cmd = ToolCommand::new(&server)
                .arg(&conf)
                .current_dir(&path)
                .run_as(user);
            let service = LocalProcess::new(cmd, Readiness::Tcp(([127, 0, 0, 1], port).into()));
            let service = Arc::new(TestService::new(service));
            match service.start().await {
                Ok(()) => break (port, service),
                Err(e) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let _ = std::fs::remove_file(&log);
                    let message = format!("{e}; server log: {}", tail(&text, 2000));
                    if attempt < PORT_ATTEMPTS && is_port_conflict(&message) {
                        continue;
                    }
                    return Err(Error::Service { message });
                }
            }
        };
        let admin = AdminConnection::new("127.0.0.1", port, ADMIN_USER, password)
            .with_socket(path.join("redis.sock"));
        let mut handle = DatastoreHandle::new(
            admin,
            path.join("data"),
            path.join("conf.d"),
            control.clone() as Arc<dyn ServiceControl>,
        )
        .with_server_id(opts.server_id)
        .with_bin_dir(&opts.bin_dir)
        .with_work_dir(&path);
        if let Some(u) = user {
            handle = handle.with_os_user(u);
        }
        let s = RedisServer {
            dir: Some(dir),
            port,
            control,
            handle,
        };
        let until = trove_guest_core::deadline(Duration::from_secs(60));
        let mut backoff = trove_guest_core::poll::Backoff::new(Duration::from_millis(100));
        while let Err(e) = s.command(&["PING"]).await {
            if !backoff.tick(until).await {
                return Err(e);
            }
        }
        Ok(s)
    }

    /// The handle a strategy acts on.
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

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        let pid = self.control.pid();
        (pid != 0 && !has_exited(pid)).then_some(pid)
    }

    /// Stops the server.
    ///
    /// # Errors
    ///
    /// [`Error::Service`] when it does not stop.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn stop(&self) -> Result<()> {
        trove_guest_core::ServiceControl::stop(self.control.as_ref()).await
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.instance_dir().join("redis.log")).unwrap_or_default()
    }

    /// Runs one command as the administrator: [`admin_command`].
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] for a connection failure or an error reply.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for writes.
    pub async fn command(&self, args: &[&str]) -> Result<Vec<String>> {
        admin_command(&self.handle.admin, args).await
    }
}

/// Runs one command (test data, test checks) as the administrator of `admin`; the reply
/// flattened to text (nested arrays in order, a nil as an empty string).
///
/// # Errors
///
/// [`Error::Datastore`] for a connection failure or an error reply.
///
/// # Cancel safety
///
/// Not cancel safe for writes.
pub async fn admin_command(admin: &AdminConnection, args: &[&str]) -> Result<Vec<String>> {
    fn flat(r: Reply, out: &mut Vec<String>) {
        match r {
            Reply::Array(Some(v)) => v.into_iter().for_each(|r| flat(r, out)),
            r => out.push(r.text()),
        }
    }
    let mut c = Conn::admin(admin).await?;
    let mut out = Vec::new();
    flat(c.call(&commands::test_command(args)).await?, &mut out);
    Ok(out)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let pid = self.control.pid();
        if pid != 0 && !has_exited(pid) {
            stop_blocking(
                pid,
                &StopOptions::new(Signal::SIGTERM, Duration::from_secs(15)).to_leader_only(),
            );
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir.path());
        }
    }
}
