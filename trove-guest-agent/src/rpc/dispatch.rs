//! Trove's guest methods onto the [`ReplicationStrategy`] contract.
//!
//! [`ReplicationStrategy`]: trove_guest_core::ReplicationStrategy

use std::time::Duration;

use serde_json::Value;
use trove_guest_core::failover::{ReplicaContextOptions, RepointOptions};
use trove_guest_core::{
    AttachRequest, DemoteOptions, DetachOptions, EnableMasterOptions, SharedStrategy,
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

/// How long `wait_for_txn` waits: under Trove's 180 s call timeout.
const WAIT_FOR_TXN: Duration = Duration::from_secs(170);

/// The account name `get_replica_context` makes on a master (Trove passes no replica id).
pub const CONTEXT_REPLICA_ID: &str = "trove";

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
                .get_replica_context(&ReplicaContextOptions::new(CONTEXT_REPLICA_ID))
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
                .wait_for_txn(&pos, WAIT_FOR_TXN)
                .await
                .map_err(strategy_failure)?;
            Ok(Value::Null)
        }
        "enable_as_master" => {
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
