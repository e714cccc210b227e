//! `SnapshotStore::follow` on `LocalSnapshotStore`: a replica reads a snapshot while the master
//! is still uploading it, and gets a clean end of stream only for the committed, verified bytes.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use trove_guest_core::store::{Expected, FollowOptions, PendingUpload, SnapshotStore};
use trove_guest_core::{Error, ErrorKind, LocalSnapshotStore, Progress, Result};

fn store() -> (tempfile::TempDir, Arc<LocalSnapshotStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    (dir, store)
}

fn fast() -> FollowOptions {
    FollowOptions::new()
        .with_poll_interval(Duration::from_millis(5))
        .with_start_timeout(Duration::from_secs(10))
}

/// Starts an upload fed by the returned pipe; the task yields the pending upload.
fn start_upload(
    store: &Arc<LocalSnapshotStore>,
    name: &str,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<Result<Box<dyn PendingUpload>>>,
) {
    let (tx, mut rx) = tokio::io::duplex(1 << 16);
    let store = store.clone();
    let name = name.to_owned();
    let task = tokio::spawn(async move { store.put(&name, &mut rx, &Progress::none()).await });
    (tx, task)
}

/// Larger than the store's 1 MiB write chunk, so part of it reaches the file before the
/// upload ends.
const CHUNK: usize = 2_500_000;

fn chunk(i: u8) -> Vec<u8> {
    (0..CHUNK as u32)
        .map(|x| (x as u8) ^ (x >> 16) as u8 ^ i)
        .collect()
}

async fn read_exact_len(r: &mut (impl AsyncReadExt + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await.unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_an_upload_before_it_commits_and_ends_verified() {
    let (_d, store) = store();
    let href = store.snapshot_href("growing").unwrap();
    let (mut tx, upload) = start_upload(&store, "growing");
    tx.write_all(&chunk(1)).await.unwrap();
    tx.flush().await.unwrap();

    let mut follower = store
        .follow(&href, &Expected::default(), &fast())
        .await
        .unwrap();
    // The first bytes arrive while the upload is still open: the read overlaps the write.
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        read_exact_len(&mut follower, 1 << 20),
    )
    .await
    .expect("the follower sees data before the upload ends");
    assert_eq!(first, chunk(1)[..1 << 20]);
    assert!(!upload.is_finished(), "the upload is still running");

    tx.write_all(&chunk(2)).await.unwrap();
    drop(tx);
    let pending = upload.await.unwrap().unwrap();
    let rest_task = tokio::spawn(async move {
        let mut rest = Vec::new();

        follower.read_to_end(&mut rest).await.map(|_| rest)
    });
    // Not committed yet: the follower must not report the end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !rest_task.is_finished(),
        "no end of stream before the commit"
    );
    let stored = pending.commit().await.unwrap();
    let rest = rest_task.await.unwrap().expect("verified end after commit");
    let mut expected_rest = chunk(1)[1 << 20..].to_vec();
    expected_rest.extend(chunk(2));
    assert_eq!(rest, expected_rest);
    let mut h = Sha256::new();
    h.update(chunk(1));
    h.update(chunk(2));
    assert_eq!(stored.sha256, hex::encode(h.finalize()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_upload_fails_the_follower() {
    let (_d, store) = store();
    let href = store.snapshot_href("abandoned").unwrap();
    let (mut tx, upload) = start_upload(&store, "abandoned");
    tx.write_all(&chunk(3)).await.unwrap();
    let mut follower = store
        .follow(&href, &Expected::default(), &fast())
        .await
        .unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        read_exact_len(&mut follower, 1 << 20),
    )
    .await
    .expect("data before the abandon");
    drop(tx);
    // The producer finished but the agent drops the upload (say the backup tool failed).
    drop(upload.await.unwrap().unwrap());
    let mut rest = Vec::new();
    let err = follower
        .read_to_end(&mut rest)
        .await
        .expect_err("an abandoned upload never ends cleanly");
    assert!(err.to_string().contains("abandoned"), "{err}");
    let err = Error::from_read("read", err);
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_refuses_data_that_differs_from_the_expected_hash() {
    let (_d, store) = store();
    let href = store.snapshot_href("expected").unwrap();
    let (mut tx, upload) = start_upload(&store, "expected");
    tx.write_all(&chunk(4)).await.unwrap();
    let expected = Expected {
        size: None,
        sha256: Some("00".repeat(32)),
    };
    let mut follower = store.follow(&href, &expected, &fast()).await.unwrap();
    drop(tx);
    upload.await.unwrap().unwrap().commit().await.unwrap();
    let mut all = Vec::new();
    let err = follower.read_to_end(&mut all).await.unwrap_err();
    let err = Error::from_read("read", err);
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_times_out() {
    let (_d, store) = store();
    let href = store.snapshot_href("stalled").unwrap();
    let (mut tx, _upload) = start_upload(&store, "stalled");
    tx.write_all(&chunk(5)).await.unwrap();
    let opts = fast().with_stall_timeout(Duration::from_millis(300));
    let mut follower = store
        .follow(&href, &Expected::default(), &opts)
        .await
        .unwrap();
    let mut all = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(10), follower.read_to_end(&mut all))
        .await
        .expect("the stall timeout ends the read")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    drop(tx);
}

#[tokio::test]
async fn committed_snapshot_is_followed_like_a_get_and_missing_one_is_not_found() {
    let (_d, store) = store();
    let data = chunk(6);
    store
        .put("done", &mut data.as_slice(), &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let href = store.snapshot_href("done").unwrap();
    let mut r = store
        .follow(&href, &Expected::default(), &fast())
        .await
        .unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, data);

    let missing = store.snapshot_href("never").unwrap();
    let err = match store
        .follow(
            &missing,
            &Expected::default(),
            &fast().with_start_timeout(Duration::from_millis(100)),
        )
        .await
    {
        Ok(_) => panic!("nothing to follow"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
