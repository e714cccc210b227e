//! The administrator connection to the local server (tokio-postgres, kept private).

use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use trove_guest_core::DatastoreHandle;

use crate::error::PgError;

/// An open administrator session; the connection task ends when it is dropped.
pub(crate) struct Db {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Db {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn target(handle: &DatastoreHandle) -> String {
    match &handle.admin.socket {
        Some(dir) => format!("socket {} port {}", dir.display(), handle.admin.port),
        None => format!("{}:{}", handle.admin.host, handle.admin.port),
    }
}

impl Db {
    /// Connects once.
    pub(crate) async fn connect(handle: &DatastoreHandle) -> Result<Db, PgError> {
        let a = &handle.admin;
        let mut cfg = tokio_postgres::Config::new();
        match &a.socket {
            Some(dir) => cfg.host_path(dir),
            None => cfg.host(&a.host),
        };
        cfg.port(a.port)
            .user(&a.user)
            .dbname("postgres")
            .application_name("trove-guest")
            .connect_timeout(Duration::from_secs(10));
        if !a.password.is_empty() {
            cfg.password(a.password.expose());
        }
        let (client, conn) = cfg
            .connect(NoTls)
            .await
            .map_err(|source| PgError::Connect {
                target: target(handle),
                source,
            })?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
        Ok(Db { client, task })
    }

    /// Connects to a master over TCP as its replication login (database `postgres`), for the
    /// slot functions a REPLICATION role may call. The password stays in memory.
    pub(crate) async fn connect_master(
        host: &str,
        port: u16,
        user: &str,
        password: &trove_guest_core::Secret,
    ) -> Result<Db, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user(user)
            .password(password.expose())
            .dbname("postgres")
            .application_name("trove-guest")
            .connect_timeout(Duration::from_secs(10));
        let (client, conn) = cfg
            .connect(NoTls)
            .await
            .map_err(|source| PgError::Connect {
                target: format!("master {host}:{port} as {user}"),
                source,
            })?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "master connection ended");
            }
        });
        Ok(Db { client, task })
    }

    /// Connects, retrying while the server starts up (or is not running yet), for at most
    /// `timeout`. A refused login (wrong password, no hba entry) fails at once.
    pub(crate) async fn connect_retry(
        handle: &DatastoreHandle,
        timeout: Duration,
    ) -> Result<Db, PgError> {
        let started = Instant::now();
        loop {
            match Db::connect(handle).await {
                Ok(db) => match db.client.simple_query("SELECT 1").await {
                    Ok(_) => return Ok(db),
                    Err(e) if started.elapsed() >= timeout => {
                        return Err(PgError::Sql {
                            action: "first query",
                            source: e,
                        });
                    }
                    Err(_) => {}
                },
                Err(e) if e.is_auth() || started.elapsed() >= timeout => return Err(e),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a utility statement without parameters (simple protocol).
    pub(crate) async fn batch(&self, action: &'static str, sql: &str) -> Result<(), PgError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|source| PgError::Sql { action, source })
    }

    /// Runs a query returning rows.
    pub(crate) async fn query(
        &self,
        action: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        self.client
            .query(sql, params)
            .await
            .map_err(|source| PgError::Sql { action, source })
    }

    /// Runs a query returning exactly one row.
    pub(crate) async fn one(
        &self,
        action: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError> {
        self.client
            .query_one(sql, params)
            .await
            .map_err(|source| PgError::Sql { action, source })
    }

    /// Runs a query returning at most one row.
    pub(crate) async fn opt(
        &self,
        action: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError> {
        self.client
            .query_opt(sql, params)
            .await
            .map_err(|source| PgError::Sql { action, source })
    }
}
