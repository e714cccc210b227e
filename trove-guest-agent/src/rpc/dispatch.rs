//! Trove's guest methods onto the [`ReplicationStrategy`] contract.
//!
//! [`ReplicationStrategy`]: trove_guest_core::ReplicationStrategy

use std::time::Duration;

use serde_json::Value;
use trove_guest_core::failover::{FenceOptions, ReplicaContextOptions, RepointOptions};
use trove_guest_core::{
    AttachRequest, DemoteOptions, DetachOptions, EnableMasterOptions, Role, SharedStrategy,
    SnapshotRequest,
};

use super::envelope::{Failure, Request};
use super::translate::{self, TranslateError};

/// The methods this agent answers (everything else is `NoSuchMethod`).
pub const METHODS: &[&str] = &[
    "rpc_ping",
    "backup_required_for_replication",
    "get_replication_snapshot",
    "prepare",
    "attach_replication_slave",
    "attach_replica",
    "get_replica_context",
    "detach_replica",
    "cleanup_source_on_replica_detach",
    "demote_replication_master",
    "make_read_only",
    "get_latest_txn_id",
    "wait_for_txn",
    "enable_as_master",
    "get_last_txn",
];

/// How long `wait_for_txn`, fencing and draining a replica may take: under Trove's 180 s
/// timeout for these calls (`agent_call_high_timeout`).
const CALL_BUDGET: Duration = Duration::from_secs(170);

/// The prefix of the replica id each `get_replica_context` makes its account (and slot) for.
pub const CONTEXT_REPLICA_PREFIX: &str = "trove_";

/// A fresh replica id for one `get_replica_context`: Trove names no replica, and hands each
/// context to exactly one follower (`attach_replica`), as Trove's own guest makes one account
/// per call. A shared id would share one password (renewed by every call) and one slot.
fn context_replica_id() -> String {
    format!(
        "{CONTEXT_REPLICA_PREFIX}{}",
        &super::envelope::new_id()[..12]
    )
}

/// True for methods that change the server (run one at a time).
pub fn is_change(method: &str) -> bool {
    !matches!(
        method,
        "rpc_ping"
            | "backup_required_for_replication"
            | "get_latest_txn_id"
            | "get_last_txn"
            | "wait_for_txn"
    )
}

fn missing(method: &str, name: &str) -> Failure {
    Failure {
        class: "TypeError".into(),
        module: "builtins".into(),
        message: format!("{method}() missing 1 required positional argument: '{name}'"),
    }
}

fn arg<'a>(req: &'a Request, name: &str) -> Result<&'a Value, Failure> {
    req.args.get(name).ok_or_else(|| missing(&req.method, name))
}

fn strategy_failure(e: trove_guest_core::Error) -> Failure {
    Failure::trove("GuestError", e.to_string())
}

fn translate_failure(e: TranslateError) -> Failure {
    Failure::trove("GuestError", e.to_string())
}

/// Trove's switchover starts with `make_read_only(True)` on the old master and then waits for
/// the candidate to reach the master's latest transaction. A master that is only read-only
/// still writes (PostgreSQL's background WAL records), and its other replicas, which keep
/// receiving, would end up past the point where the candidate left it. So a master is fenced
/// (`fence_writes`, as core's switchover does: nothing more leaves it), and
/// `make_read_only(False)` lifts a fence first. True when the fence alone answered the call.
async fn fence(strategy: &SharedStrategy, read_only: bool) -> Result<bool, Failure> {
    if !read_only {
        return match strategy.unfence_writes().await {
            Ok(()) | Err(trove_guest_core::Error::Unsupported { .. }) => Ok(false),
            Err(e) => Err(strategy_failure(e)),
        };
    }
    let status = strategy
        .replication_status()
        .await
        .map_err(strategy_failure)?;
    if status.role != Some(Role::Master) {
        return Ok(false);
    }
    match strategy
        .fence_writes(&FenceOptions::new().with_timeout(CALL_BUDGET))
        .await
    {
        Ok(at) => {
            tracing::info!(position = %at, "make_read_only on a master: writes fenced");
            Ok(true)
        }
        Err(trove_guest_core::Error::Unsupported { .. }) => Ok(false),
        Err(e) => Err(strategy_failure(e)),
    }
}

/// Trove's switchover and failover detach *every* replica for failover (the candidate, which
/// is enabled as master next, and the others, which are re-pointed next) before anything else.
/// Promoting them all would put each on a timeline of its own (PostgreSQL: the same timeline
/// number with different histories, which no standby can follow afterwards). So a replica only
/// stops receiving and applies what it received (`stop_receiver`, as core's failover does);
/// `enable_as_master` promotes the one that becomes the master, and `attach_replica` points
/// the others at it. True when that was done; false when the server is no replica (a repeated
/// call: it was promoted already) or its backend cannot stop its receiver alone (Redis,
/// PostgreSQL 12), in which case the caller detaches it, as Trove asked.
async fn stop_following(strategy: &SharedStrategy) -> Result<bool, Failure> {
    let status = strategy
        .replication_status()
        .await
        .map_err(strategy_failure)?;
    if status.role != Some(Role::Replica) {
        return Ok(false);
    }
    match strategy
        .stop_receiver(&FenceOptions::new().with_timeout(CALL_BUDGET))
        .await
    {
        Ok(last) => {
            tracing::info!(applied = %last.applied, "detach for failover: receiver stopped; promoted by enable_as_master");
            Ok(true)
        }
        Err(trove_guest_core::Error::Unsupported { .. }) => Ok(false),
        Err(e) => Err(strategy_failure(e)),
    }
}

/// Runs one request; the result is Trove's shape, the failure what Trove's client rebuilds.
///
/// # Errors
///
/// A [`Failure`] for an unknown method, a missing or invalid argument, or the strategy's error.
///
/// # Cancel safety
///
/// Not cancel safe: a change dropped midway is left for the strategy's recovery, like any
/// interrupted change.
pub async fn dispatch(strategy: &SharedStrategy, req: &Request) -> Result<Value, Failure> {
    let kind = strategy.datastore();
    match req.method.as_str() {
        "rpc_ping" => Ok(Value::Bool(true)),
        "backup_required_for_replication" => Ok(Value::Bool(true)),
        "get_replication_snapshot" => {
            let info = arg(req, "snapshot_info")?;
            let id = translate::snapshot_id(info).map_err(translate_failure)?;
            // As Trove's guest does: the master is made a master first (idempotent).
            strategy
                .enable_as_master(&EnableMasterOptions::new())
                .await
                .map_err(strategy_failure)?;
            let sreq = SnapshotRequest::new().with_snapshot_name(id.clone());
            let doc = strategy
                .get_replication_snapshot(&sreq)
                .await
                .map_err(strategy_failure)?;
            Ok(translate::snapshot_to_trove(&doc, &id))
        }
        "prepare" | "attach_replication_slave" => {
            let snap = match req.args.get("snapshot") {
                Some(Value::Null) | None if req.method == "prepare" => {
                    return Err(Failure::trove(
                        "GuestError",
                        "prepare is only supported with a snapshot (building a replica); \
                         provisioning a new instance is out of this agent's scope",
                    ));
                }
                _ => arg(req, "snapshot")?,
            };
            let doc = translate::snapshot_from_trove(snap).map_err(translate_failure)?;
            strategy
                .attach_replication_slave(&doc, &AttachRequest::new())
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "get_replica_context" => {
            let ctx = strategy
                .get_replica_context(&ReplicaContextOptions::new(context_replica_id()))
                .await
                .map_err(strategy_failure)?;
            translate::context_to_trove(&ctx).map_err(translate_failure)
        }
        "attach_replica" => {
            let ctx = translate::context_from_trove(arg(req, "replica_info")?)
                .map_err(translate_failure)?;
            strategy
                .attach_replica(&ctx, &RepointOptions::default())
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "detach_replica" => {
            let mut opts = DetachOptions::new();
            opts.for_failover = req
                .args
                .get("for_failover")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if opts.for_failover && stop_following(strategy).await? {
                // Trove ignores what a detach for failover answers.
                return Ok(Value::Null);
            }
            let d = strategy
                .detach_replication_slave(&opts)
                .await
                .map_err(strategy_failure)?;
            Ok(translate::detached_to_trove(&d))
        }
        "cleanup_source_on_replica_detach" => {
            let d = translate::detached_from_trove(arg(req, "replica_info")?)
                .map_err(translate_failure)?;
            strategy
                .cleanup_source_on_replica_detach(&d)
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "demote_replication_master" => {
            // Trove's switchover (taskmanager's promote_to_replica_source) re-points the old
            // master at the new one first and demotes it last. By then it is a replica: what it
            // served as a master went with the role, and demoting a replica is refused by the
            // strategy, so the call is answered without a change, as Trove expects.
            let status = strategy
                .replication_status()
                .await
                .map_err(strategy_failure)?;
            if status.role == Some(Role::Replica) {
                tracing::info!(
                    master = ?status.master,
                    "demote_replication_master: already a replica (Trove's switchover); nothing to demote"
                );
                return Ok(Value::Null);
            }
            strategy
                .demote_replication_master(&DemoteOptions::new())
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "make_read_only" => {
            let ro = arg(req, "read_only")?
                .as_bool()
                .ok_or_else(|| Failure::remote("ValueError", "read_only must be a boolean"))?;
            if fence(strategy, ro).await? {
                return Ok(Value::Null);
            }
            strategy
                .make_read_only(ro)
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "get_latest_txn_id" => {
            let p = strategy
                .get_latest_txn_id()
                .await
                .map_err(strategy_failure)?;
            Ok(Value::String(translate::txn_to_trove(&p)))
        }
        "wait_for_txn" => {
            let txn = arg(req, "txn")?
                .as_str()
                .ok_or_else(|| Failure::remote("ValueError", "txn must be a string"))?;
            let pos = translate::txn_from_trove(&kind, txn).map_err(translate_failure)?;
            strategy
                .wait_for_txn(&pos, CALL_BUDGET)
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "enable_as_master" => {
            // A replica Trove detached for failover only stopped receiving (see
            // `stop_following`): it is promoted now.
            let status = strategy
                .replication_status()
                .await
                .map_err(strategy_failure)?;
            if status.role == Some(Role::Replica) {
                strategy
                    .detach_replication_slave(&DetachOptions::new().with_for_failover(true))
                    .await
                    .map_err(strategy_failure)?;
            }
            strategy
                .enable_as_master(&EnableMasterOptions::new())
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "get_last_txn" => {
            let last = strategy.get_last_txn().await.map_err(strategy_failure)?;
            Ok(translate::last_txn_to_trove(&last))
        }
        other => Err(Failure {
            class: "NoSuchMethod".into(),
            module: "oslo_messaging.rpc.dispatcher".into(),
            message: format!("Endpoint does not support RPC method {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use serde_json::json;
    use trove_guest_core::failover::{LastTxn, ReplicaContext};
    use trove_guest_core::{
        AttachOutcome, Capabilities, DatastoreKind, DetachedReplica, Error, ReplicationPosition,
        ReplicationStatus, ReplicationStrategy, Result, SnapshotDocument,
    };

    use super::*;

    /// A strategy in a given role that records the calls it gets; `failover_calls`: whether
    /// it implements fencing and stopping its receiver (else the defaults, `Unsupported`).
    #[derive(Debug)]
    struct Recorder {
        role: Role,
        failover_calls: bool,
        calls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn shared(role: Role, failover_calls: bool) -> (Arc<Recorder>, SharedStrategy) {
            let r = Arc::new(Recorder {
                role,
                failover_calls,
                calls: Mutex::new(Vec::new()),
            });
            (r.clone(), r)
        }
        fn note(&self, call: &str) {
            self.calls.lock().expect("calls").push(call.to_owned());
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("calls").clone()
        }
    }

    fn gtid() -> ReplicationPosition {
        ReplicationPosition::MariadbGtid("0-1-7".parse().expect("a GTID"))
    }

    #[async_trait]
    impl ReplicationStrategy for Recorder {
        fn datastore(&self) -> DatastoreKind {
            DatastoreKind::Mariadb
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::none()
        }
        async fn enable_as_master(&self, _: &EnableMasterOptions) -> Result<()> {
            self.note("enable_as_master");
            Ok(())
        }
        async fn get_replication_snapshot(&self, _: &SnapshotRequest) -> Result<SnapshotDocument> {
            Err(Error::unsupported("not in this test"))
        }
        async fn attach_replication_slave(
            &self,
            _: &SnapshotDocument,
            _: &AttachRequest,
        ) -> Result<AttachOutcome> {
            Err(Error::unsupported("not in this test"))
        }
        async fn detach_replication_slave(&self, o: &DetachOptions) -> Result<DetachedReplica> {
            self.note(&format!("detach(for_failover={})", o.for_failover));
            Ok(DetachedReplica::new(
                Some("repl_x".into()),
                None,
                None,
                true,
            ))
        }
        async fn cleanup_source_on_replica_detach(&self, _: &DetachedReplica) -> Result<()> {
            Ok(())
        }
        async fn demote_replication_master(&self, _: &DemoteOptions) -> Result<()> {
            self.note("demote");
            Ok(())
        }
        async fn make_read_only(&self, ro: bool) -> Result<()> {
            self.note(&format!("make_read_only({ro})"));
            Ok(())
        }
        async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
            Ok(gtid())
        }
        async fn wait_for_txn(&self, _: &ReplicationPosition, _: Duration) -> Result<()> {
            Ok(())
        }
        async fn replication_status(&self) -> Result<ReplicationStatus> {
            let mut s = ReplicationStatus::default();
            s.role = Some(self.role);
            Ok(s)
        }
        async fn get_replica_context(&self, o: &ReplicaContextOptions) -> Result<ReplicaContext> {
            self.note(&format!("context({})", o.replica_id));
            Err(Error::unsupported("not in this test"))
        }
        async fn fence_writes(&self, _: &FenceOptions) -> Result<ReplicationPosition> {
            if !self.failover_calls {
                return Err(Error::unsupported("fencing"));
            }
            self.note("fence");
            Ok(gtid())
        }
        async fn unfence_writes(&self) -> Result<()> {
            if !self.failover_calls {
                return Err(Error::unsupported("fencing"));
            }
            self.note("unfence");
            Ok(())
        }
        async fn stop_receiver(&self, _: &FenceOptions) -> Result<LastTxn> {
            if !self.failover_calls {
                return Err(Error::unsupported("stopping the receiver"));
            }
            self.note("stop_receiver");
            Ok(LastTxn::new(gtid()))
        }
    }

    fn request(method: &str, args: Value) -> Request {
        Request::cast_for_test(method, args)
    }

    async fn calls_for(role: Role, failover_calls: bool, method: &str, args: Value) -> Vec<String> {
        let (rec, strategy) = Recorder::shared(role, failover_calls);
        dispatch(&strategy, &request(method, args))
            .await
            .unwrap_or_else(|f| panic!("{method} answered {f:?}"));
        rec.calls()
    }

    #[tokio::test]
    async fn make_read_only_fences_a_master_and_unfences_before_writes_return() {
        let ro = json!({"read_only": true});
        assert_eq!(
            calls_for(Role::Master, true, "make_read_only", ro.clone()).await,
            ["fence"]
        );
        assert_eq!(
            calls_for(Role::Standalone, true, "make_read_only", ro.clone()).await,
            ["make_read_only(true)"]
        );
        assert_eq!(
            calls_for(Role::Master, false, "make_read_only", ro).await,
            ["make_read_only(true)"],
            "a backend without fencing is made read-only"
        );
        assert_eq!(
            calls_for(
                Role::Master,
                true,
                "make_read_only",
                json!({"read_only": false})
            )
            .await,
            ["unfence", "make_read_only(false)"]
        );
    }

    #[tokio::test]
    async fn a_detach_for_failover_only_stops_the_receiver_and_enable_as_master_promotes() {
        let failover = json!({"for_failover": true});
        let (rec, strategy) = Recorder::shared(Role::Replica, true);
        let answer = dispatch(&strategy, &request("detach_replica", failover.clone())).await;
        assert_eq!(answer.expect("answered"), Value::Null);
        assert_eq!(rec.calls(), ["stop_receiver"]);
        assert_eq!(
            calls_for(Role::Replica, true, "enable_as_master", json!({})).await,
            ["detach(for_failover=true)", "enable_as_master"]
        );
        assert_eq!(
            calls_for(Role::Master, true, "enable_as_master", json!({})).await,
            ["enable_as_master"]
        );
        // Repeated once promoted, or on a backend that cannot stop its receiver alone: the
        // detach Trove asked for.
        assert_eq!(
            calls_for(Role::Master, true, "detach_replica", failover.clone()).await,
            ["detach(for_failover=true)"]
        );
        assert_eq!(
            calls_for(Role::Replica, false, "detach_replica", failover).await,
            ["detach(for_failover=true)"]
        );
        assert_eq!(
            calls_for(
                Role::Replica,
                true,
                "detach_replica",
                json!({"for_failover": false})
            )
            .await,
            ["detach(for_failover=false)"]
        );
    }

    #[tokio::test]
    async fn demote_on_a_replica_changes_nothing_and_demotes_a_master() {
        assert!(
            calls_for(Role::Replica, true, "demote_replication_master", json!({}))
                .await
                .is_empty()
        );
        assert_eq!(
            calls_for(Role::Master, true, "demote_replication_master", json!({})).await,
            ["demote"]
        );
    }

    #[tokio::test]
    async fn each_replica_context_is_for_a_replica_id_of_its_own() {
        let (rec, strategy) = Recorder::shared(Role::Master, true);
        for _ in 0..2 {
            let answer = dispatch(&strategy, &request("get_replica_context", json!({}))).await;
            let failure = answer.expect_err("the recorder makes no context");
            assert_eq!(failure.class, "GuestError", "{failure:?}");
        }
        let calls = rec.calls();
        assert_eq!(calls.len(), 2);
        assert_ne!(calls[0], calls[1]);
        for c in &calls {
            let id = c.trim_start_matches("context(").trim_end_matches(')');
            assert!(id.starts_with(CONTEXT_REPLICA_PREFIX), "{id}");
            assert_eq!(id.len(), CONTEXT_REPLICA_PREFIX.len() + 12, "{id}");
        }
    }
}
