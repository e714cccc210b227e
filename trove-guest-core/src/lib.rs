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
//! * `testkit` (feature `testkit`): the generic harness backends build their throwaway test
//!   servers from, and the backend conformance suite.
//!
//! Core exposes no database client library types; backends keep theirs private.
//!
//! ## Example: a snapshot document and a verified store
//!
//! The snapshot document of the design, read with typed positions, and a stream stored and read
//! back with its SHA-256 checked (what a backend does with a backup tool's stdout):
//!
//! ```
//! use tokio::io::AsyncReadExt;
//! use trove_guest_core::store::Expected;
//! use trove_guest_core::{LocalSnapshotStore, Progress, SnapshotDocument, SnapshotStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> trove_guest_core::Result<()> {
//! let doc = SnapshotDocument::from_json(r#"{
//!     "master": {"host": "192.168.0.1", "port": 3306},
//!     "dataset": {"datastore": "mariadb", "datastore_version": "10.11", "dataset_size": 2,
//!                 "snapshot_href": "file:///var/lib/trove/snapshots/s1.snap"},
//!     "binlog_position": {"log_file": "mysql-bin.000003", "log_position": 1875,
//!                         "gtid_list": "0-1-42"}
//! }"#)?;
//! let pos = doc.binlog_position.as_ref().unwrap();
//! assert_eq!(pos.gtid_list.as_ref().unwrap().to_string(), "0-1-42");
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = LocalSnapshotStore::new(dir.path())?;
//! let mut backup: &[u8] = b"pretend this is mariabackup's xbstream";
//! let pending = store.put("s1", &mut backup, &Progress::none()).await?;
//! // ... here a backend checks that the backup tool exited cleanly ...
//! let stored = pending.commit().await?;
//!
//! let mut reader = store.get(&stored.href, &Expected::default()).await?;
//! let mut bytes = Vec::new();
//! reader.read_to_end(&mut bytes).await.expect("size and SHA-256 match");
//! assert_eq!(bytes, b"pretend this is mariabackup's xbstream");
//! # Ok(())
//! # }
//! ```

pub mod archive;
pub mod credentials;
pub mod datastore;
pub mod deadline;
pub mod error;
pub mod failover;
pub mod lifecycle;
pub mod place;
pub mod poll;
pub mod position;
pub mod private_file;
pub mod progress;
pub mod runner;
pub mod secret;
pub mod secret_store;
pub mod service;
pub mod staging;
pub mod store;
pub mod strategy;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod wire;

pub use credentials::{CredentialBroker, CredentialOptions, CredentialTransport};
pub use datastore::{AdminConnection, DatastoreHandle};
pub use deadline::deadline;
pub use error::{Error, ErrorKind, Result, StoreAccessProblem, TlsProblem};
pub use lifecycle::{RecoverOptions, RecoveryAction, RecoveryReport};
pub use place::{BindMount, ContainerExec, ToolPlace};
pub use position::{
    BinlogCoordinates, BinlogFile, Lsn, MariaDbGtidList, MysqlGtidSet, OpaquePosition,
    ReplicationPosition, WalPosition,
};
pub use progress::{Phase, Progress, ProgressEvent};
pub use runner::{OsUser, RunningTool, SecretFile, ToolCommand};
pub use secret::{Secret, TransportSecret};
pub use secret_store::{DirectorySecretStore, SecretStore, SecretStoreError};
#[cfg(feature = "container")]
pub use service::{ContainerError, ContainerService, ContainerSpec};
pub use service::{LocalProcess, Readiness, ServiceControl, ServiceStatus, SystemdUnit};
#[cfg(feature = "object-store")]
pub use store::ObjectSnapshotStore;
pub use store::{LocalSnapshotStore, SnapshotStore};
pub use strategy::{
    AttachOutcome, AttachRequest, Capabilities, DemoteOptions, DetachOptions, DetachedReplica,
    EnableMasterOptions, Positioning, Provisioned, ReplicationStatus, ReplicationStrategy,
    ReplicationStrategyExt, Role, SharedStrategy, SnapshotRequest, StageRequest, StagedSnapshot,
};
pub use tls::{ReplicaTlsPolicy, ServerTls};
pub use wire::{DatastoreKind, DatastoreName, SnapshotDocument};
