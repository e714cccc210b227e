//! The provisioning benchmark behind the `bench` binary: how long it takes to build a replica of
//! a master holding a given amount of data, measured side by side on the same data in one run.
//!
//! For each datastore the benchmark starts a fresh master (the backend's testkit), loads the data, and
//! then repeats every method `reps` times, each time on a fresh replica server:
//!
//! * **raw tools**, the physical limit of the approach: `mariabackup --backup --stream=xbstream
//!   | mbstream -x`, `mariabackup --prepare`, move into place, start, `CHANGE MASTER TO` by hand
//!   (PostgreSQL: `pg_basebackup -X stream` into the target directory, start as standby);
//! * **trove-guest**: `ReplicationStrategyExt::provision_from`, i.e. `get_replication_snapshot`
//!   into a local snapshot store while the replica stages it (`stage_snapshot` following the
//!   upload), then `attach_replication_slave` until the replica applied the snapshot position,
//!   in an agent process of its own (see [`agent`]) so its peak memory is measured apart;
//! * variants: single-threaded backup (`--parallel=1`), the two calls one after the other (no
//!   overlap; each in its own agent process), zstd compression in the store
//!   ([`trove_guest_core::store::ZstdSnapshotStore`]), and a restore from a complete download;
//! * a **Trove-style pipeline**: backup through single-threaded `gzip` into a file, then
//!   `gunzip | extract`, prepare, start;
//! * **logical**: `mariadb-dump --single-transaction --master-data=2 | mariadb` then
//!   replication from the dump's coordinates (`pg_dump | psql`).
//!
//! With [`BenchOptions::two_host`] the master's side of every row runs on one CPU and the
//! replica's side on the other ([`pin`]); [`BenchOptions::schema`] picks the data
//! ([`dataset::Schema`]: one wide table, or sysbench-/pgbench-like tables with secondary indexes).
//!
//! Repetitions rotate the order of the rows, and the master's files are read into the page cache
//! once before the first row, so no row pays for a cold cache or always runs first.
//!
//! Each sample records wall time, CPU seconds (this process, the tools it ran, and the server
//! processes involved: see [`usage::Meter`]), per-phase times and, for trove-guest, the agents'
//! peak resident memory. [`report`] turns medians into the table.

pub mod agent;
pub mod dataset;
pub mod download_first;
pub mod failover;
pub mod machine;
mod mariadb;
pub mod pin;
pub mod pipe;
mod postgres;
pub mod report;
pub mod usage;

use std::path::PathBuf;
use std::time::Duration;

use trove_guest_core::{
    DatastoreKind, DetachedReplica, EnableMasterOptions, Error, LocalSnapshotStore, Result, Secret,
    SharedStrategy, SnapshotDocument, SnapshotStore,
};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

use agent::{AgentRequest, HandleSpec, StoreSpec, run_child};
use dataset::dir_bytes;
use machine::Machine;
use report::{DatastoreReport, Report, Row, RowRole, Sample};
use usage::{Cost, group_ticks};

use trove_guest_agent::testing::testbed::TestServer;

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BenchOptions {
    /// The datastores, in order.
    pub datastores: Vec<DatastoreKind>,
    /// Data to load on each master, in bytes (table and indexes).
    pub target_bytes: u64,
    /// Repetitions of each row (the median is reported).
    pub reps: u32,
    /// Also run the raw and trove-guest rows with the backup tool's `--parallel=N` (MariaDB).
    pub parallel: Option<u32>,
    /// Also run trove-guest with the zstd-compressing store.
    pub zstd: bool,
    /// Also run trove-guest restoring from a complete download (no overlap).
    pub download_first: bool,
    /// Also run trove-guest with an S3 store on a local moto server (`testkit::s3`).
    pub s3: bool,
    /// Scratch directory (snapshot stores, pipeline files); must be on the servers' filesystem
    /// for the numbers to mean what they say.
    pub scratch: PathBuf,
    /// This program, started as `exe agent` for the trove-guest rows.
    pub exe: PathBuf,
    /// Bytes written by the disk test.
    pub disk_test_bytes: u64,
    /// Run only the rows whose method name contains one of these, or is exactly the text after
    /// a leading `=` (the raw-tools reference row always runs); empty runs every row.
    pub only: Vec<String>,
    /// The two-host mode: the master's side of every row on one CPU, the replica's on the
    /// other (see [`pin`]).
    pub two_host: bool,
    /// The data loaded on each master.
    pub schema: dataset::Schema,
    /// The command line, for the report.
    pub command: String,
}

impl BenchOptions {
    /// Defaults: both datastores, 1 GiB, 3 repetitions, `--parallel=2`, zstd on.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when this program's path cannot be found.
    pub fn new() -> Result<Self> {
        Ok(BenchOptions {
            datastores: vec![DatastoreKind::Mariadb, DatastoreKind::Postgresql],
            target_bytes: 1 << 30,
            reps: 3,
            parallel: Some(2),
            zstd: true,
            download_first: true,
            s3: true,
            scratch: std::env::temp_dir(),
            exe: std::env::current_exe().map_err(|e| Error::io("find this program", e))?,
            disk_test_bytes: 1 << 30,
            only: Vec::new(),
            two_host: false,
            schema: dataset::Schema::OneTable,
            command: String::new(),
        })
    }
}

/// Shared by the rows of a run.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) scratch: PathBuf,
    pub(crate) exe: PathBuf,
    /// The local S3 server and its store, for the S3 rows.
    pub(crate) s3: Option<(trove_guest_core::testkit::s3::MotoServer, agent::S3Spec)>,
    /// The two-host mode ([`pin`]).
    pub(crate) two_host: bool,
}

impl Env {
    /// Where an agent of `side` runs: pinned in the two-host mode, anywhere otherwise.
    fn side(&self, side: pin::Side) -> Option<pin::Side> {
        self.two_host.then_some(side)
    }
}

/// How the raw tools' stream reaches the extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Straight through a pipe.
    Direct,
    /// Through `tee` into a file as it passes (the floor for keeping a snapshot).
    Tee,
    /// Trove-style: gzip into a file, then gunzip out of it.
    Gzip,
}

/// One way of provisioning a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Raw {
        parallel: Option<u32>,
    },
    RawFile,
    TroveGuest {
        parallel: Option<u32>,
        zstd: bool,
        download_first: bool,
        overlap: bool,
        durable: bool,
        s3: bool,
        replicas: u32,
    },
    TroveStyle,
    Logical,
}

fn methods(kind: DatastoreKind, opts: &BenchOptions) -> Vec<(Method, Row)> {
    let maria = kind != DatastoreKind::Postgresql;
    let mut out = Vec::new();
    let raw_detail = if maria {
        "`mariabackup --backup --stream=xbstream | mbstream -x`, `mariabackup --prepare`, rename \
         into place, start, `CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos` + `START SLAVE` by \
         hand, wait for both threads and `MASTER_GTID_WAIT`"
    } else {
        "`pg_basebackup -X stream --checkpoint=fast` into the target directory, `standby.signal` \
         + `primary_conninfo`, start, wait until it streams and replayed the master's LSN"
    };
    out.push((
        Method::Raw { parallel: None },
        Row::new("raw tools", raw_detail, true).with_role(RowRole::Raw, None),
    ));
    if let (true, Some(n)) = (maria, opts.parallel) {
        out.push((
            Method::Raw { parallel: Some(n) },
            Row::new(
                format!("raw tools --parallel={n}"),
                format!("as raw tools, `mariabackup --parallel={n}`"),
                false,
            )
            .with_role(RowRole::Raw, Some(n)),
        ));
    }
    let tee = if maria {
        "`mariabackup --backup --stream=xbstream | tee file | mbstream -x` (the file written \
         as the stream passes, no fsync), then as raw tools: the floor for any design that keeps \
         the snapshot"
    } else {
        "`pg_basebackup -D - -Ft -X fetch | tee file | tar -x` (the file written as the stream \
         passes, no fsync), then as raw tools: the floor for any design that keeps the snapshot"
    };
    out.push((
        Method::RawFile,
        Row::new("raw tools through a file", tee, false).with_role(RowRole::RawFile, None),
    ));
    let tg = |parallel, zstd, download_first, overlap| Method::TroveGuest {
        parallel,
        zstd,
        download_first,
        overlap,
        durable: true,
        s3: false,
        replicas: 1,
    };
    let default_parallel = if maria {
        "; backup and extraction with the strategy's default `--parallel` (half the cores, at \
         most 4: 1 on 2 cores)"
    } else {
        ""
    };
    out.push((
        tg(None, false, false, true),
        Row::new(
            "trove-guest",
            format!(
                "`provision_from`: `get_replication_snapshot` into a local snapshot store while \
                 the fresh replica's `stage_snapshot` follows the upload and restores it, then \
                 `attach_replication_slave` until the replica applied the snapshot position (one \
                 agent process holding both strategies){default_parallel}"
            ),
            false,
        )
        .with_role(RowRole::TroveGuest, None),
    ));
    if let (true, Some(n)) = (maria, opts.parallel) {
        out.push((
            tg(Some(n), false, false, true),
            Row::new(
                format!("trove-guest --parallel={n}"),
                format!("as trove-guest, `SnapshotRequest::with_parallel({n})` for the backup"),
                false,
            )
            .with_role(RowRole::TroveGuest, Some(n)),
        ));
    }
    out.push((
        Method::TroveGuest {
            parallel: None,
            zstd: false,
            download_first: false,
            overlap: true,
            durable: false,
            s3: false,
            replicas: 1,
        },
        Row::new(
            "trove-guest, transient store",
            "as trove-guest, with the store's writes left to the kernel \
             (`Durability::PageCache`: no fsync before the commit; reads still verify size and \
             SHA-256): what keeping a durable snapshot costs",
            false,
        )
        .with_role(RowRole::TroveGuest, None),
    ));
    out.push((
        tg(None, false, false, false),
        Row::new(
            "trove-guest, snapshot then attach",
            "`get_replication_snapshot` (agent process 1), then `attach_replication_slave` on a \
             fresh server (agent process 2), one after the other: no overlap",
            false,
        )
        .with_role(RowRole::TroveGuest, None),
    ));
    if opts.s3 {
        out.push((
            Method::TroveGuest {
                parallel: None,
                zstd: false,
                download_first: false,
                overlap: true,
                durable: true,
                s3: true,
                replicas: 1,
            },
            Row::new(
                "trove-guest, S3 store",
                "as trove-guest, with snapshots in S3 (`ObjectSnapshotStore::s3`, segments of \
                 4 MiB, two in flight up, one prefetched down) on a local moto server (`moto[server]`, Python, \
                 loopback HTTP): the replica follows the segmented upload. The moto server's own \
                 CPU is not in the CPU column",
                false,
            )
            .with_role(RowRole::TroveGuest, None),
        ));
        for replicas in [1, 3] {
            let (name, detail) = if replicas == 1 {
                (
                    "trove-guest, S3 store, snapshot then attach".to_owned(),
                    "as snapshot then attach, with snapshots in S3 on the local moto server: the \
                     one-replica baseline of the fan-out row"
                        .to_owned(),
                )
            } else {
                (
                    format!("trove-guest, S3 store, snapshot then {replicas} replicas at once"),
                    format!(
                        "one `get_replication_snapshot` into S3, then {replicas} fresh servers \
                         attach from it at the same time (one agent process each); wall time \
                         until the last replica replicates"
                    ),
                )
            };
            out.push((
                Method::TroveGuest {
                    parallel: None,
                    zstd: false,
                    download_first: false,
                    overlap: false,
                    durable: true,
                    s3: true,
                    replicas,
                },
                Row::new(name, detail, false).with_role(RowRole::Other, None),
            ));
        }
    }
    if opts.zstd {
        out.push((
            tg(None, true, false, false),
            Row::new(
                "trove-guest + zstd store",
                "as snapshot then attach, with the store wrapped in `ZstdSnapshotStore` (level 1, \
                 one worker thread): compressed while streaming in, decompressed while streaming \
                 out",
                false,
            ),
        ));
    }
    if opts.download_first {
        out.push((
            tg(None, false, true, false),
            Row::new(
                "trove-guest, download then extract",
                "as snapshot then attach, but the replica's store first copies the whole snapshot \
                 to a local file and only then lets the restore read it: the difference is what \
                 extracting while reading saves",
                false,
            ),
        ));
    }
    let style = if maria {
        "`mariabackup --backup --stream=xbstream | gzip > file`, then `gzip -dc file | mbstream \
         -x`, prepare, rename, start, replication as raw tools"
    } else {
        "`pg_basebackup -Ft -X fetch -D - | gzip > file`, then `gzip -dc file | tar -x`, start \
         as standby as raw tools"
    };
    out.push((
        Method::TroveStyle,
        Row::new("Trove-style gzip pipeline", style, false),
    ));
    let logical = if maria {
        "`mariadb-dump --single-transaction --master-data=2 --databases bench | mariadb` into a \
         fresh server, then `CHANGE MASTER TO` the dump's coordinates, `START SLAVE`, \
         `MASTER_POS_WAIT`"
    } else {
        "`pg_dump | psql` into a fresh server (no replication afterwards: see notes)"
    };
    out.push((Method::Logical, Row::new("logical dump", logical, false)));
    for (_, r) in &mut out {
        if r.method.starts_with("trove-guest")
            && r.role == RowRole::Other
            && !r.method.contains("replicas at once")
        {
            r.role = RowRole::TroveGuest;
        }
    }
    if !opts.only.is_empty() {
        out.retain(|(_, r)| {
            r.reference
                || opts.only.iter().any(|o| match o.strip_prefix('=') {
                    Some(exact) => r.method == exact,
                    None => r.method.contains(o.as_str()),
                })
        });
    }
    out
}

/// A master server of either kind with what the rows need of it.
struct MasterSide {
    server: TestServer,
    pgid: u32,
    strategy: SharedStrategy,
    repl_password: Secret,
}

/// How a trove-guest row runs.
#[derive(Debug, Clone, Copy)]
struct TroveGuestRun {
    parallel: Option<u32>,
    zstd: bool,
    download_first: bool,
    overlap: bool,
    durable: bool,
    s3: bool,
    replicas: u32,
}

async fn trove_guest(
    env: &Env,
    master: &MasterSide,
    server_id: u32,
    how: TroveGuestRun,
) -> Result<Sample> {
    let TroveGuestRun {
        parallel,
        zstd,
        download_first,
        overlap,
        durable,
        s3,
        replicas,
    } = how;
    let root = env.scratch.join(format!("store-{server_id}"));
    let s3 = if s3 {
        let (_, spec) = env
            .s3
            .as_ref()
            .ok_or_else(|| Error::invalid("bench", "S3 rows without an S3 server"))?;
        Some(agent::S3Spec {
            prefix: format!("{}/{server_id}", spec.prefix),
            ..spec.clone()
        })
    } else {
        None
    };
    let store = StoreSpec {
        root: root.clone(),
        zstd_workers: zstd.then_some(1),
        download_first: false,
        page_cache: !durable,
        s3: s3.clone(),
    };
    let before = group_ticks(master.pgid);
    if overlap && env.two_host {
        let (m, r) = agent::run_split(
            &env.exe,
            &AgentRequest::Stage {
                master: Box::new(HandleSpec::of(&master.server)?),
                store: store.clone(),
                name: format!("bench-{server_id}"),
                server_id,
            },
            &AgentRequest::Snapshot {
                master: Box::new(HandleSpec::of(&master.server)?),
                store: store.clone(),
                name: format!("bench-{server_id}"),
                replica_id: format!("bench{server_id}"),
                parallel,
            },
        )
        .await?;
        let master_cpu = usage::ticks_to_seconds(group_ticks(master.pgid).saturating_sub(before));
        let doc = m
            .doc
            .clone()
            .ok_or_else(|| Error::invalid("agent report", "no snapshot document"))?;
        let stored = if s3.is_some() {
            if let Ok(st) = store.open() {
                let _ = st.delete(&doc.dataset.snapshot_href).await;
            }
            doc.dataset.size_bytes.unwrap_or(0)
        } else {
            dir_bytes(&root, &[])
        };
        forget_replica(master, &doc, r.detached.as_ref()).await;
        let _ = std::fs::remove_dir_all(&root);
        let mut phases = m.cost.phases.clone();
        phases.extend(r.cost.phases.iter().cloned());
        return Ok(Sample {
            cost: Cost {
                wall: r.cost.wall,
                cpu: m.cost.cpu + r.cost.cpu + master_cpu,
                own_cpu: 0.0,
                phases,
            },
            agent_cpu: Some(m.cost.own_cpu + r.cost.own_cpu),
            agent_peak_rss_kib: Some(m.peak_rss_kib.max(r.peak_rss_kib)),
            stored_bytes: Some(stored),
        });
    }
    if overlap {
        let p = run_child(
            &env.exe,
            &AgentRequest::Provision {
                master: Box::new(HandleSpec::of(&master.server)?),
                store: store.clone(),
                name: format!("bench-{server_id}"),
                replica_id: format!("bench{server_id}"),
                parallel,
                server_id,
            },
            None,
        )
        .await?;
        let mut stored = dir_bytes(&root, &[]);
        let master_cpu = usage::ticks_to_seconds(group_ticks(master.pgid).saturating_sub(before));
        let doc = p
            .doc
            .clone()
            .ok_or_else(|| Error::invalid("agent report", "no snapshot document"))?;
        if s3.is_some() {
            stored = doc.dataset.size_bytes.unwrap_or(0);
            if let Ok(st) = store.open() {
                let _ = st.delete(&doc.dataset.snapshot_href).await;
            }
        }
        forget_replica(master, &doc, p.detached.as_ref()).await;
        let _ = std::fs::remove_dir_all(&root);
        return Ok(Sample {
            cost: Cost {
                wall: p.cost.wall,
                cpu: p.cost.cpu + master_cpu,
                own_cpu: 0.0,
                phases: p.cost.phases.clone(),
            },
            agent_cpu: Some(p.cost.own_cpu),
            agent_peak_rss_kib: Some(p.peak_rss_kib),
            stored_bytes: Some(stored),
        });
    }
    let a = run_child(
        &env.exe,
        &AgentRequest::Snapshot {
            master: Box::new(HandleSpec::of(&master.server)?),
            store: store.clone(),
            name: format!("bench-{server_id}"),
            replica_id: format!("bench{server_id}"),
            parallel,
        },
        env.side(pin::Side::Master),
    )
    .await?;
    let stored = if s3.is_some() {
        a.doc
            .as_ref()
            .and_then(|d| d.dataset.size_bytes)
            .unwrap_or(0)
    } else {
        dir_bytes(&root, &[])
    };
    let doc = a
        .doc
        .clone()
        .ok_or_else(|| Error::invalid("agent report", "no snapshot document"))?;
    if replicas > 1 {
        let requests: Vec<AgentRequest> = (0..replicas)
            .map(|i| AgentRequest::Attach {
                kind: master.server.kind(),
                store: StoreSpec {
                    download_first,
                    ..store.clone()
                },
                doc: doc.clone(),
                server_id: 1000 + server_id * 10 + i,
            })
            .collect();
        let attaches = requests
            .iter()
            .map(|r| run_child(&env.exe, r, env.side(pin::Side::Replica)));
        let done = futures::future::join_all(attaches).await;
        let master_cpu = usage::ticks_to_seconds(group_ticks(master.pgid).saturating_sub(before));
        let mut wall = 0f64;
        let mut cpu = a.cost.cpu + master_cpu;
        let mut rss = a.peak_rss_kib;
        let mut agent_cpu = a.cost.own_cpu;
        let mut first_err = None;
        let mut phases = a.cost.phases.clone();
        for r in done {
            match r {
                Ok(b) => {
                    wall = wall.max(b.cost.wall);
                    cpu += b.cost.cpu;
                    agent_cpu += b.cost.own_cpu;
                    rss = rss.max(b.peak_rss_kib);
                    forget_replica(master, &doc, b.detached.as_ref()).await;
                    if phases.len() == a.cost.phases.len() {
                        phases.extend(b.cost.phases.iter().cloned());
                    }
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if let Ok(st) = store.open() {
            let _ = st.delete(&doc.dataset.snapshot_href).await;
        }
        if let Some(e) = first_err {
            forget_replica(master, &doc, None).await;
            return Err(e);
        }
        return Ok(Sample {
            cost: Cost {
                wall: a.cost.wall + wall,
                cpu,
                own_cpu: 0.0,
                phases,
            },
            agent_cpu: Some(agent_cpu),
            agent_peak_rss_kib: Some(rss),
            stored_bytes: doc.dataset.size_bytes,
        });
    }
    let b = run_child(
        &env.exe,
        &AgentRequest::Attach {
            kind: master.server.kind(),
            store: StoreSpec {
                download_first,
                ..store.clone()
            },
            doc: doc.clone(),
            server_id,
        },
        env.side(pin::Side::Replica),
    )
    .await?;
    if s3.is_some()
        && let Ok(st) = store.open()
    {
        let _ = st.delete(&doc.dataset.snapshot_href).await;
    }
    let master_cpu = usage::ticks_to_seconds(group_ticks(master.pgid).saturating_sub(before));
    forget_replica(master, &doc, b.detached.as_ref()).await;
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(root.with_extension("downloads"));
    let mut phases = a.cost.phases.clone();
    phases.extend(b.cost.phases.iter().cloned());
    Ok(Sample {
        cost: Cost {
            wall: a.cost.wall + b.cost.wall,
            cpu: a.cost.cpu + b.cost.cpu + master_cpu,
            own_cpu: 0.0,
            phases,
        },
        agent_cpu: Some(a.cost.own_cpu + b.cost.own_cpu),
        agent_peak_rss_kib: Some(a.peak_rss_kib.max(b.peak_rss_kib)),
        stored_bytes: Some(stored),
    })
}

/// Drops the replication account and slots a row made on the master: what the replica's
/// detach reported, else what the document names.
async fn forget_replica(
    master: &MasterSide,
    doc: &SnapshotDocument,
    detached: Option<&DetachedReplica>,
) {
    if let Some(grant) = &doc.replication {
        let gone = detached.cloned().unwrap_or_else(|| {
            DetachedReplica::new(
                Some(grant.user.clone()),
                grant.slot_name.clone(),
                Some(doc.master.clone()),
                true,
            )
        });
        // The replica's walsender may linger a moment after it stopped.
        for attempt in 0..50 {
            match master
                .strategy
                .cleanup_source_on_replica_detach(&gone)
                .await
            {
                Ok(()) => break,
                Err(e) if attempt == 49 => {
                    eprintln!("bench: cleanup of {} on the master failed: {e}", grant.user)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

fn log(line: &str) {
    eprintln!("bench: {line}");
}

/// Settings of every benchmark MariaDB server: the testkit's, made durable again
/// (`innodb_flush_log_at_trx_commit = 1`) and with a 256 MiB buffer pool.
pub(crate) fn mariadb_options(server_id: u32) -> MariaDbOptions {
    let mut o = MariaDbOptions::new(server_id).with_setting("innodb_flush_log_at_trx_commit", "1");
    o.buffer_pool = "256M".into();
    o
}

/// Settings of every benchmark PostgreSQL server: the testkit's with `fsync = on` again.
pub(crate) fn postgres_options(server_id: u32) -> PostgresOptions {
    PostgresOptions::new()
        .with_server_id(server_id)
        .with_setting("fsync", "on")
}

/// Starts a benchmark server (master: MariaDB with binary logging on).
///
/// # Errors
///
/// The testkit's.
///
/// # Cancel safety
///
/// Not cancel safe.
pub(crate) async fn start_server(
    kind: DatastoreKind,
    server_id: u32,
    master: bool,
) -> Result<TestServer> {
    Ok(match kind {
        DatastoreKind::Postgresql => {
            TestServer::Postgres(PostgresServer::start(postgres_options(server_id)).await?)
        }
        _ => TestServer::Mariadb(
            MariaDbServer::start(mariadb_options(server_id).with_log_bin(master)).await?,
        ),
    })
}

async fn run_datastore(
    env: &Env,
    opts: &BenchOptions,
    kind: DatastoreKind,
) -> Result<DatastoreReport> {
    log(&format!(
        "{kind}: starting the master and loading {} MiB",
        opts.target_bytes >> 20
    ));
    let server = start_server(kind, 1, true).await?;
    let (loaded, version, data_bytes, pgid) = match &server {
        TestServer::Mariadb(m) => {
            let loaded = dataset::load_mariadb(m, opts.schema, opts.target_bytes, &log).await?;
            let v = m.query_one("SELECT VERSION()").await?.unwrap_or_default();
            (
                loaded,
                format!("MariaDB {v}"),
                dir_bytes(&m.data_dir(), &[]),
                mariadb::pgid(m)?,
            )
        }
        TestServer::Postgres(p) => {
            let loaded = dataset::load_postgres(p, opts.schema, opts.target_bytes, &log).await?;
            let v = p.query_one("SHOW server_version").await?;
            (
                loaded,
                format!("PostgreSQL {v}"),
                dir_bytes(&p.data_dir(), &["pg_wal"]),
                postgres::pgid(p).await?,
            )
        }
        TestServer::Redis(_) => {
            return Err(Error::unsupported(
                "benchmarking Redis (the benchmark loads MariaDB and PostgreSQL)",
            ));
        }
    };
    let data_dir = match &server {
        TestServer::Mariadb(m) => m.data_dir(),
        TestServer::Postgres(p) => p.data_dir(),
        TestServer::Redis(r) => r.handle().data_dir,
    };
    let warmed = tokio::task::spawn_blocking(move || dataset::warm_page_cache(&data_dir))
        .await
        .unwrap_or(0);
    log(&format!(
        "{kind}: read {} MB of the master's files into the page cache",
        warmed / 1_000_000
    ));
    log(&format!(
        "{kind}: {} rows, data directory {} MB, loaded in {:.1} s",
        loaded.rows,
        data_bytes / 1_000_000,
        loaded.seconds
    ));
    let store: std::sync::Arc<dyn SnapshotStore> =
        std::sync::Arc::new(LocalSnapshotStore::new(env.scratch.join("master-store"))?);
    let strategy = server.strategy(store)?;
    strategy
        .enable_as_master(&EnableMasterOptions::new())
        .await?;
    // enable_as_master may have restarted the server.
    let pgid = match &server {
        TestServer::Mariadb(m) => mariadb::pgid(m).unwrap_or(pgid),
        TestServer::Postgres(p) => postgres::pgid(p).await.unwrap_or(pgid),
        TestServer::Redis(_) => pgid,
    };
    if opts.two_host {
        pin::pin_group(pgid, pin::Side::Master).await?;
    }
    let repl_password = Secret::random(24);
    if let TestServer::Mariadb(m) = &server {
        mariadb::create_repl_account(m, &repl_password).await?;
    }
    let master = MasterSide {
        server,
        pgid,
        strategy,
        repl_password,
    };

    let mut rows = methods(kind, opts);
    let mut server_id = 10;
    let n = rows.len();
    for rep in 0..opts.reps {
        // Each repetition starts one row later, so no row always runs first or after the same
        // neighbour.
        for i in 0..n {
            let (method, row) = &mut rows[(i + rep as usize) % n];
            server_id += 1;
            if opts.two_host {
                // Backends forked since inherit the mask; this catches anything else.
                pin::pin_group(master.pgid, pin::Side::Master).await?;
            }
            let sample = run_method(env, &master, *method, server_id)
                .await
                .map_err(|e| {
                    Error::invalid(
                        "benchmark",
                        format!("{kind} {} (repetition {}): {e}", row.method, rep + 1),
                    )
                })?;
            log(&format!(
                "{kind} rep {}/{} {}: {:.2} s wall, {:.1} s CPU{}",
                rep + 1,
                opts.reps,
                row.method,
                sample.cost.wall,
                sample.cost.cpu,
                sample
                    .agent_peak_rss_kib
                    .map_or_else(String::new, |k| format!(
                        ", agent peak RSS {:.1} MiB",
                        k as f64 / 1024.0
                    ))
            ));
            row.samples.push(sample);
        }
    }
    let mut notes = vec![
        "Every row starts from the same master (idle, data in its page cache after the first \
         read) and builds a fresh replica. Servers run with the testkit's settings made durable \
         again (MariaDB: 256 MiB buffer pool, 32 MiB redo log, \
         `innodb_flush_log_at_trx_commit=1`; PostgreSQL: `fsync=on`, 16 MB shared buffers)."
            .to_owned(),
        "Tool-to-tool pipes (`|`) are copied through the benchmark process with 1 MiB buffers, \
         as trove-guest's attach feeds its extractor; this costs well under 1% of a row."
            .to_owned(),
        "CPU s = user+system seconds of the benchmark/agent processes, every tool they ran, and \
         the master and replica server processes during the row."
            .to_owned(),
        "copy MB = the intermediate copy: the snapshot object(s) in the store, the gzip file, \
         or the dump stream."
            .to_owned(),
    ];
    notes.push(format!("Data: {}.", opts.schema.describe(kind)));
    if opts.two_host {
        notes.push(format!(
            "Two-host mode: the master's side of every row (its server, the backup tool, the \
             snapshot agent and its upload, `gzip` into the kept file, the dump tool) runs on CPU \
             {}, the replica's side (its server, `pg_basebackup -X stream` of the raw row, the \
             extractor and prepare, the attaching agent with its download, the loading client) \
             on CPU {}; the benchmark process (which copies between two tools where a shell \
             would use `|`) is on the replica's CPU. The overlapped trove-guest rows run as two \
             agent processes (the replica's stages while the master's takes the snapshot, then \
             attaches with its document): agent peak RSS is the larger of the two. The S3 \
             server is not pinned; the fan-out row's three replicas share the replica's CPU.",
            pin::MASTER_CPU,
            pin::REPLICA_CPU
        ));
    }
    if kind == DatastoreKind::Postgresql {
        notes.push(
            "PostgreSQL: a logical copy cannot follow the master by physical streaming, so the \
             logical row stops after `pg_dump | psql` (logical replication would add a slot, a \
             publication and a subscription)."
                .to_owned(),
        );
    }
    Ok(DatastoreReport {
        datastore: kind.to_string(),
        server_version: version,
        data_dir_bytes: data_bytes,
        rows_in_table: loaded.rows,
        load_seconds: loaded.seconds,
        rows: rows.into_iter().map(|(_, r)| r).collect(),
        notes,
    })
}

async fn run_method(
    env: &Env,
    master: &MasterSide,
    method: Method,
    server_id: u32,
) -> Result<Sample> {
    match (&master.server, method) {
        (
            _,
            Method::TroveGuest {
                parallel,
                zstd,
                download_first,
                overlap,
                durable,
                s3,
                replicas,
            },
        ) => {
            let how = TroveGuestRun {
                parallel,
                zstd,
                download_first,
                overlap,
                durable,
                s3,
                replicas,
            };
            trove_guest(env, master, server_id, how).await
        }
        (TestServer::Mariadb(m), other) => {
            let side = mariadb::Master {
                server: m,
                pgid: master.pgid,
                repl_password: master.repl_password.clone(),
            };
            match other {
                Method::Raw { parallel } => {
                    mariadb::physical(env, &side, server_id, parallel, Via::Direct).await
                }
                Method::RawFile => mariadb::physical(env, &side, server_id, None, Via::Tee).await,
                Method::TroveStyle => {
                    mariadb::physical(env, &side, server_id, None, Via::Gzip).await
                }
                _ => mariadb::logical(env, &side, server_id).await,
            }
        }
        (TestServer::Postgres(p), other) => {
            let side = postgres::Master {
                server: p,
                pgid: master.pgid,
            };
            match other {
                Method::Raw { .. } => postgres::physical(env, &side, server_id, Via::Direct).await,
                Method::RawFile => postgres::physical(env, &side, server_id, Via::Tee).await,
                Method::TroveStyle => postgres::physical(env, &side, server_id, Via::Gzip).await,
                _ => postgres::logical(env, &side, server_id).await,
            }
        }
        (TestServer::Redis(_), _) => Err(Error::unsupported(
            "Redis baselines (the benchmark compares MariaDB and PostgreSQL tools)",
        )),
    }
}

/// Runs the benchmark and returns its report.
///
/// # Errors
///
/// The first failure of a server, tool or call, naming the row and repetition.
///
/// # Cancel safety
///
/// Not cancel safe: servers are stopped and removed when dropped, but scratch files may remain.
pub async fn run(opts: &BenchOptions) -> Result<Report> {
    let scratch = tempfile::Builder::new()
        .prefix("tgb-")
        .tempdir_in(&opts.scratch)
        .map_err(|e| {
            Error::io(
                format!("create a scratch directory in {}", opts.scratch.display()),
                e,
            )
        })?;
    let s3 = if opts.s3
        && (opts.only.is_empty()
            || opts.only.iter().any(|o| {
                let o = o.trim_start_matches('=');
                "trove-guest, S3 store".contains(o) || o.contains("S3 store")
            })) {
        log("starting the local S3 server (moto)");
        let server = trove_guest_core::testkit::s3::MotoServer::start().await?;
        server.create_bucket("bench").await?;
        let spec = agent::S3Spec {
            endpoint: server.endpoint().to_owned(),
            bucket: "bench".into(),
            prefix: "snapshots".into(),
            credentials_file: server.credentials_file(),
        };
        Some((server, spec))
    } else {
        None
    };
    let started_utc = utc_now();
    log("probing the machine (disk write test)");
    // Before the two-host mode pins this process (the probe counts the CPUs it may use).
    let machine = Machine::probe(scratch.path(), opts.disk_test_bytes)?;
    if opts.two_host {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            return Err(Error::unsupported(
                "the two-host mode on fewer than two CPUs",
            ));
        }
        // After the S3 server started (it stands for a third machine): everything this process
        // starts unwrapped from now on runs on the replica's CPU.
        pin::pin_process(std::process::id(), pin::Side::Replica).await?;
        log(&format!(
            "two-host mode: master side on CPU {}, replica side on CPU {} (this process: {})",
            pin::MASTER_CPU,
            pin::REPLICA_CPU,
            pin::allowed_cpus(std::process::id()).unwrap_or_default()
        ));
    }
    let env = Env {
        scratch: scratch.path().to_path_buf(),
        exe: opts.exe.clone(),
        s3,
        two_host: opts.two_host,
    };
    let mut datastores = Vec::new();
    for kind in &opts.datastores {
        datastores.push(run_datastore(&env, opts, *kind).await?);
    }
    Ok(Report {
        started_utc,
        command: opts.command.clone(),
        machine,
        target_bytes: opts.target_bytes,
        reps: opts.reps,
        datastores,
    })
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS`.
fn utc_now() -> String {
    trove_guest_agent::clock::utc_now_rfc3339()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datastore_has_the_four_kinds_of_rows_and_one_reference() {
        let opts = BenchOptions::new().unwrap();
        for kind in [DatastoreKind::Mariadb, DatastoreKind::Postgresql] {
            let rows = methods(kind, &opts);
            assert_eq!(rows.iter().filter(|(_, r)| r.reference).count(), 1);
            for name in [
                "raw tools",
                "trove-guest",
                "Trove-style gzip pipeline",
                "logical dump",
            ] {
                assert!(rows.iter().any(|(_, r)| r.method == name), "{kind} {name}");
            }
        }
        let maria: Vec<String> = methods(DatastoreKind::Mariadb, &opts)
            .into_iter()
            .map(|(_, r)| r.method)
            .collect();
        for name in [
            "raw tools --parallel=2",
            "trove-guest --parallel=2",
            "trove-guest, snapshot then attach",
        ] {
            assert!(maria.iter().any(|m| m == name), "{name} in {maria:?}");
        }
        let mut only = opts.clone();
        only.only = vec!["zstd".into()];
        let names: Vec<String> = methods(DatastoreKind::Postgresql, &only)
            .into_iter()
            .map(|(_, r)| r.method)
            .collect();
        assert_eq!(names, ["raw tools", "trove-guest + zstd store"]);
        only.only = vec!["=trove-guest".into(), "=logical dump".into()];
        let names: Vec<String> = methods(DatastoreKind::Mariadb, &only)
            .into_iter()
            .map(|(_, r)| r.method)
            .collect();
        assert_eq!(names, ["raw tools", "trove-guest", "logical dump"]);
    }

    #[test]
    fn utc_timestamps_are_formatted() {
        let t = utc_now();
        assert_eq!(t.len(), 19, "{t}");
        assert!(t.starts_with("20"));
    }
}
