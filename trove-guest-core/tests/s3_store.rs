//! `ObjectSnapshotStore` over S3, live against a local moto server (`testkit::s3`).
//!
//! The server is installed into a virtual environment on first use and started per test on a
//! free loopback port; a test fails (never skips) when it cannot be installed or started.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use object_store::PutPayload;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt as _;
use trove_guest_core::store::{
    Expected, FollowOptions, ObjectSnapshotStore, S3Config, SnapshotStore,
};
use trove_guest_core::testkit::s3::MotoServer;
use trove_guest_core::{Error, ErrorKind, Progress, StoreAccessProblem};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + usize::from(seed)) % 251) as u8)
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn server_with_bucket(bucket: &str) -> MotoServer {
    let server = MotoServer::start().await.expect("moto server");
    server.create_bucket(bucket).await.expect("create bucket");
    server
}

fn access_problem(e: &Error) -> Option<StoreAccessProblem> {
    match e {
        Error::StoreAccess { problem, .. } => Some(*problem),
        _ => None,
    }
}

async fn put_commit(store: &ObjectSnapshotStore, name: &str, data: &[u8]) -> String {
    let mut src = data;
    let pending = store.put(name, &mut src, &Progress::none()).await.unwrap();
    pending.commit().await.unwrap().href
}

#[tokio::test]
async fn snapshots_round_trip_through_s3_in_parts() {
    let server = server_with_bucket("snaps").await;
    let store = ObjectSnapshotStore::s3(&server.config("snaps", "trove/snapshots")).unwrap();
    store.check_access().await.unwrap();
    // Several parts and a short last one.
    let data = pattern(21 << 20, 1);
    let href = put_commit(&store, "s1", &data).await;
    assert_eq!(href, "s3://snaps/trove/snapshots/s1.snap");
    assert!(store.owns(&href));
    let m = store.stat(&href).await.unwrap();
    assert_eq!(m.size, data.len() as u64);
    assert_eq!(m.sha256, sha(&data));
    let expected = Expected {
        size: Some(m.size),
        sha256: Some(m.sha256.clone()),
    };
    let got = common::read_all(&store, &href, &expected).await.unwrap();
    assert!(got == data, "read back what was written");
    // A wrong expectation is refused before streaming.
    let wrong = Expected {
        size: Some(1),
        sha256: None,
    };
    assert_eq!(
        store.get(&href, &wrong).await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
    // A taken name is refused at commit.
    let mut src = &data[..10];
    let again = store.put("s1", &mut src, &Progress::none()).await.unwrap();
    assert_eq!(
        again.commit().await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    store.delete(&href).await.unwrap();
    common::assert_lookups_fail(&store, &href, ErrorKind::NotFound).await;
}

#[tokio::test]
async fn a_damaged_object_is_refused() {
    let server = server_with_bucket("snaps").await;
    let store = ObjectSnapshotStore::s3(&server.config("snaps", "p")).unwrap();
    let data = pattern(9 << 20, 2);
    let href = put_commit(&store, "s1", &data).await;
    // Same size, one byte flipped, in every data object of the snapshot.
    let inner = store.object_store().clone();
    let mut listed = Vec::new();
    let mut stream = inner.list(Some(&ObjectPath::from("p")));
    while let Some(m) = futures::StreamExt::next(&mut stream).await {
        listed.push(m.unwrap());
    }
    let mut damaged = 0;
    for m in listed {
        let key = m.location.to_string();
        if key.ends_with(".json") {
            continue;
        }
        let mut bytes = inner
            .get(&m.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        inner
            .put(&m.location, PutPayload::from(bytes))
            .await
            .unwrap();
        damaged += 1;
    }
    assert!(damaged >= 1, "found the data objects");
    let err = common::read_all(&store, &href, &Expected::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test]
async fn a_missing_bucket_is_a_typed_error() {
    let server = server_with_bucket("snaps").await;
    let store = ObjectSnapshotStore::s3(&server.config("no-such-bucket", "p")).unwrap();
    let err = store.check_access().await.unwrap_err();
    assert_eq!(
        access_problem(&err),
        Some(StoreAccessProblem::BucketMissing),
        "{err}"
    );
    let href = store.snapshot_href("s1").unwrap();
    let err = store.stat(&href).await.unwrap_err();
    assert_eq!(
        access_problem(&err),
        Some(StoreAccessProblem::BucketMissing),
        "{err}"
    );
    let mut src = &b"data"[..];
    let err = store
        .put("s1", &mut src, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(
        access_problem(&err),
        Some(StoreAccessProblem::BucketMissing),
        "{err}"
    );
}

#[tokio::test]
async fn bad_credentials_are_a_typed_error_and_never_shown() {
    let server = server_with_bucket("snaps").await;
    let creds = server.unknown_credentials_file().await.unwrap();
    let mut config = server.config("snaps", "p");
    config.credentials_file = creds;
    let store = ObjectSnapshotStore::s3(&config).unwrap();
    let err = store.check_access().await.unwrap_err();
    assert_eq!(
        access_problem(&err),
        Some(StoreAccessProblem::BadCredentials),
        "{err}"
    );
    let mut src = &b"data"[..];
    let err = store
        .put("s1", &mut src, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(
        access_problem(&err),
        Some(StoreAccessProblem::BadCredentials),
        "{err}"
    );
    let shown = format!("{err} {err:?} {store:?} {config:?}");
    assert!(
        !shown.contains("not-a-secret-anyone-has"),
        "secret shown: {shown}"
    );
    // The good key is never shown either.
    let good = std::fs::read_to_string(server.credentials_file()).unwrap();
    let secret = good
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .unwrap();
    let ok = ObjectSnapshotStore::s3(&server.config("snaps", "p")).unwrap();
    assert!(!format!("{ok:?}").contains(secret));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_typed_error() {
    let server = server_with_bucket("snaps").await;
    let port = trove_guest_core::testkit::free_port().unwrap();
    let config = server
        .config("snaps", "p")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_retries(1, Duration::from_secs(2));
    let store = ObjectSnapshotStore::s3(&config).unwrap();
    let err = store.check_access().await.unwrap_err();
    let mut chain = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = cur {
        chain.push_str(&format!("[{e}] "));
        cur = e.source();
    }
    assert_eq!(
        access_problem(&err),
        Some(StoreAccessProblem::Unreachable),
        "{chain}"
    );
}

#[tokio::test]
async fn credentials_files_others_can_read_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds");
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = s3cr3t-value\n",
    )
    .unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = ObjectSnapshotStore::s3(&S3Config::new("snaps", &path)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "mode {mode:o}: {err}");
        assert!(!format!("{err} {err:?}").contains("s3cr3t-value"));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    ObjectSnapshotStore::s3(&S3Config::new("snaps", &path)).unwrap();
    // Missing the secret.
    std::fs::write(&path, "aws_access_key_id = AKIAEXAMPLE\n").unwrap();
    let err = ObjectSnapshotStore::s3(&S3Config::new("snaps", &path)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // A symlink to a private file is refused too.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(ObjectSnapshotStore::s3(&S3Config::new("snaps", &link)).is_err());
}

#[test]
fn s3_urls_give_bucket_and_prefix() {
    let c = S3Config::from_url("s3://my-bucket/trove/snaps/", "/c").unwrap();
    assert_eq!(
        (c.bucket.as_str(), c.prefix.as_str()),
        ("my-bucket", "trove/snaps")
    );
    assert_eq!(c.url(), "s3://my-bucket/trove/snaps");
    let c = S3Config::from_url("s3://my-bucket", "/c").unwrap();
    assert_eq!(c.url(), "s3://my-bucket");
    for bad in [
        "file:///x",
        "s3://",
        "s3://UPPER/x",
        "s3://b?x",
        "s3://bucket/../x",
        "s3://ab",
    ] {
        assert!(S3Config::from_url(bad, "/c").is_err(), "{bad}");
    }
}

/// A source the test feeds by hand: the upload sees data only when the test sends it.
fn hand_fed() -> (
    tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    impl tokio::io::AsyncRead + Send + Unpin,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, tokio_util::io::StreamReader::new(Box::pin(stream)))
}

fn follow_opts() -> FollowOptions {
    FollowOptions::new()
        .with_start_timeout(Duration::from_secs(60))
        .with_stall_timeout(Duration::from_secs(60))
        .with_poll_interval(Duration::from_millis(50))
}

#[tokio::test]
async fn a_follower_reads_segments_before_the_upload_ends_and_ends_verified() {
    let server = server_with_bucket("snaps").await;
    let store = ObjectSnapshotStore::s3(&server.config("snaps", "f")).unwrap();
    let seg = ObjectSnapshotStore::DEFAULT_SEGMENT_SIZE;
    let data = pattern(3 * seg + 12345, 3);
    let href = store.snapshot_href("live").unwrap();
    let (tx, mut src) = hand_fed();
    let uploader = {
        let store = store.clone();
        tokio::spawn(async move {
            let pending = store.put("live", &mut src, &Progress::none()).await?;
            pending.commit().await
        })
    };
    // The first two segments' worth, and nothing more until the follower has read a segment.
    for c in data[..2 * seg].chunks(1 << 20) {
        tx.send(Ok(bytes::Bytes::copy_from_slice(c))).await.unwrap();
    }
    let mut reader = store
        .follow(&href, &Expected::default(), &follow_opts())
        .await
        .unwrap();
    let mut got = vec![0u8; seg];
    reader.read_exact(&mut got).await.unwrap();
    assert!(got[..] == data[..seg], "first segment");
    assert!(
        !uploader.is_finished(),
        "the upload is still waiting for its data, so the follower read it mid-upload"
    );
    for c in data[2 * seg..].chunks(1 << 20) {
        tx.send(Ok(bytes::Bytes::copy_from_slice(c))).await.unwrap();
    }
    drop(tx);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    assert!(got == data, "followed stream equals the data");
    let stored = uploader.await.unwrap().unwrap();
    assert_eq!(stored.sha256, sha(&data));
    // And the committed snapshot reads back whole.
    let again = common::read_all(&store, &href, &Expected::default())
        .await
        .unwrap();
    assert!(again == data);
}

#[tokio::test]
async fn a_follower_of_an_abandoned_upload_fails_with_an_integrity_error() {
    let server = server_with_bucket("snaps").await;
    let store = ObjectSnapshotStore::s3(&server.config("snaps", "f")).unwrap();
    let seg = ObjectSnapshotStore::DEFAULT_SEGMENT_SIZE;
    let data = pattern(2 * seg, 4);
    let href = store.snapshot_href("gone").unwrap();
    let (tx, mut src) = hand_fed();
    let uploader = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put("gone", &mut src, &Progress::none())
                .await
                .map(|_| ())
        })
    };
    for c in data.chunks(1 << 20) {
        tx.send(Ok(bytes::Bytes::copy_from_slice(c))).await.unwrap();
    }
    let mut reader = store
        .follow(&href, &Expected::default(), &follow_opts())
        .await
        .unwrap();
    let mut first = vec![0u8; seg];
    reader.read_exact(&mut first).await.unwrap();
    // The backup tool fails: the upload ends with an error and is never committed.
    tx.send(Err(std::io::Error::other("backup tool died")))
        .await
        .unwrap();
    drop(tx);
    assert!(uploader.await.unwrap().is_err());
    let mut rest = Vec::new();
    let err = reader.read_to_end(&mut rest).await.unwrap_err();
    let err = Error::from_read("follow", err);
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    common::assert_lookups_fail(&store, &href, ErrorKind::NotFound).await;
}

#[tokio::test]
async fn a_damaged_segment_is_refused_while_following() {
    let server = server_with_bucket("snaps").await;
    let store = ObjectSnapshotStore::s3(&server.config("snaps", "f")).unwrap();
    let seg = ObjectSnapshotStore::DEFAULT_SEGMENT_SIZE;
    let data = pattern(2 * seg, 5);
    let href = store.snapshot_href("bad").unwrap();
    let (tx, mut src) = hand_fed();
    let uploader = {
        let store = store.clone();
        tokio::spawn(async move {
            let p = store.put("bad", &mut src, &Progress::none()).await?;
            p.commit().await
        })
    };
    for c in data[..seg].chunks(1 << 20) {
        tx.send(Ok(bytes::Bytes::copy_from_slice(c))).await.unwrap();
    }
    // Wait (bounded) for the first segment to land, then damage it in place.
    let inner = store.object_store().clone();
    let deadline = trove_guest_core::deadline(Duration::from_secs(60));
    let mut backoff = trove_guest_core::poll::Backoff::new(Duration::from_millis(100));
    let key = loop {
        let mut l = inner.list(Some(&ObjectPath::from("f/bad.snap.parts")));
        let mut found = None;
        while let Some(m) = futures::StreamExt::next(&mut l).await {
            found = Some(m.unwrap().location);
        }
        if let Some(k) = found {
            break k;
        }
        assert!(backoff.tick(deadline).await, "first segment never landed");
    };
    let mut bytes = inner
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    bytes[7] ^= 0x01;
    inner.put(&key, PutPayload::from(bytes)).await.unwrap();
    let mut reader = store
        .follow(&href, &Expected::default(), &follow_opts())
        .await
        .unwrap();
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).await.unwrap_err();
    assert_eq!(Error::from_read("follow", err).kind(), ErrorKind::Integrity);
    drop(tx);
    let _ = uploader.await;
}

#[tokio::test]
async fn sweep_removes_uploads_no_manifest_names_and_keeps_snapshots() {
    let server = server_with_bucket("snaps").await;
    let store = ObjectSnapshotStore::s3(&server.config("snaps", "w")).unwrap();
    let data = pattern(3 << 20, 6);
    let href = put_commit(&store, "kept", &data).await;
    // An upload whose uploader was killed: its segment stays, no manifest names it.
    let inner = store.object_store().clone();
    let orphan = ObjectPath::from(format!(
        "w/lost.snap.parts/abcdefghijkl/00000000-{}",
        sha(b"x")
    ));
    inner
        .put(&orphan, PutPayload::from_static(b"x"))
        .await
        .unwrap();
    assert!(
        store
            .sweep_incomplete(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    let removed = store.sweep_incomplete(Duration::ZERO).await.unwrap();
    assert_eq!(removed, ["lost.snap.parts/abcdefghijkl".to_owned()]);
    assert!(inner.head(&orphan).await.is_err());
    let again = common::read_all(&store, &href, &Expected::default())
        .await
        .unwrap();
    assert!(again == data, "the complete snapshot is untouched");
}

/// Incompressible bytes (xorshift), so compressed segments land as the raw data streams.
#[cfg(feature = "zstd")]
fn noise(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(feature = "zstd")]
#[tokio::test]
async fn the_zstd_wrapper_follows_an_s3_upload_and_verifies_the_raw_bytes() {
    use std::sync::Arc;
    use trove_guest_core::store::ZstdSnapshotStore;
    let server = server_with_bucket("snaps").await;
    let s3 = ObjectSnapshotStore::s3(&server.config("snaps", "z")).unwrap();
    let store = ZstdSnapshotStore::new(Arc::new(s3));
    let seg = ObjectSnapshotStore::DEFAULT_SEGMENT_SIZE;
    let data = noise(4 * seg + 777, 0x9e37_79b9_7f4a_7c15);
    let href = store.snapshot_href("zz").unwrap();
    let (tx, mut src) = hand_fed();
    let uploader = {
        let store = store.clone();
        tokio::spawn(async move {
            let p = store.put("zz", &mut src, &Progress::none()).await?;
            p.commit().await
        })
    };
    for c in data[..3 * seg].chunks(1 << 20) {
        tx.send(Ok(bytes::Bytes::copy_from_slice(c))).await.unwrap();
    }
    let expected = Expected {
        size: Some(data.len() as u64),
        sha256: Some(sha(&data)),
    };
    let mut reader = store
        .follow(&href, &expected, &follow_opts())
        .await
        .unwrap();
    let mut got = vec![0u8; 1 << 20];
    reader.read_exact(&mut got).await.unwrap();
    assert!(
        !uploader.is_finished(),
        "read while the upload waits for data"
    );
    for c in data[3 * seg..].chunks(1 << 20) {
        tx.send(Ok(bytes::Bytes::copy_from_slice(c))).await.unwrap();
    }
    drop(tx);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    assert!(
        got == data,
        "followed and decompressed stream equals the data"
    );
    uploader.await.unwrap().unwrap();
    // A wrong expectation fails the followed stream at its end.
    let wrong = Expected {
        size: None,
        sha256: Some(sha(b"other")),
    };
    let mut r = store.follow(&href, &wrong, &follow_opts()).await;
    if let Ok(r) = r.as_mut() {
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(Error::from_read("follow", err).kind(), ErrorKind::Integrity);
    } else {
        assert_eq!(r.err().unwrap().kind(), ErrorKind::Integrity);
    }
}
