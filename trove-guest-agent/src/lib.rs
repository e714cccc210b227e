//! # trove-guest-agent
//!
//! The deployable guest agent of trove-guest: one server's replication calls behind one
//! dispatcher, served over two front ends.
//!
//! * [`agent`]: the HTTP/JSON front end (axum) serving the replication guest calls of one
//!   server, taking and returning the design's documents; [`api`] is its wire contract and
//!   [`client`] a typed client for it ([`remote`] drives a switchover or failover through it).
//! * [`rpc`]: OpenStack Trove's own RPC (oslo.messaging over RabbitMQ, Trove's SecureSerializer),
//!   so a stock Trove control plane drives the same strategy.
//! * [`config`]: the agent's configuration file and how it becomes a strategy ([`backends`]).
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
//! use trove_guest_agent::{AgentOptions, GuestAgent};
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
//! let agent = GuestAgent::new(strategy, store, AgentOptions::new("dfbbd9ca-b5e1-4028"))
//!     .spawn("127.0.0.1:8780".parse()?)
//!     .await?;
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
pub mod client;
pub mod clock;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod remote;
pub mod rpc;
#[cfg(feature = "testing")]
pub mod testing;

pub use agent::{AgentOptions, ApiError, GuestAgent, RunningAgent};

/// The README's embedding example, compiled as a doc test so it cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
