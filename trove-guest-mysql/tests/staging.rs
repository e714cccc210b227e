//! Staging (`stage_snapshot`) on real MariaDB servers, beyond the conformance suite: a staged
//! copy is what attach uses, is used once, and a cancelled stage is never used.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MariaDb, strategy_for};
use tokio::io::AsyncWriteExt;
use trove_guest_core::store::CHUNK_SIZE;
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{
    AttachRequest, ErrorKind, Phase, Progress, ReplicationStrategy, ReplicationStrategyExt,
    SnapshotDocument, SnapshotRequest, SnapshotStore, StageRequest,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const CATCH_UP: Duration = Duration::from_secs(60);

fn local_path(href: &str) -> &str {
    href.strip_prefix("file://").expect("a local store")
}

/// An upload of the first half of a stored snapshot's bytes that goes no further until it is
/// abandoned (ended without a commit).
struct PartialUpload {
    half: usize,
    release: tokio::sync::oneshot::Sender<()>,
    feeder: tokio::task::JoinHandle<()>,
    upload: tokio::task::JoinHandle<trove_guest_core::Result<()>>,
}

impl PartialUpload {
    fn start(store: &Arc<dyn SnapshotStore>, name: &str, copy_of: &str) -> Self {
        let bytes = std::fs::read(local_path(copy_of)).unwrap();
        let half = bytes.len() / 2;
        assert!(
            half > 4 * CHUNK_SIZE,
            "snapshot too small: {} bytes",
            bytes.len()
        );
        let (mut feed, mut input) = tokio::io::duplex(1 << 20);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let feeder = tokio::spawn(async move {
            feed.write_all(&bytes[..half]).await.unwrap();
            let _ = released.await;
            // Dropping the input ends the upload; the pending upload is dropped uncommitted.
        });
        let store = store.clone();
        let name = name.to_owned();
        let upload = tokio::spawn(async move {
            store
                .put(&name, &mut input, &Progress::none())
                .await
                .map(drop)
        });
        PartialUpload {
            half,
            release,
            feeder,
            upload,
        }
    }

    /// A byte count a follower reaches once it has read what was uploaded (the store writes
    /// in chunks).
    fn fed_at_least(&self) -> u64 {
        (self.half - 2 * CHUNK_SIZE) as u64
    }

    async fn abandon(self) {
        drop(self.release);
        self.feeder.await.unwrap();
        self.upload
            .await
            .unwrap()
            .expect("the upload ends (and is never committed)");
    }
}

/// A master with rows, its strategy, a snapshot taken with `req`, and the store holding it.
struct Snapshotted {
    _store_dir: tempfile::TempDir,
    store: Arc<dyn SnapshotStore>,
    master: MariaDbServer,
    ms: Arc<dyn ReplicationStrategy>,
    doc: SnapshotDocument,
}

async fn master_with_snapshot(req: SnapshotRequest) -> Snapshotted {
    let (store_dir, store) = common::store();
    let master = common::master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms.get_replication_snapshot(&req).await.expect("snapshot");
    Snapshotted {
        _store_dir: store_dir,
        store,
        master,
        ms,
        doc,
    }
}

/// A replica with its own schema and rows (so that "still serves its data" means something).
async fn replica_with_rows() -> MariaDbServer {
    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    MariaDb.create_schema(&replica).await.unwrap();
    MariaDb.insert_rows(&replica, 0..7).await.unwrap();
    replica
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_uses_the_staged_copy_once_without_reading_the_snapshot_again() {
    let Snapshotted {
        _store_dir,
        store,
        master,
        ms,
        doc,
    } = master_with_snapshot(SnapshotRequest::new().with_replica_id("staged-once")).await;
    let href = doc.dataset.snapshot_href.clone();
    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    let staged = rs
        .stage_snapshot(&StageRequest::new(href.clone()))
        .await
        .expect("stage");
    assert!(staged.matches(&doc), "{staged:?}");

    // Damage the stored data after staging (its manifest stays): reading it again would fail
    // verification, so a successful attach proves the staged copy was used.
    let path = local_path(&href);
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();

    let outcome = rs
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach from the staged copy");
    assert_eq!(outcome.restored_bytes, staged.size);
    MariaDb.insert_rows(&master, 200..260).await.unwrap();
    rs.catch_up_with(&*ms, CATCH_UP).await.expect("catch up");
    assert_eq!(
        MariaDb.fingerprint(&master).await.unwrap(),
        MariaDb.fingerprint(&replica).await.unwrap(),
        "the replica built from the staged copy equals the master"
    );

    // The staged copy became the datadir: staging the snapshot again reads it again (and now
    // finds the damage) instead of reporting a staged copy that no longer exists.
    let err = rs
        .stage_snapshot(&StageRequest::new(href))
        .await
        .expect_err("the staged copy was used up by the attach");
    assert_eq!(err.kind(), ErrorKind::Integrity, "got {err}");
    rs.catch_up_with(&*ms, CATCH_UP)
        .await
        .expect("the replica still replicates after the failed stage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stage_is_never_used_and_the_replica_keeps_serving() {
    let Snapshotted {
        _store_dir,
        store,
        master,
        ms,
        doc,
    } = master_with_snapshot(
        SnapshotRequest::new()
            .with_replica_id("cancelled")
            .with_snapshot_name("cancelled-a"),
    )
    .await;
    let href = doc.dataset.snapshot_href.clone();
    assert_eq!(
        ms.snapshot_href("cancelled-a").unwrap(),
        href,
        "the snapshot is stored under the href known in advance"
    );
    let replica = replica_with_rows().await;
    let before = MariaDb.fingerprint(&replica).await.unwrap();
    let rs = strategy_for(&replica, store.clone());

    // The document's snapshot is staged first, completely: the cancelled stage of another one
    // must not leave it (or what replaced it) usable.
    rs.stage_snapshot(&StageRequest::new(href.clone()))
        .await
        .expect("stage the document's snapshot");

    // Another snapshot, still uploading: the first half of the same bytes, then nothing.
    let upload = PartialUpload::start(&store, "cancelled-b", &href);
    let other = store.snapshot_href("cancelled-b").unwrap();

    let (progress, mut events) = Progress::channel();
    let threshold = upload.fed_at_least();
    {
        let req = StageRequest::new(other).with_progress(progress);
        let stage = rs.stage_snapshot(&req);
        tokio::pin!(stage);
        loop {
            tokio::select! {
                r = &mut stage => panic!("staging an unfinished upload returned: {r:?}"),
                ev = events.recv() => {
                    let ev = ev.expect("progress events");
                    if ev.phase == Phase::Restore && ev.done >= threshold {
                        break;
                    }
                }
            }
        }
        // Dropped here: cancelled while extracting what has been uploaded so far.
    }
    assert_eq!(
        MariaDb
            .fingerprint(&replica)
            .await
            .expect("the replica still serves"),
        before,
        "a stage never touches the running server's data"
    );
    upload.abandon().await;

    // The half-extracted staging directory is neither the document's snapshot nor used.
    let outcome = rs
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach after a cancelled stage");
    assert_eq!(Some(outcome.restored_bytes), doc.dataset.size_bytes);
    MariaDb.insert_rows(&master, 200..250).await.unwrap();
    rs.catch_up_with(&*ms, CATCH_UP).await.expect("catch up");
    assert_eq!(
        MariaDb.fingerprint(&master).await.unwrap(),
        MariaDb.fingerprint(&replica).await.unwrap(),
        "the replica equals the master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_abandoned_while_staging_is_never_staged() {
    let Snapshotted {
        _store_dir,
        store,
        master,
        ms,
        doc,
    } = master_with_snapshot(SnapshotRequest::new().with_replica_id("abandoned")).await;
    let replica = replica_with_rows().await;
    let before = MariaDb.fingerprint(&replica).await.unwrap();
    let rs = strategy_for(&replica, store.clone());

    let upload = PartialUpload::start(&store, "abandoned-b", &doc.dataset.snapshot_href);
    let other = store.snapshot_href("abandoned-b").unwrap();
    let (progress, mut events) = Progress::channel();
    let threshold = upload.fed_at_least();
    let req = StageRequest::new(other.clone()).with_progress(progress);
    let stage = rs.stage_snapshot(&req);
    tokio::pin!(stage);
    loop {
        tokio::select! {
            r = &mut stage => panic!("staging an unfinished upload returned: {r:?}"),
            ev = events.recv() => {
                let ev = ev.expect("progress events");
                if ev.phase == Phase::Restore && ev.done >= threshold {
                    break;
                }
            }
        }
    }
    upload.abandon().await;
    let err = stage
        .await
        .expect_err("an abandoned upload is never staged");
    assert!(err.to_string().contains("abandoned"), "got {err}");
    assert_eq!(
        err.kind(),
        trove_guest_core::ErrorKind::Integrity,
        "got {err}"
    );
    assert_eq!(
        MariaDb.fingerprint(&replica).await.unwrap(),
        before,
        "a failed stage never touches the running server's data"
    );
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach after the failed stage");
    MariaDb.insert_rows(&master, 200..230).await.unwrap();
    rs.catch_up_with(&*ms, CATCH_UP).await.expect("catch up");
    assert_eq!(
        MariaDb.fingerprint(&master).await.unwrap(),
        MariaDb.fingerprint(&replica).await.unwrap()
    );
}
