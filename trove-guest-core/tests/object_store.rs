//! `ObjectSnapshotStore` against object_store's in-memory store.
#![cfg(feature = "object-store")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};
use trove_guest_core::store::{Expected, ObjectSnapshotStore, SnapshotStore};
use trove_guest_core::{Error, ErrorKind, Progress};

const BASE: &str = "memory:///trove/snapshots";

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn store() -> (Arc<InMemory>, ObjectSnapshotStore) {
    let mem = Arc::new(InMemory::new());
    let s = ObjectSnapshotStore::new(mem.clone(), BASE).expect("store");
    (mem, s)
}

async fn keys(mem: &InMemory) -> Vec<String> {
    let mut k: Vec<String> = mem
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    k.sort();
    k
}

/// Replaces the data object of the snapshot `name` at `href` with `data` (its manifest stays),
/// then reads it back: the read fails with an integrity error, which is returned.
async fn replace_data_then_read(
    mem: &InMemory,
    store: &ObjectSnapshotStore,
    name: &str,
    href: &str,
    data: Vec<u8>,
) -> Error {
    mem.put(
        &ObjectPath::from(format!("trove/snapshots/{name}.snap")),
        PutPayload::from(data),
    )
    .await
    .unwrap();
    let err = common::read_all(store, href, &Expected::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "got {err}");
    err
}

async fn put_commit(store: &ObjectSnapshotStore, name: &str, data: &[u8]) -> String {
    let mut src = data;
    let pending = store.put(name, &mut src, &Progress::none()).await.unwrap();
    pending.commit().await.unwrap().href
}

#[tokio::test]
async fn round_trip_streams_multipart_and_verifies_hash() {
    let (mem, store) = store();
    // Larger than one 8 MiB part, so the multipart path is taken.
    let data = pattern(20 * 1024 * 1024 + 17);
    let mut src = &data[..];
    let pending = store
        .put("snap-1", &mut src, &Progress::none())
        .await
        .unwrap();
    assert_eq!(pending.snapshot().size, data.len() as u64);
    assert_eq!(pending.snapshot().sha256, sha(&data));
    let stored = pending.commit().await.unwrap();
    assert_eq!(stored.href, format!("{BASE}/snap-1.snap"));
    assert_eq!(store.stat(&stored.href).await.unwrap(), stored);

    let expected = Expected {
        size: Some(stored.size),
        sha256: Some(stored.sha256.clone()),
    };
    let back = common::read_all(&store, &stored.href, &expected)
        .await
        .unwrap();
    assert!(back == data, "read back differs");
    assert_eq!(
        keys(&mem).await,
        vec![
            "trove/snapshots/snap-1.snap".to_owned(),
            "trove/snapshots/snap-1.snap.manifest.json".to_owned()
        ],
        "only the data and its manifest remain"
    );

    store.delete(&stored.href).await.unwrap();
    assert!(keys(&mem).await.is_empty());
    common::assert_not_found(&store, &stored.href).await;
    store
        .delete(&stored.href)
        .await
        .expect("deleting twice succeeds");
}

#[tokio::test]
async fn small_snapshot_round_trips() {
    let (_mem, store) = store();
    let href = put_commit(&store, "tiny", b"hello").await;
    assert_eq!(
        common::read_all(&store, &href, &Expected::default())
            .await
            .unwrap(),
        b"hello"
    );
    let empty = put_commit(&store, "empty", b"").await;
    assert!(
        common::read_all(&store, &empty, &Expected::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn flipped_byte_is_refused_with_integrity_error() {
    let (mem, store) = store();
    let mut data = pattern(3 * 1024 * 1024);
    let href = put_commit(&store, "flip", &data).await;
    data[1_234_567] ^= 0x01;
    let err = replace_data_then_read(&mem, &store, "flip", &href, data).await;
    assert!(err.to_string().contains("SHA-256"), "{err}");
}

#[tokio::test]
async fn truncated_object_is_refused_with_integrity_error() {
    let (mem, store) = store();
    let data = pattern(3 * 1024 * 1024);
    let href = put_commit(&store, "trunc", &data).await;
    replace_data_then_read(
        &mem,
        &store,
        "trunc",
        &href,
        data[..data.len() - 1].to_vec(),
    )
    .await;
}

#[tokio::test]
async fn expected_hash_from_the_document_must_match_the_manifest() {
    let (_mem, store) = store();
    let href = put_commit(&store, "exp", b"abc").await;
    let wrong = Expected {
        size: Some(3),
        sha256: Some("0".repeat(64)),
    };
    let err = store.get(&href, &wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    let wrong_size = Expected {
        size: Some(4),
        sha256: None,
    };
    assert_eq!(
        store.get(&href, &wrong_size).await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
}

#[tokio::test]
async fn upload_is_invisible_until_commit() {
    let (mem, store) = store();
    let data = pattern(100_000);
    let mut src = &data[..];
    let pending = common::put_pending(&store, "later", &mut src).await;
    let href = pending.snapshot().href.clone();
    common::assert_invisible(&store, &href).await;
    let k = keys(&mem).await;
    assert_eq!(k.len(), 1, "{k:?}");
    assert!(k[0].starts_with("trove/snapshots/.partial-later-"), "{k:?}");
    pending.commit().await.unwrap();
    assert_eq!(store.stat(&href).await.unwrap().size, 100_000);
    assert!(
        keys(&mem).await.iter().all(|k| !k.contains(".partial-")),
        "temp object removed"
    );
}

#[tokio::test]
async fn dropped_pending_upload_leaves_nothing_behind() {
    let (mem, store) = store();
    let data = pattern(9 * 1024 * 1024);
    let mut src = &data[..];
    let pending = common::put_pending(&store, "dropped", &mut src).await;
    let href = pending.snapshot().href.clone();
    drop(pending);
    common::assert_not_found(&store, &href).await;
    // The temporary object is removed by a background task; give it a bounded chance to run.
    for _ in 0..200 {
        if keys(&mem).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        keys(&mem).await.is_empty(),
        "left behind: {:?}",
        keys(&mem).await
    );
}

#[tokio::test]
async fn committing_over_an_existing_snapshot_is_refused() {
    let (_mem, store) = store();
    let href = put_commit(&store, "dup", b"first").await;
    let mut src = &b"second"[..];
    let pending = store.put("dup", &mut src, &Progress::none()).await.unwrap();
    let err = pending.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(
        common::read_all(&store, &href, &Expected::default())
            .await
            .unwrap(),
        b"first"
    );
}

#[tokio::test]
async fn a_failing_source_leaves_nothing_visible() {
    let (mem, store) = store();
    let mut src = tokio_test_reader_failing_after(2 * 1024 * 1024);
    let err = match store.put("broken", &mut src, &Progress::none()).await {
        Ok(_) => panic!("a failing source produced an upload"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(keys(&mem).await.is_empty());
}

/// A reader that yields `n` bytes and then fails.
fn tokio_test_reader_failing_after(n: usize) -> impl tokio::io::AsyncRead + Send + Unpin {
    let ok = std::io::Cursor::new(vec![7u8; n]);
    let failing = FailingReader;
    tokio::io::AsyncReadExt::chain(ok, failing)
}

struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("producer died")))
    }
}

#[tokio::test]
async fn owns_only_its_own_snapshot_hrefs() {
    let (_mem, store) = store();
    assert!(store.owns(&format!("{BASE}/abc.snap")));
    assert!(store.owns("memory:///trove/snapshots/a-1_b.2.snap"));
    for foreign in [
        "file:///etc/passwd",
        "memory:///trove/snapshots/../etc/passwd.snap",
        "memory:///trove/snapshots/sub/abc.snap",
        "memory:///trove/snapshotsX/abc.snap",
        "memory:///trove/snapshots/abc.snap.manifest.json",
        "memory:///trove/snapshots/.partial-abc-123.snap",
        "memory:///trove/snapshots/abc",
        "memory:///trove/snapshots/abc.snap?x=1",
        "memory:///trove/snapshots/%2e%2e.snap",
        "s3://bucket/trove/snapshots/abc.snap",
        "",
    ] {
        assert!(!store.owns(foreign), "{foreign:?} owned");
        let err = store.stat(foreign).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{foreign:?}: {err}");
        assert_eq!(
            store.delete(foreign).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}

#[tokio::test]
async fn base_urls_and_prefixes_are_validated() {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for bad in [
        "",
        "snapshots",
        "://x/y",
        "s3://b/a/../c",
        "s3://b/a?x",
        "s3://b/a b",
        "s3://b/a//c",
    ] {
        let err = ObjectSnapshotStore::new(mem.clone(), bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    let s = ObjectSnapshotStore::new(mem.clone(), "s3://bucket/a/b/").unwrap();
    assert_eq!(s.base_url(), "s3://bucket/a/b");
    assert_eq!(s.key_prefix(), "a/b");
    assert_eq!(s.href_for("x"), "s3://bucket/a/b/x.snap");
    let s = s.with_key_prefix("other").unwrap();
    assert_eq!(s.key_prefix(), "other");
    assert!(s.clone().with_key_prefix("../x").is_err());
    let root = ObjectSnapshotStore::new(mem, "memory://").unwrap();
    assert_eq!(root.key_prefix(), "");
    let href = put_commit(&root, "at-root", b"x").await;
    assert_eq!(href, "memory:///at-root.snap");
    assert_eq!(
        common::read_all(&root, &href, &Expected::default())
            .await
            .unwrap(),
        b"x"
    );
}

#[tokio::test]
async fn works_over_a_file_system_object_store_too() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let store = ObjectSnapshotStore::new(fs, "file:///snapshots")
        .unwrap()
        .with_key_prefix("snaps")
        .unwrap();
    let data = pattern(9 * 1024 * 1024 + 3);
    let mut src = &data[..];
    let pending = common::put_pending(&store, "fs-1", &mut src).await;
    let href = pending.snapshot().href.clone();
    common::assert_not_found(&store, &href).await;
    pending.commit().await.unwrap();
    assert_eq!(href, "file:///snapshots/fs-1.snap");
    assert!(
        common::read_all(&store, &href, &Expected::default())
            .await
            .unwrap()
            == data
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("snaps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fs-1.snap", "fs-1.snap.manifest.json"]);
    // Damage on disk is caught on read.
    let path = dir.path().join("snaps/fs-1.snap");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = common::read_all(&store, &href, &Expected::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test]
async fn sweep_removes_partials_and_data_without_manifest_and_frees_the_name() {
    let (mem, s) = store();
    for name in ["orphan", "kept"] {
        let mut data: &[u8] = b"a committed snapshot";
        s.put(name, &mut data, &Progress::none())
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
    }
    // A commit interrupted before its manifest, and an upload killed before its commit.
    mem.delete(&ObjectPath::from(
        "trove/snapshots/orphan.snap.manifest.json",
    ))
    .await
    .unwrap();
    mem.put(
        &ObjectPath::from("trove/snapshots/.partial-gone-abcdefghijkl"),
        PutPayload::from_static(b"half"),
    )
    .await
    .unwrap();
    assert!(
        s.sweep_incomplete(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty(),
        "too young to sweep"
    );
    assert_eq!(
        s.sweep_incomplete(Duration::ZERO).await.unwrap(),
        vec![
            ".partial-gone-abcdefghijkl".to_owned(),
            "orphan.snap".to_owned()
        ]
    );
    assert_eq!(
        keys(&mem).await,
        vec![
            "trove/snapshots/kept.snap".to_owned(),
            "trove/snapshots/kept.snap.manifest.json".to_owned()
        ]
    );
    let mut again: &[u8] = b"a new snapshot";
    let stored = s
        .put("orphan", &mut again, &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .expect("the name is free again");
    assert_eq!(stored.size, 14);
}
