//! Snapshots in the store are untrusted input: a doctored `pg_basebackup` tar with a correct
//! manifest (so only the content check can catch it) is refused by attach with an integrity
//! error, the server keeps serving its old data and nothing is written outside the staging
//! directory; a normal attach leaves every file of the data directory to the server's account.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use trove_guest_core::{
    AttachRequest, ErrorKind, LocalSnapshotStore, Progress, ReplicationStrategy, SnapshotDocument,
    SnapshotStore,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

/// A ustar member (header with a correct checksum, data padded to 512 bytes).
fn tar_member(name: &str, typeflag: u8, data: &[u8], link: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h.extend_from_slice(data);
    h.resize(h.len().div_ceil(512) * 512, 0);
    h
}

/// Stores `bytes` as a new snapshot and returns `doc` pointing at it, with its true size and
/// SHA-256: the manifest is right, only the content is hostile.
async fn store_doctored(
    store: &LocalSnapshotStore,
    doc: &SnapshotDocument,
    name: &str,
    bytes: Vec<u8>,
) -> SnapshotDocument {
    let mut reader = bytes.as_slice();
    let stored = store
        .put(name, &mut reader, &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let mut doctored = doc.clone();
    doctored.dataset.snapshot_href = stored.href;
    doctored.dataset.size_bytes = Some(stored.size);
    doctored.dataset.sha256 = Some(stored.sha256);
    doctored
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn doctored_postgres_snapshots_are_refused_and_the_server_keeps_its_data() {
    common::init_tracing();
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..100).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "untrusted").await;
    let real = std::fs::read(store.path_for(&doc.dataset.snapshot_href).unwrap()).unwrap();

    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    common::create_schema(&r).await.unwrap();
    common::insert_rows(&r, 0..7).await.unwrap();
    let before = common::fingerprint(&r).await.unwrap();
    let sr = common::strategy(&r, store.clone());
    let work = r.handle().work_dir.clone();
    let work_before = names(&work);
    let outside = tempfile::tempdir().unwrap();
    let outside_path = outside.path().to_str().unwrap().to_owned();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            [
                tar_member("../tg-escape", b'0', b"escaped", ""),
                real.clone(),
            ]
            .concat(),
            "member \"../tg-escape\"",
        ),
        (
            "symlink-out",
            [
                tar_member("base/escape", b'2', b"", &outside_path),
                tar_member("base/escape/pwned", b'0', b"escaped", ""),
                real.clone(),
            ]
            .concat(),
            "member \"base/escape\": symbolic link to the absolute path",
        ),
        (
            "symlink-climbing",
            [
                tar_member("base/up", b'2', b"", "../../.."),
                tar_member("base/up/tg-escape", b'0', b"escaped", ""),
                real.clone(),
            ]
            .concat(),
            "leaves the directory",
        ),
        (
            "through-symlink",
            [
                tar_member("global/", b'5', b"", ""),
                tar_member("inside", b'2', b"", "global"),
                tar_member("inside/pg_control", b'0', b"forged", ""),
                real.clone(),
            ]
            .concat(),
            "goes through the symbolic link \"inside\"",
        ),
    ];
    let attach = AttachRequest::new().with_timeout(Duration::from_secs(60));
    for (name, bytes, says) in cases {
        let doctored = store_doctored(&store, &doc, &format!("doctored-{name}"), bytes).await;
        let err = sr
            .attach_replication_slave(&doctored, &attach)
            .await
            .expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Integrity, "{name}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&doctored.dataset.snapshot_href),
            "{name}: {text}"
        );
        assert!(text.contains(says), "{name}: {text}");
        assert_eq!(
            common::fingerprint(&r).await.unwrap(),
            before,
            "{name}: the server serves its old data"
        );
        assert_eq!(
            names(&work),
            work_before,
            "{name}: nothing left in the work dir"
        );
        assert!(
            names(outside.path()).is_empty(),
            "{name}: nothing written through the link"
        );
        assert!(
            !work.parent().unwrap().join("tg-escape").exists(),
            "{name}: nothing escaped"
        );
    }

    // The genuine snapshot still attaches: only hostile content is refused.
    sr.attach_replication_slave(&doc, &attach)
        .await
        .expect("the genuine snapshot attaches");
    common::assert_caught_up(&sr, &sm, &r, &m).await;
}

#[tokio::test]
async fn an_attach_leaves_every_file_of_the_data_directory_to_the_servers_account() {
    common::init_tracing();
    let (_d, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..50).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "owned").await;
    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    let account = r
        .handle()
        .os_user
        .expect("the test server runs as its own account");
    let sr = common::strategy(&r, store.clone());
    sr.attach_replication_slave(
        &doc,
        &AttachRequest::new().with_timeout(Duration::from_secs(60)),
    )
    .await
    .expect("attach");
    let mut stack = vec![r.data_dir()];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (account.uid, account.gid),
            "{} belongs to the server's account",
            p.display()
        );
        seen += 1;
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    assert!(
        seen > 100,
        "walked the restored data directory ({seen} entries)"
    );
}
