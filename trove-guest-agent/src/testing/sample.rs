//! Sample data on a MariaDB/MySQL, PostgreSQL or Redis server: a two-table schema (Redis: two
//! key prefixes, `trove_demo:products:<id>`), deterministic rows, and per-table row counts and
//! checksums to compare a replica with its master.
//!
//! Rows are derived from their id, so any two servers that applied the same ids hold equal
//! data. Statements are built only from integers and fixed text (nothing from outside).

use std::ops::Range;

use mysql_async::prelude::Queryable;
use trove_guest_core::testkit::conformance::{Fingerprint, TableFingerprint};
use trove_guest_core::{AdminConnection, DatastoreKind, Error, Result};

/// The schema (MariaDB database / PostgreSQL schema) holding the sample tables.
pub const SCHEMA: &str = "trove_demo";
/// The sample tables.
pub const TABLES: [&str; 2] = ["products", "orders"];

/// A connection to a server holding (or about to hold) the sample data.
///
/// MariaDB/MySQL statements each use a fresh connection, PostgreSQL reconnects when its
/// connection was closed, so the value survives server restarts (enabling a master restarts it).
pub struct SampleDb {
    kind: DatastoreKind,
    admin: AdminConnection,
    pg: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl std::fmt::Debug for SampleDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleDb")
            .field("kind", &self.kind)
            .field("admin", &self.admin)
            .finish()
    }
}

/// How long one connection of the sample writer may take to log in.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn db_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::datastore(format!("sample data: {what}"), e)
}

fn payload(id: u64) -> String {
    // ~200 bytes of id-derived text.
    let seed = format!("{id:016x}");
    seed.repeat(12)
}

impl SampleDb {
    /// Connects as the administrator described by `admin` (socket when set).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when the connection fails; [`Error::Unsupported`] for a datastore
    /// other than MySQL, MariaDB or PostgreSQL.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn connect(kind: DatastoreKind, admin: &AdminConnection) -> Result<Self> {
        let db = SampleDb {
            kind,
            admin: admin.clone(),
            pg: tokio::sync::Mutex::new(None),
        };
        // Fail early when the server cannot be reached.
        match kind {
            DatastoreKind::Postgresql => {
                *db.pg.lock().await = Some(db.pg_connect().await?);
            }
            DatastoreKind::Mysql | DatastoreKind::Mariadb => drop(db.my_conn().await?),
            _ if db.is_redis() => drop(db.redis(&["PING"]).await?),
            other => {
                return Err(Error::unsupported(format!(
                    "sample data in a {other} server (MySQL, MariaDB, PostgreSQL and Redis only)"
                )));
            }
        }
        Ok(db)
    }

    fn is_pg(&self) -> bool {
        self.kind == DatastoreKind::Postgresql
    }

    fn is_redis(&self) -> bool {
        self.kind.as_str() == "redis"
    }

    async fn redis(&self, args: &[&str]) -> Result<Vec<String>> {
        trove_guest_redis::testkit::admin_command(&self.admin, args).await
    }

    /// Redis: the sorted keys of a sample "table".
    async fn redis_keys(&self, table: &str) -> Result<Vec<String>> {
        let pattern = format!("{SCHEMA}:{table}:*");
        let mut cursor = "0".to_owned();
        let mut keys = Vec::new();
        loop {
            let r = self
                .redis(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"])
                .await?;
            cursor = r.first().cloned().unwrap_or_else(|| "0".into());
            keys.extend(r.into_iter().skip(1));
            if cursor == "0" {
                break;
            }
        }
        // Ids in numeric order; SCAN may return a key twice.
        keys.sort_by_key(|k| (k.len(), k.clone()));
        keys.dedup();
        Ok(keys)
    }

    /// Redis: count and SHA-256 of `key=value` lines in id order.
    async fn redis_fingerprint(&self, table: &str) -> Result<TableFingerprint> {
        use sha2::Digest as _;
        let keys = self.redis_keys(table).await?;
        let mut h = sha2::Sha256::new();
        for chunk in keys.chunks(1000) {
            let mut args = vec!["MGET"];
            args.extend(chunk.iter().map(String::as_str));
            for (k, v) in chunk.iter().zip(self.redis(&args).await?) {
                h.update(format!("{k}={v}\n"));
            }
        }
        Ok(TableFingerprint {
            rows: keys.len() as u64,
            checksum: hex::encode(h.finalize()),
        })
    }

    async fn pg_connect(&self) -> Result<tokio_postgres::Client> {
        let admin = &self.admin;
        let mut cfg = tokio_postgres::Config::new();
        match &admin.socket {
            Some(dir) => cfg.host_path(dir),
            None => cfg.host(&admin.host),
        };
        cfg.port(admin.port).user(&admin.user).dbname("postgres");
        if !admin.password.is_empty() {
            cfg.password(admin.password.expose());
        }
        let (client, conn) =
            tokio::time::timeout(CONNECT_TIMEOUT, cfg.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| Error::timeout("sample data: connect", CONNECT_TIMEOUT))?
                .map_err(|e| db_err("connect", e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn pg_client(&self) -> Result<tokio::sync::MappedMutexGuard<'_, tokio_postgres::Client>> {
        let mut guard = self.pg.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.pg_connect().await?);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.as_mut().expect("connected above")
        }))
    }

    async fn my_conn(&self) -> Result<mysql_async::Conn> {
        let admin = &self.admin;
        let mut opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(admin.host.clone())
            .tcp_port(admin.port)
            .user(Some(admin.user.clone()))
            .pass((!admin.password.is_empty()).then(|| admin.password.expose().to_owned()));
        if let Some(sock) = &admin.socket {
            opts = opts.socket(Some(sock.to_string_lossy().into_owned()));
        }
        tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts))
            .await
            .map_err(|_| Error::timeout("sample data: connect", CONNECT_TIMEOUT))?
            .map_err(|e| db_err("connect", e))
    }

    async fn exec(&self, sql: &str) -> Result<()> {
        if self.is_pg() {
            self.pg_client()
                .await?
                .batch_execute(sql)
                .await
                .map_err(|e| db_err("statement", e))
        } else {
            let mut c = self.my_conn().await?;
            let r = c.query_drop(sql).await.map_err(|e| db_err("statement", e));
            let _ = c.disconnect().await;
            r
        }
    }

    /// Creates the schema and its tables (if missing).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: each statement is idempotent.
    pub async fn create_schema(&self) -> Result<()> {
        if self.is_redis() {
            return Ok(());
        }
        match self.is_pg() {
            false => {
                self.exec(&format!(
                    "CREATE DATABASE IF NOT EXISTS {SCHEMA} CHARACTER SET utf8mb4;
                     CREATE TABLE IF NOT EXISTS {SCHEMA}.products (
                        id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL,
                        price DECIMAL(10,2) NOT NULL, payload VARCHAR(255) NOT NULL) ENGINE=InnoDB;
                     CREATE TABLE IF NOT EXISTS {SCHEMA}.orders (
                        id BIGINT PRIMARY KEY, product_id BIGINT NOT NULL, qty INT NOT NULL,
                        note VARCHAR(255) NOT NULL) ENGINE=InnoDB;"
                ))
                .await
            }
            true => {
                self.exec(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {SCHEMA};
                     CREATE TABLE IF NOT EXISTS {SCHEMA}.products (
                        id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL,
                        price NUMERIC(10,2) NOT NULL, payload VARCHAR(255) NOT NULL);
                     CREATE TABLE IF NOT EXISTS {SCHEMA}.orders (
                        id BIGINT PRIMARY KEY, product_id BIGINT NOT NULL, qty INT NOT NULL,
                        note VARCHAR(255) NOT NULL);"
                ))
                .await
            }
        }
    }

    /// Inserts the rows with ids in `ids` into both tables, in one statement per table.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] (for example on a read-only server or a duplicate id).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: one table may have the rows and the other not.
    pub async fn insert_rows(&self, ids: Range<u64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.is_redis() {
            // One MSET: both "tables" get the ids at once.
            let mut words = vec!["MSET".to_owned()];
            for i in ids {
                words.push(format!("{SCHEMA}:products:{i}"));
                words.push(format!(
                    "product-{i}#{}.{:02}#{}",
                    i % 1000,
                    i % 100,
                    payload(i)
                ));
                words.push(format!("{SCHEMA}:orders:{i}"));
                words.push(format!(
                    "{}#{}#order {i}: {}",
                    i / 3,
                    1 + i % 9,
                    payload(i * 7)
                ));
            }
            let args: Vec<&str> = words.iter().map(String::as_str).collect();
            return self.redis(&args).await.map(drop);
        }
        let products: Vec<String> = ids
            .clone()
            .map(|i| {
                format!(
                    "({i}, 'product-{i}', {}.{:02}, '{}')",
                    i % 1000,
                    i % 100,
                    payload(i)
                )
            })
            .collect();
        let orders: Vec<String> = ids
            .map(|i| {
                format!(
                    "({i}, {}, {}, 'order {i}: {}')",
                    i / 3,
                    1 + i % 9,
                    payload(i * 7)
                )
            })
            .collect();
        self.exec(&format!(
            "INSERT INTO {SCHEMA}.products (id, name, price, payload) VALUES {};
             INSERT INTO {SCHEMA}.orders (id, product_id, qty, note) VALUES {};",
            products.join(","),
            orders.join(",")
        ))
        .await
    }

    /// Loads rows `0..rows` in batches, calling `on_batch(rows_done)` after each.
    ///
    /// # Errors
    ///
    /// As [`SampleDb::insert_rows`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn load(&self, rows: u64, mut on_batch: impl FnMut(u64)) -> Result<()> {
        const BATCH: u64 = 1000;
        let mut at = 0;
        while at < rows {
            let end = (at + BATCH).min(rows);
            self.insert_rows(at..end).await?;
            at = end;
            on_batch(at);
        }
        Ok(())
    }

    /// The first row of `sql`, each value as text.
    async fn scalar_text(&self, sql: &str) -> Result<Vec<String>> {
        self.rows_text(sql)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound {
                what: format!("a row from {sql:?}"),
            })
    }

    /// Every row of a read-only catalog query (for example `SELECT user, host FROM mysql.user`
    /// or `... FROM pg_hba_file_rules`), each value as text (NULL as empty). MariaDB, MySQL and
    /// PostgreSQL only.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`]; [`Error::Unsupported`] for Redis.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn rows_text(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        if self.is_redis() {
            return Err(Error::unsupported("SQL queries on Redis"));
        }
        if self.is_pg() {
            let msgs = self
                .pg_client()
                .await?
                .simple_query(sql)
                .await
                .map_err(|e| db_err("query", e))?;
            return Ok(msgs
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or_default().to_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect());
        }
        let mut c = self.my_conn().await?;
        let rows: Vec<mysql_async::Row> = c.query(sql).await.map_err(|e| db_err("query", e))?;
        let _ = c.disconnect().await;
        Ok(rows
            .into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                        mysql_async::Value::Int(i) => i.to_string(),
                        mysql_async::Value::UInt(u) => u.to_string(),
                        mysql_async::Value::NULL => String::new(),
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .collect())
    }

    /// Rows in `table` (one of [`TABLES`]).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn count(&self, table: &str) -> Result<u64> {
        let table = TABLES
            .iter()
            .find(|t| **t == table)
            .ok_or_else(|| Error::invalid("sample table", table.to_owned()))?;
        if self.is_redis() {
            return Ok(self.redis_keys(table).await?.len() as u64);
        }
        let v = self
            .scalar_text(&format!("SELECT COUNT(*) FROM {SCHEMA}.{table}"))
            .await?;
        v[0].parse()
            .map_err(|_| Error::invalid("row count", v[0].clone()))
    }

    /// Row count and content checksum of each table (MariaDB/MySQL: an order-independent
    /// `BIT_XOR` of per-row CRC32 plus their sum; PostgreSQL: MD5 of the rows in id order).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn fingerprint(&self) -> Result<Fingerprint> {
        let mut out = Fingerprint::default();
        for table in TABLES {
            if self.is_redis() {
                out.0
                    .insert(table.to_owned(), self.redis_fingerprint(table).await?);
                continue;
            }
            let cols = match table {
                "products" => "id, name, price, payload",
                _ => "id, product_id, qty, note",
            };
            let sql = match self.is_pg() {
                false => format!(
                    "SELECT COUNT(*), CONCAT(COALESCE(BIT_XOR(CRC32(CONCAT_WS('#', {cols}))), 0), '-',
                            COALESCE(SUM(CRC32(CONCAT_WS('#', {cols}))), 0))
                     FROM {SCHEMA}.{table}"
                ),
                true => format!(
                    "SELECT COUNT(*), COALESCE(md5(string_agg(concat_ws('#', {cols}), '|' ORDER BY id)), '')
                     FROM {SCHEMA}.{table}"
                ),
            };
            let v = self.scalar_text(&sql).await?;
            out.0.insert(
                table.to_owned(),
                TableFingerprint {
                    rows: v[0]
                        .parse()
                        .map_err(|_| Error::invalid("row count", v[0].clone()))?,
                    checksum: v[1].clone(),
                },
            );
        }
        Ok(out)
    }

    /// Bytes the sample tables take on disk (data and indexes) as the server reports it.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn size_bytes(&self) -> Result<u64> {
        if self.is_redis() {
            let info = self.redis(&["INFO", "memory"]).await?.join("");
            return Ok(info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory_dataset:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0));
        }
        if !self.is_pg() {
            // InnoDB's table statistics lag behind bulk loads; refresh them (not binlogged).
            let tables: Vec<String> = TABLES.iter().map(|t| format!("{SCHEMA}.{t}")).collect();
            self.exec(&format!(
                "ANALYZE NO_WRITE_TO_BINLOG TABLE {}",
                tables.join(", ")
            ))
            .await?;
        }
        let sql = match self.is_pg() {
            false => format!(
                "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables
                 WHERE table_schema = '{SCHEMA}'"
            ),
            true => format!(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = '{SCHEMA}' AND c.relkind = 'r'"
            ),
        };
        let v = self.scalar_text(&sql).await?;
        v[0].parse()
            .map_err(|_| Error::invalid("size", v[0].clone()))
    }

    /// The server's version string (`10.11.19-MariaDB-...`, `15.18 (Debian ...)`).
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn server_version(&self) -> Result<String> {
        if self.is_redis() {
            let info = self.redis(&["INFO", "server"]).await?.join("");
            return Ok(info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .unwrap_or_default()
                .trim()
                .to_owned());
        }
        let sql = if self.is_pg() {
            "SHOW server_version"
        } else {
            "SELECT VERSION()"
        };
        Ok(self.scalar_text(sql).await?.remove(0))
    }

    /// Closes the connection(s).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn close(self) {
        drop(self.pg.lock().await.take());
    }
}
