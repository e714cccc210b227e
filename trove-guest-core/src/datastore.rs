//! What a strategy is given to act on its server.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::place::ToolPlace;
use crate::runner::{OsUser, ToolCommand};
use crate::secret::Secret;
use crate::service::ServiceControl;
use crate::tls::{AdminTls, ServerTls};
use crate::wire::MasterAddress;

/// How the agent logs in to its own server as an administrator.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminConnection {
    /// Host (TCP) the server listens on.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Unix socket (MariaDB: the socket file; PostgreSQL: the socket directory), preferred for
    /// local administration when set.
    pub socket: Option<PathBuf>,
    /// Administrator user.
    pub user: String,
    /// Its password (may be empty for socket/peer authentication).
    pub password: Secret,
    /// TLS on the TCP connection (default [`AdminTls::Off`]; a socket connection never
    /// uses TLS).
    pub tls: AdminTls,
}

impl AdminConnection {
    /// Connection settings for `user` at `host:port`.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: Secret,
    ) -> Self {
        AdminConnection {
            host: host.into(),
            port,
            socket: None,
            user: user.into(),
            password,
            tls: AdminTls::Off,
        }
    }

    /// Uses a Unix socket (file or directory, per datastore) for administration.
    pub fn with_socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.socket = Some(socket.into());
        self
    }

    /// Sets [`AdminConnection::tls`].
    pub fn with_tls(mut self, tls: AdminTls) -> Self {
        self.tls = tls;
        self
    }

    /// The CA certificate and server name this connection verifies the server against
    /// ([`AdminTls::trust`]): `None` with [`AdminTls::Off`] and over a Unix socket (TLS
    /// applies to TCP only).
    ///
    /// # Errors
    ///
    /// As [`AdminTls::trust`].
    pub fn tls_trust(&self) -> Result<Option<crate::wire::ReplicationTls>> {
        if self.socket.is_some() {
            return Ok(None);
        }
        self.tls.trust()
    }
}

impl fmt::Debug for AdminConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Everything a strategy needs to act on one local server.
///
/// The strategy writes its own override files into `config_dir` (which the server's main
/// configuration includes) and removes them on detach/demote; it never edits the operator's
/// main configuration file.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DatastoreHandle {
    /// Administrator login.
    pub admin: AdminConnection,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Directory of override files included by the server's configuration.
    pub config_dir: PathBuf,
    /// Directory for staging restores and scratch files; must be on the data directory's
    /// filesystem so swaps are renames. Defaults to the data directory's parent.
    pub work_dir: PathBuf,
    /// Starts, stops and restarts the server.
    pub service: Arc<dyn ServiceControl>,
    /// Where replicas reach this server.
    pub advertise: MasterAddress,
    /// This server's unique id in a replication set (MySQL `server_id`).
    pub server_id: u32,
    /// The OS account owning the data directory, for tools that must run as it (PostgreSQL).
    pub os_user: Option<OsUser>,
    /// Directory holding the datastore's programs (for example `/usr/lib/postgresql/15/bin`);
    /// programs are looked up in `PATH` when absent.
    pub bin_dir: Option<PathBuf>,
    /// Where the backup and restore tools run: on the host (default) or through `exec` in a
    /// container. For a container, the data, config and work directories must lie in its bind
    /// mounts, and [`DatastoreHandle::os_user`] is the container's database account (uid:gid).
    pub tools: ToolPlace,
    /// TLS for replication (recommended): where this server's CA, certificate and key live,
    /// and whether it requires TLS as a replica. `None`: plaintext replication.
    pub tls: Option<ServerTls>,
}

impl DatastoreHandle {
    /// A handle with the required parts; `advertise` defaults to the admin host and port,
    /// `server_id` to 1, `work_dir` to the data directory's parent.
    pub fn new(
        admin: AdminConnection,
        data_dir: impl Into<PathBuf>,
        config_dir: impl Into<PathBuf>,
        service: Arc<dyn ServiceControl>,
    ) -> Self {
        let data_dir = data_dir.into();
        let work_dir = data_dir
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("/"));
        DatastoreHandle {
            advertise: MasterAddress {
                host: admin.host.clone(),
                port: admin.port,
            },
            admin,
            data_dir,
            config_dir: config_dir.into(),
            work_dir,
            service,
            server_id: 1,
            os_user: None,
            bin_dir: None,
            tools: ToolPlace::Host,
            tls: None,
        }
    }

    /// Sets [`DatastoreHandle::tls`].
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets [`DatastoreHandle::tools`].
    pub fn with_tools(mut self, place: ToolPlace) -> Self {
        self.tools = place;
        self
    }

    /// `cmd` prepared to run where this datastore's tools run ([`ToolPlace::prepare`]).
    ///
    /// # Errors
    ///
    /// As [`ToolPlace::prepare`].
    pub fn tool(&self, cmd: ToolCommand) -> Result<ToolCommand> {
        self.tools.prepare(cmd)
    }

    /// Sets [`DatastoreHandle::advertise`].
    pub fn with_advertise(mut self, host: impl Into<String>, port: u16) -> Self {
        self.advertise = MasterAddress {
            host: host.into(),
            port,
        };
        self
    }

    /// Sets [`DatastoreHandle::server_id`].
    pub fn with_server_id(mut self, id: u32) -> Self {
        self.server_id = id;
        self
    }

    /// Sets [`DatastoreHandle::work_dir`].
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Sets [`DatastoreHandle::os_user`].
    pub fn with_os_user(mut self, user: OsUser) -> Self {
        self.os_user = Some(user);
        self
    }

    /// Sets [`DatastoreHandle::bin_dir`].
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// The path of a datastore program: inside `bin_dir` when set, else the bare name.
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}
