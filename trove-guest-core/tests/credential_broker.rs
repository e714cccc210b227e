//! `CredentialBroker` moves the replication password through a secret store for every backend:
//! the master's document leaves with `password_ref` only, the replica's backend receives the
//! resolved password, cleanup and demote delete the secrets, and a snapshot whose secret cannot
//! be stored is abandoned. Clear text is an explicit option. (A scripted strategy stands in for
//! a backend; the live flows are in the workspace's `tests/tests/credentials_by_reference.rs`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use trove_guest_core::wire::ReplicationGrant;
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, CredentialBroker, CredentialOptions,
    CredentialTransport, DatastoreKind, DemoteOptions, DetachOptions, DetachedReplica,
    DirectorySecretStore, EnableMasterOptions, Error, ErrorKind, ReplicationPosition,
    ReplicationStatus, ReplicationStrategy, Result, Secret, SecretStore, SecretStoreError,
    SnapshotDocument, SnapshotRequest, TransportSecret,
};

const DOC: &str = r#"{
  "master": {"host": "10.0.0.31", "port": 6379},
  "dataset": {"datastore": "redis", "datastore_version": "redis-7.2", "dataset_size": 1,
              "snapshot_href": "file:///s/r1.snap"},
  "position": {"datastore": "redis", "value": "abc:1"},
  "replication": {"user": "trove_repl_r2"}
}"#;

const PASSWORD: &str = "pwScriptedBackend0123456789abcd";

/// What the scripted backend saw.
#[derive(Debug, Default)]
struct Seen {
    attached_with: Vec<Option<String>>,
    cleaned: Vec<String>,
    demoted: usize,
}

#[derive(Debug, Default)]
struct Scripted {
    seen: Mutex<Seen>,
}

#[async_trait]
impl ReplicationStrategy for Scripted {
    fn datastore(&self) -> DatastoreKind {
        "redis".parse().unwrap()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn enable_as_master(&self, _: &EnableMasterOptions) -> Result<()> {
        Ok(())
    }
    async fn get_replication_snapshot(&self, _: &SnapshotRequest) -> Result<SnapshotDocument> {
        let mut doc = SnapshotDocument::from_json(DOC)?;
        doc.replication.as_mut().unwrap().password = Some(TransportSecret(Secret::new(PASSWORD)));
        Ok(doc)
    }
    async fn attach_replication_slave(
        &self,
        doc: &SnapshotDocument,
        _: &AttachRequest,
    ) -> Result<AttachOutcome> {
        let pw = doc
            .replication
            .as_ref()
            .and_then(|g| g.password.as_ref())
            .map(|p| p.0.expose().to_owned());
        self.seen.lock().unwrap().attached_with.push(pw);
        Ok(AttachOutcome::new(1, None))
    }
    async fn detach_replication_slave(&self, _: &DetachOptions) -> Result<DetachedReplica> {
        Ok(DetachedReplica::default())
    }
    async fn cleanup_source_on_replica_detach(&self, r: &DetachedReplica) -> Result<()> {
        let user = r.replication_user.clone().unwrap_or_default();
        self.seen.lock().unwrap().cleaned.push(user);
        Ok(())
    }
    async fn demote_replication_master(&self, _: &DemoteOptions) -> Result<()> {
        self.seen.lock().unwrap().demoted += 1;
        Ok(())
    }
    async fn make_read_only(&self, _: bool) -> Result<()> {
        Ok(())
    }
    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        Err(Error::unsupported("scripted"))
    }
    async fn wait_for_txn(&self, _: &ReplicationPosition, _: Duration) -> Result<()> {
        Ok(())
    }
    async fn replication_status(&self) -> Result<ReplicationStatus> {
        Err(Error::unsupported("scripted"))
    }
}

fn secret_dir() -> (tempfile::TempDir, Arc<DirectorySecretStore>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(DirectorySecretStore::open(tmp.path().join("secrets")).unwrap());
    (tmp, store)
}

fn grant(doc: &SnapshotDocument) -> &ReplicationGrant {
    doc.replication.as_ref().unwrap()
}

#[tokio::test]
async fn by_reference_the_document_carries_a_reference_the_replica_resolves() {
    let (_tmp, store) = secret_dir();
    let master_backend = Arc::new(Scripted::default());
    let master = CredentialBroker::new(
        master_backend.clone(),
        Some(store.clone()),
        CredentialOptions::new().with_reference_prefix("replication-m1-"),
    )
    .unwrap();
    let doc = master
        .get_replication_snapshot(&SnapshotRequest::new())
        .await
        .unwrap();
    assert!(grant(&doc).password.is_none());
    let reference = grant(&doc).password_ref.clone().unwrap();
    assert_eq!(reference, "replication-m1-trove_repl_r2");
    let text = serde_json::to_string(&doc).unwrap();
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(store.get(&reference).await.unwrap().expose(), PASSWORD);

    // The replica's backend gets the password, resolved once by the broker.
    let replica_backend = Arc::new(Scripted::default());
    let replica = CredentialBroker::new(
        replica_backend.clone(),
        Some(store.clone()),
        CredentialOptions::new().with_reference_prefix("replication-r1-"),
    )
    .unwrap();
    let received = SnapshotDocument::from_json(&text).unwrap();
    replica
        .attach_replication_slave(&received, &AttachRequest::new())
        .await
        .unwrap();
    assert_eq!(
        replica_backend.seen.lock().unwrap().attached_with,
        vec![Some(PASSWORD.to_owned())]
    );

    // Cleanup deletes the secret; demote deletes this master's secrets only.
    let detached = DetachedReplica::new(Some("trove_repl_r2".into()), None, None, true);
    master
        .cleanup_source_on_replica_detach(&detached)
        .await
        .unwrap();
    assert_eq!(
        master_backend.seen.lock().unwrap().cleaned,
        vec!["trove_repl_r2"]
    );
    assert!(matches!(
        store.get(&reference).await,
        Err(SecretStoreError::Missing { .. })
    ));
    master
        .get_replication_snapshot(&SnapshotRequest::new())
        .await
        .unwrap();
    store
        .put(
            "replication-m2-trove_repl_x",
            &Secret::new("other master's"),
        )
        .await
        .unwrap();
    master
        .demote_replication_master(&DemoteOptions::new())
        .await
        .unwrap();
    assert_eq!(master_backend.seen.lock().unwrap().demoted, 1);
    assert_eq!(
        store.list("replication-").await.unwrap(),
        vec!["replication-m2-trove_repl_x".to_owned()]
    );
}

#[tokio::test]
async fn clear_text_is_an_explicit_option_and_by_reference_needs_a_store() {
    let backend = Arc::new(Scripted::default());
    let e = CredentialBroker::new(backend.clone(), None, CredentialOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    let clear = CredentialBroker::new(
        backend.clone(),
        None,
        CredentialOptions::new().with_transport(CredentialTransport::ClearText),
    )
    .unwrap();
    let doc = clear
        .get_replication_snapshot(&SnapshotRequest::new())
        .await
        .unwrap();
    assert_eq!(grant(&doc).password.as_ref().unwrap().0.expose(), PASSWORD);
    assert!(grant(&doc).password_ref.is_none());

    // A reference it cannot resolve is refused before the backend is called.
    let mut by_ref = doc.clone();
    by_ref.replication.as_mut().unwrap().password = None;
    by_ref.replication.as_mut().unwrap().password_ref = Some("replication-x-y".into());
    let e = clear
        .attach_replication_slave(&by_ref, &AttachRequest::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(backend.seen.lock().unwrap().attached_with.is_empty());
}

#[derive(Debug)]
struct Unwritable;

#[async_trait]
impl SecretStore for Unwritable {
    async fn put(&self, name: &str, _: &Secret) -> std::result::Result<String, SecretStoreError> {
        Err(SecretStoreError::Backend {
            action: "put",
            reference: name.to_owned(),
            reason: "read-only file system".into(),
        })
    }
    async fn get(&self, r: &str) -> std::result::Result<Secret, SecretStoreError> {
        Err(SecretStoreError::Missing {
            reference: r.to_owned(),
        })
    }
    async fn delete(&self, _: &str) -> std::result::Result<(), SecretStoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_snapshot_whose_secret_cannot_be_stored_is_abandoned_not_sent_in_clear() {
    let backend = Arc::new(Scripted::default());
    let broker = CredentialBroker::new(
        backend.clone(),
        Some(Arc::new(Unwritable)),
        CredentialOptions::new(),
    )
    .unwrap();
    let e = broker
        .get_replication_snapshot(&SnapshotRequest::new())
        .await
        .unwrap_err();
    assert!(!e.to_string().contains(PASSWORD));
    assert!(!format!("{e:?}").contains(PASSWORD));
    assert_eq!(
        backend.seen.lock().unwrap().cleaned,
        vec!["trove_repl_r2"],
        "the account made for the snapshot is dropped again"
    );
}

#[tokio::test]
async fn a_missing_secret_is_not_found_and_names_only_the_reference() {
    let (_tmp, store) = secret_dir();
    let backend = Arc::new(Scripted::default());
    let broker =
        CredentialBroker::new(backend.clone(), Some(store), CredentialOptions::new()).unwrap();
    let mut doc = SnapshotDocument::from_json(DOC).unwrap();
    doc.replication.as_mut().unwrap().password_ref = Some("replication-gone".into());
    let e = broker
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("replication-gone"), "{e}");
    doc.replication.as_mut().unwrap().password_ref = Some("../../etc/shadow".into());
    let e = broker
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(backend.seen.lock().unwrap().attached_with.is_empty());
}
