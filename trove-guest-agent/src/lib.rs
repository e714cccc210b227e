//! # trove-guest-agent
//!
//! The deployable guest agent of trove-guest: one server's replication calls behind one
//! dispatcher, served over two front ends.
//!
//! * [`agent`]: the HTTP/JSON front end (axum) serving the replication guest calls of one
//!   server, taking and returning the design's documents, over TCP, TLS or a Unix socket, with a
//!   bearer token or the caller's uid ([`AgentAuth`]); [`api`] is its wire contract and
//!   [`client`] a typed client for it ([`remote`] drives a switchover or failover through it).
//! * [`rpc`]: OpenStack Trove's own RPC (oslo.messaging over RabbitMQ, Trove's SecureSerializer),
//!   so a stock Trove control plane drives the same strategy.
//! * [`changes`]: the one change lock both front ends share (a second change is refused, never
//!   queued) and the `change` tracing span of each change.
//! * [`config`]: the agent's configuration file and how it becomes a strategy ([`backends`]);
//!   [`config_check`] validates one without starting anything (`guest_agent --check-config`);
//!   [`logging`] is its `[log]` section (text or JSON lines); [`http_config`] its `[http]` and
//!   `[auth]` sections.
//! * `testing` (feature `testing`): test servers with agents in front of them, sample data and
//!   the kill -9 fault-matrix harness.
//!
//! The library crates (`trove-guest-core` and the backends) know neither transport.
//!
//! Embedding the agent in a program of your own (a MariaDB server reached over its socket and
//! restarted by systemd, snapshots in a local directory):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use trove_guest_core::{
//!     AdminConnection, DatastoreHandle, LocalSnapshotStore, Secret, SnapshotStore, SystemdUnit,
//! };
//! use trove_guest_agent::{AgentAuth, AgentOptions, GuestAgent, ListenOn, TlsFiles};
//! use trove_guest_mysql::{MysqlOptions, MysqlStrategy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let admin = AdminConnection::new("127.0.0.1", 3306, "root", Secret::new(""))
//!     .with_socket("/run/mysqld/mysqld.sock");
//! let service = Arc::new(SystemdUnit::new("mariadb.service")?);
//! let handle = DatastoreHandle::new(admin, "/var/lib/mysql", "/etc/mysql/trove.d", service)
//!     .with_server_id(1);
//! let store: Arc<dyn SnapshotStore> = Arc::new(LocalSnapshotStore::new("/srv/snapshots")?);
//! let strategy = Arc::new(MysqlStrategy::new(handle, store.clone(), MysqlOptions::new()));
//!
//! // Every request must carry `Authorization: Bearer <token>`; HTTPS with the given files.
//! // Read like every private file: no symlink, the agent's own, mode 0600, bounded.
//! let path = std::path::Path::new("/etc/trove/agent.token");
//! let text = trove_guest_core::private_file::read_private_text(path, 4096)?;
//! let token = Secret::new(text.expose().trim());
//! let options = AgentOptions::new("dfbbd9ca-b5e1-4028")
//!     .with_auth(AgentAuth::new().with_token(token));
//! let listen = ListenOn::Tls {
//!     addr: "10.0.0.5:8780".parse()?,
//!     tls: TlsFiles::new("/etc/trove/agent.crt", "/etc/trove/agent.key"),
//! };
//! let agent = GuestAgent::new(strategy, store, options).spawn_on(&listen).await?;
//! println!("serving the guest calls on {}", agent.url());
//! tokio::signal::ctrl_c().await?;
//! agent.shutdown().await?; // aborts a change still running; every call can be repeated
//! # Ok(()) }
//! ```
//!
//! Binary: `guest_agent` (serves the agent from a config file; see [`config`]).

pub mod agent;
pub mod api;
pub mod backends;
pub mod changes;
pub mod client;
pub mod clock;
pub mod config;
pub mod config_check;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http_config;
pub mod logging;
pub mod remote;
pub mod rpc;
#[cfg(feature = "testing")]
pub mod testing;

pub use agent::{
    AgentAuth, AgentOptions, ApiError, Endpoint, ErrorDisclosure, GuestAgent, ListenOn,
    RunningAgent, TlsFiles,
};

/// The README's embedding example, compiled as a doc test so it cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
