//! A snapshot whose document never reaches its caller leaves nothing behind: cancelled after
//! its data was committed to the store, the committed snapshot is removed again (nobody could
//! use it), and no replication account is left on the master.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use tokio::sync::Notify;
use trove_guest_core::store::{
    Expected, PendingUpload, SnapshotRead, StoredSnapshot, VerifyingReader,
};
use trove_guest_core::{
    ErrorKind, LocalSnapshotStore, Progress, ReplicationStrategy, Result, SnapshotRequest,
    SnapshotStore,
};
use trove_guest_mysql::testkit::MariaDbOptions;

/// A local store whose commits publish the snapshot, say so, and then never return.
#[derive(Debug)]
struct HangingCommits {
    inner: LocalSnapshotStore,
    committed: Arc<Notify>,
}

#[derive(Debug)]
struct HangingPending {
    inner: Box<dyn PendingUpload>,
    committed: Arc<Notify>,
}

#[async_trait]
impl PendingUpload for HangingPending {
    fn snapshot(&self) -> &StoredSnapshot {
        self.inner.snapshot()
    }
    async fn commit(self: Box<Self>) -> Result<StoredSnapshot> {
        self.inner.commit().await?;
        self.committed.notify_one();
        std::future::pending().await
    }
}

#[async_trait]
impl SnapshotStore for HangingCommits {
    fn snapshot_href(&self, name: &str) -> Result<String> {
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
        Ok(Box::new(HangingPending {
            inner,
            committed: self.committed.clone(),
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
async fn a_snapshot_cancelled_after_its_commit_is_removed_with_no_account_left() {
    let dir = tempfile::tempdir().unwrap();
    let committed = Arc::new(Notify::new());
    let store = Arc::new(HangingCommits {
        inner: LocalSnapshotStore::new(dir.path()).unwrap(),
        committed: committed.clone(),
    });
    let master = common::master_with_rows(MariaDbOptions::new(1)).await;
    let strategy = common::strategy_for(&master, store.clone());
    let req = SnapshotRequest::new()
        .with_replica_id("r1")
        .with_snapshot_name("cancelled");
    let href = store.snapshot_href("cancelled").unwrap();
    tokio::select! {
        r = strategy.get_replication_snapshot(&req) => panic!("the commit never returns: {r:?}"),
        () = committed.notified() => {}
    }
    // The call's future is dropped here, its snapshot committed but its document never given.
    let mut gone = false;
    for _ in 0..300 {
        match store.stat(&href).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                gone = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        gone,
        "the committed snapshot of the cancelled call is removed"
    );
    let accounts = master
        .query("SELECT User FROM mysql.user WHERE User LIKE 'trove\\_repl\\_%'")
        .await
        .unwrap();
    assert!(accounts.is_empty(), "no replication account: {accounts:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "nothing left in the store: {left:?}");
}
