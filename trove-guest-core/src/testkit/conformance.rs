//! The backend conformance suite: the contract's lifecycle as reusable async test functions.
//!
//! A backend crate implements [`ConformanceBackend`] for its real test servers and calls each
//! function from a `#[tokio::test]`; the functions assert behaviour (data converges, accounts
//! vanish, bad snapshots are refused) and skip only what the backend's
//! [`Capabilities`] say it cannot do. A new backend runs the same suite.
//!
//! Every function panics with a descriptive message on a failed check, like `assert!`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{ErrorKind, Result};
use crate::store::{LocalSnapshotStore, SnapshotStore};
use crate::strategy::{
    AttachRequest, Capabilities, DemoteOptions, DetachOptions, DetachedReplica,
    EnableMasterOptions, Positioning, ReplicationStrategy, ReplicationStrategyExt, Role,
    SnapshotRequest, StageRequest,
};
use crate::wire::SnapshotDocument;

/// Row count and content checksum of every test table, by table name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(pub BTreeMap<String, TableFingerprint>);

/// One table's row count and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFingerprint {
    /// Number of rows.
    pub rows: u64,
    /// A checksum of the rows' content (for example `CHECKSUM TABLE` or an ordered hash).
    pub checksum: String,
}

impl Fingerprint {
    /// Total rows over all tables.
    pub fn total_rows(&self) -> u64 {
        self.0.values().map(|t| t.rows).sum()
    }
}

/// What the suite needs from a backend's real test servers.
#[async_trait]
pub trait ConformanceBackend: Send + Sync {
    /// A running test server (dropping it stops the server and removes its files).
    type Server: Send + Sync;

    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Starts a fresh, standalone server with the given unique server id.
    async fn start_server(&self, server_id: u32) -> Result<Self::Server>;

    /// The strategy acting on `server`, storing snapshots in `store`.
    fn strategy(
        &self,
        server: &Self::Server,
        store: Arc<dyn SnapshotStore>,
    ) -> Arc<dyn ReplicationStrategy>;

    /// Creates the suite's test tables (at least two) on `server`.
    async fn create_schema(&self, server: &Self::Server) -> Result<()>;

    /// Inserts the rows with ids in `ids` into every test table (each id once per table; the
    /// content is derived from the id so both sides can be compared).
    async fn insert_rows(&self, server: &Self::Server, ids: Range<u64>) -> Result<()>;

    /// Row counts and checksums of every test table.
    async fn fingerprint(&self, server: &Self::Server) -> Result<Fingerprint>;

    /// What the master still holds for `replica` (accounts, slots), described; empty when none.
    async fn replica_traces(
        &self,
        master: &Self::Server,
        replica: &DetachedReplica,
    ) -> Result<Vec<String>>;

    /// Replication state left on a demoted master (binary logging on, our accounts, slots,
    /// config files), described; empty when the server is back to its pre-replication state.
    async fn replication_leftovers(&self, server: &Self::Server) -> Result<Vec<String>>;
}

/// A handle to a background writer inserting consecutive ids into the master.
struct Writer {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Writer {
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task
            .await
            .expect("writer task panicked")
            .expect("background writer failed");
        self.next.load(Ordering::SeqCst)
    }
}

fn spawn_writer<B: ConformanceBackend + 'static>(
    backend: Arc<B>,
    server: Arc<B::Server>,
    from: u64,
) -> Writer
where
    B::Server: 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(from));
    let (s, n) = (stop.clone(), next.clone());
    let task = tokio::spawn(async move {
        while !s.load(Ordering::SeqCst) {
            let a = n.load(Ordering::SeqCst);
            backend.insert_rows(&server, a..a + 20).await?;
            n.store(a + 20, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    });
    Writer { stop, next, task }
}

/// Where the suite keeps its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// A [`LocalSnapshotStore`] in a temporary directory.
    Local,
    /// An S3 [`ObjectSnapshotStore`](crate::store::ObjectSnapshotStore) (segmented, so it can
    /// be followed) on a throwaway moto server ([`super::s3::MotoServer`]).
    #[cfg(feature = "s3")]
    S3,
}

/// The suite's store and what keeps it alive (its directory, or its server).
struct SuiteStore {
    store: Arc<dyn SnapshotStore>,
    _dir: Option<tempfile::TempDir>,
    #[cfg(feature = "s3")]
    s3: Option<(super::s3::MotoServer, crate::store::ObjectSnapshotStore)>,
}

async fn suite_store(kind: StoreKind) -> SuiteStore {
    match kind {
        StoreKind::Local => {
            let dir = tempfile::Builder::new()
                .prefix("tg-store-")
                .tempdir()
                .expect("temp dir for the snapshot store");
            let store = LocalSnapshotStore::new(dir.path()).expect("local snapshot store");
            SuiteStore {
                store: Arc::new(store),
                _dir: Some(dir),
                #[cfg(feature = "s3")]
                s3: None,
            }
        }
        #[cfg(feature = "s3")]
        StoreKind::S3 => {
            let server = super::s3::MotoServer::start()
                .await
                .expect("start the moto S3 server");
            server
                .create_bucket("conformance")
                .await
                .expect("create the bucket");
            let s3 = crate::store::ObjectSnapshotStore::s3(&server.config("conformance", "snaps"))
                .expect("S3 snapshot store");
            s3.check_access().await.expect("S3 store reachable");
            SuiteStore {
                store: Arc::new(s3.clone()),
                _dir: None,
                s3: Some((server, s3)),
            }
        }
    }
}

const CATCH_UP: Duration = Duration::from_secs(60);

struct Pair<B: ConformanceBackend> {
    master: Arc<B::Server>,
    master_strategy: Arc<dyn ReplicationStrategy>,
    snapshot: SnapshotDocument,
    next_id: u64,
    suite: SuiteStore,
    store: Arc<dyn SnapshotStore>,
}

/// A fresh master with the schema and 500 rows, enabled as master, snapshotting into a new
/// temporary local store.
struct FreshMaster<B: ConformanceBackend> {
    store_dir: SuiteStore,
    store: Arc<dyn SnapshotStore>,
    master: Arc<B::Server>,
    strategy: Arc<dyn ReplicationStrategy>,
}

async fn fresh_master<B>(backend: &Arc<B>, kind: StoreKind) -> FreshMaster<B>
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let store_dir = suite_store(kind).await;
    let store = store_dir.store.clone();
    let master = Arc::new(backend.start_server(1).await.expect("start master"));
    backend.create_schema(&master).await.expect("create schema");
    backend
        .insert_rows(&master, 0..500)
        .await
        .expect("rows before the snapshot");
    let strategy = backend.strategy(&master, store.clone());
    strategy
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .expect("enable_as_master");
    FreshMaster {
        store_dir,
        store,
        master,
        strategy,
    }
}

/// Master with 500 rows, a writer running during the snapshot; returns the snapshot taken
/// under writes and the first id not yet written.
async fn master_with_snapshot<B>(backend: &Arc<B>, replica_id: &str, kind: StoreKind) -> Pair<B>
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let FreshMaster {
        store_dir,
        store,
        master,
        strategy: ms,
    } = fresh_master(backend, kind).await;
    let writer = spawn_writer(backend.clone(), master.clone(), 500);
    let snapshot = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id(replica_id))
        .await
        .expect("get_replication_snapshot under writes");
    let next_id = writer.finish().await;
    assert!(
        next_id > 500,
        "the writer wrote nothing during the snapshot"
    );
    snapshot.validate().expect("snapshot document validates");
    Pair {
        master,
        master_strategy: ms,
        snapshot,
        next_id,
        suite: store_dir,
        store,
    }
}

async fn assert_converged<B: ConformanceBackend>(
    backend: &B,
    master: &B::Server,
    replica: &B::Server,
    replica_strategy: &dyn ReplicationStrategy,
    master_strategy: &dyn ReplicationStrategy,
    expected_rows_per_table: u64,
) {
    replica_strategy
        .catch_up_with(master_strategy, CATCH_UP)
        .await
        .expect("replica catches up with the master");
    let m = backend
        .fingerprint(master)
        .await
        .expect("master fingerprint");
    let r = backend
        .fingerprint(replica)
        .await
        .expect("replica fingerprint");
    assert!(m.0.len() >= 2, "the schema has at least two tables");
    for (table, t) in &m.0 {
        assert_eq!(
            t.rows, expected_rows_per_table,
            "master table {table} has every row written before, during and after the snapshot"
        );
    }
    assert_eq!(m, r, "replica data equals master data");
}

/// Rows written before, during and after a snapshot taken under writes all reach a replica
/// attached from it, with the given positioning; checksums are equal. A positioning the
/// backend's capabilities leave out must be refused with [`ErrorKind::Unsupported`].
pub async fn snapshot_under_writes_converges<B>(backend: Arc<B>, positioning: Positioning)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    snapshot_under_writes_converges_in(backend, positioning, StoreKind::Local).await;
}

/// [`snapshot_under_writes_converges`] with snapshots in a store of `kind`.
pub async fn snapshot_under_writes_converges_in<B>(
    backend: Arc<B>,
    positioning: Positioning,
    kind: StoreKind,
) where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let caps = backend.capabilities();
    let supported = match positioning {
        Positioning::Gtid => caps.gtid_positioning,
        Positioning::BinlogFile => caps.file_positioning,
    };
    let pair = master_with_snapshot(&backend, "conf-writes", kind).await;
    let replica = backend.start_server(2).await.expect("start replica");
    let rs = backend.strategy(&replica, pair.store.clone());
    if !supported {
        // Not a silent pass: a positioning the backend does not offer is refused, never
        // replaced by another one.
        let err = rs
            .attach_replication_slave(
                &pair.snapshot,
                &AttachRequest::new().with_positioning(positioning),
            )
            .await
            .expect_err("an unsupported positioning is refused");
        assert_eq!(
            err.kind(),
            ErrorKind::Unsupported,
            "{positioning:?} positioning: got {err}"
        );
        return;
    }
    rs.attach_replication_slave(
        &pair.snapshot,
        &AttachRequest::new().with_positioning(positioning),
    )
    .await
    .expect("attach_replication_slave");
    let after = pair.next_id;
    backend
        .insert_rows(&pair.master, after..after + 300)
        .await
        .expect("rows after attach");
    assert_converged(
        &*backend,
        &pair.master,
        &replica,
        &*rs,
        &*pair.master_strategy,
        after + 300,
    )
    .await;
}

/// Two replicas attached from one snapshot both converge.
pub async fn two_replicas_from_one_snapshot<B>(backend: Arc<B>)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let pair = master_with_snapshot(&backend, "conf-two", StoreKind::Local).await;
    let r1 = backend.start_server(2).await.expect("start replica 1");
    let r2 = backend.start_server(3).await.expect("start replica 2");
    let s1 = backend.strategy(&r1, pair.store.clone());
    let s2 = backend.strategy(&r2, pair.store.clone());
    let req = AttachRequest::new();
    let (a, b) = tokio::join!(
        s1.attach_replication_slave(&pair.snapshot, &req),
        s2.attach_replication_slave(&pair.snapshot, &req)
    );
    a.expect("attach replica 1");
    b.expect("attach replica 2");
    let after = pair.next_id;
    backend
        .insert_rows(&pair.master, after..after + 100)
        .await
        .expect("rows after attach");
    for (r, s) in [(&r1, &s1), (&r2, &s2)] {
        assert_converged(
            &*backend,
            &pair.master,
            r,
            &**s,
            &*pair.master_strategy,
            after + 100,
        )
        .await;
    }
}

/// Detach makes the replica a writable standalone server that no longer follows the master;
/// cleanup on the master removes every trace of it; both are idempotent.
pub async fn detach_then_cleanup_forgets_replica<B>(backend: Arc<B>)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let pair = master_with_snapshot(&backend, "conf-detach", StoreKind::Local).await;
    let replica = backend.start_server(2).await.expect("start replica");
    let rs = backend.strategy(&replica, pair.store.clone());
    rs.attach_replication_slave(&pair.snapshot, &AttachRequest::new())
        .await
        .expect("attach");
    rs.catch_up_with(&*pair.master_strategy, CATCH_UP)
        .await
        .expect("catch up");
    let detached = rs
        .detach_replication_slave(&DetachOptions::new())
        .await
        .expect("detach");
    assert!(
        detached.was_replicating,
        "first detach reports it was replicating"
    );
    let before = backend
        .replica_traces(&pair.master, &detached)
        .await
        .expect("traces before cleanup");
    assert!(
        !before.is_empty(),
        "the master holds an account or slot for the replica before cleanup"
    );
    let again = rs
        .detach_replication_slave(&DetachOptions::new())
        .await
        .expect("second detach is safe");
    assert!(
        !again.was_replicating,
        "second detach reports nothing to do"
    );
    // What the server says, not only that no new row showed up within a short wait (which a
    // slow but still running replication would pass too).
    let status = rs
        .replication_status()
        .await
        .expect("status of the detached replica");
    assert_ne!(
        status.role,
        Some(Role::Replica),
        "the detached server no longer reports itself a replica: {status:?}"
    );
    assert_ne!(
        status.receiver_running,
        Some(true),
        "the detached server receives nothing from the master: {status:?}"
    );

    // The former replica takes writes and no longer receives the master's.
    let fp_before = backend.fingerprint(&replica).await.expect("fingerprint");
    let n = pair.next_id;
    backend
        .insert_rows(&replica, n + 10_000..n + 10_010)
        .await
        .expect("the detached replica accepts writes");
    backend
        .insert_rows(&pair.master, n..n + 50)
        .await
        .expect("master write after detach");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fp_after = backend.fingerprint(&replica).await.expect("fingerprint");
    assert_eq!(
        fp_after.total_rows(),
        fp_before.total_rows() + 10 * fp_before.0.len() as u64,
        "the detached replica has its own write and none of the master's new rows"
    );

    pair.master_strategy
        .cleanup_source_on_replica_detach(&detached)
        .await
        .expect("cleanup on the master");
    pair.master_strategy
        .cleanup_source_on_replica_detach(&detached)
        .await
        .expect("cleanup twice is safe");
    let traces = backend
        .replica_traces(&pair.master, &detached)
        .await
        .expect("traces after cleanup");
    assert!(
        traces.is_empty(),
        "master still references the replica: {traces:?}"
    );
}

/// Demote returns a master to its pre-replication state; twice is safe.
pub async fn demote_restores_pre_replication_state<B>(backend: Arc<B>)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let pair = master_with_snapshot(&backend, "conf-demote", StoreKind::Local).await;
    let left = backend
        .replication_leftovers(&pair.master)
        .await
        .expect("leftovers before demote");
    assert!(!left.is_empty(), "a master has replication state to remove");
    pair.master_strategy
        .demote_replication_master(&DemoteOptions::new())
        .await
        .expect("demote");
    pair.master_strategy
        .demote_replication_master(&DemoteOptions::new())
        .await
        .expect("demote twice is safe");
    let left = backend
        .replication_leftovers(&pair.master)
        .await
        .expect("leftovers after demote");
    assert!(
        left.is_empty(),
        "replication state left after demote: {left:?}"
    );
    let fp = backend
        .fingerprint(&pair.master)
        .await
        .expect("fingerprint");
    assert_eq!(
        fp.0.values().next().map(|t| t.rows),
        Some(pair.next_id),
        "no data lost"
    );
    for (table, t) in &fp.0 {
        assert_eq!(t.rows, pair.next_id, "no data lost in table {table}");
    }
}

/// How a stored snapshot is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// One byte in the middle is flipped.
    FlipByte,
    /// The second half is cut off.
    Truncate,
}

/// Damages the stored data of `snapshot`: the local file, or for S3 a data segment.
async fn damage_stored(snapshot: &SnapshotDocument, damage: Damage, suite: &SuiteStore) {
    #[cfg(feature = "s3")]
    if let Some((_, s3)) = &suite.s3 {
        use futures::StreamExt as _;
        let inner = s3.object_store().clone();
        let mut keys = Vec::new();
        let mut l = inner.list(None);
        while let Some(m) = l.next().await {
            let m = m.expect("list the S3 store");
            if m.location.as_ref().contains(".snap.parts/") {
                keys.push(m.location);
            }
        }
        keys.sort();
        let key = keys
            .first()
            .expect("the snapshot has data segments")
            .clone();
        let mut bytes = inner
            .get(&key)
            .await
            .expect("read a segment")
            .bytes()
            .await
            .expect("read a segment")
            .to_vec();
        match damage {
            Damage::FlipByte => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
            }
            Damage::Truncate => bytes.truncate(bytes.len() / 2),
        }
        inner
            .put(&key, object_store::PutPayload::from(bytes))
            .await
            .expect("damage the segment");
        return;
    }
    let _ = suite;
    let path = snapshot
        .dataset
        .snapshot_href
        .strip_prefix("file://")
        .expect("the suite's store is local");
    let mut bytes = std::fs::read(path).expect("read stored snapshot");
    match damage {
        Damage::FlipByte => {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
        }
        Damage::Truncate => bytes.truncate(bytes.len() / 2),
    }
    std::fs::write(path, &bytes).expect("damage the snapshot");
}

/// A fresh server (id 2) with the schema and rows of its own, and its fingerprint.
async fn replica_with_own_data<B>(backend: &Arc<B>) -> (B::Server, Fingerprint)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let replica = backend.start_server(2).await.expect("start replica");
    backend
        .create_schema(&replica)
        .await
        .expect("replica schema");
    backend
        .insert_rows(&replica, 0..7)
        .await
        .expect("replica's own data");
    let before = backend.fingerprint(&replica).await.expect("fingerprint");
    (replica, before)
}

/// A corrupt or truncated snapshot is refused with an integrity error and the replica's
/// previous data is intact and served.
pub async fn damaged_snapshot_is_refused<B>(backend: Arc<B>, damage: Damage)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    damaged_snapshot_is_refused_in(backend, damage, StoreKind::Local).await;
}

/// [`damaged_snapshot_is_refused`] with snapshots in a store of `kind`.
pub async fn damaged_snapshot_is_refused_in<B>(backend: Arc<B>, damage: Damage, kind: StoreKind)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let pair = master_with_snapshot(&backend, "conf-damage", kind).await;
    damage_stored(&pair.snapshot, damage, &pair.suite).await;
    let (replica, before) = replica_with_own_data(&backend).await;
    let rs = backend.strategy(&replica, pair.store.clone());
    let err = rs
        .attach_replication_slave(
            &pair.snapshot,
            &AttachRequest::new().with_timeout(Duration::from_secs(60)),
        )
        .await
        .expect_err("a damaged snapshot must be refused");
    assert_eq!(err.kind(), ErrorKind::Integrity, "{damage:?}: got {err}");
    let after = backend
        .fingerprint(&replica)
        .await
        .expect("the replica still serves its previous data");
    assert_eq!(before, after, "previous data directory intact");
}

/// `wait_for_txn` returns once the replica has the master's latest transaction and times out
/// with [`ErrorKind::Timeout`] for one it will never get.
pub async fn wait_for_txn_is_bounded<B>(backend: Arc<B>)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let pair = master_with_snapshot(&backend, "conf-wait", StoreKind::Local).await;
    let replica = backend.start_server(2).await.expect("start replica");
    let rs = backend.strategy(&replica, pair.store.clone());
    rs.attach_replication_slave(&pair.snapshot, &AttachRequest::new())
        .await
        .expect("attach");
    let n = pair.next_id;
    backend
        .insert_rows(&pair.master, n..n + 10)
        .await
        .expect("write");
    let txn = pair
        .master_strategy
        .get_latest_txn_id()
        .await
        .expect("latest txn");
    rs.wait_for_txn(&txn, CATCH_UP)
        .await
        .expect("replica reaches the master's txn");

    rs.detach_replication_slave(&DetachOptions::new())
        .await
        .expect("detach");
    backend
        .insert_rows(&pair.master, n + 10..n + 20)
        .await
        .expect("write after detach");
    let unreachable = pair
        .master_strategy
        .get_latest_txn_id()
        .await
        .expect("latest txn");
    let started = std::time::Instant::now();
    let err = rs
        .wait_for_txn(&unreachable, Duration::from_secs(2))
        .await
        .expect_err("a detached replica never reaches the master's new txn");
    assert_eq!(err.kind(), ErrorKind::Timeout, "got {err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the wait is bounded by its timeout"
    );
}

/// [`ReplicationStrategyExt::provision_from`] under writes: the replica stages the snapshot while
/// the master takes it (when the backend has [`Capabilities::staging`]; otherwise the flow is
/// snapshot then attach), and rows written before, during and after all reach it.
pub async fn provision_overlaps_snapshot_and_restore<B>(backend: Arc<B>)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    provision_overlaps_snapshot_and_restore_in(backend, StoreKind::Local).await;
}

/// [`provision_overlaps_snapshot_and_restore`] with snapshots in a store of `kind` (with S3,
/// the replica follows the master's segmented upload).
pub async fn provision_overlaps_snapshot_and_restore_in<B>(backend: Arc<B>, kind: StoreKind)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let caps = backend.capabilities();
    let FreshMaster {
        store_dir: _store_dir,
        store,
        master,
        strategy: ms,
    } = fresh_master(&backend, kind).await;
    let replica = backend.start_server(2).await.expect("start replica");
    let rs = backend.strategy(&replica, store.clone());
    let writer = spawn_writer(backend.clone(), master.clone(), 500);
    let provisioned = rs
        .provision_from(
            &*ms,
            &SnapshotRequest::new().with_replica_id("conf-provision"),
            &AttachRequest::new(),
        )
        .await
        .expect("provision_from under writes");
    let next = writer.finish().await;
    assert!(next > 500, "the writer wrote nothing during provisioning");
    match &provisioned.staged {
        Some(staged) if caps.staging => {
            assert!(
                staged.matches(&provisioned.document),
                "the staged copy is the snapshot taken: {staged:?}"
            );
            assert!(!staged.reused, "nothing was staged before: {staged:?}");
        }
        Some(staged) => panic!("a backend without staging reported a staged copy: {staged:?}"),
        None if caps.staging => panic!("staging was expected to overlap the snapshot"),
        None => {}
    }
    backend
        .insert_rows(&master, next..next + 200)
        .await
        .expect("rows after provisioning");
    assert_converged(&*backend, &master, &replica, &*rs, &*ms, next + 200).await;
}

/// A staged snapshot is used only by an attach whose document names it: staging twice reuses
/// the staged copy, and an attach from a later snapshot of the same master restores that one
/// (a replica built from the older copy at the newer position would miss the rows between).
/// Skipped for backends without [`Capabilities::staging`], which must refuse staging with
/// [`ErrorKind::Unsupported`].
pub async fn staged_snapshot_serves_only_its_document<B>(backend: Arc<B>)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let caps = backend.capabilities();
    let pair = master_with_snapshot(&backend, "conf-stage", StoreKind::Local).await;
    let replica = backend.start_server(2).await.expect("start replica");
    let rs = backend.strategy(&replica, pair.store.clone());
    let href = pair.snapshot.dataset.snapshot_href.clone();
    if !caps.staging {
        let err = rs
            .stage_snapshot(&StageRequest::new(href))
            .await
            .expect_err("a backend without staging refuses it");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "got {err}");
        return;
    }
    let first = rs
        .stage_snapshot(&StageRequest::new(href.clone()))
        .await
        .expect("stage the first snapshot");
    assert!(first.matches(&pair.snapshot), "{first:?}");
    assert!(!first.reused, "{first:?}");
    let again = rs
        .stage_snapshot(&StageRequest::new(href.clone()))
        .await
        .expect("stage it again");
    assert!(
        again.reused,
        "staging the staged snapshot again reads nothing: {again:?}"
    );

    // Rows only a later snapshot holds, then that snapshot.
    let n = pair.next_id;
    backend
        .insert_rows(&pair.master, n..n + 100)
        .await
        .expect("rows between the snapshots");
    let later = pair
        .master_strategy
        .get_replication_snapshot(
            &SnapshotRequest::new()
                .with_replica_id("conf-stage")
                .with_snapshot_name("conf-stage-later"),
        )
        .await
        .expect("the later snapshot");
    assert_ne!(later.dataset.snapshot_href, href);
    assert!(
        !first.matches(&later),
        "the staged copy is not the later snapshot"
    );
    rs.attach_replication_slave(&later, &AttachRequest::new())
        .await
        .expect("attach from the later snapshot");
    backend
        .insert_rows(&pair.master, n + 100..n + 150)
        .await
        .expect("rows after attach");
    assert_converged(
        &*backend,
        &pair.master,
        &replica,
        &*rs,
        &*pair.master_strategy,
        n + 150,
    )
    .await;
}

/// Staging a damaged snapshot fails with an integrity error and leaves the replica serving its
/// own data; the attach that follows refuses the snapshot too. Without
/// [`Capabilities::staging`], staging must be refused with [`ErrorKind::Unsupported`].
pub async fn damaged_snapshot_is_never_staged<B>(backend: Arc<B>)
where
    B: ConformanceBackend + 'static,
    B::Server: 'static,
{
    let pair = master_with_snapshot(&backend, "conf-stage-damage", StoreKind::Local).await;
    let href = pair.snapshot.dataset.snapshot_href.clone();
    if !backend.capabilities().staging {
        // Not a silent pass: without the capability, staging is refused outright.
        let replica = backend.start_server(2).await.expect("start replica");
        let rs = backend.strategy(&replica, pair.store.clone());
        let err = rs
            .stage_snapshot(&StageRequest::new(href))
            .await
            .expect_err("a backend without staging refuses it");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "got {err}");
        return;
    }
    damage_stored(&pair.snapshot, Damage::FlipByte, &pair.suite).await;
    let (replica, before) = replica_with_own_data(&backend).await;
    let rs = backend.strategy(&replica, pair.store.clone());
    let err = rs
        .stage_snapshot(&StageRequest::new(href))
        .await
        .expect_err("a damaged snapshot is never staged");
    assert_eq!(err.kind(), ErrorKind::Integrity, "got {err}");
    let err = rs
        .attach_replication_slave(
            &pair.snapshot,
            &AttachRequest::new().with_timeout(Duration::from_secs(60)),
        )
        .await
        .expect_err("and never attached");
    assert_eq!(err.kind(), ErrorKind::Integrity, "got {err}");
    let after = backend
        .fingerprint(&replica)
        .await
        .expect("the replica still serves its previous data");
    assert_eq!(before, after, "previous data directory intact");
}
