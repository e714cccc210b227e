//! The administrator connection to the local server (tokio-postgres, kept private).

use std::time::{Duration, Instant};

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use trove_guest_core::wire::ReplicationTls;
use trove_guest_core::{DatastoreHandle, TlsProblem};

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

/// How long one connection attempt (TCP connect, startup, authentication) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a connection attempt for at most `timeout`; with `tls`, a certificate that does not
/// verify, or a server without TLS, is [`PgError::Tls`].
async fn bounded<T>(
    timeout: Duration,
    target: String,
    tls: Option<&ReplicationTls>,
    connect: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(source)) => Err(match tls {
            Some(tls) => tls_refusal(&target, tls, &source),
            None => None,
        }
        .unwrap_or(PgError::Connect { target, source })),
        Err(_) => Err(PgError::ConnectTimeout {
            target,
            after: timeout,
        }),
    }
}

/// [`PgError::Tls`] when `source` is a TLS failure.
fn tls_refusal(
    target: &str,
    tls: &ReplicationTls,
    source: &tokio_postgres::Error,
) -> Option<PgError> {
    let server = format!("{target} (as {})", tls.server_name);
    if let Some((problem, message)) = trove_guest_core::tls::handshake_problem(source) {
        return Some(PgError::Tls {
            server,
            problem,
            message,
        });
    }
    // tokio-postgres says so in words only (`SslMode::Require` against a server without TLS).
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(e) = next {
        if e.to_string().contains("server does not support TLS") {
            return Some(PgError::Tls {
                server,
                problem: TlsProblem::NotOffered,
                message: e.to_string(),
            });
        }
        next = e.source();
    }
    None
}

/// Runs a connection's I/O until it ends (it ends when its client is dropped).
fn drive(
    conn: impl std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "{what} connection ended");
        }
    })
}

/// TLS verified against `tls`'s CA only, for `tls`'s server name whatever host the connection
/// goes to (the admin connects to loopback; its server's certificate names the server).
#[derive(Clone)]
struct VerifyAs {
    inner: MakeRustlsConnect,
    name: String,
}

impl VerifyAs {
    fn new(tls: &ReplicationTls) -> Result<VerifyAs, PgError> {
        let config = trove_guest_core::tls::client_config(tls)
            .map_err(|e| PgError::Settings(Box::new(e)))?;
        Ok(VerifyAs {
            inner: MakeRustlsConnect::new((*config).clone()),
            name: tls.server_name.clone(),
        })
    }
}

impl MakeTlsConnect<Socket> for VerifyAs {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, _host: &str) -> Result<Self::TlsConnect, Self::Error> {
        <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(&mut self.inner, &self.name)
    }
}

fn target(handle: &DatastoreHandle) -> String {
    match &handle.admin.socket {
        Some(dir) => format!("socket {} port {}", dir.display(), handle.admin.port),
        None => format!("{}:{}", handle.admin.host, handle.admin.port),
    }
}

impl Db {
    /// Connects once, giving up after [`CONNECT_TIMEOUT`].
    pub(crate) async fn connect(handle: &DatastoreHandle) -> Result<Db, PgError> {
        Db::connect_within(handle, CONNECT_TIMEOUT).await
    }

    /// Connects once, giving up after `timeout` (TCP connect, startup and authentication
    /// together: `connect_timeout` alone covers only the TCP connect, not a server that
    /// accepts and then never answers). Over TCP with
    /// [`AdminTls::Verify`](trove_guest_core::tls::AdminTls::Verify) the connection requires
    /// TLS, verified against the CA for the server name ([`PgError::Tls`] otherwise).
    pub(crate) async fn connect_within(
        handle: &DatastoreHandle,
        timeout: Duration,
    ) -> Result<Db, PgError> {
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
            .connect_timeout(timeout);
        if !a.password.is_empty() {
            cfg.password(a.password.expose());
        }
        let trust = a.tls_trust().map_err(|e| PgError::Settings(Box::new(e)))?;
        let (client, task) = match trust {
            Some(tls) => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let connect = cfg.connect(VerifyAs::new(&tls)?);
                let (client, conn) = bounded(timeout, target(handle), Some(&tls), connect).await?;
                (client, drive(conn, "admin"))
            }
            None => {
                let (client, conn) =
                    bounded(timeout, target(handle), None, cfg.connect(NoTls)).await?;
                (client, drive(conn, "admin"))
            }
        };
        Ok(Db { client, task })
    }

    /// Connects to a master over TCP as its replication login (database `postgres`), for the
    /// slot functions a REPLICATION role may call. The password stays in memory.
    pub(crate) async fn connect_master(
        host: &str,
        port: u16,
        user: &str,
        password: &trove_guest_core::Secret,
        tls: Option<&trove_guest_core::wire::ReplicationTls>,
    ) -> Result<Db, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user(user)
            .password(password.expose())
            .dbname("postgres")
            .application_name("trove-guest")
            .connect_timeout(CONNECT_TIMEOUT);
        let target = format!("master {host}:{port} as {user}");
        let task = match tls {
            // TLS required, the certificate verified against the document's CA for `host`
            // (what `sslmode=verify-full` does for the WAL receiver).
            Some(tls) => {
                let config =
                    trove_guest_core::tls::client_config(tls).map_err(|e| PgError::Unexpected {
                        action: "build the TLS configuration",
                        detail: e.to_string(),
                    })?;
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone());
                let (client, conn) =
                    bounded(CONNECT_TIMEOUT, target, Some(tls), cfg.connect(connector)).await?;
                let task = tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "master connection ended");
                    }
                });
                return Ok(Db { client, task });
            }
            None => {
                let (client, conn) =
                    bounded(CONNECT_TIMEOUT, target, None, cfg.connect(NoTls)).await?;
                (
                    client,
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "master connection ended");
                        }
                    }),
                )
            }
        };
        Ok(Db {
            client: task.0,
            task: task.1,
        })
    }

    /// Connects, retrying while the server starts up (or is not running yet), for at most
    /// `timeout`. A refused login (wrong password, no hba entry) fails at once.
    pub(crate) async fn connect_retry(
        handle: &DatastoreHandle,
        timeout: Duration,
    ) -> Result<Db, PgError> {
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            match Db::connect_within(
                handle,
                left.clamp(Duration::from_millis(100), CONNECT_TIMEOUT),
            )
            .await
            {
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
                Err(e) if e.is_final() || started.elapsed() >= timeout => return Err(e),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use trove_guest_core::{AdminConnection, ErrorKind, Secret};

    use super::*;

    /// A handle whose server accepts TCP connections (the kernel completes the handshake on a
    /// listening socket) and never says a word.
    fn silent_server() -> (std::net::TcpListener, DatastoreHandle) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = std::env::temp_dir();
        let service = Arc::new(trove_guest_core::LocalProcess::new(
            trove_guest_core::ToolCommand::new("true"),
            trove_guest_core::Readiness::Tcp(([127, 0, 0, 1], port).into()),
        ));
        let handle = DatastoreHandle::new(
            AdminConnection::new("127.0.0.1", port, "postgres", Secret::new("x")),
            &dir,
            &dir,
            service,
        );
        (listener, handle)
    }

    #[tokio::test]
    async fn a_connect_to_a_server_that_never_answers_times_out() {
        let (_listener, handle) = silent_server();
        let attempt = Db::connect_within(&handle, Duration::from_millis(300));
        // A generous guard only so that a missing bound fails instead of hanging the suite.
        let err = tokio::time::timeout(Duration::from_secs(60), attempt)
            .await
            .expect("the connect is bounded by its own timeout")
            .err()
            .expect("nothing answers");
        assert!(matches!(err, PgError::ConnectTimeout { .. }), "{err}");
        assert_eq!(
            trove_guest_core::Error::from(err).kind(),
            ErrorKind::Timeout
        );
    }
}
