//! A failed restore never costs a standby its previous data: a damaged snapshot is refused before
//! anything is touched, and a restored data directory that does not start is swapped out again,
//! with the previous data directory and standby configuration put back and the server started.

mod common;

use std::sync::Arc;
use std::time::Duration;

use trove_guest_core::progress::Progress;
use trove_guest_core::{
    AttachRequest, ErrorKind, LocalSnapshotStore, ReplicationStrategy, ReplicationStrategyExt,
    SnapshotDocument, SnapshotRequest, SnapshotStore,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, objects};

const WAIT: Duration = Duration::from_secs(60);

struct Standby {
    _dir: tempfile::TempDir,
    store: Arc<LocalSnapshotStore>,
    m: PostgresServer,
    sm: Arc<PostgresStrategy>,
    r: PostgresServer,
    sr: Arc<PostgresStrategy>,
}

/// A master with rows and a standby attached to it, streaming (replica id `keep`).
async fn streaming_standby() -> Standby {
    common::init_tracing();
    let (dir, store) = common::local_store();
    let (m, r) = tokio::join!(
        PostgresServer::start(PostgresOptions::new()),
        PostgresServer::start(PostgresOptions::new().with_server_id(2))
    );
    let (m, r) = (m.unwrap(), r.unwrap());
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..100).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "keep").await;
    let sr = common::strategy(&r, store.clone());
    sr.attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
        .await
        .unwrap();
    Standby {
        _dir: dir,
        store,
        m,
        sm,
        r,
        sr,
    }
}

/// The standby streams: new rows on the master arrive and the data is equal.
async fn assert_streams(s: &Standby, ids: std::ops::Range<u64>) {
    common::insert_rows(&s.m, ids).await.unwrap();
    s.sr.catch_up_with(&*s.sm, WAIT)
        .await
        .expect("the standby streams from the master");
    assert_eq!(
        common::fingerprint(&s.r).await.unwrap(),
        common::fingerprint(&s.m).await.unwrap()
    );
    assert_eq!(
        s.r.query_one("SELECT pg_is_in_recovery()").await.unwrap(),
        "t"
    );
}

/// Restore leftovers (staging or previous data directories) in the replica's work directory.
fn leftovers(server: &PostgresServer) -> Vec<String> {
    std::fs::read_dir(&server.handle().work_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tg-"))
        .collect()
}

fn snapshot_path(doc: &SnapshotDocument) -> String {
    doc.dataset
        .snapshot_href
        .strip_prefix("file://")
        .unwrap()
        .to_owned()
}

/// Flips bytes of `global/pg_control` inside a tar archive (its CRC no longer matches, so the
/// server refuses to start); the archive itself stays well-formed.
fn corrupt_control_file(tar: &mut [u8]) {
    let mut off = 0;
    while off + 512 <= tar.len() {
        let header = &tar[off..off + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let name = String::from_utf8_lossy(&header[..100])
            .trim_end_matches('\0')
            .to_owned();
        let size = String::from_utf8_lossy(&header[124..136])
            .trim_matches(|c: char| c == '\0' || c == ' ')
            .to_owned();
        let size = usize::from_str_radix(&size, 8).expect("tar size field");
        let data = off + 512;
        if name.ends_with("global/pg_control") {
            // The checkpoint time: covered by the CRC, checked before anything else runs.
            for b in &mut tar[data + 24..data + 32] {
                *b ^= 0xFF;
            }
            return;
        }
        off = data + size.div_ceil(512) * 512;
    }
    panic!("no global/pg_control in the snapshot");
}

#[tokio::test]
async fn a_standby_refusing_a_corrupt_or_truncated_newer_snapshot_keeps_streaming_and_still_starts()
{
    let s = streaming_standby().await;
    let mut next = 100;
    for damage in ["flipped byte", "truncated"] {
        // A newer snapshot for the same replica (its login gets a new password), damaged in
        // the store.
        let doc =
            s.sm.get_replication_snapshot(&SnapshotRequest::new().with_replica_id("keep"))
                .await
                .unwrap();
        let path = snapshot_path(&doc);
        let mut bytes = std::fs::read(&path).unwrap();
        if damage == "truncated" {
            bytes.truncate(bytes.len() / 2);
        } else {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err =
            s.sr.attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
                .await
                .expect_err("a damaged snapshot is refused");
        assert_eq!(err.kind(), ErrorKind::Integrity, "{damage}: {err}");
        assert_streams(&s, next..next + 50).await;
        next += 50;
    }

    // The previous data directory still starts (and streams again).
    s.r.handle().service.restart().await.unwrap();
    s.r.wait_ready(WAIT).await.unwrap();
    assert_streams(&s, next..next + 50).await;
    assert_eq!(leftovers(&s.r), Vec::<String>::new());
}

#[tokio::test]
async fn a_restored_data_directory_that_does_not_start_is_rolled_back_and_the_standby_streams_again()
 {
    let s = streaming_standby().await;
    let doc =
        s.sm.get_replication_snapshot(&SnapshotRequest::new().with_replica_id("keep"))
            .await
            .unwrap();
    // Intact as an archive (the document's checksum matches), but the cluster in it is broken.
    let mut bytes = std::fs::read(snapshot_path(&doc)).unwrap();
    corrupt_control_file(&mut bytes);
    let pending = s
        .store
        .put("broken-control-file", &mut &bytes[..], &Progress::none())
        .await
        .unwrap();
    let stored = pending.commit().await.unwrap();
    let mut broken = doc.clone();
    broken.dataset.snapshot_href = stored.href;
    broken.dataset.size_bytes = Some(stored.size);
    broken.dataset.sha256 = Some(stored.sha256);
    let standby_conf_before =
        std::fs::read_to_string(s.r.handle().config_dir.join(objects::STANDBY_FILE)).unwrap();

    let err =
        s.sr.attach_replication_slave(&broken, &AttachRequest::new().with_timeout(WAIT))
            .await
            .expect_err("a data directory that does not start fails the attach");
    let msg = err.to_string();
    assert!(
        matches!(err, trove_guest_core::Error::Service { .. }),
        "{msg}"
    );
    assert!(msg.contains("control file"), "the server's reason: {msg}");
    assert!(
        msg.contains("previous data directory was put back"),
        "{msg}"
    );

    // The previous data directory and standby configuration are back, and it streams.
    assert_eq!(
        std::fs::read_to_string(s.r.handle().config_dir.join(objects::STANDBY_FILE)).unwrap(),
        standby_conf_before
    );
    assert_streams(&s, 100..150).await;
    let slots =
        s.m.query("SELECT slot_name || ':' || active FROM pg_replication_slots ORDER BY 1")
            .await
            .unwrap();
    assert!(
        slots.contains(&vec![Some("trove_slot_keep_2:true".to_owned())]),
        "the standby streams through its own slot again: {slots:?}"
    );
    assert_eq!(leftovers(&s.r), Vec::<String>::new());
}

#[tokio::test]
async fn a_refused_attach_leaves_no_slot_pinning_wal_on_the_master_and_can_be_retried() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let (m, r) = tokio::join!(
        PostgresServer::start(PostgresOptions::new()),
        PostgresServer::start(PostgresOptions::new().with_server_id(5))
    );
    let (m, r) = (m.unwrap(), r.unwrap());
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..40).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "retry").await;
    let path = snapshot_path(&doc);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let sr = common::strategy(&r, store.clone());
    let err = sr
        .attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
        .await
        .expect_err("a truncated snapshot is refused");
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    let slots = m
        .query("SELECT slot_name FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(
        slots,
        vec![vec![Some("trove_snap_retry".to_owned())]],
        "only the snapshot's own slot: the replica's copy was dropped"
    );

    // Once the snapshot is whole again, the same document attaches.
    std::fs::write(&path, &good).unwrap();
    sr.attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
        .await
        .expect("the retried attach succeeds");
    common::assert_caught_up(&sr, &sm, &r, &m).await;
    assert_eq!(leftovers(&r), Vec::<String>::new());
}
