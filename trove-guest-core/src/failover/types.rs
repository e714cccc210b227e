//! The documents and options of the failover guest calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::position::{ReplicationPosition, WalPosition};
use crate::wire::{DatastoreKind, MasterAddress, ReplicationGrant};

/// Options for [`ReplicationStrategy::get_replica_context`](crate::ReplicationStrategy::get_replica_context).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicaContextOptions {
    /// Names the replication account (and slot) made for the server that will replicate.
    pub replica_id: String,
    /// The host (IP address or name) the replica connects from, when known: the account is
    /// then limited to it (MariaDB/MySQL account host, PostgreSQL hba address), as a snapshot's
    /// `replica_host` does. `None`: any host the master admits replicas from.
    pub replica_host: Option<String>,
}

impl ReplicaContextOptions {
    /// Options for the replica named `replica_id`.
    pub fn new(replica_id: impl Into<String>) -> Self {
        ReplicaContextOptions {
            replica_id: replica_id.into(),
            replica_host: None,
        }
    }

    /// Sets [`ReplicaContextOptions::replica_host`].
    pub fn with_replica_host(mut self, host: impl Into<String>) -> Self {
        self.replica_host = Some(host.into());
        self
    }
}

/// What another server needs to replicate from this one without a snapshot: returned by
/// `get_replica_context` on the source and handed to `attach_replica` on the replica. Carries
/// the replication password in transit only ([`crate::TransportSecret`], redacted in `Debug`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaContext {
    /// The source's datastore.
    pub datastore: DatastoreKind,
    /// Where to connect.
    pub master: MasterAddress,
    /// The source's position when the context was made.
    pub position: ReplicationPosition,
    /// The last position the source shares with the history it replicated before it became a
    /// source (MariaDB: its `gtid_slave_pos`), when it was once a replica; a server holding
    /// transactions beyond it that the source lacks has diverged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_at: Option<ReplicationPosition>,
    /// PostgreSQL: the source's timeline history (each entry: a parent timeline and the LSN
    /// where the source's history left it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<WalPosition>,
    /// The replication account (and slot) to use.
    pub replication: ReplicationGrant,
}

impl ReplicaContext {
    /// Builds a context.
    pub fn new(
        datastore: DatastoreKind,
        master: MasterAddress,
        position: ReplicationPosition,
        replication: ReplicationGrant,
    ) -> Self {
        ReplicaContext {
            datastore,
            master,
            position,
            forked_at: None,
            history: Vec::new(),
            replication,
        }
    }
    /// Sets [`ReplicaContext::forked_at`].
    pub fn with_forked_at(mut self, p: Option<ReplicationPosition>) -> Self {
        self.forked_at = p;
        self
    }
    /// Sets [`ReplicaContext::history`].
    pub fn with_history(mut self, h: Vec<WalPosition>) -> Self {
        self.history = h;
        self
    }
}

/// Options for [`ReplicationStrategy::attach_replica`](crate::ReplicationStrategy::attach_replica).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RepointOptions {
    /// How long to wait for replication to run and reach the source's position (default 60 s).
    pub timeout: Duration,
}

impl Default for RepointOptions {
    fn default() -> Self {
        RepointOptions {
            timeout: Duration::from_secs(60),
        }
    }
}

impl RepointOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`RepointOptions::timeout`].
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// The last transaction a server received and applied, with the source it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastTxn {
    /// The source this server replicates (or last replicated) from; `None` on a master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MasterAddress>,
    /// The last position received from the source (relay log / flushed WAL), when a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<ReplicationPosition>,
    /// The last position applied (executed / replayed), with its timeline on PostgreSQL.
    pub applied: ReplicationPosition,
    /// Transactions this replica executed itself, which no source sent (MariaDB GTIDs): a
    /// server with any must never become a master without a fresh snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errant: Vec<String>,
    /// Whether the receiver (IO thread / WAL receiver) runs.
    pub receiver_running: bool,
}

impl LastTxn {
    /// Builds the description of a server's last transaction.
    pub fn new(applied: ReplicationPosition) -> Self {
        LastTxn {
            source: None,
            received: None,
            applied,
            errant: Vec::new(),
            receiver_running: false,
        }
    }
    /// Sets [`LastTxn::source`].
    pub fn with_source(mut self, s: Option<MasterAddress>) -> Self {
        self.source = s;
        self
    }
    /// Sets [`LastTxn::received`].
    pub fn with_received(mut self, r: Option<ReplicationPosition>) -> Self {
        self.received = r;
        self
    }
    /// Sets [`LastTxn::errant`].
    pub fn with_errant(mut self, e: Vec<String>) -> Self {
        self.errant = e;
        self
    }
    /// Sets [`LastTxn::receiver_running`].
    pub fn with_receiver_running(mut self, r: bool) -> Self {
        self.receiver_running = r;
        self
    }
}

/// Options for [`ReplicationStrategy::fence_writes`](crate::ReplicationStrategy::fence_writes)
/// and [`ReplicationStrategy::stop_receiver`](crate::ReplicationStrategy::stop_receiver).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FenceOptions {
    /// How long fencing (or draining what was received) may take (default 30 s).
    pub timeout: Duration,
}

impl Default for FenceOptions {
    fn default() -> Self {
        FenceOptions {
            timeout: Duration::from_secs(30),
        }
    }
}

impl FenceOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`FenceOptions::timeout`].
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}
