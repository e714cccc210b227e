//! Faults outside the failpoint matrix, against real servers served by real `guest_agent`
//! processes: the replica's server restarted while it catches up, the replica→master link cut
//! while the master takes writes, and the master's server killed in the middle of a snapshot.
//!
//! The link is cut for `TROVE_GUEST_MATRIX_CUT_SECS` seconds (default 30).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use trove_guest_agent::api::{AttachQuery, SnapshotCall};
use trove_guest_agent::testing::faults::{Instance, InstanceOptions};
use trove_guest_core::DatastoreKind;
use trove_guest_core::testkit::TcpProxy;

const AGENT: &str = env!("CARGO_BIN_EXE_guest_agent");

/// The agent binary: `TROVE_GUEST_AGENT_BIN` when set (a copy made right after the build, when
/// a shared target directory may be rebuilt by others meanwhile), else the one cargo built.
fn agent() -> std::path::PathBuf {
    std::env::var_os("TROVE_GUEST_AGENT_BIN").map_or_else(|| AGENT.into(), Into::into)
}
const MASTER_ROWS: u64 = 3000;
/// Rows the background writer adds start here.
const WRITES_FROM: u64 = 100_000;

fn cut_duration() -> Duration {
    std::env::var("TROVE_GUEST_MATRIX_CUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs)
}

fn store() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tg-scenario-store-")
        .tempdir()
        .expect("store directory")
}

/// A master with sample data and binary logging / WAL senders on, served by its agent.
async fn master(kind: DatastoreKind, store: &Path, proxy_port: Option<u16>) -> Instance {
    let mut m = Instance::create(kind, InstanceOptions::new(agent(), 1, store))
        .await
        .unwrap_or_else(|e| panic!("start a {kind} master: {e}"));
    if let Some(p) = proxy_port {
        m.advertise_through(p).unwrap();
    }
    m.start_agent(&[]).await.expect("master agent serves");
    m.load(0..MASTER_ROWS).await.expect("sample data");
    m.client().enable_master().await.expect("enable master");
    m
}

/// A replica attached to `master` through its agent.
async fn replica(master: &Instance, store: &Path) -> Instance {
    let doc = master
        .client()
        .snapshot(
            &SnapshotCall {
                replica_id: Some("scenario-replica".into()),
                ..SnapshotCall::default()
            },
            &mut |_| {},
        )
        .await
        .expect("snapshot");
    let mut r = Instance::create(master.kind(), InstanceOptions::new(agent(), 2, store))
        .await
        .expect("start the replica's server");
    r.start_agent(&[]).await.expect("replica agent serves");
    r.client()
        .attach(&doc, &AttachQuery::default(), &mut |_| {})
        .await
        .expect("attach");
    r
}

/// Inserts rows into the master until stopped; returns how many it wrote.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<trove_guest_core::Result<()>>,
}

impl Writer {
    async fn start(master: &Instance) -> Self {
        let db = master.sample().await.expect("connect to the master");
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (s, w) = (stop.clone(), written.clone());
        let task = tokio::spawn(async move {
            let mut next = WRITES_FROM;
            while !s.load(Ordering::SeqCst) {
                db.insert_rows(next..next + 20).await?;
                next += 20;
                w.store(next - WRITES_FROM, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            db.close().await;
            Ok(())
        });
        Writer {
            stop,
            written,
            task,
        }
    }

    /// Waits (bounded) until at least `rows` more rows were written.
    async fn wait_for_more(&self, rows: u64) {
        let from = self.written.load(Ordering::SeqCst);
        let started = Instant::now();
        while self.written.load(Ordering::SeqCst) < from + rows {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the master stopped taking writes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task
            .await
            .expect("writer task")
            .expect("every write on the master succeeded");
        self.written.load(Ordering::SeqCst)
    }
}

/// The replica applied everything the master has, and holds the same rows.
async fn converged(master: &Instance, replica: &Instance, written: u64) {
    let txn = master.client().latest_txn().await.expect("master position");
    replica
        .client()
        .wait_for_txn(&txn, Duration::from_secs(180))
        .await
        .expect("the replica catches up with the master");
    let want = master.fingerprint().await.expect("master fingerprint");
    let got = replica.fingerprint().await.expect("replica fingerprint");
    assert_eq!(
        want.0["products"].rows,
        MASTER_ROWS + written,
        "the writer's rows are on the master"
    );
    assert_eq!(got, want, "the replica holds exactly the master's rows");
}

async fn replica_restarted_during_catch_up(kind: DatastoreKind) {
    let dir = store();
    let m = master(kind, dir.path(), None).await;
    let mut r = replica(&m, dir.path()).await;
    let writer = Writer::start(&m).await;
    writer.wait_for_more(200).await;
    // The replica's server goes down and comes back (its agent stops it on SIGTERM and the
    // next agent starts it) while the master keeps writing.
    r.stop_agent().await;
    assert_eq!(r.server_pid(), None, "the replica's server is down");
    writer.wait_for_more(200).await;
    r.start_agent(&[])
        .await
        .expect("the replica's agent serves again");
    writer.wait_for_more(200).await;
    let written = writer.stop().await;
    converged(&m, &r, written).await;
}

async fn link_cut_while_the_master_takes_writes(kind: DatastoreKind) {
    let dir = store();
    // The proxy forwards to the master's server; its port is known once the server exists.
    let mut m = Instance::create(kind, InstanceOptions::new(agent(), 1, dir.path()))
        .await
        .unwrap_or_else(|e| panic!("start a {kind} master: {e}"));
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", m.server().port()).parse().unwrap())
        .await
        .expect("proxy");
    m.advertise_through(proxy.port()).unwrap();
    m.start_agent(&[]).await.expect("master agent serves");
    m.load(0..MASTER_ROWS).await.expect("sample data");
    m.client().enable_master().await.expect("enable master");
    let r = replica(&m, dir.path()).await;
    let status = r.client().status().await.expect("replica status");
    assert_eq!(
        status.master.map(|a| a.port),
        Some(proxy.port()),
        "the replica reaches its master through the proxy"
    );

    let writer = Writer::start(&m).await;
    writer.wait_for_more(100).await;
    proxy.set_blackhole(true);
    let cut = cut_duration();
    let started = Instant::now();
    while started.elapsed() < cut {
        writer.wait_for_more(20).await;
    }
    let on_master = m.sample().await.unwrap().count("products").await.unwrap();
    let on_replica = r.sample().await.unwrap().count("products").await.unwrap();
    assert!(
        on_replica < on_master,
        "the cut link let rows through: {on_replica} on the replica, {on_master} on the master"
    );
    proxy.set_blackhole(false);
    writer.wait_for_more(100).await;
    let written = writer.stop().await;
    converged(&m, &r, written).await;
}

async fn master_killed_mid_snapshot(kind: DatastoreKind) {
    let dir = store();
    let mut m = master(kind, dir.path(), None).await;
    // Enough data that the upload is still running when the server dies.
    m.load(MASTER_ROWS..40_000).await.expect("more sample data");
    let before = m.fingerprint().await.expect("fingerprint");
    let call = SnapshotCall {
        replica_id: Some("scenario-replica".into()),
        snapshot_name: Some("killed-mid-snapshot".into()),
        ..SnapshotCall::default()
    };
    let client = m.client().clone();
    let c = call.clone();
    let snapshot = tokio::spawn(async move { client.snapshot(&c, &mut |_| {}).await });
    // Mid-upload: the store has the upload's partial file.
    let started = Instant::now();
    let partial = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
    };
    while !partial() {
        assert!(
            !snapshot.is_finished(),
            "the snapshot finished before it could be interrupted: use more data"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the upload never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = m.server_pid().expect("the master's server runs");
    killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill the master's server");
    let err = tokio::time::timeout(Duration::from_secs(180), snapshot)
        .await
        .expect("the snapshot call returns once its server is gone")
        .expect("snapshot task")
        .expect_err("a snapshot whose server died must fail");
    let kind_of = err.kind().map(str::to_owned);
    assert!(
        matches!(
            kind_of.as_deref(),
            Some("tool_failed" | "datastore" | "service" | "io")
        ),
        "a typed error: {err}"
    );
    // No snapshot of that name is visible, and nothing of the upload is left.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("killed-mid-snapshot") || n.starts_with(".partial-")),
        "store after the failed snapshot: {names:?}"
    );

    // The agent restarts (and its server with it); the same call then succeeds.
    m.stop_agent().await;
    m.start_agent(&[])
        .await
        .expect("the master's agent serves again");
    assert_eq!(
        m.fingerprint().await.unwrap(),
        before,
        "the master kept its data"
    );
    let doc = m
        .client()
        .snapshot(&call, &mut |_| {})
        .await
        .expect("the retried snapshot succeeds");
    let size = std::fs::metadata(
        doc.dataset
            .snapshot_href
            .strip_prefix("file://")
            .expect("a file:// href"),
    )
    .expect("the snapshot is in the store")
    .len();
    assert_eq!(Some(size), doc.dataset.size_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replica_restarted_during_catch_up_resumes_and_loses_nothing() {
    replica_restarted_during_catch_up(DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_replica_restarted_during_catch_up_resumes_and_loses_nothing() {
    replica_restarted_during_catch_up(DatastoreKind::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replica_cut_off_from_its_master_resumes_and_loses_nothing() {
    link_cut_while_the_master_takes_writes(DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_replica_cut_off_from_its_master_resumes_and_loses_nothing() {
    link_cut_while_the_master_takes_writes(DatastoreKind::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_master_killed_mid_snapshot_fails_typed_leaves_nothing_and_retry_works() {
    master_killed_mid_snapshot(DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_master_killed_mid_snapshot_fails_typed_leaves_nothing_and_retry_works() {
    master_killed_mid_snapshot(DatastoreKind::Postgresql).await;
}
