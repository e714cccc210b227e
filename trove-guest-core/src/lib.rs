//! # trove-guest-core
//!
//! The contract, wire formats and plumbing shared by every trove-guest datastore backend.
//!
//! A control plane asks the guest agent on each database server to take a replication snapshot
//! on a master, attach a replica from it, detach a replica and demote a master. This crate holds:
//!
//! * [`ReplicationStrategy`]: the guest calls a backend implements (and
//!   [`ReplicationStrategyExt`] conveniences on top);
//! * [`wire`]: the JSON documents of the design (snapshot, topology, instance create,
//!   `detach_replication`), read and written exactly;
//! * [`position`]: typed replication positions (binlog coordinates, GTIDs, LSNs);
//! * [`store`]: streaming, hash-verified snapshot storage;
//! * [`runner`]: the one way to run external tools;
//! * [`service`]: starting and stopping the server;
//! * [`Error`]: the portable error type;
//! * `testkit` (feature `testkit`): throwaway MariaDB and PostgreSQL servers and the
//!   backend conformance suite.
//!
//! Core exposes no database client library types; backends keep theirs private.

pub mod datastore;
pub mod error;
pub mod position;
pub mod progress;
pub mod runner;
pub mod secret;
pub mod service;
pub mod store;
pub mod strategy;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod wire;

pub use datastore::{AdminConnection, DatastoreHandle};
pub use error::{Error, ErrorKind, Result};
pub use position::{
    BinlogCoordinates, BinlogFile, Lsn, MariaDbGtidList, MysqlGtidSet, ReplicationPosition,
    WalPosition,
};
pub use progress::{Phase, Progress, ProgressEvent};
pub use runner::{OsUser, RunningTool, SecretFile, ToolCommand};
pub use secret::{Secret, TransportSecret};
pub use service::{LocalProcess, Readiness, ServiceControl, ServiceStatus, SystemdUnit};
#[cfg(feature = "object-store")]
pub use store::ObjectSnapshotStore;
pub use store::{LocalSnapshotStore, SnapshotStore};
pub use strategy::{
    AttachOutcome, AttachRequest, Capabilities, DemoteOptions, DetachOptions, DetachedReplica,
    EnableMasterOptions, Positioning, ReplicationStatus, ReplicationStrategy,
    ReplicationStrategyExt, Role, SharedStrategy, SnapshotRequest,
};
pub use wire::{DatastoreKind, SnapshotDocument};
