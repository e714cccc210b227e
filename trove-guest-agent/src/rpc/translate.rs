//! The one place where Trove's argument and result shapes meet ours.
//!
//! | Trove | trove-guest |
//! |---|---|
//! | `snapshot_info["id"]` (the backup id) | the snapshot name in our store; its href is `strategy.snapshot_href(id)` |
//! | snapshot dict `dataset.datastore_manager` | `dataset.datastore` (`mysql`, `mariadb`, `postgresql`) |
//! | `dataset.dataset_size` (float, GiB) | `dataset.dataset_size` (integer GiB, rounded up) |
//! | `dataset.volume_size` | the same integer GiB |
//! | `dataset.snapshot_id` | the backup id (= our snapshot name) |
//! | `replication_strategy` | `MariaDBGTIDReplication`, `MysqlGTIDReplication`, `PostgresqlReplicationStreaming` |
//! | `master` `{host, port}` | `master` |
//! | `log_position` | `{}` (as a real MariaDB guest answers); the position stays in our document |
//! | `replica_conf.replication_user.name` | `replication.user` |
//! | `trove_guest` (extra key, ignored by Trove, carried back in `prepare(snapshot=...)`) | the whole [`SnapshotDocument`] |
//! | transaction ids (`get_latest_txn_id`, `wait_for_txn`) | MariaDB GTID list `0-1-42`, MySQL GTID set, PostgreSQL LSN `0/3000060`; the timeline is dropped |
//! | `get_last_txn` → `[server_id, sequence]` (MariaDB), `[null, txn]` otherwise | [`LastTxn::applied`] |
//! | `detach_replica` → `{"replication_user": name}` | [`DetachedReplica::replication_user`] |
//! | `replica_info` of `attach_replica` | the [`ReplicaContext`] our `get_replica_context` returned |
//! | `replica_source_config`, `slave_config` (rendered my.cnf text) | ignored: the strategy writes its own settings |
//! | (no replica address in `get_replication_snapshot`) | no `replica_host`: accounts made over RPC are not restricted to the replica's host (MariaDB `'%'`, PostgreSQL `replica_networks`) |
//! | the replication password | `replication.password_ref` inside `trove_guest` when the agent has a secret store (`[credentials]`), else `replication.password` |

use serde_json::{Value, json};
use trove_guest_core::failover::{LastTxn, ReplicaContext};
use trove_guest_core::{
    BinlogCoordinates, BinlogFile, DatastoreKind, DetachedReplica, Lsn, MariaDbGtidList,
    MysqlGtidSet, ReplicationPosition, SnapshotDocument,
};

/// The key under which our own document rides inside Trove's snapshot dict.
pub const DOCUMENT_KEY: &str = "trove_guest";

/// Why a Trove value could not be translated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// A required field is missing or has the wrong type.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field's path.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TranslateError {
    TranslateError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Trove's `datastore_manager` for a datastore.
pub fn datastore_manager(kind: &DatastoreKind) -> &str {
    match kind {
        DatastoreKind::Mysql => "mysql",
        DatastoreKind::Mariadb => "mariadb",
        DatastoreKind::Postgresql => "postgresql",
        other => other.as_str(),
    }
}

fn replication_strategy(kind: &DatastoreKind) -> &'static str {
    match kind {
        DatastoreKind::Mariadb => "MariaDBGTIDReplication",
        DatastoreKind::Postgresql => "PostgresqlReplicationStreaming",
        _ => "MysqlGTIDReplication",
    }
}

/// The Trove backup id in `snapshot_info` (our snapshot name).
///
/// # Errors
///
/// When `snapshot_info` has no string `id`.
pub fn snapshot_id(snapshot_info: &Value) -> Result<String, TranslateError> {
    snapshot_info
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| invalid("snapshot_info.id", "missing or not a string"))
}

/// Our snapshot document as Trove's snapshot dict (with the document itself under
/// [`DOCUMENT_KEY`], so that `prepare(snapshot=...)` gets it back whole).
pub fn snapshot_to_trove(doc: &SnapshotDocument, snapshot_id: &str) -> Value {
    let size = doc.dataset.dataset_size;
    json!({
        "dataset": {
            "datastore_manager": datastore_manager(&doc.dataset.datastore),
            "dataset_size": size as f64,
            "volume_size": size,
            "snapshot_id": snapshot_id,
        },
        "replication_strategy": replication_strategy(&doc.dataset.datastore),
        "master": {"host": doc.master.host, "port": doc.master.port},
        "log_position": {},
        "replica_conf": {
            "replication_user": {"name": doc.replication.as_ref().map(|r| r.user.clone())},
        },
        DOCUMENT_KEY: doc,
    })
}

/// Our document back out of Trove's snapshot dict.
///
/// # Errors
///
/// When the dict carries no document of ours (a snapshot not taken by a trove-guest agent), or
/// the document disagrees with Trove's own fields.
pub fn snapshot_from_trove(snapshot: &Value) -> Result<SnapshotDocument, TranslateError> {
    let raw = snapshot.get(DOCUMENT_KEY).ok_or_else(|| {
        invalid(
            "snapshot.trove_guest",
            "missing: the snapshot was not taken by a trove-guest agent",
        )
    })?;
    let doc: SnapshotDocument = serde_json::from_value(raw.clone())
        .map_err(|e| invalid("snapshot.trove_guest", e.to_string()))?;
    if let Some(m) = snapshot
        .pointer("/dataset/datastore_manager")
        .and_then(Value::as_str)
        && m != datastore_manager(&doc.dataset.datastore)
    {
        return Err(invalid(
            "snapshot.dataset.datastore_manager",
            format!(
                "{m} disagrees with the document's {}",
                doc.dataset.datastore
            ),
        ));
    }
    Ok(doc)
}

/// A position as Trove's plain-string transaction id.
pub fn txn_to_trove(pos: &ReplicationPosition) -> String {
    match pos {
        ReplicationPosition::PostgresqlWal(w) => w.lsn.to_string(),
        other => other.to_string(),
    }
}

/// Trove's transaction id as a position of the datastore `kind`.
///
/// # Errors
///
/// When the string is not a transaction id of that datastore.
pub fn txn_from_trove(
    kind: &DatastoreKind,
    txn: &str,
) -> Result<ReplicationPosition, TranslateError> {
    let bad = |e: trove_guest_core::Error| invalid("txn", e.to_string());
    // Binary log coordinates `file:offset` (a MySQL-family server without GTIDs).
    if matches!(kind, DatastoreKind::Mariadb | DatastoreKind::Mysql)
        && let Some((file, pos)) = txn.rsplit_once(':')
        && let (Ok(log_file), Ok(log_position)) = (file.parse::<BinlogFile>(), pos.parse::<u64>())
    {
        return Ok(ReplicationPosition::Binlog(BinlogCoordinates {
            log_file,
            log_position,
        }));
    }
    Ok(match kind {
        DatastoreKind::Mariadb => {
            ReplicationPosition::MariadbGtid(txn.parse::<MariaDbGtidList>().map_err(bad)?)
        }
        DatastoreKind::Mysql => {
            ReplicationPosition::MysqlGtid(txn.parse::<MysqlGtidSet>().map_err(bad)?)
        }
        DatastoreKind::Postgresql => {
            ReplicationPosition::PostgresqlLsn(txn.parse::<Lsn>().map_err(bad)?)
        }
        other => ReplicationPosition::Opaque(
            trove_guest_core::OpaquePosition::new(*other, txn).map_err(bad)?,
        ),
    })
}

/// `get_last_txn`'s answer, which Trove's failover sorts on (highest first) to choose the new
/// master: the furthest of what the replica applied and what it received (a chosen replica
/// applies everything it received before it is promoted). `[server_id, sequence]` for a
/// MariaDB GTID (as Trove's MariaDB guest answers); for PostgreSQL `[null, lsn]` with both
/// halves of the LSN zero-padded to 8 hex digits, so that Trove's comparison of the texts
/// orders them as positions; `[null, txn]` otherwise.
pub fn last_txn_to_trove(last: &LastTxn) -> Value {
    let mut gtid: Option<(u32, u64)> = None;
    let mut lsn: Option<Lsn> = None;
    for p in std::iter::once(&last.applied).chain(last.received.as_ref()) {
        match p {
            ReplicationPosition::MariadbGtid(list) => {
                if let Some(g) = list.gtids().max_by_key(|g| g.sequence)
                    && gtid.is_none_or(|(_, seq)| g.sequence > seq)
                {
                    gtid = Some((g.server, g.sequence));
                }
            }
            ReplicationPosition::PostgresqlWal(w) => lsn = lsn.max(Some(w.lsn)),
            ReplicationPosition::PostgresqlLsn(l) => lsn = lsn.max(Some(*l)),
            _ => {}
        }
    }
    match (gtid, lsn, &last.applied) {
        (Some((server, seq)), _, _) => json!([server, seq]),
        (None, Some(Lsn(l)), _) => {
            json!([null, format!("{:08X}/{:08X}", l >> 32, l & 0xFFFF_FFFF)])
        }
        (None, None, ReplicationPosition::MariadbGtid(_)) => json!([null, 0]),
        (None, None, other) => json!([null, txn_to_trove(other)]),
    }
}

/// `detach_replica`'s answer.
pub fn detached_to_trove(d: &DetachedReplica) -> Value {
    match &d.replication_user {
        Some(user) => json!({"replication_user": user}),
        None => Value::Null,
    }
}

/// `cleanup_source_on_replica_detach`'s `replica_info`.
///
/// # Errors
///
/// When `replication_user` is missing.
pub fn detached_from_trove(info: &Value) -> Result<DetachedReplica, TranslateError> {
    let user = info
        .get("replication_user")
        .and_then(|u| u.as_str().or_else(|| u.get("name").and_then(Value::as_str)))
        .ok_or_else(|| invalid("replica_info.replication_user", "missing"))?;
    let mut d = DetachedReplica::default();
    d.replication_user = Some(user.to_owned());
    Ok(d)
}

/// `get_replica_context`'s answer: our context, as is.
///
/// # Errors
///
/// When it cannot be serialized (never for a well-formed context).
pub fn context_to_trove(ctx: &ReplicaContext) -> Result<Value, TranslateError> {
    serde_json::to_value(ctx).map_err(|e| invalid("replica_context", e.to_string()))
}

/// `attach_replica`'s `replica_info`.
///
/// # Errors
///
/// When it is not a context our `get_replica_context` made.
pub fn context_from_trove(info: &Value) -> Result<ReplicaContext, TranslateError> {
    serde_json::from_value(info.clone()).map_err(|e| invalid("replica_info", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> SnapshotDocument {
        serde_json::from_value(json!({
            "master": {"host": "10.0.0.5", "port": 3306},
            "dataset": {"datastore": "mariadb", "datastore_version": "10.11", "dataset_size": 2,
                        "snapshot_href": "file:///snapshots/b1"},
            "binlog_position": {"log_file": "mariadb-bin.000002", "log_position": 342,
                                "gtid_list": "0-1-42"},
            "replication": {"user": "repl_r1"}
        }))
        .unwrap()
    }

    #[test]
    fn snapshot_round_trip() {
        let d = doc();
        let t = snapshot_to_trove(&d, "b1");
        assert_eq!(t["dataset"]["datastore_manager"], "mariadb");
        assert_eq!(t["dataset"]["dataset_size"], 2.0);
        assert_eq!(t["dataset"]["snapshot_id"], "b1");
        assert_eq!(t["replica_conf"]["replication_user"]["name"], "repl_r1");
        assert_eq!(t["log_position"], json!({}));
        assert_eq!(snapshot_from_trove(&t).unwrap(), d);
        let mut bad = t.clone();
        bad["dataset"]["datastore_manager"] = json!("postgresql");
        assert!(snapshot_from_trove(&bad).is_err());
        assert!(snapshot_from_trove(&json!({"dataset": {}})).is_err());
    }

    #[test]
    fn txn_round_trip() {
        for (kind, s) in [
            (DatastoreKind::Mariadb, "0-1-42,1-2-7"),
            (DatastoreKind::Postgresql, "0/3000060"),
            (DatastoreKind::Mariadb, "mysql-bin.000001:328"),
            (
                DatastoreKind::Mysql,
                "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
            ),
        ] {
            let p = txn_from_trove(&kind, s).unwrap();
            assert_eq!(txn_to_trove(&p), s);
        }
        assert!(txn_from_trove(&DatastoreKind::Mariadb, "garbage").is_err());
    }

    #[test]
    fn detach_round_trip() {
        let d = detached_from_trove(&json!({"replication_user": "repl_r1"})).unwrap();
        assert_eq!(
            detached_to_trove(&d),
            json!({"replication_user": "repl_r1"})
        );
        assert!(detached_from_trove(&json!({})).is_err());
    }

    #[test]
    fn last_txn_mariadb() {
        let last = LastTxn::new(txn_from_trove(&DatastoreKind::Mariadb, "0-1-1042").unwrap());
        assert_eq!(last_txn_to_trove(&last), json!([1, 1042]));
        // What was received counts: the chosen replica applies it before its promotion.
        let mut last = last;
        last.received = Some(txn_from_trove(&DatastoreKind::Mariadb, "0-2-1050").unwrap());
        assert_eq!(last_txn_to_trove(&last), json!([2, 1050]));
    }

    #[test]
    fn last_txn_postgresql_sorts_as_text_in_position_order() {
        let at = |applied: &str, received: Option<&str>| {
            let mut last =
                LastTxn::new(txn_from_trove(&DatastoreKind::Postgresql, applied).unwrap());
            last.received =
                received.map(|r| txn_from_trove(&DatastoreKind::Postgresql, r).unwrap());
            last_txn_to_trove(&last)[1].as_str().unwrap().to_owned()
        };
        let low = at("0/F000000", None);
        let high = at("0/10000000", None);
        assert_eq!(low, "00000000/0F000000");
        assert!(high > low, "Trove compares the texts: {high} > {low}");
        assert_eq!(at("0/3000000", Some("0/3000060")), "00000000/03000060");
        assert_eq!(at("1/0", None), "00000001/00000000");
    }
}
