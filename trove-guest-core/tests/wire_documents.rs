//! The design's JSON documents: read, written back identically, pinned with snapshot tests,
//! extended compatibly, and malformed ones refused with typed errors.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use trove_guest_core::wire::{
    BinlogPosition, Dataset, DatastoreKind, InstanceAction, InstanceCreateRequest,
    InstanceCreateResponse, MasterAddress, ReplicationGrant, SnapshotDocument, TopologyDocument,
};
use trove_guest_core::{ErrorKind, Secret, TransportSecret, WalPosition};

const MASTER_ID: &str = "dfbbd9ca-b5e1-4028-adb7-f78643e17998";
const SLAVE_ID: &str = "061aaf4c-3a57-411e-9df9-2d0f813db859";

/// The seed's snapshot document, `<binlog position>` filled with what mariabackup records.
const SEED_SNAPSHOT: &str = r#"{
"master": {
"host": "192.168.0.1",
"port": 3306
},
"dataset": {
"datastore": "mysql",
"datastore_version": "mysql-5.5",
"dataset_size": 2,
"snapshot_href": "http://192.168.0.1:8080/v1/AUTH_trove/snapshots/products-s1.snap"
},
"binlog_position": {"log_file": "mysql-bin.000003", "log_position": 1187}
}"#;

/// The seed's topology document, `{master-id}` / `{slave2-id}` filled.
const SEED_TOPOLOGY: &str = r#"{
"topology": {
"members": [{
"id": "dfbbd9ca-b5e1-4028-adb7-f78643e17998",
"name": "master"
},
{
"id": "8c1f8a9e-4b0c-4a55-9d3a-3f1d5b1e2a77",
"name": "slave2",
"mysql": {
"slave_of": [{"id": "dfbbd9ca-b5e1-4028-adb7-f78643e17998"}],
"read_only": true
}
}]
}
}"#;

/// The seed's instance-create request, verbatim.
const SEED_CREATE_REQUEST: &str = r#"{
"instance": {
"name": "products-s1",
"datastore": {
"type": "mysql",
"version": "5.5"
},
"slaveOf": "dfbbd9ca-b5e1-4028-adb7-f78643e17998",
"configuration": "b9c8a3f8-7ace-4aea-9908-7b555586d7b6",
"flavorRef": "7",
"volume": {
"size": 1
}
}
}"#;

/// The seed's create response, `...` and `{...}` filled (and its stray trailing commas dropped).
const SEED_CREATE_RESPONSE: &str = r#"{
"instance": {
"status": "BUILD",
"id": "061aaf4c-3a57-411e-9df9-2d0f813db859",
"name": "products-s1",
"created": "2014-10-30T12:30:00",
"updated": "2014-10-30T12:30:00",
"links": [{"href": "https://trove.example.com:8779/v1.0/1234/instances/061aaf4c-3a57-411e-9df9-2d0f813db859", "rel": "self"},
          {"href": "https://trove.example.com:8779/instances/061aaf4c-3a57-411e-9df9-2d0f813db859", "rel": "bookmark"}],
"datastore": {
"type": "mysql",
"version": "5.5"
},
"slaveOf": {
"id": "dfbbd9ca-b5e1-4028-adb7-f78643e17998",
"links":[{"href": "https://trove.example.com:8779/v1.0/1234/instances/dfbbd9ca-b5e1-4028-adb7-f78643e17998", "rel": "self"},
         {"href": "https://trove.example.com:8779/instances/dfbbd9ca-b5e1-4028-adb7-f78643e17998", "rel": "bookmark"}]
},
"configuration": {
"id": "b9c8a3f8-7ace-4aea-9908-7b555586d7b6",
"links": [{"href": "https://trove.example.com:8779/v1.0/1234/configurations/b9c8a3f8-7ace-4aea-9908-7b555586d7b6", "rel": "self"}]
},
"flavor": {
"id": "7",
"links": [{"href": "https://trove.example.com:8779/v1.0/1234/flavors/7", "rel": "self"},
          {"href": "https://trove.example.com:8779/flavors/7", "rel": "bookmark"}]
},
"volume": {
"size": 1
}
}
}"#;

/// The seed's `detach_replication` action, verbatim.
const SEED_DETACH: &str = r#"{
"detach_replication": {}
}"#;

/// Parses `text` as `T`, writes it back, and checks the JSON values are equal.
fn round_trip<T: DeserializeOwned + serde::Serialize>(text: &str) -> T {
    let original: Value = serde_json::from_str(text).expect("sample is JSON");
    let typed: T = serde_json::from_str(text).expect("sample parses");
    let written = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(written, original, "round trip changed the document");
    // And once more from our own output.
    let again: T = serde_json::from_value(written.clone()).expect("own output parses");
    assert_eq!(serde_json::to_value(&again).unwrap(), written);
    typed
}

#[test]
fn seed_snapshot_document_round_trips() {
    let doc: SnapshotDocument = round_trip(SEED_SNAPSHOT);
    doc.validate().expect("seed document is valid");
    assert_eq!(doc.master.port, 3306);
    assert_eq!(doc.dataset.datastore, DatastoreKind::Mysql);
    let pos = doc.binlog_position.as_ref().unwrap();
    assert_eq!(pos.log_file.as_str(), "mysql-bin.000003");
    assert_eq!(pos.log_position, 1187);
    // A seed document carries none of our additions, and we read it all the same.
    assert!(doc.dataset.sha256.is_none() && doc.dataset.size_bytes.is_none());
    assert!(doc.replication.is_none() && doc.wal_position.is_none());
    assert_eq!(SnapshotDocument::from_json(SEED_SNAPSHOT).unwrap(), doc);
    insta::assert_json_snapshot!("seed_snapshot_document", doc);
}

#[test]
fn seed_topology_document_round_trips() {
    let doc: TopologyDocument = round_trip(SEED_TOPOLOGY);
    let members = &doc.topology.members;
    assert_eq!(members.len(), 2);
    assert!(
        members[0].mysql.is_none(),
        "the master has no replica section"
    );
    let repl = members[1].mysql.as_ref().unwrap();
    assert!(repl.read_only);
    assert_eq!(repl.slave_of[0].id, MASTER_ID);
    insta::assert_json_snapshot!("seed_topology_document", doc);
}

#[test]
fn seed_instance_create_request_round_trips() {
    let req: InstanceCreateRequest = round_trip(SEED_CREATE_REQUEST);
    assert_eq!(req.instance.slave_of.as_deref(), Some(MASTER_ID));
    assert_eq!(req.instance.flavor_ref, "7");
    assert_eq!(req.instance.datastore.kind, "mysql");
    insta::assert_json_snapshot!("seed_instance_create_request", req);
}

#[test]
fn seed_instance_create_response_round_trips() {
    let resp: InstanceCreateResponse = round_trip(SEED_CREATE_RESPONSE);
    assert_eq!(resp.instance.id, SLAVE_ID);
    let master = resp.instance.slave_of.as_ref().unwrap();
    assert_eq!(master.id, MASTER_ID);
    assert_eq!(master.links.len(), 2);
    insta::assert_json_snapshot!("seed_instance_create_response", resp);
}

#[test]
fn seed_detach_replication_action_round_trips() {
    let action: InstanceAction = round_trip(SEED_DETACH);
    assert!(matches!(action, InstanceAction::DetachReplication(_)));
    insta::assert_json_snapshot!("seed_detach_replication_action", action);
    assert!(
        serde_json::from_str::<InstanceAction>(r#"{"detach_replication": {"force": true}}"#)
            .is_err(),
        "unknown detach options are refused, not ignored"
    );
}

fn mariadb_document() -> SnapshotDocument {
    let mut doc: SnapshotDocument = serde_json::from_str(SEED_SNAPSHOT).unwrap();
    doc.master = MasterAddress {
        host: "10.0.0.11".into(),
        port: 3306,
    };
    doc.dataset = Dataset {
        datastore: DatastoreKind::Mariadb,
        datastore_version: "mariadb-10.11".into(),
        dataset_size: 1,
        snapshot_href: "file:///var/lib/trove/snapshots/replica-2-20261125T150102Z.snap".into(),
        size_bytes: Some(104_857_600),
        sha256: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        server_version: Some("10.11.19-MariaDB-0+deb12u1-log".into()),
        format: Some("xbstream".into()),
        compression: None,
    };
    doc.binlog_position = Some(BinlogPosition {
        log_file: "mariadb-bin.000002".parse().unwrap(),
        log_position: 4_721_322,
        gtid_list: Some("0-1-2077".parse().unwrap()),
        gtid_set: None,
    });
    doc.replication = Some(ReplicationGrant {
        user: "trove_repl_replica2".into(),
        password: Some(TransportSecret(Secret::new(
            "Qm3xV8rT2pL9sK4wZ7yB1nC6dF0gH5jA",
        ))),
        password_ref: None,
        slot_name: None,
        replica_host: Some("10.0.0.12".into()),
        tls: None,
    });
    doc
}

fn postgres_document() -> SnapshotDocument {
    serde_json::from_value(json!({
        "master": {"host": "10.0.0.21", "port": 5432},
        "dataset": {
            "datastore": "postgresql",
            "datastore_version": "postgresql-15",
            "dataset_size": 1,
            "snapshot_href": "s3://trove-snapshots/pg/replica-7.snap",
            "size_bytes": 41_943_552,
            "sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            "server_version": "15.14 (Debian 15.14-0+deb12u1)",
            "format": "tar"
        },
        "wal_position": {"lsn": "0/5000028", "timeline": 1},
        "replication": {
            "user": "trove_repl_replica7",
            "password_ref": "vault:secret/trove/replica7",
            "slot_name": "trove_replica7"
        }
    }))
    .unwrap()
}

#[test]
fn mariadb_snapshot_document_with_additions_is_pinned() {
    let doc = mariadb_document();
    doc.validate().unwrap();
    let text = serde_json::to_string(&doc).unwrap();
    let back: SnapshotDocument = round_trip(&text);
    assert_eq!(back, doc);
    insta::assert_json_snapshot!("mariadb_snapshot_document", doc);
}

#[test]
fn postgres_snapshot_document_with_additions_is_pinned() {
    let doc = postgres_document();
    doc.validate().unwrap();
    assert_eq!(
        doc.wal_position,
        Some(WalPosition {
            lsn: "0/5000028".parse().unwrap(),
            timeline: 1
        })
    );
    let back: SnapshotDocument = round_trip(&serde_json::to_string(&doc).unwrap());
    assert_eq!(back, doc);
    insta::assert_json_snapshot!("postgres_snapshot_document", doc);
}

/// A reader that knows only the seed's fields (and does not reject unknown ones, as the seed's
/// Python reader does not).
#[derive(Debug, Deserialize)]
struct SeedOnlySnapshot {
    master: SeedOnlyMaster,
    dataset: SeedOnlyDataset,
    binlog_position: Value,
}

#[derive(Debug, Deserialize)]
struct SeedOnlyMaster {
    host: String,
    port: u16,
}

#[derive(Debug, Deserialize)]
struct SeedOnlyDataset {
    datastore: String,
    datastore_version: String,
    dataset_size: u64,
    snapshot_href: String,
}

#[test]
fn additions_do_not_break_a_seed_only_reader() {
    let doc = mariadb_document();
    let text = serde_json::to_string_pretty(&doc).unwrap();
    for addition in [
        "sha256",
        "size_bytes",
        "server_version",
        "replication",
        "gtid_list",
    ] {
        assert!(text.contains(addition), "{addition} is written");
    }
    let seed: SeedOnlySnapshot = serde_json::from_str(&text).expect("seed reader reads ours");
    assert_eq!(seed.master.host, "10.0.0.11");
    assert_eq!(seed.master.port, 3306);
    assert_eq!(seed.dataset.datastore, "mariadb");
    assert_eq!(seed.dataset.datastore_version, "mariadb-10.11");
    assert_eq!(seed.dataset.dataset_size, 1);
    assert_eq!(seed.dataset.snapshot_href, doc.dataset.snapshot_href);
    assert_eq!(seed.binlog_position["log_file"], "mariadb-bin.000002");
    assert_eq!(seed.binlog_position["log_position"], 4_721_322);
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let mut v: Value = serde_json::from_str(SEED_SNAPSHOT).unwrap();
    v["future_field"] = json!({"x": [1, 2, 3]});
    let doc: SnapshotDocument = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(doc.extra["future_field"], json!({"x": [1, 2, 3]}));
    assert_eq!(serde_json::to_value(&doc).unwrap(), v);
}

#[test]
fn replication_password_travels_only_where_the_document_says_so() {
    let doc = mariadb_document();
    let password = "Qm3xV8rT2pL9sK4wZ7yB1nC6dF0gH5jA";
    assert!(!format!("{doc:?}").contains(password), "Debug redacts it");
    let v = serde_json::to_value(&doc).unwrap();
    assert_eq!(
        v["replication"]["password"], password,
        "sent explicitly, in `replication.password`"
    );
    let mut without = v.clone();
    without["replication"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    assert!(!without.to_string().contains(password), "nowhere else");
}

fn assert_invalid_document(v: Value, needle: &str) {
    let text = v.to_string();
    let err = SnapshotDocument::from_json(&text).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
}

#[test]
fn malformed_snapshot_documents_are_refused_with_typed_errors() {
    let good: Value = serde_json::to_value(mariadb_document()).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    assert_invalid_document(with(&|v| v["master"]["host"] = json!("  ")), "master.host");
    assert_invalid_document(with(&|v| v["master"]["port"] = json!(0)), "master.port");
    assert_invalid_document(
        with(&|v| v["master"]["port"] = json!(70000)),
        "snapshot document",
    );
    assert_invalid_document(
        with(&|v| v["dataset"]["snapshot_href"] = json!("")),
        "snapshot_href",
    );
    assert_invalid_document(with(&|v| v["dataset"]["sha256"] = json!("ABC")), "sha256");
    assert_invalid_document(
        with(&|v| {
            v["dataset"]["sha256"] =
                json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08")
        }),
        "sha256",
    );
    assert_invalid_document(
        with(&|v| v["dataset"]["datastore"] = json!("Oracle DB")),
        "is not a datastore name",
    );
    // A well-formed name core does not know parses, and then needs its own `position`.
    assert_invalid_document(
        with(&|v| v["dataset"]["datastore"] = json!("oracle")),
        "position is missing",
    );
    assert_invalid_document(
        with(&|v| {
            v.as_object_mut().unwrap().remove("binlog_position");
        }),
        "binlog_position is missing",
    );
    assert_invalid_document(
        with(&|v| v["dataset"]["datastore"] = json!("postgresql")),
        "wal_position is missing",
    );
    assert_invalid_document(
        with(&|v| v["binlog_position"]["log_file"] = json!("../../etc/passwd")),
        "binlog file name",
    );
    assert_invalid_document(
        with(&|v| v["binlog_position"]["gtid_list"] = json!("0-1-2077; DROP TABLE x")),
        "MariaDB GTID list",
    );
    assert_invalid_document(
        with(&|v| {
            v.as_object_mut().unwrap().remove("master");
        }),
        "missing field `master`",
    );
    let err = SnapshotDocument::from_json("{not json").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // A password of the wrong type is not echoed in the error.
    let leaky = with(&|v| v["replication"]["password"] = json!(987654321987_u64));
    let err = SnapshotDocument::from_json(&leaky.to_string()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!err.to_string().contains("987654321987"), "{err}");
    // A PostgreSQL document with a bad LSN.
    let mut pg = serde_json::to_value(postgres_document()).unwrap();
    pg["wal_position"]["lsn"] = json!("0/XYZ");
    let err = SnapshotDocument::from_json(&pg.to_string()).unwrap_err();
    assert!(err.to_string().contains("PostgreSQL LSN"), "{err}");
}
