//! The guest agent's configuration file (TOML, or JSON with the same keys) and how it becomes a
//! [`DatastoreHandle`], a snapshot store and a strategy.
//!
//! ```toml
//! instance_id = "dfbbd9ca-b5e1-4028-adb7-f78643e17998"
//! listen = "127.0.0.1:8780"           # any address but loopback needs [http] TLS files
//!
//! [auth]                              # see `crate::http_config` for [http] and [auth]
//! token_file = "/etc/trove/agent.token"  # bearer token, first line; must be mode 0600
//!
//! [datastore]
//! type = "mariadb"                    # mariadb | mysql | postgresql | redis
//! data_dir = "/var/lib/mysql"
//! config_dir = "/etc/mysql/mariadb.conf.d/trove"   # override files the strategy owns
//! # work_dir = "/var/lib/trove-work"  # staging, same filesystem as data_dir (default: its parent)
//! # bin_dir = "/usr/lib/postgresql/15/bin"
//! # os_user = "postgres"              # PostgreSQL tools run as this account
//! server_id = 1
//! # advertise = { host = "10.0.0.5", port = 3306 }  # where replicas reach this server
//!
//! # [datastore.tls]                   # TLS replication, verified (recommended)
//! # ca_file = "/etc/trove/tls/ca.pem"  # the CA replicas verify this server with (goes into snapshot documents)
//! # server_name = "db1.example.net"    # the name in the certificate (default: advertise host)
//! # cert_file = "/etc/mysql/tls/server.pem"  # optional, with key_file: the files the server's own
//! # key_file = "/etc/mysql/tls/server.key"   #   TLS settings name; the master checks it serves this
//! #                                    #   certificate and the key (0600) is its; never changed
//! # replicas = "required"              # as a replica: refuse documents without TLS (or "allow-plaintext")
//! # admin = "verify"                   # the admin connection over TCP uses TLS too, verified
//! #                                    #   with ca_file for server_name (default "off")
//!
//! [datastore.admin]
//! host = "127.0.0.1"
//! port = 3306
//! socket = "/run/mysqld/mysqld.sock"  # MariaDB: socket file; PostgreSQL: socket directory
//! user = "root"
//! # password_file = "/etc/trove/admin.password"  # first line; must be mode 0600 or stricter
//!
//! [service]                           # how the agent restarts the server
//! kind = "systemd"
//! unit = "mariadb.service"
//! # kind = "process"                  # or: a child process of the agent
//! # program = "/usr/sbin/mariadbd"
//! # args = ["--defaults-file=/etc/mysql/my.cnf", "--user=mysql"]
//! # ready_unix = "/run/mysqld/mysqld.sock"       # or ready_tcp = "127.0.0.1:3306"
//! # stop_signal = "SIGTERM"           # PostgreSQL: SIGINT (fast shutdown)
//! # pid_file = "/var/lib/trove/server.pid"  # a restarted agent adopts the server it names
//! # kind = "container"                # or: a server in a container (Docker or Podman API)
//! # socket = "/run/podman/podman.sock"  # the engine's Docker-API socket
//! # container = "trove-mariadb"      # the server's container (created by the deployment)
//! # tools_container = "trove-backup"  # optional: where backup tools run (default: container)
//! # client = "docker"                 # exec client: docker (default) or podman
//! # mounts = [{ host = "/srv/trove", container = "/var/lib/trove" }]  # data, config, work dirs
//! # ready_tcp = "127.0.0.1:3306"      # or ready_unix = ...
//! # start_timeout_secs = 120
//! # stop_grace_secs = 60
//!
//! [snapshot_store]
//! url = "file:///var/lib/trove/snapshots"
//! # or object storage (S3 or an S3-compatible service):
//! # url = "s3://bucket/trove/snapshots"
//! # endpoint = "https://s3.example.net"   # omit for AWS
//! # region = "us-east-1"
//! # credentials_file = "/etc/trove/s3.credentials"  # aws_access_key_id / aws_secret_access_key
//! #                                                 # lines; must be mode 0600 or stricter
//!
//! [mysql]                             # MariaDB/MySQL only; every key optional
//! binlog_dir = "/var/log/mysql/binlog"
//! relay_log_dir = "/var/log/mysql/relay"
//! server_config = "/etc/mysql/my.cnf" # read by mariabackup for InnoDB file locations
//!
//! [credentials]                       # how replication passwords reach replicas
//! secret_dir = "/var/lib/trove/secrets"  # 0700 dir of 0600 files, shared with the replicas;
//! #                                   # snapshot documents then carry a password_ref only
//! # transport = "clear-text"          # opt-in: passwords inside snapshot documents
//!
//! [trove_rpc]                         # optional: also serve OpenStack Trove over RabbitMQ
//! guest_info = "/etc/trove/conf.d/guest_info.conf"  # guest_id, instance_rpc_encr_key (0600)
//! transport_url_file = "/etc/trove/transport_url"   # amqp://user:pass@host:5672/%2f (0600)
//! # heartbeat_secs = 60               # heartbeats to trove-conductor; 0: none
//! # prepare_marker = "/var/lib/trove/guest.prepared"  # guests Trove builds as replicas: no
//! #                                   #   heartbeat until prepare(snapshot) succeeded once
//! # reply_patience_secs = 120         # how long a finished call's reply waits for the broker
//! # reconnect_attempts = 100          # consecutive failures before the agent stops; 0: never
//!
//! [log]                               # optional (see `logging`)
//! # format = "json"                   # text (default) | json
//! # level = "info"                    # a tracing filter; RUST_LOG overrides it
//! ```
//!
//! Passwords are never inline: `password_file` names a file only its owner can read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use std::time::Duration;

use trove_guest_core::store::S3Config;
use trove_guest_core::tls::AdminTls;
use trove_guest_core::{
    AdminConnection, ContainerExec, ContainerService, DatastoreHandle, DatastoreKind, Error,
    LocalProcess, LocalSnapshotStore, ObjectSnapshotStore, OsUser, Readiness, ReplicaTlsPolicy,
    Result, Secret, ServerTls, ServiceControl, SnapshotStore, SystemdUnit, ToolCommand, ToolPlace,
};
use trove_guest_core::{
    CredentialBroker, CredentialOptions, CredentialTransport, DirectorySecretStore, SecretStore,
    SharedStrategy,
};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The instance id the agent answers to on `/instances/{id}/action`.
    pub instance_id: String,
    /// Where the agent listens on TCP (needs `[auth] token_file`; any address but loopback
    /// needs TLS in `[http]`). Optional when `[http] unix_socket` is set.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// TLS, the Unix socket and error detail of the HTTP API.
    #[serde(default)]
    pub http: crate::http_config::HttpSection,
    /// Who may call the HTTP API.
    #[serde(default)]
    pub auth: crate::http_config::AuthSection,
    /// The local server.
    pub datastore: DatastoreSection,
    /// How the server is started and stopped.
    pub service: ServiceSection,
    /// Where snapshots live.
    pub snapshot_store: StoreSection,
    /// MariaDB/MySQL backend settings.
    #[serde(default)]
    pub mysql: MysqlSection,
    /// Trove's RPC front end (oslo.messaging over AMQP), when set.
    #[serde(default)]
    pub trove_rpc: Option<TroveRpcSection>,
    /// The agent's log output (`[log]`, see [`crate::logging`]).
    #[serde(default)]
    pub log: crate::logging::LogSection,
    /// How replication passwords reach replicas; absent: in clear inside snapshot documents.
    #[serde(default)]
    pub credentials: Option<CredentialsSection>,
}

/// How replication passwords travel, as `[credentials]` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TransportSetting {
    /// Through the secret store; documents carry `password_ref` only.
    ByReference,
    /// Inside the snapshot document, in clear (opt-in).
    ClearText,
}

/// `[credentials]`: the secret store replication passwords go through.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CredentialsSection {
    /// The directory secret store (0700; one 0600 file per password), shared by the master and
    /// its replicas (a replica resolves `password_ref` in it).
    #[serde(default)]
    pub secret_dir: Option<PathBuf>,
    /// `by-reference` (the default when `secret_dir` is set) or `clear-text`.
    #[serde(default)]
    pub transport: Option<TransportSetting>,
}

/// `[trove_rpc]`: serve a stock OpenStack Trove control plane over RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TroveRpcSection {
    /// Trove's `guest_info.conf` (`guest_id`, `instance_rpc_encr_key`; 0600 when it holds the key).
    pub guest_info: PathBuf,
    /// File holding the AMQP URL (with the broker password) on its first line; mode 0600.
    pub transport_url_file: PathBuf,
    /// Seconds between heartbeats to trove-conductor (default 60; 0: none).
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
    /// Seconds a finished call's reply is retried while the broker is away (default 120; one
    /// attempt every 500 ms, each bounded to 10 s; then given up, logged).
    #[serde(default)]
    pub reply_patience_secs: Option<u64>,
    /// Consecutive failed attempts to reach the broker after which the agent stops with an
    /// error, for its service manager to restart it (default 100; 0: never give up).
    #[serde(default)]
    pub reconnect_attempts: Option<u32>,
    /// On a guest Trove builds as a replica: the file that records a successful
    /// `prepare(snapshot=...)`; until it exists no heartbeat goes to trove-conductor (as
    /// Trove's guest sends none before its prepare ends). Unset: the status is reported from
    /// the start.
    #[serde(default)]
    pub prepare_marker: Option<PathBuf>,
}

impl TroveRpcSection {
    /// The RPC front end's options.
    ///
    /// # Errors
    ///
    /// Unreadable or loosely permitted files, a `guest_info.conf` without `guest_id`.
    pub fn rpc_options(&self) -> Result<crate::rpc::RpcOptions> {
        let url = read_password_file("trove_rpc.transport_url_file", &self.transport_url_file)?;
        let guest = crate::rpc::GuestInfo::load(&self.guest_info)
            .map_err(|e| Error::invalid("trove_rpc.guest_info", e.to_string()))?;
        let heartbeat = match self.heartbeat_secs {
            Some(0) => None,
            Some(n) => Some(std::time::Duration::from_secs(n)),
            None => Some(std::time::Duration::from_secs(60)),
        };
        let mut opts = crate::rpc::RpcOptions::new(url, guest)
            .with_heartbeat(heartbeat)
            .with_prepare_marker(self.prepare_marker.clone());
        if let Some(secs) = self.reply_patience_secs {
            opts = opts.with_reply_patience(std::time::Duration::from_secs(secs));
        }
        match self.reconnect_attempts {
            Some(0) => opts = opts.with_reconnect_attempts(None),
            Some(n) => opts = opts.with_reconnect_attempts(Some(n)),
            None => {}
        }
        Ok(opts)
    }
}

/// `[datastore]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreSection {
    /// `mariadb`, `mysql`, `postgresql` or `redis`.
    #[serde(rename = "type")]
    pub kind: DatastoreKind,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The override directory the server's configuration includes.
    pub config_dir: PathBuf,
    /// Staging directory on the data directory's filesystem.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// Directory of the datastore's programs.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// OS account owning the data directory.
    #[serde(default)]
    pub os_user: Option<String>,
    /// Unique server id in the replication set.
    #[serde(default = "one")]
    pub server_id: u32,
    /// Where replicas reach this server (default: the admin host and port).
    #[serde(default)]
    pub advertise: Option<Advertise>,
    /// The administrator login.
    pub admin: AdminSection,
    /// TLS for replication (`[datastore.tls]`); absent: plaintext replication.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// `[datastore.tls]`: the CA replicas verify this server with, the name they verify, what
/// this server accepts as a replica, and optionally where the server's own certificate and key
/// live (see [`trove_guest_core::ServerTls`]). The server's own TLS settings (MariaDB
/// `ssl_cert`/`ssl_key`, PostgreSQL `ssl_cert_file`/`ssl_key_file`) stay the operator's:
/// `cert_file` and `key_file` name the same files so the master can check that its server
/// serves that certificate and that the key is private and belongs to it; the agent only
/// reads them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file of the CA the servers' certificates chain to.
    pub ca_file: PathBuf,
    /// The name replicas verify this server's certificate for (default: the advertised host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The server's certificate file (PEM, end-entity first), as its own TLS settings name
    /// it; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The server's private key file (PEM; mode 0600 or stricter, owned by the agent's uid,
    /// root or `os_user`, not a symbolic link); with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// As a replica: `required` (default) refuses snapshot documents without TLS,
    /// `allow-plaintext` replicates in plaintext from them.
    #[serde(default)]
    pub replicas: ReplicaTlsSetting,
    /// The administrator connection: `off` (default) or `verify`: TLS required on the TCP
    /// connection of `[datastore.admin]`, the server's certificate verified against `ca_file`
    /// for `server_name` (MariaDB/MySQL and PostgreSQL; not with an admin `socket`).
    #[serde(default)]
    pub admin: AdminTlsSetting,
}

/// `admin` of `[datastore.tls]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AdminTlsSetting {
    /// The admin connection does not use TLS.
    #[default]
    Off,
    /// TLS verified with the section's CA and server name.
    Verify,
}

/// `replicas` of `[datastore.tls]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaTlsSetting {
    /// Refuse documents without TLS.
    #[default]
    Required,
    /// Accept them (plaintext replication).
    AllowPlaintext,
}

fn one() -> u32 {
    1
}

/// `advertise = { host, port }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advertise {
    /// Host or IP replicas connect to.
    pub host: String,
    /// Port replicas connect to.
    pub port: u16,
}

/// `[datastore.admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// TCP host.
    #[serde(default = "localhost")]
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Unix socket (file for MariaDB/MySQL, directory for PostgreSQL).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Administrator user.
    pub user: String,
    /// File holding the password on its first line (mode 0600 or stricter).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn localhost() -> String {
    "127.0.0.1".into()
}

/// An OS account by name, or as numeric `uid:gid` (a container's account).
fn parse_os_user(u: &str) -> Result<OsUser> {
    if let Some((uid, gid)) = u.split_once(':') {
        let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse()) else {
            return Err(Error::invalid(
                "os_user",
                format!("{u:?}: expected uid:gid"),
            ));
        };
        return Ok(OsUser { uid, gid });
    }
    OsUser::lookup(u)
}

/// `[service]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServiceSection {
    /// A systemd unit.
    Systemd {
        /// The unit, for example `mariadb.service`.
        unit: String,
    },
    /// A child process of the agent.
    Process {
        /// The server program.
        program: PathBuf,
        /// Its arguments (no secrets here: they are visible in the process list).
        #[serde(default)]
        args: Vec<String>,
        /// OS account to run it as.
        #[serde(default)]
        run_as: Option<String>,
        /// Ready when this TCP address accepts connections.
        #[serde(default)]
        ready_tcp: Option<SocketAddr>,
        /// Ready when this Unix socket accepts connections.
        #[serde(default)]
        ready_unix: Option<PathBuf>,
        /// `SIGTERM` (default) or `SIGINT`.
        #[serde(default)]
        stop_signal: Option<String>,
        /// Where the agent records the server's pid and start time. With it, the server outlives
        /// an agent that dies without stopping it (killed, crashed), and the next agent adopts
        /// that server instead of starting a second one on the same data directory. Without it
        /// an agent that dies leaves an orphan server the next agent cannot control.
        #[serde(default)]
        pid_file: Option<PathBuf>,
    },
    /// A server in a container, over the Docker Engine API (Docker, or Podman's service). The
    /// agent starts and stops this existing container; it never creates or removes it, and
    /// stopping the agent leaves it running. The backup and restore tools run by `exec` in
    /// `tools_container` (default: the server's container); `datastore.os_user` is then the
    /// container's database account as `"uid:gid"`.
    Container {
        /// The engine's Unix socket.
        socket: PathBuf,
        /// The server's container.
        container: String,
        /// The container the backup tools run in (a separate tools image, as Trove runs
        /// them); default the server's.
        #[serde(default)]
        tools_container: Option<String>,
        /// The exec client: `docker` (default) or `podman`, or a path to one.
        #[serde(default)]
        client: Option<PathBuf>,
        /// Bind mounts shared with the containers: the data, config and work directories must
        /// each lie in one. Mount a parent of the data directory, not the directory itself: a
        /// restore swaps the data directory by rename.
        #[serde(default)]
        mounts: Vec<MountSection>,
        /// Ready when this TCP address accepts connections.
        #[serde(default)]
        ready_tcp: Option<SocketAddr>,
        /// Ready when this Unix socket (on the host, in a mount) accepts connections.
        #[serde(default)]
        ready_unix: Option<PathBuf>,
        /// Bound of a start, seconds (default 120).
        #[serde(default)]
        start_timeout_secs: Option<u64>,
        /// How long a stop lets the server shut down before it is killed, seconds (default 60).
        #[serde(default)]
        stop_grace_secs: Option<u64>,
    },
}

/// One bind mount of `[service] mounts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSection {
    /// The host path.
    pub host: PathBuf,
    /// The path inside the containers.
    pub container: PathBuf,
}

/// Backend settings of the agent's configuration file (`[mysql]`; every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSection {
    /// Where binary logs go when the server becomes a master (outside the datadir is best).
    #[serde(default)]
    pub binlog_dir: Option<PathBuf>,
    /// Where relay logs go on a replica.
    #[serde(default)]
    pub relay_log_dir: Option<PathBuf>,
    /// The server's own option file, read by the backup tool for InnoDB file locations.
    #[serde(default)]
    pub server_config: Option<PathBuf>,
}

/// `[snapshot_store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `file:///dir` (or a plain absolute path), or `s3://bucket/prefix`.
    pub url: String,
    /// S3 only: the endpoint URL of an S3-compatible service; omitted for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 only: the region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// S3 only, required: the credentials file (`aws_access_key_id = ...`,
    /// `aws_secret_access_key = ...`), mode 0600 or stricter. Credentials are never inline.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// S3 only: allow a plain `http://` endpoint (loopback test servers). Default false.
    #[serde(default)]
    pub allow_http: bool,
}

impl AgentConfig {
    /// Parses a configuration from TOML text.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the problem (TOML's message carries line and column), for
    /// a datastore this agent has no backend for, for nothing to listen on, a `listen` address
    /// that is not loopback without TLS, or a `listen` address without `[auth] token_file`.
    pub fn parse(text: &str) -> Result<Self> {
        let config: AgentConfig = toml::from_str(text)
            .map_err(|e| Error::invalid("agent configuration", e.to_string()))?;
        if !crate::backends::supports(config.datastore.kind) {
            return Err(Error::invalid(
                "agent configuration",
                format!(
                    "datastore type = \"{}\": this agent has backends for mariadb, mysql, \
                     postgresql and redis only",
                    config.datastore.kind
                ),
            ));
        }
        config.check_http()?;
        config.check_credentials()?;
        Ok(config)
    }

    /// Clear-text passwords are opt-in: `[credentials]` must name a secret store or say
    /// `transport = "clear-text"`.
    fn check_credentials(&self) -> Result<()> {
        self.credentials_section().map(|_| ())
    }

    fn credentials_section(&self) -> Result<&CredentialsSection> {
        match &self.credentials {
            Some(c) if c.secret_dir.is_some() || c.transport.is_some() => Ok(c),
            _ => Err(Error::invalid(
                "agent configuration",
                "[credentials] needs secret_dir (replication passwords by reference, the \
                 recommended mode) or transport = \"clear-text\" (opt-in: passwords inside \
                 snapshot documents)",
            )),
        }
    }

    /// Parses a configuration from JSON text (the same keys as the TOML form).
    ///
    /// # Errors
    ///
    /// As [`AgentConfig::parse`].
    pub fn parse_json(text: &str) -> Result<Self> {
        let value: toml::Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid("agent configuration", e.to_string()))?;
        Self::parse(&toml::to_string(&value).map_err(|e| {
            Error::invalid(
                "agent configuration",
                format!("not expressible as TOML: {e}"),
            )
        })?)
    }

    /// Reads and parses a configuration file: JSON when its name ends in `.json`, else TOML.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be read; as [`AgentConfig::parse`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Self::parse_json(&text)
        } else {
            Self::parse(&text)
        };
        parsed.map_err(|e| match e {
            Error::InvalidInput { what, reason } => {
                Error::invalid(format!("{what} {}", path.display()), reason)
            }
            other => other,
        })
    }

    /// `strategy` with replication passwords passed as `[credentials]` says
    /// ([`CredentialBroker`]), by reference or (opt-in) in clear. Secret names start
    /// with `replication-<instance_id>-`, so masters sharing a store never touch each other's.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for `transport = "by-reference"` (or no transport) without a
    /// `secret_dir`, or a secret directory open to group or others; [`Error::Io`] when it
    /// cannot be created.
    pub fn credential_strategy(&self, strategy: SharedStrategy) -> Result<SharedStrategy> {
        let c = self.credentials_section()?;
        let store: Option<Arc<dyn SecretStore>> = match &c.secret_dir {
            Some(d) => Some(Arc::new(DirectorySecretStore::open(d)?)),
            None => None,
        };
        let transport = match (c.transport, &store) {
            (Some(TransportSetting::ClearText), _) => CredentialTransport::ClearText,
            (Some(TransportSetting::ByReference), _) | (None, Some(_)) => {
                CredentialTransport::ByReference
            }
            (None, None) => {
                return Err(Error::invalid(
                    "credentials",
                    "give secret_dir (passwords by reference) or transport = \"clear-text\"",
                ));
            }
        };
        let id: String = self
            .instance_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let opts = CredentialOptions::new()
            .with_transport(transport)
            .with_reference_prefix(format!("replication-{id}-"));
        Ok(Arc::new(CredentialBroker::new(strategy, store, opts)?))
    }

    /// The service control the configuration describes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad unit name, a missing readiness probe, an unknown signal
    /// or OS user.
    pub fn service(&self) -> Result<Arc<dyn ServiceControl>> {
        match &self.service {
            ServiceSection::Systemd { unit } => {
                let mut u = SystemdUnit::new(unit.clone())?;
                if let Some(sock) = &self.datastore.admin.socket
                    && self.datastore.kind != DatastoreKind::Postgresql
                {
                    u = u.with_readiness(Readiness::Unix(sock.clone()));
                }
                Ok(Arc::new(u))
            }
            ServiceSection::Process {
                program,
                args,
                run_as,
                ready_tcp,
                ready_unix,
                stop_signal,
                pid_file,
            } => {
                let readiness = match (ready_tcp, ready_unix) {
                    (Some(a), None) => Readiness::Tcp(*a),
                    (None, Some(p)) => Readiness::Unix(p.clone()),
                    _ => {
                        return Err(Error::invalid(
                            "service",
                            "set exactly one of ready_tcp or ready_unix",
                        ));
                    }
                };
                let user = run_as.as_deref().map(OsUser::lookup).transpose()?;
                let cmd = ToolCommand::new(program).args(args).run_as(user);
                let mut p = LocalProcess::new(cmd, readiness);
                if let Some(path) = pid_file {
                    p = p.with_pid_file(path);
                }
                match stop_signal.as_deref() {
                    None | Some("SIGTERM") => {}
                    Some("SIGINT") => p = p.with_stop_signal(nix::sys::signal::Signal::SIGINT),
                    Some(other) => {
                        return Err(Error::invalid(
                            "service stop_signal",
                            format!("{other:?}; expected SIGTERM or SIGINT"),
                        ));
                    }
                }
                Ok(Arc::new(p))
            }
            ServiceSection::Container {
                socket,
                container,
                ready_tcp,
                ready_unix,
                start_timeout_secs,
                stop_grace_secs,
                ..
            } => {
                let mut c = ContainerService::new(socket, container.clone())
                    .map_err(|e| Error::invalid("service container", e.to_string()))?;
                match (ready_tcp, ready_unix) {
                    (Some(a), None) => c = c.with_readiness(Readiness::Tcp(*a)),
                    (None, Some(p)) => c = c.with_readiness(Readiness::Unix(p.clone())),
                    (None, None) => {}
                    _ => {
                        return Err(Error::invalid(
                            "service",
                            "set at most one of ready_tcp or ready_unix",
                        ));
                    }
                }
                if let Some(t) = start_timeout_secs {
                    c = c.with_start_timeout(Duration::from_secs(*t));
                }
                if let Some(t) = stop_grace_secs {
                    c = c.with_stop_grace(Duration::from_secs(*t));
                }
                Ok(Arc::new(c))
            }
        }
    }

    /// Where the datastore's tools run: on the host, or by `exec` in the configured container.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the data, config or work directory lies in no mount.
    pub fn tool_place(&self) -> Result<ToolPlace> {
        let ServiceSection::Container {
            socket,
            container,
            tools_container,
            client,
            mounts,
            ..
        } = &self.service
        else {
            return Ok(ToolPlace::Host);
        };
        let mut exec = ContainerExec::new(
            socket,
            tools_container.clone().unwrap_or_else(|| container.clone()),
        );
        if let Some(c) = client {
            exec = exec.with_client(c);
        }
        for m in mounts {
            exec = exec.with_mount(&m.host, &m.container);
        }
        let place = ToolPlace::Container(exec);
        let d = &self.datastore;
        let work = d
            .work_dir
            .clone()
            .or_else(|| d.data_dir.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("/"));
        for (what, dir) in [
            ("data_dir", &d.data_dir),
            ("config_dir", &d.config_dir),
            ("work_dir", &work),
        ] {
            place.path_for_tool(dir).map_err(|_| {
                Error::invalid(
                    "service mounts",
                    format!(
                        "datastore.{what} {} is in none of [service] mounts: the tools in the \
                         container would not see it",
                        dir.display()
                    ),
                )
            })?;
            if what == "data_dir" && mounts.iter().any(|m| &m.host == dir) {
                return Err(Error::invalid(
                    "service mounts",
                    format!(
                        "{} is mounted itself: mount its parent, a restore swaps it by rename",
                        dir.display()
                    ),
                ));
            }
        }
        Ok(place)
    }

    /// The handle a strategy acts on.
    ///
    /// # Errors
    ///
    /// As [`AgentConfig::service`]; [`Error::InvalidInput`] for an unknown OS user or a password
    /// file readable by others; [`Error::Io`] when the password file cannot be read.
    pub fn datastore_handle(&self) -> Result<DatastoreHandle> {
        let d = &self.datastore;
        let password = match &d.admin.password_file {
            Some(p) => read_password_file("password_file", p)?,
            None => Secret::new(""),
        };
        let mut admin = AdminConnection::new(
            d.admin.host.clone(),
            d.admin.port,
            d.admin.user.clone(),
            password,
        );
        if let Some(s) = &d.admin.socket {
            admin = admin.with_socket(s);
        }
        let mut h = DatastoreHandle::new(admin, &d.data_dir, &d.config_dir, self.service()?)
            .with_server_id(d.server_id);
        if let Some(w) = &d.work_dir {
            h = h.with_work_dir(w);
        }
        if let Some(b) = &d.bin_dir {
            h = h.with_bin_dir(b);
        }
        if let Some(u) = &d.os_user {
            h = h.with_os_user(parse_os_user(u)?);
        }
        h = h.with_tools(self.tool_place()?);
        if let Some(a) = &d.advertise {
            h = h.with_advertise(a.host.clone(), a.port);
        }
        if let Some(t) = &d.tls {
            let mut tls = ServerTls::new(&t.ca_file).with_replica_policy(match t.replicas {
                ReplicaTlsSetting::Required => ReplicaTlsPolicy::Required,
                ReplicaTlsSetting::AllowPlaintext => ReplicaTlsPolicy::AllowPlaintext,
            });
            if let Some(n) = &t.server_name {
                tls = tls.with_server_name(n);
            }
            match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => tls = tls.with_certificate(c, k),
                (None, None) => {}
                _ => {
                    return Err(Error::invalid(
                        "[datastore.tls] cert_file",
                        "cert_file and key_file go together: name both (the server's \
                         certificate and its key) or neither",
                    ));
                }
            }
            if t.admin == AdminTlsSetting::Verify {
                if !matches!(
                    d.kind,
                    DatastoreKind::Mariadb | DatastoreKind::Mysql | DatastoreKind::Postgresql
                ) {
                    return Err(Error::invalid(
                        "[datastore.tls] admin",
                        format!("\"verify\" is not supported for {}", d.kind),
                    ));
                }
                if d.admin.socket.is_some() {
                    return Err(Error::invalid(
                        "[datastore.tls] admin",
                        "\"verify\" applies to a TCP admin connection and [datastore.admin] \
                         names a socket (which never uses TLS): remove the socket, or set \
                         admin = \"off\"",
                    ));
                }
                h.admin.tls = AdminTls::from_server(&tls, &h.advertise.host);
            }
            h = h.with_tls(tls);
        }
        Ok(h)
    }

    /// The snapshot store the configuration names, without contacting it (see
    /// [`AgentConfig::open_snapshot_store`]).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for schemes other than `file://` and `s3://`;
    /// [`Error::InvalidInput`] for an S3 store without `credentials_file`, or whose file is
    /// readable by others or lacks a key, and for S3 keys on a `file://` store; [`Error::Io`].
    pub fn snapshot_store(&self) -> Result<Arc<dyn SnapshotStore>> {
        let sec = &self.snapshot_store;
        let url = &sec.url;
        if url.starts_with("s3://") {
            return Ok(Arc::new(self.s3_store()?));
        }
        let dir = self.local_store_dir()?;
        Ok(Arc::new(LocalSnapshotStore::new(dir)?))
    }

    /// The directory of a `file://` (or bare path) store, after checking that no S3-only
    /// setting is given.
    pub(crate) fn local_store_dir(&self) -> Result<&str> {
        let sec = &self.snapshot_store;
        let url = &sec.url;
        if sec.endpoint.is_some()
            || sec.region.is_some()
            || sec.credentials_file.is_some()
            || sec.allow_http
        {
            return Err(Error::invalid(
                "snapshot_store",
                "endpoint, region, credentials_file and allow_http are for s3:// stores",
            ));
        }
        match url.strip_prefix("file://") {
            Some(p) => Ok(p),
            None if url.starts_with('/') => Ok(url.as_str()),
            None => Err(Error::unsupported(format!(
                "snapshot store {url:?}: this agent takes file:// and s3:// URLs; embed \
                 ObjectSnapshotStore for GCS or Azure"
            ))),
        }
    }

    fn s3_store(&self) -> Result<ObjectSnapshotStore> {
        let sec = &self.snapshot_store;
        let creds = sec.credentials_file.as_ref().ok_or_else(|| {
            Error::invalid(
                "snapshot_store",
                "an s3:// store needs credentials_file (credentials are never inline)",
            )
        })?;
        let mut c = S3Config::from_url(&sec.url, creds)?.with_allow_http(sec.allow_http);
        if let Some(e) = &sec.endpoint {
            c = c.with_endpoint(e);
        }
        if let Some(r) = &sec.region {
            c = c.with_region(r);
        }
        ObjectSnapshotStore::s3(&c)
    }

    /// [`AgentConfig::snapshot_store`], then for an S3 store one listing of its prefix, so a
    /// missing bucket, refused credentials or an unreachable endpoint stop the agent at start.
    ///
    /// # Errors
    ///
    /// As [`AgentConfig::snapshot_store`]; [`Error::StoreAccess`] naming the problem.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn open_snapshot_store(&self) -> Result<Arc<dyn SnapshotStore>> {
        if self.snapshot_store.url.starts_with("s3://") {
            let s = self.s3_store()?;
            s.check_access().await?;
            return Ok(Arc::new(s));
        }
        self.snapshot_store()
    }
}

/// The largest password (or URL) file read.
const MAX_PASSWORD_FILE_LEN: u64 = 64 << 10;

/// The first line of a private file (see [`trove_guest_core::private_file`]).
fn read_password_file(what: &str, path: &Path) -> Result<Secret> {
    let text = trove_guest_core::private_file::read_private_text(path, MAX_PASSWORD_FILE_LEN)
        .map_err(|e| e.into_error(what))?;
    Ok(Secret::new(text.expose().lines().next().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const EXAMPLE: &str = r#"
instance_id = "dfbbd9ca-b5e1-4028-adb7-f78643e17998"
listen = "127.0.0.1:8780"

[auth]
token_file = "/etc/trove/agent.token"

[datastore]
type = "mariadb"
data_dir = "/var/lib/mysql"
config_dir = "/etc/mysql/mariadb.conf.d/trove"
server_id = 7

[datastore.admin]
port = 3306
socket = "/run/mysqld/mysqld.sock"
user = "root"

[service]
kind = "process"
program = "/usr/sbin/mariadbd"
args = ["--defaults-file=/etc/mysql/my.cnf"]
ready_unix = "/run/mysqld/mysqld.sock"
pid_file = "/run/trove/mariadbd.pid"

[snapshot_store]
url = "file:///tmp"

[credentials]
secret_dir = "/var/lib/trove/secrets"
"#;

    /// A complete configuration for MariaDB in a container, with the backup tools in a
    /// separate container (as `docs/examples/agent-container.toml`).
    const CONTAINER_EXAMPLE: &str = include_str!("../../docs/examples/agent-container.toml");

    #[test]
    fn the_container_example_parses_into_a_container_handle() {
        // The password file is the deployment's; the handle is built without it here.
        let example = CONTAINER_EXAMPLE.replace("password_file = ", "# password_file = ");
        let c = AgentConfig::parse(&example).unwrap();
        assert!(matches!(c.service, ServiceSection::Container { .. }));
        let h = c.datastore_handle().unwrap();
        assert_eq!(h.os_user, Some(OsUser { uid: 100, gid: 101 }));
        let cmd = h
            .tool(ToolCommand::new("mariabackup").arg("--datadir=/srv/trove/db1/data"))
            .unwrap();
        assert_eq!(
            cmd.display(),
            "docker --host unix:///run/podman/podman.sock exec trove-db1-backup mariabackup \
             --datadir=/var/lib/trove/data"
        );
        // A data directory outside the mounts is refused before anything runs.
        let bad = example.replace(
            "data_dir = \"/srv/trove/db1/data\"",
            "data_dir = \"/elsewhere/data\"",
        );
        let e = AgentConfig::parse(&bad)
            .unwrap()
            .datastore_handle()
            .unwrap_err();
        assert!(e.to_string().contains("none of [service] mounts"), "{e}");
        // Mounting the data directory itself is refused: a swap by rename would lose it.
        let bad = example.replace(
            "host = \"/srv/trove/db1\"",
            "host = \"/srv/trove/db1/data\"",
        );
        assert!(
            AgentConfig::parse(&bad)
                .unwrap()
                .datastore_handle()
                .is_err()
        );
    }

    #[test]
    fn the_tls_section_becomes_the_handles_server_tls() {
        let with = EXAMPLE.replace(
            "[datastore.admin]",
            "[datastore.tls]\nca_file = \"/etc/trove/tls/ca.pem\"\nserver_name = \"db1.example.net\"\n\n[datastore.admin]",
        );
        let h = AgentConfig::parse(&with)
            .unwrap()
            .datastore_handle()
            .unwrap();
        let tls = h.tls.expect("tls");
        assert_eq!(tls.ca_file, Path::new("/etc/trove/tls/ca.pem"));
        assert_eq!(tls.server_name.as_deref(), Some("db1.example.net"));
        assert_eq!(tls.replicas, ReplicaTlsPolicy::Required);
        let plain = with.replace(
            "server_name = \"db1.example.net\"",
            "replicas = \"allow-plaintext\"",
        );
        let h = AgentConfig::parse(&plain)
            .unwrap()
            .datastore_handle()
            .unwrap();
        assert_eq!(h.tls.unwrap().replicas, ReplicaTlsPolicy::AllowPlaintext);
        assert!(tls.certificate.is_none());
        // The server's own certificate and key, for the master's check: both or neither.
        let keyed = with.replace(
            "server_name =",
            "cert_file = \"/etc/trove/tls/s.pem\"\nkey_file = \"/etc/trove/tls/s.key\"\nserver_name =",
        );
        let h = AgentConfig::parse(&keyed)
            .unwrap()
            .datastore_handle()
            .unwrap();
        assert_eq!(
            h.tls.unwrap().certificate,
            Some(trove_guest_core::tls::ServerCertificate::new(
                "/etc/trove/tls/s.pem",
                "/etc/trove/tls/s.key"
            ))
        );
        let key_only = with.replace(
            "server_name =",
            "key_file = \"/etc/trove/tls/s.key\"\nserver_name =",
        );
        let e = AgentConfig::parse(&key_only)
            .unwrap()
            .datastore_handle()
            .unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let unknown = with.replace("server_name =", "cert = \"/x\"\nserver_name =");
        assert!(AgentConfig::parse(&unknown).is_err());
        assert!(
            AgentConfig::parse(EXAMPLE)
                .unwrap()
                .datastore_handle()
                .unwrap()
                .tls
                .is_none()
        );
    }

    #[test]
    fn admin_verify_in_the_tls_section_gives_the_admin_connection_verified_tls() {
        let tcp = EXAMPLE.replace("socket = \"/run/mysqld/mysqld.sock\"\n", "");
        let with = |admin: &str, base: &str| {
            base.replace(
                "[datastore.admin]",
                &format!(
                    "[datastore.tls]\nca_file = \"/etc/trove/tls/ca.pem\"\nserver_name = \"db1.example.net\"\n{admin}\n[datastore.admin]"
                ),
            )
        };
        let h = AgentConfig::parse(&with("admin = \"verify\"", &tcp))
            .unwrap()
            .datastore_handle()
            .unwrap();
        assert_eq!(
            h.admin.tls,
            AdminTls::verify("/etc/trove/tls/ca.pem", "db1.example.net")
        );
        // Default: off; and the server name defaults to the advertise host as for replicas.
        let h = AgentConfig::parse(&with("", &tcp))
            .unwrap()
            .datastore_handle()
            .unwrap();
        assert_eq!(h.admin.tls, AdminTls::Off);
        let unnamed =
            with("admin = \"verify\"", &tcp).replace("server_name = \"db1.example.net\"\n", "");
        let h = AgentConfig::parse(&unnamed)
            .unwrap()
            .datastore_handle()
            .unwrap();
        assert_eq!(
            h.admin.tls,
            AdminTls::verify("/etc/trove/tls/ca.pem", h.advertise.host.clone())
        );
        // An admin socket never uses TLS: "verify" with a socket is refused, not ignored.
        let e = AgentConfig::parse(&with("admin = \"verify\"", EXAMPLE))
            .unwrap()
            .datastore_handle()
            .unwrap_err();
        assert!(e.to_string().contains("socket"), "{e}");
        assert!(AgentConfig::parse(&with("admin = \"sometimes\"", &tcp)).is_err());
    }

    #[test]
    fn the_documented_example_parses_into_a_handle() {
        let c = AgentConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.datastore.kind, DatastoreKind::Mariadb);
        let h = c.datastore_handle().unwrap();
        assert_eq!(h.server_id, 7);
        assert_eq!(h.advertise.port, 3306);
        assert!(c.snapshot_store().unwrap().owns("file:///tmp/x.snap"));
    }

    #[test]
    fn trove_rpc_section_reads_its_files_and_refuses_loose_ones() {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("guest_info.conf");
        let url = dir.path().join("transport_url");
        std::fs::write(
            &info,
            "[DEFAULT]\nguest_id = i-1\ninstance_rpc_encr_key = k\n",
        )
        .unwrap();
        std::fs::write(&url, "amqp://u:p@127.0.0.1:5672/%2f\n").unwrap();
        for p in [&info, &url] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let text = format!(
            "{EXAMPLE}\n[trove_rpc]\nguest_info = {:?}\ntransport_url_file = {:?}\n",
            info.display().to_string(),
            url.display().to_string()
        );
        let c = AgentConfig::parse(&text).unwrap();
        let section = c.trove_rpc.clone().unwrap();
        let opts = section.rpc_options().unwrap();
        assert_eq!(opts.guest.guest_id, "i-1");
        assert!(opts.guest.key.is_some());
        assert!(!format!("{opts:?}").contains("u:p"));
        // The retry bounds: documented defaults, then set (0 attempts: never give up).
        assert_eq!(
            opts.reply_patience,
            crate::rpc::server::DEFAULT_REPLY_PATIENCE
        );
        assert_eq!(
            opts.reconnect_attempts,
            Some(crate::rpc::server::DEFAULT_RECONNECT_ATTEMPTS)
        );
        for (extra, patience, attempts) in [
            (
                "reply_patience_secs = 30\nreconnect_attempts = 5\n",
                30,
                Some(5),
            ),
            ("reconnect_attempts = 0\n", 120, None),
        ] {
            let c = AgentConfig::parse(&format!("{text}{extra}")).unwrap();
            let opts = c.trove_rpc.unwrap().rpc_options().unwrap();
            assert_eq!(
                opts.reply_patience,
                std::time::Duration::from_secs(patience)
            );
            assert_eq!(opts.reconnect_attempts, attempts);
        }
        std::fs::set_permissions(&info, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(section.rpc_options().is_err());
        // A key-less guest_info.conf may be shared; a symlink to it is refused.
        std::fs::write(&info, "[DEFAULT]\nguest_id = i-1\n").unwrap();
        assert!(section.rpc_options().unwrap().guest.key.is_none());
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&info, &link).unwrap();
        let linked = AgentConfig::parse(&text.replace(
            &format!("{:?}", info.display().to_string()),
            &format!("{:?}", link.display().to_string()),
        ))
        .unwrap();
        let e = linked.trove_rpc.unwrap().rpc_options().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn unknown_datastore_type_is_rejected_with_its_name() {
        let e = AgentConfig::parse(&EXAMPLE.replace("\"mariadb\"", "\"oracle\"")).unwrap_err();
        assert!(e.to_string().contains("oracle"), "{e}");
    }

    #[test]
    fn redis_type_is_served_by_the_redis_backend() {
        let c = AgentConfig::parse(&EXAMPLE.replace("\"mariadb\"", "\"redis\"")).unwrap();
        assert_eq!(c.datastore.kind.as_str(), "redis");
        assert!(crate::backends::supports(c.datastore.kind));
    }

    #[test]
    fn credentials_go_by_reference_with_a_secret_dir_and_in_clear_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        let remote = || -> SharedStrategy {
            Arc::new(crate::remote::RemoteStrategy::new(
                crate::client::AgentClient::new("http://127.0.0.1:1"),
                DatastoreKind::Mariadb,
            ))
        };
        let bare = EXAMPLE.split("\n[credentials]").next().unwrap();
        let with = |section: &str| {
            AgentConfig::parse(&format!("{bare}\n[credentials]\n{section}\n")).unwrap()
        };
        // No section, or an empty one: refused (clear text is opt-in).
        let e = AgentConfig::parse(bare).unwrap_err();
        assert!(e.to_string().contains("clear-text"), "{e}");
        assert!(AgentConfig::parse(&format!("{bare}\n[credentials]\n")).is_err());
        // A secret directory: by reference, the directory made 0700.
        let c = with(&format!("secret_dir = {:?}", dir.display().to_string()));
        let s = format!("{:?}", c.credential_strategy(remote()).unwrap());
        assert!(
            s.contains("CredentialBroker") && s.contains("ByReference"),
            "{s}"
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Clear text only when asked; by reference without a store is refused.
        let c = with("transport = \"clear-text\"");
        let s = format!("{:?}", c.credential_strategy(remote()).unwrap());
        assert!(s.contains("ClearText"), "{s}");
        assert!(
            with("transport = \"by-reference\"")
                .credential_strategy(remote())
                .is_err()
        );
        assert!(
            AgentConfig::parse(&format!("{bare}\n[credentials]\ntransport = \"plain\"\n")).is_err()
        );
    }

    #[test]
    fn the_shipped_example_file_parses() {
        let c = AgentConfig::parse(include_str!("../config/guest-agent.toml")).unwrap();
        assert_eq!(c.datastore.kind, DatastoreKind::Mariadb);
        assert!(matches!(c.service, ServiceSection::Systemd { .. }));
        // The shipped example serves HTTPS and asks for a token.
        assert!(c.http.tls_cert_file.is_some() && c.http.tls_key_file.is_some());
        assert!(c.auth.token_file.is_some());
    }

    #[test]
    fn json_form_parses_like_toml() {
        let json = r#"{"instance_id": "i-1", "listen": "127.0.0.1:1",
            "auth": {"token_file": "/etc/trove/agent.token"},
            "datastore": {"type": "postgresql", "data_dir": "/d", "config_dir": "/c",
                          "admin": {"port": 5432, "user": "postgres"}},
            "service": {"kind": "systemd", "unit": "postgresql.service"},
            "snapshot_store": {"url": "file:///tmp"},
            "credentials": {"transport": "clear-text"}}"#;
        let c = AgentConfig::parse_json(json).unwrap();
        assert_eq!(c.datastore.kind, DatastoreKind::Postgresql);
        assert!(AgentConfig::parse_json("{").is_err());
    }

    #[test]
    fn non_loopback_listen_address_without_tls_is_refused() {
        let e = AgentConfig::parse(&EXAMPLE.replace("127.0.0.1:8780", "0.0.0.0:8780")).unwrap_err();
        assert_eq!(e.kind(), trove_guest_core::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("needs TLS"), "{e}");
        let with_tls = EXAMPLE.replace("127.0.0.1:8780", "0.0.0.0:8780").replace(
            "[auth]",
            "[http]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n[auth]",
        );
        let c = AgentConfig::parse(&with_tls).unwrap();
        assert!(c.http.tls_cert_file.is_some());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = AgentConfig::parse(
            &EXAMPLE.replace("server_id = 7", "server_id = 7\npassword = \"x\""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn world_readable_password_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = EXAMPLE.replace(
            "user = \"root\"",
            &format!("user = \"root\"\npassword_file = \"{}\"", p.display()),
        );
        let c = AgentConfig::parse(&text).unwrap();
        let e = c.datastore_handle().unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let h = c.datastore_handle().unwrap();
        assert_eq!(h.admin.password.expose(), "secret");
    }

    #[test]
    fn s3_stores_need_a_private_credentials_file() {
        let base = r#"
instance_id = "i-1"
listen = "127.0.0.1:8780"
[auth]
token_file = "/etc/trove/agent.token"
[datastore]
type = "mariadb"
data_dir = "/d"
config_dir = "/c"
server_id = 1
[datastore.admin]
host = "127.0.0.1"
port = 3306
user = "root"
[service]
kind = "systemd"
unit = "x.service"
[credentials]
transport = "clear-text"
"#;
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("s3.credentials");
        std::fs::write(
            &creds,
            "aws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = hidden-value\n",
        )
        .unwrap();
        let with = |store: &str| AgentConfig::parse(&format!("{base}{store}")).unwrap();
        let c = with("[snapshot_store]\nurl = \"s3://snaps/trove\"\n");
        assert_eq!(
            c.snapshot_store().unwrap_err().kind(),
            trove_guest_core::ErrorKind::InvalidInput
        );
        let store = format!(
            "[snapshot_store]\nurl = \"s3://snaps/trove\"\nendpoint = \"http://127.0.0.1:9\"\n\
             allow_http = true\ncredentials_file = {:?}\n",
            creds.display().to_string()
        );
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = with(&store).snapshot_store().unwrap_err();
        assert_eq!(err.kind(), trove_guest_core::ErrorKind::InvalidInput);
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = with(&store).snapshot_store().unwrap();
        assert!(s.owns("s3://snaps/trove/x.snap"));
        assert!(!s.owns("file:///tmp/x.snap"));
        assert!(!format!("{s:?}").contains("hidden-value"));
        let file_with_s3_keys = with("[snapshot_store]\nurl = \"file:///tmp\"\nregion = \"x\"\n");
        assert!(file_with_s3_keys.snapshot_store().is_err());
    }
}
