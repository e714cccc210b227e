//! The guest agent's HTTP API: routes, request and response bodies, error bodies and the NDJSON
//! progress stream. Shared by the server ([`crate::agent`]) and the client ([`crate::client`]).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `GET` | [`STATUS`] | — | [`ReplicationStatus`](trove_guest_core::ReplicationStatus) |
//! | `POST` | [`ENABLE_MASTER`] | — | `{}` |
//! | `POST` | [`SNAPSHOT`] | [`SnapshotCall`] (may be empty) | [`SnapshotDocument`](trove_guest_core::SnapshotDocument) |
//! | `POST` | [`ATTACH`] `?positioning=&timeout_secs=` | the `SnapshotDocument` | [`AttachOutcome`](trove_guest_core::AttachOutcome) |
//! | `POST` | [`DETACH`] | [`DetachCall`] (may be empty) | [`DetachedReplica`](trove_guest_core::DetachedReplica) |
//! | `POST` | [`CLEANUP`] | the `DetachedReplica` | `{}` |
//! | `POST` | [`DEMOTE`] | [`DemoteCall`] (may be empty) | `{}` |
//! | `PUT` | [`READ_ONLY`] | [`ReadOnlyCall`] | `{}` |
//! | `GET` | [`LATEST_TXN`] | — | [`ReplicationPosition`](trove_guest_core::ReplicationPosition) |
//! | `POST` | [`WAIT_FOR_TXN`] | [`WaitCall`] | `{}` |
//! | `POST` | [`REPLICA_CONTEXT`] | [`ContextCall`] | [`ReplicaContext`](trove_guest_core::failover::ReplicaContext) |
//! | `POST` | [`ATTACH_REPLICA`] | [`RepointCall`] | [`AttachOutcome`](trove_guest_core::AttachOutcome) |
//! | `GET` | [`LAST_TXN`] | — | [`LastTxn`](trove_guest_core::failover::LastTxn) |
//! | `POST` | [`FENCE`] | [`FenceCall`] (may be empty) | [`ReplicationPosition`](trove_guest_core::ReplicationPosition) |
//! | `POST` | [`UNFENCE`] | — | `{}` |
//! | `POST` | [`STOP_RECEIVER`] | [`FenceCall`] (may be empty) | [`LastTxn`](trove_guest_core::failover::LastTxn) |
//! | `GET` | [`OPERATION`] | — | [`OperationView`] |
//! | `GET` | [`EVENTS`] | — | NDJSON of [`EventLine`], until the client hangs up |
//! | `GET` | [`RECOVERY`] | — | [`RecoveryView`] |
//! | `GET` | [`HEALTH`] | — | [`HealthView`]: `200` when the server answers, `503` when not |
//! | `POST` | `/instances/{id}/action` | `{"detach_replication": {}}` | the `DetachedReplica` |
//!
//! When the agent has a token ([`AgentAuth`](crate::agent::AgentAuth)), every request over TCP
//! or TLS carries `Authorization: Bearer <token>`; without it, or with another token, the answer
//! is `401` of kind [`kinds::UNAUTHORIZED`] with `WWW-Authenticate: Bearer`. Over the agent's
//! Unix socket the peer's uid authenticates instead.
//!
//! Errors whose detail would show the server's insides (kinds [`kinds::TOOL_FAILED`],
//! [`kinds::DATASTORE`], [`kinds::INTERNAL`]: tool stderr, file paths, server messages) carry a
//! generic message and an [`ErrorDetail::error_id`]; the agent's log has the detail under that
//! id ([`ErrorDisclosure`](crate::agent::ErrorDisclosure) `Full` puts it in the body too).
//!
//! Replication changes (enable master, snapshot, attach, detach, cleanup, demote, read-only and
//! the action) run one at a time per agent: a second one gets `409` with an [`ErrorBody`] of kind
//! [`kinds::BUSY`]. With `?stream=true` (or `Accept: application/x-ndjson`) the snapshot and attach
//! calls answer `200` with an NDJSON stream of [`StreamLine`]s: progress events, then one result or
//! error line.

use serde::{Deserialize, Serialize};
use trove_guest_core::{Positioning, ProgressEvent, ReplicationPosition};

/// `GET`: the server's replication state.
pub const STATUS: &str = "/v1/replication/status";
/// `POST`: make the server able to serve replicas.
pub const ENABLE_MASTER: &str = "/v1/replication/enable-master";
/// `POST`: `get_replication_snapshot`.
pub const SNAPSHOT: &str = "/v1/replication/snapshot";
/// `POST`: `stage_snapshot`: restore a snapshot (following its upload if the master is still
/// taking it) next to the data directory, for a later attach.
pub const STAGE: &str = "/v1/replication/stage";
/// `POST`: `attach_replication_slave`.
pub const ATTACH: &str = "/v1/replication/attach";
/// `POST`: `detach_replication_slave`.
pub const DETACH: &str = "/v1/replication/detach";
/// `POST`: `cleanup_source_on_replica_detach`.
pub const CLEANUP: &str = "/v1/replication/cleanup";
/// `POST`: `demote_replication_master`.
pub const DEMOTE: &str = "/v1/replication/demote";
/// `PUT`: `make_read_only`.
pub const READ_ONLY: &str = "/v1/replication/read-only";
/// `GET`: `get_latest_txn_id`.
pub const LATEST_TXN: &str = "/v1/replication/latest-txn";
/// `POST`: `wait_for_txn`.
pub const WAIT_FOR_TXN: &str = "/v1/replication/wait-for-txn";
/// `POST`: `get_replica_context`.
pub const REPLICA_CONTEXT: &str = "/v1/replication/replica-context";
/// `POST`: `attach_replica` (re-point without a snapshot).
pub const ATTACH_REPLICA: &str = "/v1/replication/attach-replica";
/// `GET`: `get_last_txn`.
pub const LAST_TXN: &str = "/v1/replication/last-txn";
/// `POST`: `fence_writes`.
pub const FENCE: &str = "/v1/replication/fence";
/// `POST`: `unfence_writes`.
pub const UNFENCE: &str = "/v1/replication/unfence";
/// `POST`: `stop_receiver`.
pub const STOP_RECEIVER: &str = "/v1/replication/stop-receiver";
/// `GET`: the replication change in progress, if any, with its latest progress event.
pub const OPERATION: &str = "/v1/operation";
/// `GET`: every progress event of this agent as NDJSON, live.
pub const EVENTS: &str = "/v1/events";
/// `GET`: what the recovery run at the agent's start did.
pub const RECOVERY: &str = "/v1/recovery";
/// `GET`: whether the server answers and whether a change runs ([`HealthView`]).
pub const HEALTH: &str = "/v1/health";

/// The largest `timeout_secs` the attach query and the detach body accept: 24 hours. Every
/// change holds the agent's single slot while it waits, so a longer wait is a mistake (and
/// values near `u64::MAX` do not fit the clock at all).
pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// The path of the instance action endpoint for `instance_id`.
pub fn action_path(instance_id: &str) -> String {
    format!("/instances/{instance_id}/action")
}

/// Body of [`SNAPSHOT`]; every field optional, an empty body is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCall {
    /// The replica (instance id) the snapshot is for; names its replication account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    /// The replica's address, to restrict the account to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_host: Option<String>,
    /// Name of the snapshot in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// Backup parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
}

/// Body of [`STAGE`]: the snapshot by href or by name in the agent's store (exactly one), and
/// what it must be when already known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageCall {
    /// The snapshot's href.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_href: Option<String>,
    /// The snapshot's name (as given to [`SNAPSHOT`]); the href is derived from the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// Expected size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Expected SHA-256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Query of [`ATTACH`] (the body is the snapshot document itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachQuery {
    /// `gtid` (default) or `binlog_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positioning: Option<Positioning>,
    /// How long to wait for replication to reach the snapshot position, at most
    /// [`MAX_TIMEOUT_SECS`] (a larger value is refused with `400` [`kinds::TIMEOUT_TOO_LONG`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Stream progress as NDJSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// The replica's server id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
}

/// Query of [`SNAPSHOT`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Stream progress as NDJSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// Body of [`DETACH`]; may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachCall {
    /// How long to wait for replication to stop, at most [`MAX_TIMEOUT_SECS`] (a larger value
    /// is refused with `400` [`kinds::TIMEOUT_TOO_LONG`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// `DetachOptions::for_failover`: apply everything received, keep replication accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_failover: Option<bool>,
}

/// Body of [`REPLICA_CONTEXT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextCall {
    /// The server that will replicate (names its account and slot).
    pub replica_id: String,
    /// The host it connects from, when known: its account is limited to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_host: Option<String>,
}

/// Body of [`ATTACH_REPLICA`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepointCall {
    /// What the new source's [`REPLICA_CONTEXT`] returned.
    pub context: trove_guest_core::failover::ReplicaContext,
    /// How long to wait for replication to run and catch up (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Body of [`FENCE`] and [`STOP_RECEIVER`]; may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceCall {
    /// Bound of the call (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Body of [`DEMOTE`]; may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoteCall {
    /// Also purge binary logs / WAL kept for replicas (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_logs: Option<bool>,
}

/// Body of [`READ_ONLY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyCall {
    /// Whether the server refuses client writes.
    pub read_only: bool,
}

/// Body of [`WAIT_FOR_TXN`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitCall {
    /// The position to wait for, as [`LATEST_TXN`] returned it.
    pub txn: ReplicationPosition,
    /// How long to wait at most (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

/// The answer of [`OPERATION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationView {
    /// The running replication change (`attach_replication_slave`, ...), if any.
    pub running: Option<String>,
    /// Seconds since it started.
    pub elapsed_secs: Option<f64>,
    /// Its latest progress event.
    pub last_event: Option<ProgressEvent>,
}

/// The answer of [`RECOVERY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryView {
    /// Whether recovery ran (an embedding that never calls `GuestAgent::recover` reports false).
    pub ran: bool,
    /// What the last recovery did, in order (empty when there was nothing to recover).
    pub actions: Vec<trove_guest_core::RecoveryAction>,
}

/// The answer of [`HEALTH`] (`200` when `server` is `answering`, `503` otherwise). It names no
/// account, address, path or secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    /// `answering` when the server answered a status query within the agent's health timeout,
    /// else `not answering`.
    pub server: String,
    /// Why the server is counted as not answering (the error's class, or `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The replication change running, whichever front end started it.
    pub change: Option<crate::changes::RunningChange>,
    /// Whether start-up recovery ran and how many actions it took.
    pub recovery: HealthRecovery,
}

/// [`HealthView::recovery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecovery {
    /// Whether recovery ran.
    pub ran: bool,
    /// How many actions it took.
    pub actions: usize,
}

/// [`HealthView::server`] when the server answers.
pub const ANSWERING: &str = "answering";
/// [`HealthView::server`] when it does not.
pub const NOT_ANSWERING: &str = "not answering";

/// One line of [`EVENTS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    /// The call that reported it.
    pub operation: String,
    /// The event.
    pub event: ProgressEvent,
}

/// One line of a streamed snapshot or attach answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamLine {
    /// A progress event.
    Progress(ProgressEvent),
    /// The call's result (last line).
    Result(serde_json::Value),
    /// The call's error (last line).
    Error(ErrorDetail),
}

/// The JSON error body of every non-2xx answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, machine- and human-readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable kind from [`kinds`].
    pub kind: String,
    /// A message naming the problem.
    pub message: String,
    /// The JSON path of the offending field, for document errors (`dataset.datastore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The replication change that is running, for [`kinds::BUSY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// For errors whose detail (tool stderr, file paths, server messages) stays in the agent's
    /// log: the id the log records it under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<Box<str>>,
}

/// The stable error kinds of [`ErrorDetail::kind`].
pub mod kinds {
    /// The body is not JSON (`400`).
    pub const MALFORMED_JSON: &str = "malformed_json";
    /// The body is JSON but not the expected document (`422`).
    pub const INVALID_DOCUMENT: &str = "invalid_document";
    /// The document names a datastore by a malformed name, or one core does not know that this
    /// agent does not serve (`422`).
    pub const UNKNOWN_DATASTORE: &str = "unknown_datastore";
    /// The document is for another known datastore than this agent's server (`422`).
    pub const WRONG_DATASTORE: &str = "wrong_datastore";
    /// The snapshot href is not in this agent's snapshot store (`422`).
    pub const HREF_OUTSIDE_STORE: &str = "snapshot_href_outside_store";
    /// The action document names an unknown action (`422`).
    pub const UNKNOWN_ACTION: &str = "unknown_action";
    /// The instance id is not this agent's (`404`).
    pub const UNKNOWN_INSTANCE: &str = "unknown_instance";
    /// The query string is not understood (`400`).
    pub const INVALID_QUERY: &str = "invalid_query";
    /// A `timeout_secs` above [`MAX_TIMEOUT_SECS`](super::MAX_TIMEOUT_SECS) (`400`).
    pub const TIMEOUT_TOO_LONG: &str = "timeout_too_long";
    /// Another replication change is running (`409`).
    pub const BUSY: &str = "busy";
    /// Core `InvalidInput` (`400`).
    pub const INVALID_INPUT: &str = "invalid_input";
    /// Core `Integrity`: the snapshot data is damaged (`422`).
    pub const INTEGRITY: &str = "integrity";
    /// Core `NotFound` (`404`).
    pub const NOT_FOUND: &str = "not_found";
    /// Core `ToolFailed` (`500`).
    pub const TOOL_FAILED: &str = "tool_failed";
    /// Core `Datastore`: the database server failed (`502`).
    pub const DATASTORE: &str = "datastore";
    /// Core `Timeout` (`504`).
    pub const TIMEOUT: &str = "timeout";
    /// Core `Unsupported` (`501`).
    pub const UNSUPPORTED: &str = "unsupported";
    /// Core `Conflict`: wrong role, incompatible snapshot, diverged history (`409`).
    pub const CONFLICT: &str = "conflict";
    /// Core `Internal`: local I/O, service control or store failure (`500`).
    pub const INTERNAL: &str = "internal";
    /// No bearer token, or a wrong one (`401`, with `WWW-Authenticate: Bearer`).
    pub const UNAUTHORIZED: &str = "unauthorized";
}
