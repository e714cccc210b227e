//! Administrative sessions on the local server (no SQL text here: see [`crate::sql`]).

use std::collections::HashMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use trove_guest_core::wire::ReplicationTls;
use trove_guest_core::{AdminConnection, Error, Result, TlsProblem};

use crate::error::MysqlError;
use crate::sql::{Sql, Statement};

/// One result row, by column name, as text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row(HashMap<String, Option<String>>, Option<String>);

impl Row {
    /// The value of the first present column among `names` (`None` for absent or NULL).
    pub(crate) fn get(&self, names: &[&str]) -> Option<&str> {
        names
            .iter()
            .find_map(|n| self.0.get(*n).and_then(|v| v.as_deref()))
    }

    /// The first column's value (rows keep column order only through this).
    pub(crate) fn first(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// Like [`Row::get`], empty strings count as absent.
    pub(crate) fn non_empty(&self, names: &[&str]) -> Option<&str> {
        self.get(names).filter(|v| !v.trim().is_empty())
    }

    /// A row from `(column, value)` pairs in column order (for the fuzzing harness).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn from_columns(columns: &[(String, Option<String>)]) -> Row {
        Row(
            columns.iter().cloned().collect(),
            columns.first().and_then(|(_, v)| v.clone()),
        )
    }
}

fn value_text(v: &mysql_async::Value) -> Option<String> {
    use mysql_async::Value;
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(f) => Some(f.to_string()),
        other => Some(other.as_sql(false)),
    }
}

/// How long one login (connect, handshake, authentication) to the local server may take.
/// mysql_async has no connect timeout of its own: every connect goes through
/// [`connect_within`].
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalive on sessions, so a peer that vanishes mid-query is noticed by the kernel.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// TLS required on a TCP connection, the server's certificate verified against `tls`'s CA
/// only (never the built-in roots) for `tls`'s server name (not the host connected to).
fn ssl_opts(tls: &ReplicationTls) -> mysql_async::SslOpts {
    mysql_async::SslOpts::default()
        .with_root_certs(vec![tls.ca_certificate.as_bytes().to_vec().into()])
        .with_disable_built_in_roots(true)
        .with_danger_tls_hostname_override(Some(tls.server_name.clone()))
}

/// Connects with `opts`, giving up after `timeout` (a server that accepts the TCP connection
/// and never sends its greeting would otherwise hold the caller for good). With `tls`, a
/// certificate that does not verify, or a server without TLS, is [`Error::Tls`].
async fn connect_within(
    opts: mysql_async::OptsBuilder,
    tls: Option<&ReplicationTls>,
    target: String,
    timeout: Duration,
) -> Result<mysql_async::Conn> {
    let opts = match tls {
        Some(tls) => {
            // mysql_async builds its rustls configuration with the process-wide default
            // provider, which rustls cannot pick by itself once more than one is compiled in.
            let _ = rustls::crypto::ring::default_provider().install_default();
            opts.ssl_opts(Some(ssl_opts(tls)))
        }
        None => opts,
    };
    match tokio::time::timeout(timeout, mysql_async::Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(match tls {
            Some(tls) => tls_refusal(&target, tls, &source),
            None => None,
        }
        .unwrap_or_else(|| MysqlError::Connect { target, source }.into())),
        Err(_) => Err(Error::timeout(format!("connect to {target}"), timeout)),
    }
}

/// [`Error::Tls`] when `source` is a TLS failure: the certificate did not verify, or the
/// server offers no TLS.
fn tls_refusal(target: &str, tls: &ReplicationTls, source: &mysql_async::Error) -> Option<Error> {
    let server = format!("{target} (as {})", tls.server_name);
    if let mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) = source
    {
        return Some(Error::Tls {
            server,
            problem: TlsProblem::NotOffered,
            message: source.to_string(),
        });
    }
    trove_guest_core::tls::refused_by_tls(&server, source)
}

/// An open administrative session.
pub(crate) struct Session {
    conn: mysql_async::Conn,
}

impl Session {
    /// Logs in as the admin user (socket preferred) and prepares the session, giving up after
    /// [`CONNECT_TIMEOUT`]. Over TCP with [`trove_guest_core::tls::AdminTls::Verify`], the
    /// login runs over TLS and a certificate that does not verify is [`Error::Tls`].
    pub(crate) async fn open(admin: &AdminConnection) -> Result<Self> {
        Session::open_within(admin, CONNECT_TIMEOUT).await
    }

    /// [`Session::open`], giving up after `timeout`.
    pub(crate) async fn open_within(admin: &AdminConnection, timeout: Duration) -> Result<Self> {
        let mut opts = mysql_async::OptsBuilder::default()
            .user(Some(admin.user.clone()))
            .prefer_socket(false)
            .tcp_keepalive(Some(KEEPALIVE));
        if !admin.password.is_empty() {
            opts = opts.pass(Some(admin.password.expose().to_owned()));
        }
        let target = match &admin.socket {
            Some(sock) => {
                opts = opts.socket(Some(sock.to_string_lossy().into_owned()));
                format!("socket {}", sock.display())
            }
            None => {
                opts = opts.ip_or_hostname(admin.host.clone()).tcp_port(admin.port);
                format!("{}:{}", admin.host, admin.port)
            }
        };
        let target = format!("{target} as {}", admin.user);
        let tls = admin.tls_trust()?;
        let conn = connect_within(opts, tls.as_ref(), target, timeout).await?;
        let mut s = Session { conn };
        s.exec(&Sql::session_setup()).await?;
        Ok(s)
    }

    /// Logs in to a remote server (the master) over TCP as `user`, giving up after `timeout`;
    /// with `tls`, over TLS verified against its CA and server name ([`Error::Tls`] when the
    /// certificate does not verify).
    pub(crate) async fn open_remote(
        host: &str,
        port: u16,
        user: &str,
        password: &trove_guest_core::Secret,
        tls: Option<&ReplicationTls>,
        timeout: Duration,
    ) -> Result<Self> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.to_owned())
            .tcp_port(port)
            .user(Some(user.to_owned()))
            .pass(Some(password.expose().to_owned()))
            .prefer_socket(false)
            .tcp_keepalive(Some(KEEPALIVE));
        let target = format!("{host}:{port} as {user}");
        let conn = connect_within(opts, tls, target, timeout).await?;
        let mut s = Session { conn };
        s.exec(&Sql::session_setup()).await?;
        Ok(s)
    }

    /// Runs a statement that returns no rows.
    pub(crate) async fn exec(&mut self, st: &Statement) -> Result<()> {
        tracing::debug!(sql = %st, "exec");
        self.conn
            .query_drop(st.expose_text())
            .await
            .map_err(|e| MysqlError::query(st, e).into())
    }

    /// Runs statements in order.
    pub(crate) async fn exec_all(&mut self, sts: &[Statement]) -> Result<()> {
        for st in sts {
            self.exec(st).await?;
        }
        Ok(())
    }

    /// Runs a query and returns its rows.
    pub(crate) async fn rows(&mut self, st: &Statement) -> Result<Vec<Row>> {
        tracing::debug!(sql = %st, "query");
        let rows: Vec<mysql_async::Row> = self
            .conn
            .query(st.expose_text())
            .await
            .map_err(|e| MysqlError::query(st, e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let cols = r.columns_ref();
                let first = r.as_ref(0).and_then(value_text);
                Row(
                    cols.iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let v = r.as_ref(i).and_then(value_text);
                            (c.name_str().into_owned(), v)
                        })
                        .collect(),
                    first,
                )
            })
            .collect())
    }

    /// The first row, if any.
    pub(crate) async fn row(&mut self, st: &Statement) -> Result<Option<Row>> {
        Ok(self.rows(st).await?.into_iter().next())
    }

    /// The first row, which must exist.
    pub(crate) async fn one(&mut self, st: &Statement) -> Result<Row> {
        self.row(st)
            .await?
            .ok_or_else(|| MysqlError::unexpected(st, "no row").into())
    }

    /// Closes the session politely.
    pub(crate) async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use trove_guest_core::{ErrorKind, Secret};

    use super::*;

    #[tokio::test]
    async fn a_login_to_a_server_that_never_sends_its_greeting_times_out() {
        // The kernel completes the TCP handshake on a listening socket; nothing answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let admin = AdminConnection::new("127.0.0.1", port, "root", Secret::new("x"));
        let attempt = Session::open_within(&admin, Duration::from_millis(300));
        // A generous guard only so that a missing bound fails instead of hanging the suite.
        let err = tokio::time::timeout(Duration::from_secs(60), attempt)
            .await
            .expect("the login is bounded by its own timeout")
            .err()
            .expect("nothing answers");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        drop(listener);
    }
}
