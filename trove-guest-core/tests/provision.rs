//! `ReplicationStrategyExt::provision_from` with scripted strategies (unit level; the live flow
//! runs in each backend's conformance suite): staging overlaps the snapshot, a failed snapshot
//! cancels the staging, a failed staging falls back to a plain attach, and strategies without
//! staging get snapshot then attach.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use trove_guest_core::wire::SnapshotDocument;
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, DatastoreKind, DemoteOptions, DetachOptions,
    DetachedReplica, EnableMasterOptions, Error, ErrorKind, ReplicationPosition, ReplicationStatus,
    ReplicationStrategy, ReplicationStrategyExt, Result, SnapshotRequest, StageRequest,
    StagedSnapshot,
};

fn document(href: &str) -> SnapshotDocument {
    let json = serde_json::json!({
        "master": {"host": "127.0.0.1", "port": 3306},
        "dataset": {
            "datastore": "mariadb",
            "datastore_version": "10.11",
            "dataset_size": 1,
            "snapshot_href": href,
            "size_bytes": 10,
            "sha256": "ab"
        },
        "binlog_position": {"log_file": "bin.000001", "log_position": 4}
    });
    serde_json::from_value(json).expect("a valid document")
}

#[derive(Debug, Default)]
struct Scripted {
    staging: bool,
    snapshot_fails: bool,
    snapshot_delay_ms: u64,
    stage_hangs: bool,
    stage_fails: bool,
    stage_started_before_snapshot_ended: AtomicBool,
    snapshot_running: AtomicBool,
    stage_cancelled: Arc<AtomicBool>,
    attaches: AtomicUsize,
}

struct SetOnDrop(Arc<AtomicBool>, bool);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl ReplicationStrategy for Scripted {
    fn datastore(&self) -> DatastoreKind {
        DatastoreKind::Mariadb
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().with_staging(self.staging)
    }
    fn snapshot_href(&self, name: &str) -> Result<String> {
        Ok(format!("file:///store/{name}.snap"))
    }
    async fn enable_as_master(&self, _: &EnableMasterOptions) -> Result<()> {
        Ok(())
    }
    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument> {
        self.snapshot_running.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.snapshot_delay_ms)).await;
        self.snapshot_running.store(false, Ordering::SeqCst);
        if self.snapshot_fails {
            return Err(Error::Service {
                message: "backup failed".into(),
            });
        }
        let name = req
            .snapshot_name
            .as_deref()
            .expect("provision names the snapshot");
        Ok(document(&self.snapshot_href(name)?))
    }
    async fn stage_snapshot(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        if !self.staging {
            return Err(Error::unsupported("staging"));
        }
        // Give the master a moment to start, as a real follower would wait for the upload.
        tokio::time::sleep(Duration::from_millis(10)).await;
        if self.snapshot_running.load(Ordering::SeqCst) {
            self.stage_started_before_snapshot_ended
                .store(true, Ordering::SeqCst);
        }
        let mut guard = SetOnDrop(self.stage_cancelled.clone(), true);
        if self.stage_hangs {
            std::future::pending::<()>().await;
        }
        guard.1 = false;
        if self.stage_fails {
            return Err(Error::integrity(&req.href, "bad bytes"));
        }
        Ok(StagedSnapshot::new(&req.href, 10, "ab", false))
    }
    async fn attach_replication_slave(
        &self,
        _: &SnapshotDocument,
        _: &AttachRequest,
    ) -> Result<AttachOutcome> {
        self.attaches.fetch_add(1, Ordering::SeqCst);
        Ok(AttachOutcome::new(10, None))
    }
    async fn detach_replication_slave(&self, _: &DetachOptions) -> Result<DetachedReplica> {
        Err(Error::unsupported("not scripted"))
    }
    async fn cleanup_source_on_replica_detach(&self, _: &DetachedReplica) -> Result<()> {
        Err(Error::unsupported("not scripted"))
    }
    async fn demote_replication_master(&self, _: &DemoteOptions) -> Result<()> {
        Err(Error::unsupported("not scripted"))
    }
    async fn make_read_only(&self, _: bool) -> Result<()> {
        Err(Error::unsupported("not scripted"))
    }
    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        Err(Error::unsupported("not scripted"))
    }
    async fn wait_for_txn(&self, _: &ReplicationPosition, _: Duration) -> Result<()> {
        Err(Error::unsupported("not scripted"))
    }
    async fn replication_status(&self) -> Result<ReplicationStatus> {
        Err(Error::unsupported("not scripted"))
    }
}

#[tokio::test]
async fn staging_runs_while_the_snapshot_is_taken_and_attach_follows() {
    let master = Scripted {
        snapshot_delay_ms: 200,
        ..Scripted::default()
    };
    let replica = Scripted {
        staging: true,
        ..Scripted::default()
    };
    // A generated snapshot name, the same href on both sides, and the staged copy handed to
    // the attach (the overlap itself is pinned by the next test).
    let p = replica
        .provision_from(&master, &SnapshotRequest::new(), &AttachRequest::new())
        .await
        .unwrap();
    let staged = p.staged.expect("staged");
    assert!(staged.matches(&p.document));
    assert!(staged.href.starts_with("file:///store/provision-"));
    assert_eq!(replica.attaches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_stage_starts_before_the_snapshot_ends() {
    // One object playing both roles, so the stage sees the snapshot's running flag.
    let both = Arc::new(Scripted {
        staging: true,
        snapshot_delay_ms: 300,
        ..Scripted::default()
    });
    let p = both
        .provision_from(&*both, &SnapshotRequest::new(), &AttachRequest::new())
        .await
        .unwrap();
    assert!(p.staged.is_some());
    assert!(
        both.stage_started_before_snapshot_ended
            .load(Ordering::SeqCst),
        "staging overlaps the snapshot"
    );
}

#[tokio::test]
async fn a_failed_snapshot_cancels_the_staging_and_attaches_nothing() {
    let master = Scripted {
        snapshot_fails: true,
        snapshot_delay_ms: 50,
        ..Scripted::default()
    };
    let replica = Scripted {
        staging: true,
        stage_hangs: true,
        ..Scripted::default()
    };
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        replica.provision_from(&master, &SnapshotRequest::new(), &AttachRequest::new()),
    )
    .await
    .expect("a failed snapshot ends the flow without waiting for the staging")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        replica.stage_cancelled.load(Ordering::SeqCst),
        "staging was dropped"
    );
    assert_eq!(replica.attaches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failed_staging_falls_back_to_a_plain_attach() {
    let master = Scripted::default();
    let replica = Scripted {
        staging: true,
        stage_fails: true,
        ..Scripted::default()
    };
    let p = replica
        .provision_from(
            &master,
            &SnapshotRequest::new().with_snapshot_name("named"),
            &AttachRequest::new(),
        )
        .await
        .unwrap();
    assert!(p.staged.is_none());
    assert_eq!(p.document.dataset.snapshot_href, "file:///store/named.snap");
    assert_eq!(replica.attaches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_staging_the_flow_is_snapshot_then_attach() {
    let master = Scripted::default();
    let replica = Scripted::default();
    let p = replica
        .provision_from(&master, &SnapshotRequest::new(), &AttachRequest::new())
        .await
        .unwrap();
    assert!(p.staged.is_none());
    assert_eq!(replica.attaches.load(Ordering::SeqCst), 1);
}
