//! The benchmark's data: one InnoDB / heap table of ~600-byte rows (a bigint key, a small
//! integer with a secondary index on MariaDB, and 512 characters of hex text that compress about
//! 2:1, like much real data), loaded in batches until the table reaches the requested size.

use std::path::Path;
use std::time::Instant;

use trove_guest_core::{Error, Result};
use trove_guest_mysql::testkit::MariaDbServer;
use trove_guest_postgres::testkit::PostgresServer;

/// Rows inserted per statement.
const BATCH: u64 = 100_000;

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
    target: u64,
    log: &dyn Fn(&str),
) -> Result<Loaded> {
    let started = Instant::now();
    server.execute("CREATE DATABASE bench").await?;
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
    // Clean pages on disk, so every row starts from the same state.
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
    Ok(Loaded {
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
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
    target: u64,
    log: &dyn Fn(&str),
) -> Result<Loaded> {
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
