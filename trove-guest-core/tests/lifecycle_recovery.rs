//! The core lifecycle against a scripted datastore: a file-only "server" whose data directory
//! holds one file naming its contents. Every journaled step of an attach is cut short the way
//! a killed process leaves it, then recovered; the server must serve its old data or the
//! complete new one, never a mixture, with nothing left in the work directory. (The same
//! matrix runs live against MariaDB and PostgreSQL with real SIGKILLs in the workspace tests.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use trove_guest_core::lifecycle::{
    self, JournalEntry, Operation, RecoveryAction, RestoreHooks, Step, WorkLayout,
};
use trove_guest_core::wire::{Dataset, MasterAddress};
use trove_guest_core::{
    AdminConnection, AttachRequest, DatastoreHandle, DatastoreKind, Error, LocalSnapshotStore,
    Progress, RecoverOptions, ReplicationPosition, Result, Secret, ServiceControl, ServiceStatus,
    SnapshotDocument, SnapshotStore, StageRequest,
};

/// A service that only records whether it "runs", and refuses to start on a data directory
/// that is missing or holds a mixture.
#[derive(Debug)]
struct FakeService {
    data: PathBuf,
    running: AtomicBool,
    starts: AtomicU32,
}

#[async_trait]
impl ServiceControl for FakeService {
    async fn start(&self) -> Result<()> {
        let content =
            std::fs::read_to_string(self.data.join("CONTENT")).map_err(|e| Error::Service {
                message: format!("no data directory to start on: {e}"),
            })?;
        if content.contains('+') {
            return Err(Error::Service {
                message: "a mixture".into(),
            });
        }
        self.running.store(true, Ordering::SeqCst);
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn stop(&self) -> Result<()> {
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }
    async fn status(&self) -> Result<ServiceStatus> {
        Ok(if self.running.load(Ordering::SeqCst) {
            ServiceStatus::Running
        } else {
            ServiceStatus::Stopped
        })
    }
}

struct Fake {
    handle: DatastoreHandle,
    store: LocalSnapshotStore,
    service: Arc<FakeService>,
    /// Make `replicate` fail.
    refuse_replication: AtomicBool,
    conf: PathBuf,
}

#[async_trait]
impl RestoreHooks for Fake {
    type Plan = ();
    fn handle(&self) -> &DatastoreHandle {
        &self.handle
    }
    fn store(&self) -> &dyn SnapshotStore {
        &self.store
    }
    async fn extract(
        &self,
        _href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        _total: Option<u64>,
        dir: &Path,
        _progress: &Progress,
    ) -> Result<u64> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::from_read("read", e))?;
        std::fs::write(dir.join("CONTENT"), &bytes).unwrap();
        Ok(bytes.len() as u64)
    }
    async fn prepare(&self, _href: &str, _dir: &Path, _progress: &Progress) -> Result<()> {
        Ok(())
    }
    fn check_restored(&self, _plan: &(), _dir: &Path) -> Result<()> {
        Ok(())
    }
    fn config_files(&self) -> Vec<PathBuf> {
        vec![self.conf.clone()]
    }
    async fn configure(&self, _plan: &(), _previous: &Path, _staged: bool) -> Result<()> {
        std::fs::write(&self.conf, "replica of m\n").unwrap();
        Ok(())
    }
    async fn start(&self, _plan: &()) -> Result<()> {
        self.handle.service.start().await
    }
    async fn replicate(
        &self,
        _plan: &(),
        timeout: Duration,
        _progress: &Progress,
    ) -> Result<Option<ReplicationPosition>> {
        if self.refuse_replication.load(Ordering::SeqCst) {
            return Err(Error::timeout("replication", timeout));
        }
        Ok(None)
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    fake: Fake,
    doc: SnapshotDocument,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("CONTENT"), "old").unwrap();
    let conf = dir.path().join("replica.cnf");
    std::fs::write(&conf, "standalone\n").unwrap();
    let service = Arc::new(FakeService {
        data: data.clone(),
        running: AtomicBool::new(true),
        starts: AtomicU32::new(0),
    });
    let handle = DatastoreHandle::new(
        AdminConnection::new("127.0.0.1", 1, "admin", Secret::new("pw")),
        &data,
        dir.path(),
        service.clone(),
    )
    .with_work_dir(dir.path().join("work"));
    let store = LocalSnapshotStore::new(dir.path().join("store")).unwrap();
    let mut body: &[u8] = b"new";
    let stored = store
        .put("s1", &mut body, &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let doc = SnapshotDocument {
        master: MasterAddress {
            host: "127.0.0.1".into(),
            port: 1,
        },
        dataset: Dataset {
            datastore: DatastoreKind::Mariadb,
            datastore_version: "10.11".into(),
            dataset_size: 1,
            snapshot_href: stored.href.clone(),
            size_bytes: Some(stored.size),
            sha256: Some(stored.sha256.clone()),
            server_version: None,
            format: None,
            compression: None,
        },
        binlog_position: None,
        wal_position: None,
        position: None,
        replication: None,
        extra: serde_json::Map::new(),
    };
    Setup {
        _dir: dir,
        fake: Fake {
            handle,
            store,
            service,
            refuse_replication: AtomicBool::new(false),
            conf,
        },
        doc,
    }
}

fn content(f: &Fake) -> String {
    std::fs::read_to_string(f.handle.data_dir.join("CONTENT")).unwrap()
}

fn work_dir_entries(f: &Fake) -> Vec<String> {
    std::fs::read_dir(&f.handle.work_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_complete_attach_serves_the_new_data_and_leaves_nothing_behind() {
    let s = setup().await;
    lifecycle::attach(&s.fake, &(), &s.doc, &AttachRequest::new())
        .await
        .unwrap();
    assert_eq!(content(&s.fake), "new");
    assert_eq!(
        std::fs::read_to_string(&s.fake.conf).unwrap(),
        "replica of m\n"
    );
    assert!(
        work_dir_entries(&s.fake).is_empty(),
        "{:?}",
        work_dir_entries(&s.fake)
    );
    assert_eq!(
        s.fake.service.status().await.unwrap(),
        ServiceStatus::Running
    );
}

#[tokio::test]
async fn an_attach_that_cannot_replicate_puts_the_old_data_and_configuration_back() {
    let s = setup().await;
    s.fake.refuse_replication.store(true, Ordering::SeqCst);
    let err = lifecycle::attach(&s.fake, &(), &s.doc, &AttachRequest::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("put back"), "{err}");
    assert_eq!(content(&s.fake), "old");
    assert_eq!(
        std::fs::read_to_string(&s.fake.conf).unwrap(),
        "standalone\n"
    );
    assert!(
        work_dir_entries(&s.fake).is_empty(),
        "{:?}",
        work_dir_entries(&s.fake)
    );
    assert_eq!(
        s.fake.service.status().await.unwrap(),
        ServiceStatus::Running
    );
}

#[tokio::test]
async fn a_huge_timeout_does_not_overflow_the_deadline() {
    let s = setup().await;
    let req = AttachRequest::new().with_timeout(Duration::from_secs(u64::MAX));
    lifecycle::attach(&s.fake, &(), &s.doc, &req).await.unwrap();
    assert_eq!(content(&s.fake), "new");
    let _ = trove_guest_core::deadline(Duration::MAX);
}

/// Lays the files out as a process killed right after journaling `step` leaves them.
fn crash_at(f: &Fake, step: Step) {
    let layout = WorkLayout::new(&f.handle.work_dir);
    std::fs::create_dir_all(layout.work_dir()).unwrap();
    let staging = layout.staging();
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("CONTENT"), "new").unwrap();
    let mut entry = JournalEntry::new(Operation::Attach).with_href("file:///x");
    if step >= Step::Stopping {
        // The saved configuration, and the server stopped.
        std::fs::create_dir_all(layout.saved()).unwrap();
        std::fs::write(layout.saved().join("0-replica.cnf"), "standalone\n").unwrap();
        entry.saved = vec![lifecycle::SavedFile {
            path: f.conf.clone(),
            existed: true,
            copy: "0-replica.cnf".into(),
            mode: 0o644,
            owner: None,
        }];
        entry.server_stopped = true;
        f.service.running.store(false, Ordering::SeqCst);
    }
    if step >= Step::Swapping {
        // Old data aside, the restored data in place (the second rename done).
        std::fs::rename(&f.handle.data_dir, layout.old_data()).unwrap();
        std::fs::rename(&staging, &f.handle.data_dir).unwrap();
        std::fs::write(&f.conf, "replica of m\n").unwrap();
    }
    if step >= Step::Starting {
        f.service.running.store(true, Ordering::SeqCst);
    }
    entry.step = step;
    layout.journal().write(&entry).unwrap();
}

#[tokio::test]
async fn recovery_from_each_step_serves_old_or_complete_new_data_and_sweeps_everything() {
    for (step, expect) in [
        (Step::Begun, "old"),
        (Step::Stopping, "old"),
        (Step::Swapping, "old"),
        (Step::Starting, "old"),
        (Step::Replicating, "new"),
    ] {
        let s = setup().await;
        crash_at(&s.fake, step);
        let report = lifecycle::recover(&s.fake, &RecoverOptions::new())
            .await
            .unwrap_or_else(|e| panic!("recover at {step}: {e}"));
        assert_eq!(content(&s.fake), expect, "after a crash at {step}");
        let conf = std::fs::read_to_string(&s.fake.conf).unwrap();
        if expect == "old" {
            assert_eq!(conf, "standalone\n", "configuration put back after {step}");
        }
        assert!(
            work_dir_entries(&s.fake).is_empty(),
            "leftovers after {step}: {:?}",
            work_dir_entries(&s.fake)
        );
        assert_eq!(
            s.fake.service.status().await.unwrap(),
            ServiceStatus::Running,
            "running after {step}"
        );
        let rolled = report.actions.iter().any(|a| {
            matches!(
                a,
                RecoveryAction::RolledBack { .. } | RecoveryAction::RolledForward { .. }
            )
        });
        assert!(rolled, "{step}: {:?}", report.actions);
        let again = lifecycle::recover(&s.fake, &RecoverOptions::new())
            .await
            .unwrap();
        assert!(
            again.is_empty(),
            "recovery is idempotent: {:?}",
            again.actions
        );
        // The retried attach succeeds.
        lifecycle::attach(&s.fake, &(), &s.doc, &AttachRequest::new())
            .await
            .unwrap();
        assert_eq!(content(&s.fake), "new");
    }
}

#[tokio::test]
async fn recovery_finishes_a_swap_cut_between_its_two_renames() {
    let s = setup().await;
    crash_at(&s.fake, Step::Stopping);
    let layout = WorkLayout::new(&s.fake.handle.work_dir);
    let mut entry = layout.journal().read().unwrap().unwrap();
    entry.step = Step::Swapping;
    layout.journal().write(&entry).unwrap();
    // Only the first rename happened: no data directory at all.
    std::fs::rename(&s.fake.handle.data_dir, layout.old_data()).unwrap();
    lifecycle::recover(&s.fake, &RecoverOptions::new())
        .await
        .unwrap();
    assert_eq!(content(&s.fake), "old");
    assert!(work_dir_entries(&s.fake).is_empty());
}

#[tokio::test]
async fn recovery_keeps_a_finished_staged_copy_and_sweeps_an_unfinished_one() {
    let s = setup().await;
    let href = s.doc.dataset.snapshot_href.clone();
    lifecycle::stage(&s.fake, &StageRequest::new(&href))
        .await
        .unwrap();
    let before = work_dir_entries(&s.fake);
    let report = lifecycle::recover(&s.fake, &RecoverOptions::new())
        .await
        .unwrap();
    assert!(report.is_empty(), "{:?}", report.actions);
    assert_eq!(work_dir_entries(&s.fake), before, "the staged copy stays");
    // A stage cut short: a journal, a staging directory, no marker.
    let layout = WorkLayout::new(&s.fake.handle.work_dir);
    layout.marker().remove().unwrap();
    layout
        .journal()
        .write(&JournalEntry::new(Operation::Stage).with_href(href))
        .unwrap();
    lifecycle::recover(&s.fake, &RecoverOptions::new())
        .await
        .unwrap();
    assert!(
        work_dir_entries(&s.fake).is_empty(),
        "{:?}",
        work_dir_entries(&s.fake)
    );
    assert_eq!(content(&s.fake), "old", "staging never touches the server");
}

#[tokio::test]
async fn recovery_removes_leftovers_of_earlier_releases_and_secret_files() {
    let s = setup().await;
    let work = &s.fake.handle.work_dir;
    for d in [
        ".tg-restore",
        ".tg-pg-staging-abc",
        ".tg-secret-xyz",
        ".tg-backup-1",
    ] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    std::fs::write(work.join("unrelated"), "kept").unwrap();
    lifecycle::recover(&s.fake, &RecoverOptions::new())
        .await
        .unwrap();
    assert_eq!(work_dir_entries(&s.fake), ["unrelated"]);
    // Younger than the grace period: kept.
    std::fs::create_dir_all(work.join(".tg-secret-new")).unwrap();
    lifecycle::recover(
        &s.fake,
        &RecoverOptions::new().with_grace(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert!(work.join(".tg-secret-new").exists());
}

#[tokio::test]
async fn a_damaged_snapshot_leaves_the_server_and_work_directory_untouched() {
    let s = setup().await;
    let mut doc = s.doc.clone();
    doc.dataset.sha256 = Some("0".repeat(64));
    let err = lifecycle::attach(&s.fake, &(), &doc, &AttachRequest::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert_eq!(content(&s.fake), "old");
    assert_eq!(
        s.fake.service.starts.load(Ordering::SeqCst),
        0,
        "never restarted"
    );
    assert!(work_dir_entries(&s.fake).is_empty());
}
