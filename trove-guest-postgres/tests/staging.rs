//! Staging a snapshot ahead of an attach, on real PostgreSQL 15 servers.

mod common;

use std::time::Duration;

use trove_guest_core::progress::{Phase, Progress, ProgressEvent};
use trove_guest_core::{
    AttachRequest, EnableMasterOptions, ReplicationStrategy, SnapshotRequest, StageRequest,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

/// The work directory's entries made by this crate (staging areas, staged copy, marker).
fn leftovers(work_dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(work_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tg-"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_stage_cancelled_while_following_the_upload_leaves_the_server_serving_and_attach_works() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..2000).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();

    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    common::create_schema(&r).await.unwrap();
    common::insert_rows(&r, 0..7).await.unwrap();
    let before = common::fingerprint(&r).await.unwrap();
    let rs = common::strategy(&r, store.clone());

    // The master takes the snapshot while the replica follows it; the stage is dropped as
    // soon as it has extracted its first bytes.
    let name = "cancelled-stage";
    let href = sm.snapshot_href(name).unwrap();
    let (progress, mut events) = Progress::channel();
    let req = StageRequest::new(href.clone()).with_progress(progress);
    let snapshot = tokio::spawn({
        let sm = sm.clone();
        async move {
            sm.get_replication_snapshot(
                &SnapshotRequest::new()
                    .with_replica_id("cancelled")
                    .with_snapshot_name(name),
            )
            .await
        }
    });
    {
        let stage = rs.stage_snapshot(&req);
        tokio::pin!(stage);
        let extracting = async {
            while let Some(ProgressEvent { phase, done, .. }) = events.recv().await {
                if phase == Phase::Restore && done > 0 {
                    return;
                }
            }
            panic!("the progress channel closed before any byte was extracted");
        };
        tokio::select! {
            s = &mut stage => panic!("the stage finished before it could be cancelled: {s:?}"),
            () = extracting => {}
        }
        // Dropping `stage` here kills its extraction.
    }
    let doc = snapshot
        .await
        .unwrap()
        .expect("the master's snapshot completes");
    assert_eq!(doc.dataset.snapshot_href, href);
    assert_eq!(
        common::fingerprint(&r)
            .await
            .expect("the replica still serves"),
        before,
        "a cancelled stage leaves the replica's data alone"
    );
    let work_dir = r.handle().work_dir.clone();
    assert!(
        !work_dir.join(".tg-staged.json").exists(),
        "a cancelled stage names nothing as staged: {:?}",
        leftovers(&work_dir)
    );

    let outcome = rs
        .attach_replication_slave(
            &doc,
            &AttachRequest::new().with_timeout(Duration::from_secs(60)),
        )
        .await
        .expect("attach after a cancelled stage");
    assert_eq!(
        Some(outcome.restored_bytes),
        doc.dataset.size_bytes,
        "the attach read the whole snapshot itself"
    );
    common::insert_rows(&m, 2000..2100).await.unwrap();
    common::assert_caught_up(&rs, &sm, &r, &m).await;
    assert_eq!(
        leftovers(&work_dir),
        Vec::<String>::new(),
        "the attach removed the cancelled stage's staging area"
    );
}

#[tokio::test]
async fn an_attach_uses_the_staged_snapshot_of_its_document_without_reading_it_again() {
    common::init_tracing();
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..500).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "staged").await;

    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    let rs = common::strategy(&r, store.clone());
    let staged = rs
        .stage_snapshot(&StageRequest::new(doc.dataset.snapshot_href.clone()))
        .await
        .expect("stage");
    assert!(staged.matches(&doc), "{staged:?}");
    let work_dir = r.handle().work_dir.clone();
    assert_eq!(
        leftovers(&work_dir),
        [".tg-staged.json", ".tg-staging"],
        "one staged directory and its marker"
    );

    // Take the snapshot out of the store: only the staged copy can serve the attach. The
    // manifest stays (attach checks the staged copy is still the stored snapshot).
    let path = doc
        .dataset
        .snapshot_href
        .strip_prefix("file://")
        .unwrap()
        .to_owned();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let (progress, mut events) = Progress::channel();
    let outcome = rs
        .attach_replication_slave(&doc, &AttachRequest::new().with_progress(progress))
        .await
        .expect("attach from the staged snapshot");
    assert_eq!(outcome.restored_bytes, staged.size);
    let mut read_bytes = false;
    while let Ok(e) = events.try_recv() {
        read_bytes |= e.phase == Phase::Restore && e.done > 0;
    }
    assert!(!read_bytes, "nothing was read from the store");
    // Staging synced every file: the standby's start-up sync need not flush the file system.
    let standby = std::fs::read_to_string(
        r.handle()
            .config_dir
            .join(trove_guest_postgres::objects::STANDBY_FILE),
    )
    .expect("the standby's settings");
    assert!(
        standby.contains("recovery_init_sync_method = fsync"),
        "{standby}"
    );
    common::insert_rows(&m, 500..600).await.unwrap();
    common::assert_caught_up(&rs, &sm, &r, &m).await;
    assert_eq!(
        leftovers(&work_dir),
        Vec::<String>::new(),
        "the staged copy became the data directory, its marker is gone"
    );
}
