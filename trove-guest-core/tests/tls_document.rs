//! `replication.tls` in the snapshot document: optional (documents without it still read), the
//! CA certificate and server name round-trip, and anything that is not a certificate (a
//! private key above all) is refused.

use serde_json::json;
use trove_guest_core::failover::ReplicaContext;
use trove_guest_core::tls::{tls_for_attach, tls_for_repoint, write_ca_file};
use trove_guest_core::{
    DatastoreKind, Error, ErrorKind, ReplicaTlsPolicy, ReplicationPosition, ServerTls,
    SnapshotDocument, TlsProblem,
};

const CA: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUb7Yx\n-----END CERTIFICATE-----\n";

fn document(tls: Option<serde_json::Value>) -> serde_json::Value {
    let mut replication = json!({"user": "trove_repl_r1", "password": "pw"});
    if let Some(t) = tls {
        replication["tls"] = t;
    }
    json!({
        "master": {"host": "10.0.0.5", "port": 3306},
        "dataset": {"datastore": "mariadb", "datastore_version": "mariadb-10.11",
                    "dataset_size": 1, "snapshot_href": "file:///s/a.snap"},
        "binlog_position": {"log_file": "mysql-bin.000002", "log_position": 4},
        "replication": replication
    })
}

#[test]
fn documents_without_tls_still_read_and_write_no_tls_field() {
    let doc = SnapshotDocument::from_json(&document(None).to_string()).unwrap();
    assert!(doc.replication.as_ref().unwrap().tls.is_none());
    assert!(!serde_json::to_string(&doc).unwrap().contains("tls"));
}

#[test]
fn the_ca_and_server_name_round_trip() {
    let text = document(Some(
        json!({"ca_certificate": CA, "server_name": "db1.example.net"}),
    ))
    .to_string();
    let doc = SnapshotDocument::from_json(&text).unwrap();
    let tls = doc.replication.as_ref().unwrap().tls.as_ref().unwrap();
    assert_eq!(tls.ca_certificate, CA);
    assert_eq!(tls.server_name, "db1.example.net");
    let again: serde_json::Value = serde_json::to_value(&doc).unwrap();
    assert_eq!(
        again["replication"]["tls"]["server_name"],
        "db1.example.net"
    );
}

#[test]
fn a_private_key_in_the_document_is_refused() {
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\n";
    for ca in [format!("{CA}{key}"), key.to_owned()] {
        let text = document(Some(json!({"ca_certificate": ca, "server_name": "db1"}))).to_string();
        let e = SnapshotDocument::from_json(&text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(!e.to_string().contains("MIIEvQIBADANBgkq"), "{e}");
    }
    let text = document(Some(
        json!({"ca_certificate": CA, "server_name": "db 1; x"}),
    ))
    .to_string();
    assert!(SnapshotDocument::from_json(&text).is_err());
}

#[test]
fn a_replica_that_requires_tls_refuses_a_document_without_it() {
    let doc = SnapshotDocument::from_json(&document(None).to_string()).unwrap();
    let required = ServerTls::new("/etc/trove/ca.pem");
    match tls_for_attach(Some(&required), &doc) {
        Err(Error::Tls { problem, .. }) => assert_eq!(problem, TlsProblem::Required),
        other => panic!("{other:?}"),
    }
    let lenient = required.with_replica_policy(ReplicaTlsPolicy::AllowPlaintext);
    assert!(tls_for_attach(Some(&lenient), &doc).unwrap().is_none());
    assert!(tls_for_attach(None, &doc).unwrap().is_none());
}

#[test]
fn a_server_that_requires_tls_refuses_a_replica_context_without_it() {
    let context = |tls: Option<serde_json::Value>| {
        let doc = SnapshotDocument::from_json(&document(tls).to_string()).unwrap();
        ReplicaContext::new(
            DatastoreKind::Mariadb,
            doc.master.clone(),
            ReplicationPosition::MariadbGtid("0-1-10".parse().unwrap()),
            doc.replication.unwrap(),
        )
    };
    let plaintext = context(None);
    let required = ServerTls::new("/etc/trove/ca.pem");
    match tls_for_repoint(Some(&required), &plaintext) {
        Err(Error::Tls {
            problem, server, ..
        }) => {
            assert_eq!(problem, TlsProblem::Required);
            assert_eq!(server, "10.0.0.5:3306");
        }
        other => panic!("{other:?}"),
    }
    let lenient = required
        .clone()
        .with_replica_policy(ReplicaTlsPolicy::AllowPlaintext);
    assert!(
        tls_for_repoint(Some(&lenient), &plaintext)
            .unwrap()
            .is_none()
    );
    assert!(tls_for_repoint(None, &plaintext).unwrap().is_none());
    let with_tls = context(Some(json!({"ca_certificate": CA, "server_name": "db1"})));
    let tls = tls_for_repoint(Some(&required), &with_tls)
        .unwrap()
        .unwrap();
    assert_eq!(tls.server_name, "db1");
}

#[test]
fn the_ca_file_a_replica_writes_is_the_certificate_alone_and_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let text = document(Some(json!({"ca_certificate": CA, "server_name": "db1"}))).to_string();
    let doc = SnapshotDocument::from_json(&text).unwrap();
    let tls = doc.replication.unwrap().tls.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    write_ca_file(&tls, &path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CA);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
}
