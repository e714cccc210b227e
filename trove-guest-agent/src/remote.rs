//! [`RemoteStrategy`]: a guest agent seen through its HTTP client as a
//! [`ReplicationStrategy`], so that core's switchover and failover
//! ([`trove_guest_core::failover`]) run unchanged over agents: a control plane holds one
//! `RemoteStrategy` per server and calls [`switchover`] or [`failover`].
//!
//! Agent errors come back as core errors of the same kind (`timeout` as [`Error::Timeout`],
//! `conflict` as [`Error::Diverged`], `busy` as [`Error::Busy`], ...), the agent's message kept.

use std::time::Duration;

use async_trait::async_trait;
use trove_guest_core::failover::{
    FailoverOptions, FailoverReport, FenceOptions, LastTxn, Member, ReplicaContext,
    ReplicaContextOptions, RepointOptions, SwitchoverOptions, SwitchoverReport, failover,
    switchover,
};
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, DatastoreKind, DemoteOptions, DetachOptions,
    DetachedReplica, EnableMasterOptions, Error, ReplicationPosition, ReplicationStatus,
    ReplicationStrategy, Result, SnapshotDocument, SnapshotRequest,
};

use crate::api::{self, kinds};
use crate::client::{AgentClient, ClientError};

/// A guest agent as a strategy (see the module docs).
#[derive(Debug, Clone)]
pub struct RemoteStrategy {
    client: AgentClient,
    datastore: DatastoreKind,
}

impl RemoteStrategy {
    /// The agent behind `client`, serving a server of `datastore`.
    pub fn new(client: AgentClient, datastore: DatastoreKind) -> Self {
        RemoteStrategy { client, datastore }
    }

    /// The client.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }
}

/// An agent error as the core error of the same kind.
fn core_error(e: ClientError) -> Error {
    let message = e.to_string();
    match e.kind() {
        Some(kinds::TIMEOUT) => Error::timeout(message, Duration::ZERO),
        Some(kinds::CONFLICT) => Error::Diverged { detail: message },
        Some(kinds::BUSY) => Error::Busy { what: message },
        Some(kinds::NOT_FOUND) => Error::NotFound { what: message },
        Some(kinds::UNSUPPORTED) => Error::unsupported(message),
        Some(kinds::INVALID_INPUT | kinds::INVALID_DOCUMENT | kinds::MALFORMED_JSON) => {
            Error::invalid("request to the agent", message)
        }
        _ => Error::Datastore {
            message,
            source: None,
        },
    }
}

#[async_trait]
impl ReplicationStrategy for RemoteStrategy {
    fn datastore(&self) -> DatastoreKind {
        self.datastore
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }

    async fn enable_as_master(&self, _opts: &EnableMasterOptions) -> Result<()> {
        self.client.enable_master().await.map_err(core_error)
    }

    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument> {
        let call = api::SnapshotCall {
            replica_id: req.replica_id.clone(),
            replica_host: req.replica_host.clone(),
            snapshot_name: req.snapshot_name.clone(),
            parallel: req.parallel,
        };
        self.client
            .snapshot(&call, &mut |_| {})
            .await
            .map_err(core_error)
    }

    async fn attach_replication_slave(
        &self,
        snapshot: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        let query = api::AttachQuery {
            positioning: Some(req.positioning),
            timeout_secs: Some(req.timeout.as_secs().max(1)),
            stream: None,
            server_id: req.server_id,
        };
        self.client
            .attach(snapshot, &query, &mut |_| {})
            .await
            .map_err(core_error)
    }

    async fn detach_replication_slave(&self, opts: &DetachOptions) -> Result<DetachedReplica> {
        let call = api::DetachCall {
            timeout_secs: Some(opts.timeout.as_secs().max(1)),
            for_failover: Some(opts.for_failover),
        };
        self.client.detach_with(&call).await.map_err(core_error)
    }

    async fn cleanup_source_on_replica_detach(&self, replica: &DetachedReplica) -> Result<()> {
        self.client.cleanup(replica).await.map_err(core_error)
    }

    async fn demote_replication_master(&self, _opts: &DemoteOptions) -> Result<()> {
        self.client.demote().await.map_err(core_error)
    }

    async fn make_read_only(&self, read_only: bool) -> Result<()> {
        self.client
            .make_read_only(read_only)
            .await
            .map_err(core_error)
    }

    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        self.client.latest_txn().await.map_err(core_error)
    }

    async fn wait_for_txn(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()> {
        self.client
            .wait_for_txn(txn, timeout)
            .await
            .map_err(core_error)
    }

    async fn replication_status(&self) -> Result<ReplicationStatus> {
        self.client.status().await.map_err(core_error)
    }

    async fn get_replica_context(&self, opts: &ReplicaContextOptions) -> Result<ReplicaContext> {
        self.client.replica_context(opts).await.map_err(core_error)
    }

    async fn attach_replica(
        &self,
        source: &ReplicaContext,
        opts: &RepointOptions,
    ) -> Result<AttachOutcome> {
        self.client
            .attach_replica(source, opts.timeout)
            .await
            .map_err(core_error)
    }

    async fn get_last_txn(&self) -> Result<LastTxn> {
        self.client.last_txn().await.map_err(core_error)
    }

    async fn fence_writes(&self, opts: &FenceOptions) -> Result<ReplicationPosition> {
        self.client.fence(opts.timeout).await.map_err(core_error)
    }

    async fn unfence_writes(&self) -> Result<()> {
        self.client.unfence().await.map_err(core_error)
    }

    async fn stop_receiver(&self, opts: &FenceOptions) -> Result<LastTxn> {
        self.client
            .stop_receiver(opts.timeout)
            .await
            .map_err(core_error)
    }
}

/// One agent taking part in a switchover or failover: its id and its client.
#[derive(Debug, Clone)]
pub struct AgentMember {
    /// The server's id (names its replication account on the new master).
    pub id: String,
    /// The agent.
    pub agent: RemoteStrategy,
}

impl AgentMember {
    /// A member.
    pub fn new(id: impl Into<String>, agent: RemoteStrategy) -> Self {
        AgentMember {
            id: id.into(),
            agent,
        }
    }

    fn member(&self) -> Member<'_> {
        Member::new(&self.id, &self.agent)
    }
}

/// [`switchover`] over agents.
///
/// # Errors
///
/// As [`switchover`].
///
/// # Cancel safety
///
/// As [`switchover`]; calls already sent run to completion on their agents.
pub async fn switchover_agents(
    old: &AgentMember,
    candidate: &AgentMember,
    others: &[AgentMember],
    opts: &SwitchoverOptions,
) -> Result<SwitchoverReport> {
    let others: Vec<Member<'_>> = others.iter().map(AgentMember::member).collect();
    switchover(old.member(), candidate.member(), &others, opts).await
}

/// [`failover`] over agents.
///
/// # Errors
///
/// As [`failover`].
///
/// # Cancel safety
///
/// As [`failover`]; calls already sent run to completion on their agents.
pub async fn failover_agents(
    candidates: &[AgentMember],
    opts: &FailoverOptions,
) -> Result<FailoverReport> {
    let members: Vec<Member<'_>> = candidates.iter().map(AgentMember::member).collect();
    failover(&members, opts).await
}
