//! A datastore core does not know (here "redis") travels through core unchanged: its name, its
//! backend-defined positions, its snapshot documents and its topology sections parse and
//! re-serialize identically, and core leaves ordering its positions to its strategy.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use trove_guest_core::wire::{MemberRef, MemberReplication, TopologyDocument};
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, DatastoreKind, DatastoreName, DemoteOptions,
    DetachOptions, DetachedReplica, EnableMasterOptions, Error, ErrorKind, OpaquePosition,
    ReplicationPosition, ReplicationStatus, ReplicationStrategy, ReplicationStrategyExt, Result,
    SnapshotDocument, SnapshotRequest,
};

fn redis() -> DatastoreKind {
    "redis".parse().expect("a valid datastore name")
}

/// Parses `text` as `T` and checks that writing it back gives the same text, byte for byte
/// (after removing the test's own indentation).
fn same_text_round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) -> T {
    let compact = serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap();
    let parsed: T = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&parsed).unwrap(), compact);
    parsed
}

#[test]
fn unknown_datastore_name_round_trips_and_known_names_keep_their_variants() {
    let kind: DatastoreKind = serde_json::from_value(json!("redis")).unwrap();
    assert_eq!(
        kind,
        DatastoreKind::Other(DatastoreName::new("redis").unwrap())
    );
    assert_eq!(serde_json::to_value(kind).unwrap(), json!("redis"));
    assert_eq!(kind.to_string().parse::<DatastoreKind>().unwrap(), kind);
    for (name, known) in [
        ("mysql", DatastoreKind::Mysql),
        ("mariadb", DatastoreKind::Mariadb),
        ("postgresql", DatastoreKind::Postgresql),
    ] {
        let k: DatastoreKind = serde_json::from_value(json!(name)).unwrap();
        assert_eq!(k, known);
        assert_eq!(serde_json::to_value(k).unwrap(), json!(name));
        assert_eq!(k.to_string(), name);
    }
}

#[test]
fn malformed_datastore_names_are_refused() {
    for bad in ["", "Redis", "red is", "9lives", "redis'--", &"r".repeat(33)] {
        let e = serde_json::from_value::<DatastoreKind>(json!(bad)).unwrap_err();
        assert!(
            e.to_string().contains("is not a datastore name"),
            "{bad:?}: {e}"
        );
        assert_eq!(
            bad.parse::<DatastoreKind>().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}

const REDIS_SNAPSHOT: &str = r#"{
  "master": {"host": "10.0.0.31", "port": 6379},
  "dataset": {"datastore": "redis", "datastore_version": "redis-7.2", "dataset_size": 1,
              "snapshot_href": "file:///var/lib/trove/snapshots/r1.snap", "size_bytes": 2048,
              "format": "rdb"},
  "position": {"datastore": "redis",
               "value": "8c2e7d9f0a1b2c3d4e5f60718293a4b5c6d7e8f9:123456"},
  "replication": {"user": "trove_repl_r2", "password_ref": "vault:secret/r2"},
  "redis_extras": {"aof": false}
}"#;

#[test]
fn snapshot_document_of_an_unknown_datastore_round_trips_identically() {
    let doc: SnapshotDocument = same_text_round_trip(REDIS_SNAPSHOT);
    doc.validate().unwrap();
    assert_eq!(doc.dataset.datastore, redis());
    let pos = doc.position.as_ref().expect("the backend's position");
    assert_eq!(pos.datastore, redis());
    assert_eq!(
        pos.value(),
        "8c2e7d9f0a1b2c3d4e5f60718293a4b5c6d7e8f9:123456"
    );
    assert_eq!(doc.extra["redis_extras"], json!({"aof": false}));
    assert!(doc.binlog_position.is_none() && doc.wal_position.is_none());
    assert_eq!(SnapshotDocument::from_json(REDIS_SNAPSHOT).unwrap(), doc);
}

#[test]
fn snapshot_document_of_an_unknown_datastore_needs_its_own_position() {
    let mut v: Value = serde_json::from_str(REDIS_SNAPSHOT).unwrap();
    v.as_object_mut().unwrap().remove("position");
    let e = SnapshotDocument::from_json(&v.to_string()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("position is missing"), "{e}");

    let mut v: Value = serde_json::from_str(REDIS_SNAPSHOT).unwrap();
    v["position"]["datastore"] = json!("memcached");
    let e = SnapshotDocument::from_json(&v.to_string()).unwrap_err();
    assert!(
        e.to_string()
            .contains("position.datastore is memcached but dataset.datastore is redis"),
        "{e}"
    );

    // A known datastore's document may not carry a position of another datastore either.
    let mut v: Value = serde_json::from_str(REDIS_SNAPSHOT).unwrap();
    v["dataset"]["datastore"] = json!("mariadb");
    v["binlog_position"] = json!({"log_file": "mysql-bin.000001", "log_position": 4});
    assert!(SnapshotDocument::from_json(&v.to_string()).is_err());
}

#[test]
fn opaque_position_values_are_bounded_and_printable() {
    let e = |v: &str| OpaquePosition::new(redis(), v).unwrap_err().kind();
    assert_eq!(e(""), ErrorKind::InvalidInput);
    assert_eq!(e("12\n34"), ErrorKind::InvalidInput);
    assert_eq!(
        e(&"9".repeat(OpaquePosition::MAX_LEN + 1)),
        ErrorKind::InvalidInput
    );
    assert!(OpaquePosition::new(redis(), "9".repeat(OpaquePosition::MAX_LEN)).is_ok());
    // The same checks hold for a position read from a document.
    let mut v: Value = serde_json::from_str(REDIS_SNAPSHOT).unwrap();
    v["position"]["value"] = json!("1\u{7}2");
    assert!(SnapshotDocument::from_json(&v.to_string()).is_err());
    v["position"]["value"] = json!("12");
    v["position"]["offset"] = json!(3);
    assert!(
        SnapshotDocument::from_json(&v.to_string()).is_err(),
        "an opaque position has exactly datastore and value"
    );
}

#[test]
fn opaque_replication_position_round_trips_identically() {
    let text = r#"{"opaque":{"datastore":"redis","value":"replid:42"}}"#;
    let pos: ReplicationPosition = same_text_round_trip(text);
    assert_eq!(
        pos,
        ReplicationPosition::Opaque(OpaquePosition::new(redis(), "replid:42").unwrap())
    );
    assert_eq!(pos.datastore(), Some(redis()));
    assert_eq!(pos.to_string(), "redis replid:42");
}

const REDIS_TOPOLOGY: &str = r#"{
  "topology": {
    "members": [
      {"id": "m-1", "name": "cache", "zone": "az-1"},
      {"id": "s-1", "name": "cache-s1",
       "redis": {"slave_of": [{"id": "m-1"}], "read_only": true, "lag_ms": 3}},
      {"id": "s-2", "name": "cache-s2",
       "redis": {"slave_of": [{"id": "m-1"}], "read_only": false}}
    ],
    "epoch": 7
  },
  "generated_by": "control-plane"
}"#;

#[test]
fn topology_of_an_unknown_datastore_round_trips_identically() {
    let doc: TopologyDocument = same_text_round_trip(REDIS_TOPOLOGY);
    let members = &doc.topology.members;
    assert_eq!(members[0].replication(&redis()).unwrap(), None);
    assert_eq!(members[0].extra["zone"], json!("az-1"));
    let s1 = members[1]
        .replication(&redis())
        .unwrap()
        .expect("a replica section");
    assert_eq!(s1.slave_of, vec![MemberRef { id: "m-1".into() }]);
    assert!(s1.read_only);
    assert_eq!(s1.extra["lag_ms"], json!(3));
    assert!(members[1].mysql.is_none() && members[1].mariadb.is_none());
    assert_eq!(doc.topology.extra["epoch"], json!(7));
    assert_eq!(doc.extra["generated_by"], json!("control-plane"));
}

#[test]
fn topology_section_of_an_unknown_datastore_is_set_under_its_name() {
    let mut doc: TopologyDocument = serde_json::from_str(REDIS_TOPOLOGY).unwrap();
    let m = &mut doc.topology.members[2];
    m.set_replication(
        &redis(),
        Some(MemberReplication::new(
            vec![MemberRef { id: "s-1".into() }],
            true,
        )),
    )
    .unwrap();
    let v = serde_json::to_value(&doc).unwrap();
    assert_eq!(
        v["topology"]["members"][2]["redis"],
        json!({"slave_of": [{"id": "s-1"}], "read_only": true})
    );
    doc.topology.members[2]
        .set_replication(&redis(), None)
        .unwrap();
    let v = serde_json::to_value(&doc).unwrap();
    assert!(v["topology"]["members"][2].get("redis").is_none());

    // A datastore named like a member's own field has no room for a section.
    let named: DatastoreKind = "name".parse().unwrap();
    let e = doc.topology.members[2]
        .set_replication(&named, Some(MemberReplication::new(vec![], true)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(doc.topology.members[2].name, "cache-s2");

    let mut bad: Value = serde_json::from_str(REDIS_TOPOLOGY).unwrap();
    bad["topology"]["members"][1]["redis"] = json!("not a section");
    let doc: TopologyDocument = serde_json::from_value(bad).unwrap();
    assert_eq!(
        doc.topology.members[1]
            .replication(&redis())
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

/// A toy strategy of the unknown datastore: its positions are `"<offset>"` and it has applied up
/// to `applied`. Only what `catch_up_with` calls is implemented.
#[derive(Debug)]
struct Toy {
    kind: DatastoreKind,
    applied: u64,
    latest: ReplicationPosition,
    waited_for: Mutex<Vec<ReplicationPosition>>,
}

impl Toy {
    fn new(kind: DatastoreKind, applied: u64, latest: ReplicationPosition) -> Self {
        Toy {
            kind,
            applied,
            latest,
            waited_for: Mutex::new(Vec::new()),
        }
    }
}

fn offset(p: u64) -> ReplicationPosition {
    ReplicationPosition::Opaque(OpaquePosition::new(redis(), p.to_string()).unwrap())
}

#[async_trait]
impl ReplicationStrategy for Toy {
    fn datastore(&self) -> DatastoreKind {
        self.kind
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn enable_as_master(&self, _: &EnableMasterOptions) -> Result<()> {
        Err(Error::unsupported("toy"))
    }
    async fn get_replication_snapshot(&self, _: &SnapshotRequest) -> Result<SnapshotDocument> {
        Err(Error::unsupported("toy"))
    }
    async fn attach_replication_slave(
        &self,
        _: &SnapshotDocument,
        _: &AttachRequest,
    ) -> Result<AttachOutcome> {
        Err(Error::unsupported("toy"))
    }
    async fn detach_replication_slave(&self, _: &DetachOptions) -> Result<DetachedReplica> {
        Err(Error::unsupported("toy"))
    }
    async fn cleanup_source_on_replica_detach(&self, _: &DetachedReplica) -> Result<()> {
        Err(Error::unsupported("toy"))
    }
    async fn demote_replication_master(&self, _: &DemoteOptions) -> Result<()> {
        Err(Error::unsupported("toy"))
    }
    async fn make_read_only(&self, _: bool) -> Result<()> {
        Err(Error::unsupported("toy"))
    }
    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        Ok(self.latest.clone())
    }
    async fn wait_for_txn(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()> {
        self.waited_for.lock().unwrap().push(txn.clone());
        let ReplicationPosition::Opaque(p) = txn else {
            return Err(Error::invalid("position", "not a toy position"));
        };
        let target: u64 = p
            .value()
            .parse()
            .map_err(|_| Error::invalid("position", "not an offset"))?;
        if self.applied >= target {
            Ok(())
        } else {
            Err(Error::timeout("the toy offset", timeout))
        }
    }
    async fn replication_status(&self) -> Result<ReplicationStatus> {
        Err(Error::unsupported("toy"))
    }
}

#[tokio::test]
async fn catch_up_with_leaves_ordering_opaque_positions_to_the_strategy() {
    let master = Toy::new(redis(), 0, offset(100));
    let ahead = Toy::new(redis(), 150, offset(0));
    let behind = Toy::new(redis(), 99, offset(0));
    let t = Duration::from_millis(10);
    assert_eq!(ahead.catch_up_with(&master, t).await.unwrap(), offset(100));
    assert_eq!(
        behind.catch_up_with(&master, t).await.unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert_eq!(*behind.waited_for.lock().unwrap(), vec![offset(100)]);
}

#[tokio::test]
async fn catch_up_with_refuses_positions_of_another_datastore_before_waiting() {
    let t = Duration::from_millis(10);
    // A Redis replica asked to follow a MariaDB master's position.
    let maria = Toy::new(
        DatastoreKind::Mariadb,
        0,
        ReplicationPosition::MariadbGtid("0-1-5".parse().unwrap()),
    );
    let replica = Toy::new(redis(), 10, offset(0));
    let e = replica.catch_up_with(&maria, t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(replica.waited_for.lock().unwrap().is_empty());
    // A MariaDB replica asked to follow a Redis position.
    let master = Toy::new(redis(), 0, offset(1));
    let e = maria.catch_up_with(&master, t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(maria.waited_for.lock().unwrap().is_empty());
}
