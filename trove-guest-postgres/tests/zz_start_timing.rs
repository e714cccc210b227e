//! THROWAWAY: start time of a restored standby (not a test; run with --ignored).
mod common;

use std::time::Instant;

use trove_guest_core::progress::{Phase, Progress};
use trove_guest_core::testkit::{PostgresOptions, PostgresServer};
use trove_guest_core::{
    AttachRequest, EnableMasterOptions, ReplicationStrategy, SnapshotRequest, SnapshotStore,
    StageRequest,
};

#[tokio::test]
#[ignore]
async fn start_timing() {
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new().with_setting("fsync", "on")).await.unwrap();
    let t = Instant::now();
    m.query("CREATE TABLE big (id int, pad text); ALTER TABLE big ALTER pad SET STORAGE plain; INSERT INTO big SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 500000) g; CHECKPOINT;").await.unwrap();
    eprintln!(
        "loaded in {:?}: {}",
        t.elapsed(),
        m.query_one("SELECT pg_size_pretty(pg_database_size(current_database()))")
            .await
            .unwrap()
    );
    let sm = common::strategy(&m, store.clone());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let variants: Vec<(&str, bool, bool)> = std::env::var("VARIANTS")
        .unwrap_or(
            "plain,stage,plain+syncfs,stage+syncfs,plain,stage,plain+syncfs,stage+syncfs".into(),
        )
        .split(',')
        .map(|v| {
            let s: &'static str = Box::leak(v.to_owned().into_boxed_str());
            (s, v.starts_with("stage"), v.ends_with("+fsync"))
        })
        .collect();
    for (i, (label, stage, syncfs)) in variants.into_iter().enumerate() {
        let id = format!("t{i}");
        let doc = sm
            .get_replication_snapshot(&SnapshotRequest::new().with_replica_id(&id))
            .await
            .unwrap();
        let r = PostgresServer::start(PostgresOptions::new().with_server_id(10 + i as u32).with_setting("fsync", "on"))
            .await
            .unwrap();
        if syncfs {
            std::fs::write(
                r.handle().config_dir.join("zz-syncfs.conf"),
                "recovery_init_sync_method = fsync\n",
            )
            .unwrap();
        }
        let rs = common::strategy(&r, store.clone());
        std::process::Command::new("sync").status().unwrap();
        let mut stage_secs = 0.0;
        if stage {
            let t = Instant::now();
            rs.stage_snapshot(&StageRequest::new(doc.dataset.snapshot_href.clone()))
                .await
                .unwrap();
            stage_secs = t.elapsed().as_secs_f64();
        }
        let (progress, mut events) = Progress::channel();
        let t0 = Instant::now();
        let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tt = times.clone();
        let collector = tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if e.done == 0 {
                    tt.lock()
                        .unwrap()
                        .push((e.phase, t0.elapsed().as_secs_f64()));
                }
            }
        });
        rs.attach_replication_slave(&doc, &AttachRequest::new().with_progress(progress))
            .await
            .unwrap();
        let total = t0.elapsed().as_secs_f64();
        drop(rs);
        let _ = collector.await;
        let times = times.lock().unwrap().clone();
        let at = |p: Phase| {
            times
                .iter()
                .find(|(q, _)| *q == p)
                .map(|x| x.1)
                .unwrap_or(f64::NAN)
        };
        eprintln!(
            "RESULT {label:14} size {:>5} MB  stage {stage_secs:.2}s  attach restore {:.2}s  attach start {:.2}s  attach total {total:.2}s",
            doc.dataset.size_bytes.unwrap() >> 20,
            at(Phase::Start) - at(Phase::Restore),
            at(Phase::CatchUp) - at(Phase::Start),
        );
        drop(r);
        store.delete(&doc.dataset.snapshot_href).await.unwrap();
    }
}
