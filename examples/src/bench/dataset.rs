//! The benchmark's data, loaded in batches until it reaches the requested size. Two shapes
//! ([`Schema`]): one InnoDB / heap table of ~600-byte rows (a bigint key, a small integer with a
//! secondary index on MariaDB, and 512 characters of hex text that compress about 2:1, like much
//! real data), or a realistic schema of several tables with secondary indexes (MariaDB: eight
//! sysbench `sbtest` tables; PostgreSQL: the four pgbench tables plus secondary indexes).

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use trove_guest_core::{DatastoreKind, Error, Result};
use trove_guest_mysql::testkit::MariaDbServer;
use trove_guest_postgres::testkit::PostgresServer;

/// Rows inserted per statement.
const BATCH: u64 = 100_000;

/// Tables of the realistic MariaDB schema.
const SBTEST_TABLES: u64 = 8;

/// Rows per table and round of the realistic MariaDB schema, at most (about 12 MB per table).
const SBTEST_BATCH: u64 = 50_000;

/// On-disk bytes of an `sbtest` row with its index entries, roughly (to size the rounds).
const SBTEST_ROW_BYTES: u64 = 240;

/// pgbench's rows per scale unit in `pgbench_accounts`.
const PGBENCH_ACCOUNTS_PER_SCALE: u64 = 100_000;

/// pgbench scale units loaded per round, at most.
const PGBENCH_SCALE_STEP: u64 = 10;

/// Bytes one pgbench scale unit takes (accounts, half as many history rows, primary keys),
/// roughly (to size the rounds).
const PGBENCH_SCALE_BYTES: u64 = 17_000_000;

/// The shape of the data loaded on each master.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Schema {
    /// One table with a primary key (MariaDB: and one secondary index) and wide, 2:1
    /// compressible rows.
    #[default]
    OneTable,
    /// Several tables with secondary indexes, like sysbench's (MariaDB) and pgbench's
    /// (PostgreSQL) data: many narrow rows, more index work for a logical load.
    Realistic,
}

impl Schema {
    /// What is loaded on a `kind` master, for the report.
    pub fn describe(self, kind: DatastoreKind) -> &'static str {
        match (self, kind == DatastoreKind::Postgresql) {
            (Schema::OneTable, false) => {
                "one InnoDB table `bench.rows` (bigint key, an integer with a secondary index, \
                 512 characters of hex text per row)"
            }
            (Schema::OneTable, true) => {
                "one table `bench_rows` (bigint primary key, an integer, 512 characters of hex \
                 text per row)"
            }
            (Schema::Realistic, false) => {
                "realistic schema: eight sysbench-style InnoDB tables `bench.sbtest1..8` (`id` \
                 primary key, `k` with the secondary index `k_1`, `c` CHAR(120), `pad` \
                 CHAR(60)), filled evenly"
            }
            (Schema::Realistic, true) => {
                "realistic schema: the pgbench tables (`pgbench_branches`, `pgbench_tellers`, \
                 `pgbench_accounts` with its 84-character filler, `pgbench_history`, half as \
                 many rows as accounts) with their primary keys plus secondary indexes on \
                 `pgbench_accounts(bid)`, `pgbench_tellers(bid)`, `pgbench_history(aid)` and \
                 `pgbench_history(mtime)`"
            }
        }
    }
}

/// Sum of the sizes of the regular files under `dir`, skipping top-level entries named in
/// `skip` (PostgreSQL's `pg_wal`).
pub fn dir_bytes(dir: &Path, skip: &[&str]) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if meta.is_file() {
            return meta.len();
        }
        if !meta.is_dir() {
            return 0;
        }
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| walk(&e.path())).sum())
            .unwrap_or(0)
    }
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| !skip.iter().any(|s| e.file_name() == *s))
                .map(|e| walk(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Reads every file under `dir` once, so every row finds the master's files in the page cache
/// (InnoDB writes with `O_DIRECT`, which leaves them out of it, and the first row would pay
/// for reading them from disk). Returns the bytes read.
pub fn warm_page_cache(dir: &Path) -> u64 {
    fn walk(p: &Path, buf: &mut [u8]) -> u64 {
        use std::io::Read as _;
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if meta.is_dir() {
            return std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| walk(&e.path(), buf)).sum())
                .unwrap_or(0);
        }
        if !meta.is_file() {
            return 0;
        }
        let Ok(mut f) = std::fs::File::open(p) else {
            return 0;
        };
        let mut total = 0;
        while let Ok(n) = f.read(buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    }
    let mut buf = vec![0u8; 1 << 20];
    walk(dir, &mut buf)
}

/// What a load did.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// Rows in the table.
    pub rows: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// Loads `bench.rows` on a MariaDB master until its tablespace holds `target` bytes. The schema
/// is binary-logged (so the master has a GTID history); the rows are not (`sql_log_bin = 0`),
/// which keeps the load from writing the data twice.
///
/// # Errors
///
/// [`Error::Datastore`] when a statement fails.
///
/// # Cancel safety
///
/// Not cancel safe.
pub async fn load_mariadb(
    server: &MariaDbServer,
    schema: Schema,
    target: u64,
    log: &dyn Fn(&str),
) -> Result<Loaded> {
    let started = Instant::now();
    server.execute("CREATE DATABASE bench").await?;
    let rows = match schema {
        Schema::Realistic => load_sbtest(server, target, log).await?,
        _ => load_rows(server, target, log).await?,
    };
    settle_mariadb(server).await?;
    Ok(Loaded {
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Eight sysbench-style tables, filled in rounds until their tablespaces hold `target` bytes.
async fn load_sbtest(server: &MariaDbServer, target: u64, log: &dyn Fn(&str)) -> Result<u64> {
    for t in 1..=SBTEST_TABLES {
        server
            .execute(&format!(
                "CREATE TABLE bench.sbtest{t} (id INT UNSIGNED NOT NULL PRIMARY KEY, \
                 k INT UNSIGNED NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '', \
                 pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB"
            ))
            .await?;
    }
    let dir = server.data_dir().join("bench");
    let size = || {
        (1..=SBTEST_TABLES)
            .map(|t| {
                std::fs::metadata(dir.join(format!("sbtest{t}.ibd")))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    // About eight rounds at least, so small targets are not overshot by much.
    let batch = (target / SBTEST_TABLES / SBTEST_ROW_BYTES / 8).clamp(1_000, SBTEST_BATCH);
    let mut per_table = 0u64;
    while size() < target {
        let (a, b) = (per_table + 1, per_table + batch);
        for t in 1..=SBTEST_TABLES {
            server
                .execute(&format!(
                    "SET SESSION sql_log_bin = 0; \
                     INSERT INTO bench.sbtest{t} SELECT seq, (seq * 2654435761 + {t}) % 1000003, \
                     LEFT(CONCAT(SHA2(seq * {t}, 256), SHA2(seq * {t} + 1, 256)), 120), \
                     LEFT(SHA2(seq * {t} + 2, 256), 60) FROM bench.seq_{a}_to_{b}"
                ))
                .await?;
        }
        per_table = b;
        log(&format!(
            "mariadb: {} rows in {SBTEST_TABLES} tables, tablespaces {} MB",
            per_table * SBTEST_TABLES,
            size() / 1_000_000
        ));
    }
    Ok(per_table * SBTEST_TABLES)
}

/// The one-table schema.
async fn load_rows(server: &MariaDbServer, target: u64, log: &dyn Fn(&str)) -> Result<u64> {
    server
        .execute(
            "CREATE TABLE bench.rows (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, \
             k INT UNSIGNED NOT NULL, payload VARCHAR(512) NOT NULL, KEY k (k)) ENGINE=InnoDB",
        )
        .await?;
    let ibd = server.data_dir().join("bench").join("rows.ibd");
    let mut rows = 0u64;
    loop {
        let size = std::fs::metadata(&ibd).map(|m| m.len()).unwrap_or(0);
        if size >= target {
            break;
        }
        let (a, b) = (rows + 1, rows + BATCH);
        server
            .execute(&format!(
                "SET SESSION sql_log_bin = 0; \
                 INSERT INTO bench.rows SELECT seq, seq % 1000, CONCAT(SHA2(seq, 512), \
                 SHA2(seq + 1, 512), SHA2(seq + 2, 512), SHA2(seq + 3, 512)) FROM bench.seq_{a}_to_{b}"
            ))
            .await?;
        rows = b;
        let size = std::fs::metadata(&ibd).map(|m| m.len()).unwrap_or(0);
        log(&format!(
            "mariadb: {rows} rows, tablespace {} MB",
            size / 1_000_000
        ));
    }
    Ok(rows)
}

/// Writes every dirty page, so every row starts from the same state.
async fn settle_mariadb(server: &MariaDbServer) -> Result<()> {
    server
        .execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        .await?;
    let deadline = trove_guest_core::deadline(std::time::Duration::from_secs(120)).into_std();
    loop {
        let dirty = server
            .query_one(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_DIRTY'",
            )
            .await?
            .unwrap_or_default();
        if dirty.trim() == "0" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Loads `bench_rows` on a PostgreSQL master until the table and its index hold `target` bytes,
/// then checkpoints.
///
/// # Errors
///
/// [`Error::Datastore`] when a statement fails.
///
/// # Cancel safety
///
/// Not cancel safe.
pub async fn load_postgres(
    server: &PostgresServer,
    schema: Schema,
    target: u64,
    log: &dyn Fn(&str),
) -> Result<Loaded> {
    if schema == Schema::Realistic {
        return load_pgbench(server, target, log).await;
    }
    let started = Instant::now();
    server
        .query(
            "CREATE TABLE bench_rows (id bigint NOT NULL PRIMARY KEY, k integer NOT NULL, \
             payload text NOT NULL)",
        )
        .await?;
    let mut rows = 0u64;
    loop {
        let size: u64 = server
            .query_one("SELECT pg_total_relation_size('bench_rows')")
            .await?
            .parse()
            .map_err(|_| Error::invalid("relation size", "not a number"))?;
        if size >= target {
            break;
        }
        let (a, b) = (rows + 1, rows + BATCH);
        server
            .query(&format!(
                "INSERT INTO bench_rows SELECT g, g % 1000, \
                 encode(sha512(g::text::bytea), 'hex') || encode(sha512((g + 1)::text::bytea), 'hex') || \
                 encode(sha512((g + 2)::text::bytea), 'hex') || encode(sha512((g + 3)::text::bytea), 'hex') \
                 FROM generate_series({a}, {b}) g"
            ))
            .await?;
        rows = b;
        log(&format!("postgresql: {rows} rows"));
    }
    server.query("VACUUM ANALYZE bench_rows").await?;
    server.query("CHECKPOINT").await?;
    Ok(Loaded {
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The pgbench tables, filled a few scale units at a time until they and their
/// primary keys hold 85% of `target`; then the secondary indexes (the rest), `VACUUM ANALYZE`
/// and a checkpoint.
async fn load_pgbench(server: &PostgresServer, target: u64, log: &dyn Fn(&str)) -> Result<Loaded> {
    const TABLES: [&str; 4] = [
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_accounts",
        "pgbench_history",
    ];
    let started = Instant::now();
    server
        .query(
            "CREATE TABLE pgbench_branches (bid int NOT NULL PRIMARY KEY, bbalance int, \
             filler char(88)); \
             CREATE TABLE pgbench_tellers (tid int NOT NULL PRIMARY KEY, bid int, tbalance int, \
             filler char(84)); \
             CREATE TABLE pgbench_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, \
             filler char(84)); \
             CREATE TABLE pgbench_history (hid bigint NOT NULL PRIMARY KEY, tid int, bid int, \
             aid int, delta int, mtime timestamp, filler char(22))",
        )
        .await?;
    let size = || async {
        let sql = TABLES
            .iter()
            .map(|t| format!("pg_total_relation_size('{t}')"))
            .collect::<Vec<_>>()
            .join(" + ");
        server
            .query_one(&format!("SELECT {sql}"))
            .await?
            .parse::<u64>()
            .map_err(|_| Error::invalid("relation size", "not a number"))
    };
    // About four rounds at least, so small targets are not overshot by much.
    let step = (target / 100 * 85 / PGBENCH_SCALE_BYTES / 4).clamp(1, PGBENCH_SCALE_STEP);
    let mut scale = 0u64;
    let mut rows = 0u64;
    while size().await? < target / 100 * 85 {
        let (s0, s1) = (scale + 1, scale + step);
        let (a0, a1) = (
            scale * PGBENCH_ACCOUNTS_PER_SCALE + 1,
            s1 * PGBENCH_ACCOUNTS_PER_SCALE,
        );
        let (h0, h1) = ((a0 - 1) / 2 + 1, a1 / 2);
        server
            .query(&format!(
                "INSERT INTO pgbench_branches SELECT b, 0, NULL FROM generate_series({s0}::bigint, {s1}) b; \
                 INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, NULL \
                 FROM generate_series({t0}::bigint, {t1}) t; \
                 INSERT INTO pgbench_accounts SELECT a, (a - 1) / {per} + 1, \
                 ((a * 2654435761) % 200001) - 100000, '' FROM generate_series({a0}::bigint, {a1}) a; \
                 INSERT INTO pgbench_history SELECT h, (h * 7919) % {tellers} + 1, \
                 (h * 7919) % {s1} + 1, (h * 2654435761) % {a1} + 1, ((h * 31) % 10001) - 5000, \
                 timestamp '2026-01-01' + h * interval '10 ms', '' \
                 FROM generate_series({h0}::bigint, {h1}) h",
                t0 = (s0 - 1) * 10 + 1,
                t1 = s1 * 10,
                per = PGBENCH_ACCOUNTS_PER_SCALE,
                tellers = s1 * 10,
            ))
            .await?;
        scale = s1;
        rows = a1 + h1 + s1 * 11;
        log(&format!("postgresql: pgbench scale {scale}, {rows} rows"));
    }
    server
        .query(
            "CREATE INDEX pgbench_accounts_bid ON pgbench_accounts (bid); \
             CREATE INDEX pgbench_tellers_bid ON pgbench_tellers (bid); \
             CREATE INDEX pgbench_history_aid ON pgbench_history (aid); \
             CREATE INDEX pgbench_history_mtime ON pgbench_history (mtime)",
        )
        .await?;
    log(&format!(
        "postgresql: secondary indexes built, {} MB in the pgbench tables",
        size().await? / 1_000_000
    ));
    server
        .query(
            "VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history",
        )
        .await?;
    server.query("CHECKPOINT").await?;
    Ok(Loaded {
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}
