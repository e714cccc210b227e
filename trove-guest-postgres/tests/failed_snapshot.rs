//! A snapshot that fails after its slot was made leaves no slot (it would pin WAL for good) and
//! no login behind, and never touches those of an earlier snapshot for the same replica: the
//! earlier document's password keeps working.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::io::AsyncRead;
use trove_guest_core::store::{
    Expected, PendingUpload, SnapshotRead, StoredSnapshot, VerifyingReader,
};
use trove_guest_core::{
    EnableMasterOptions, Error, LocalSnapshotStore, Progress, ReplicationStrategy, Result,
    SnapshotDocument, SnapshotRequest, SnapshotStore,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

async fn names(m: &PostgresServer) -> (Vec<String>, Vec<String>) {
    let col = |rows: Vec<Vec<Option<String>>>| -> Vec<String> {
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    };
    let slots = m
        .query("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap();
    let roles = m
        .query(
            "SELECT rolname::text FROM pg_roles \
             WHERE starts_with(rolname::text, 'trove_repl_') ORDER BY 1",
        )
        .await
        .unwrap();
    (col(slots), col(roles))
}

/// Logs in to the master as the document's replication login, with its password, over TCP.
async fn login_with(
    m: &PostgresServer,
    doc: &SnapshotDocument,
) -> std::result::Result<(), tokio_postgres::Error> {
    let grant = doc.replication.as_ref().unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(m.port())
        .user(&grant.user)
        .password(grant.password.as_ref().unwrap().0.expose())
        .dbname("postgres");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    client.simple_query("SELECT 1").await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

#[tokio::test]
async fn a_failed_snapshot_leaves_no_slot_or_login_of_its_own_behind() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(store_dir.path()).unwrap());
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = PostgresStrategy::new(m.handle(), store, PostgresStrategyOptions::new());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let first = sm
        .get_replication_snapshot(
            &SnapshotRequest::new()
                .with_replica_id("r1")
                .with_snapshot_name("taken"),
        )
        .await
        .expect("first snapshot");
    login_with(&m, &first)
        .await
        .expect("the first document's password logs in");
    let before = names(&m).await;
    assert_eq!(
        before,
        (
            vec!["trove_snap_r1".to_owned()],
            vec!["trove_repl_r1".to_owned()]
        )
    );

    // The store refuses the name (taken): the backup fails after the slot was made.
    for replica in ["r2", "r1"] {
        sm.get_replication_snapshot(
            &SnapshotRequest::new()
                .with_replica_id(replica)
                .with_snapshot_name("taken"),
        )
        .await
        .expect_err("the snapshot name is taken");
        assert_eq!(
            names(&m).await,
            before,
            "after a failed snapshot for {replica}: only the first snapshot's slot and login"
        );
    }
    login_with(&m, &first).await.expect(
        "a failed retry for the same replica id leaves the earlier document's password valid",
    );
}

/// A local store whose commits fail while `fail_commits` is set (the backup itself succeeds).
#[derive(Debug)]
struct FlakyStore {
    inner: LocalSnapshotStore,
    fail_commits: AtomicBool,
}

#[derive(Debug)]
struct FlakyPending {
    inner: Box<dyn PendingUpload>,
    fail: bool,
}

#[async_trait]
impl PendingUpload for FlakyPending {
    fn snapshot(&self) -> &StoredSnapshot {
        self.inner.snapshot()
    }
    async fn commit(self: Box<Self>) -> Result<StoredSnapshot> {
        if self.fail {
            return Err(Error::Store {
                message: "commit refused by the test".into(),
                source: None,
            });
        }
        self.inner.commit().await
    }
}

#[async_trait]
impl SnapshotStore for FlakyStore {
    fn snapshot_href(&self, name: &str) -> trove_guest_core::Result<String> {
        self.inner.snapshot_href(name)
    }

    fn owns(&self, href: &str) -> bool {
        self.inner.owns(href)
    }
    async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>> {
        let inner = self.inner.put(name, data, progress).await?;
        Ok(Box::new(FlakyPending {
            inner,
            fail: self.fail_commits.load(Ordering::SeqCst),
        }))
    }
    async fn stat(&self, href: &str) -> Result<StoredSnapshot> {
        self.inner.stat(href).await
    }
    async fn get(&self, href: &str, expected: &Expected) -> Result<VerifyingReader<SnapshotRead>> {
        self.inner.get(href, expected).await
    }
    async fn delete(&self, href: &str) -> Result<()> {
        self.inner.delete(href).await
    }
}

#[tokio::test]
async fn a_retry_whose_snapshot_is_not_committed_keeps_the_earlier_password() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyStore {
        inner: LocalSnapshotStore::new(store_dir.path()).unwrap(),
        fail_commits: AtomicBool::new(false),
    });
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = PostgresStrategy::new(m.handle(), store.clone(), PostgresStrategyOptions::new());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let req = SnapshotRequest::new().with_replica_id("r1");
    let first = sm.get_replication_snapshot(&req).await.expect("first");
    login_with(&m, &first).await.expect("first password");
    let before = names(&m).await;

    // The backup runs to its end, then the store refuses to publish it.
    store.fail_commits.store(true, Ordering::SeqCst);
    let err = sm
        .get_replication_snapshot(&req)
        .await
        .expect_err("the commit fails");
    assert!(err.to_string().contains("commit refused"), "{err}");
    assert_eq!(names(&m).await, before, "the same slot and login");
    login_with(&m, &first)
        .await
        .expect("the earlier document's password is still valid");

    // A retry that succeeds re-keys the login: the new password works, the old one no more.
    store.fail_commits.store(false, Ordering::SeqCst);
    let second = sm.get_replication_snapshot(&req).await.expect("second");
    login_with(&m, &second).await.expect("new password");
    login_with(&m, &first)
        .await
        .expect_err("the earlier password was replaced");
}
