//! A snapshot that never commits leaves no `trove_snap_*` slot behind (it would pin WAL on the
//! primary for good), whether its store fails half way or its caller drops the call mid-stream,
//! and never removes the slot of an earlier, committed snapshot for the same replica.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use trove_guest_core::store::{PendingUpload, SnapshotRead, StoredSnapshot, VerifyingReader};
use trove_guest_core::{
    EnableMasterOptions, Error, ErrorKind, LocalSnapshotStore, Phase, Progress,
    ReplicationStrategy, Result, SnapshotRequest, SnapshotStore, store::Expected,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

/// Slot and `trove_repl_*` login names on the server.
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

/// Waits (bounded: the cleanup of a cancelled call runs in the background) until the server's
/// slots and logins are `want`; returns what they last were.
async fn settles_to(
    m: &PostgresServer,
    want: &(Vec<String>, Vec<String>),
) -> (Vec<String>, Vec<String>) {
    let mut last = names(m).await;
    for _ in 0..300 {
        if &last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = names(m).await;
    }
    last
}

/// Waits (bounded) until the cleanup task of a cancelled snapshot has released the strategy's
/// lock: it holds the lock until it ends, which is a moment after its last statement commits.
/// `drop_uncommitted_snapshot` of a slot that does not exist takes the lock and changes nothing.
async fn lock_released(sm: &PostgresStrategy) {
    for _ in 0..300 {
        match sm.drop_uncommitted_snapshot("trove_snap_none").await {
            Ok(existed) => return assert!(!existed),
            Err(Error::Busy { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the cancelled snapshot's cleanup still holds the lock after 30 s");
}

/// A local store whose uploads fail after the first megabyte of backup data.
#[derive(Debug)]
struct FailingWrites(LocalSnapshotStore);

#[async_trait]
impl SnapshotStore for FailingWrites {
    fn snapshot_href(&self, name: &str) -> Result<String> {
        self.0.snapshot_href(name)
    }
    fn owns(&self, href: &str) -> bool {
        self.0.owns(href)
    }
    async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>> {
        let mut first = Vec::new();
        let n = data
            .take(1 << 20)
            .read_to_end(&mut first)
            .await
            .map_err(|e| Error::io("read the backup", e))?;
        assert!(n > 0, "the backup streamed something");
        let _ = (name, progress);
        Err(Error::Store {
            message: "disk full (refused by the test)".into(),
            source: None,
        })
    }
    async fn stat(&self, href: &str) -> Result<StoredSnapshot> {
        self.0.stat(href).await
    }
    async fn get(&self, href: &str, expected: &Expected) -> Result<VerifyingReader<SnapshotRead>> {
        self.0.get(href, expected).await
    }
    async fn delete(&self, href: &str) -> Result<()> {
        self.0.delete(href).await
    }
}

async fn master(store: Arc<dyn SnapshotStore>) -> (PostgresServer, PostgresStrategy) {
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = PostgresStrategy::new(m.handle(), store, PostgresStrategyOptions::new());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    (m, sm)
}

#[tokio::test]
async fn a_snapshot_whose_store_fails_mid_stream_leaves_no_snapshot_slot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FailingWrites(LocalSnapshotStore::new(dir.path()).unwrap()));
    let (m, sm) = master(store).await;
    let before = names(&m).await;
    let err = sm
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("r1"))
        .await
        .expect_err("the store refuses the upload");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(names(&m).await, before, "no trove_snap_r1 slot, no login");
}

#[tokio::test]
async fn a_snapshot_cancelled_mid_stream_leaves_no_slot_and_spares_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let (m, sm) = master(store).await;
    m.query(
        "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS t FROM generate_series(1, 50000) g",
    )
    .await
    .unwrap();
    sm.get_replication_snapshot(&SnapshotRequest::new().with_replica_id("r1"))
        .await
        .expect("a committed snapshot for r1");
    let committed = names(&m).await;
    assert_eq!(committed.0, vec!["trove_snap_r1".to_owned()]);

    for replica in ["r2", "r1"] {
        let (progress, mut events) = Progress::channel();
        let req = SnapshotRequest::new()
            .with_replica_id(replica)
            .with_progress(progress);
        let call = sm.get_replication_snapshot(&req);
        let first_bytes = async {
            while let Some(e) = events.recv().await {
                if e.phase == Phase::Backup && e.done > 0 {
                    return;
                }
            }
            panic!("the progress channel closed before any backup bytes");
        };
        tokio::select! {
            r = call => panic!("the snapshot for {replica} finished before it was cancelled: {r:?}"),
            () = first_bytes => {}
        }
        // The call's future is dropped here, mid-stream.
        assert_eq!(
            settles_to(&m, &committed).await,
            committed,
            "after a cancelled snapshot for {replica}: only the committed snapshot's slot and login"
        );
        lock_released(&sm).await;
    }
    sm.get_replication_snapshot(&SnapshotRequest::new().with_replica_id("r3"))
        .await
        .expect("a snapshot after the cancellations");
}

#[tokio::test]
async fn drop_uncommitted_snapshot_drops_only_a_snapshot_slot_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let (m, sm) = master(store).await;
    sm.get_replication_snapshot(&SnapshotRequest::new().with_replica_id("r1"))
        .await
        .unwrap();
    for bad in ["trove_slot_r1_2", "other", "trove_snap_x; DROP TABLE t"] {
        let err = sm.drop_uncommitted_snapshot(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
    }
    assert!(sm.drop_uncommitted_snapshot("trove_snap_r1").await.unwrap());
    assert!(names(&m).await.0.is_empty(), "the slot is gone");
    assert!(!sm.drop_uncommitted_snapshot("trove_snap_r1").await.unwrap());
}
