//! The pre-flight check: a TLS handshake with the master from the replica's host, verified
//! against the snapshot document's CA, before anything on the replica changes.

use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpStream;

use crate::datastore::DatastoreHandle;
use crate::error::{Error, Result, TlsProblem};
use crate::failover::ReplicaContext;
use crate::wire::{MasterAddress, ReplicationTls, SnapshotDocument};

/// How a datastore's protocol switches a fresh connection to TLS (MySQL's `SSLRequest` after
/// the server greeting, PostgreSQL's `SSLRequest` answered by `S`): what a backend supplies
/// to [`verify_master`].
#[async_trait]
pub trait StartTls: Send + Sync {
    /// Runs the protocol's exchange on `stream` up to the point where the TLS handshake
    /// starts.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] with [`TlsProblem::NotOffered`] when the server refuses TLS,
    /// [`Error::Datastore`] for a protocol error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the connection.
    async fn negotiate(&self, stream: &mut TcpStream) -> Result<()>;
}

/// Checks the master the way the replica's datastore will: a handshake for the document's
/// server name and, when it differs, for `master.host` (MariaDB/MySQL and libpq verify the
/// certificate against the host they connect to).
///
/// # Errors
///
/// [`Error::Tls`]: [`TlsProblem::UntrustedCertificate`] (wrong CA),
/// [`TlsProblem::NameMismatch`], [`TlsProblem::NotOffered`], [`TlsProblem::Handshake`]
/// (unreachable, timeout, protocol).
///
/// # Cancel safety
///
/// Cancel safe: it only opens and drops connections.
pub async fn verify_master(
    master: &MasterAddress,
    tls: &ReplicationTls,
    start: &dyn StartTls,
    timeout: Duration,
) -> Result<()> {
    verify_server(master, tls, &tls.server_name, start, timeout).await?;
    if !master.host.eq_ignore_ascii_case(&tls.server_name) {
        verify_server(master, tls, &master.host, start, timeout).await?;
    }
    Ok(())
}

/// One handshake with `master`, checking its certificate against `tls`'s CA and `name`.
///
/// # Errors
///
/// As [`verify_master`].
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn verify_server(
    master: &MasterAddress,
    tls: &ReplicationTls,
    name: &str,
    start: &dyn StartTls,
    timeout: Duration,
) -> Result<()> {
    let server = format!("{}:{} (as {name})", master.host, master.port);
    let refused = |problem: TlsProblem, message: String| Error::Tls {
        server: server.clone(),
        problem,
        message,
    };
    let config = super::client_config(tls)?;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| Error::invalid("TLS server name", format!("{name:?}: {e}")))?;
    let handshake = async {
        let mut tcp = TcpStream::connect((master.host.as_str(), master.port))
            .await
            .map_err(|e| refused(TlsProblem::Handshake, format!("connect: {e}")))?;
        start.negotiate(&mut tcp).await.map_err(|e| match e {
            Error::Tls {
                problem, message, ..
            } => refused(problem, message),
            other => refused(TlsProblem::Handshake, other.to_string()),
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| classify(&e, &refused))?;
        drop(stream);
        Ok::<_, Error>(())
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r,
        Err(_) => Err(refused(
            TlsProblem::Handshake,
            format!("no TLS handshake within {timeout:?}"),
        )),
    }
}

fn classify(e: &std::io::Error, refused: &dyn Fn(TlsProblem, String) -> Error) -> Error {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return refused(TlsProblem::Handshake, e.to_string());
    };
    let problem = match tls {
        rustls::Error::InvalidCertificate(c) => {
            if format!("{c:?}").starts_with("NotValidForName") {
                TlsProblem::NameMismatch
            } else {
                TlsProblem::UntrustedCertificate
            }
        }
        _ => TlsProblem::Handshake,
    };
    refused(problem, tls.to_string())
}

/// On a master: the `replication.tls` section of its snapshot documents when `handle` has TLS
/// (`None` without), checked against this running server first: it must serve a certificate
/// that verifies with the CA for the name replicas will verify.
///
/// # Errors
///
/// As [`ServerTls::replication_tls`](super::ServerTls::replication_tls) and
/// [`verify_master`].
///
/// # Cancel safety
///
/// Cancel safe: it only reads files and opens and drops connections.
pub async fn master_section(
    handle: &DatastoreHandle,
    start: &dyn StartTls,
    timeout: Duration,
) -> Result<Option<ReplicationTls>> {
    let Some(own) = &handle.tls else {
        return Ok(None);
    };
    let tls = own.replication_tls(&handle.advertise.host)?;
    verify_master(&handle.advertise, &tls, start, timeout).await?;
    Ok(Some(tls))
}

/// On a replica, before anything changes: `doc`'s TLS section after `handle`'s policy
/// ([`tls_for_attach`](super::tls_for_attach)), with the master's certificate verified from
/// this host.
///
/// # Errors
///
/// As [`tls_for_attach`](super::tls_for_attach) and [`verify_master`].
///
/// # Cancel safety
///
/// Cancel safe: it only opens and drops connections.
pub async fn attach_section(
    handle: &DatastoreHandle,
    doc: &SnapshotDocument,
    start: &dyn StartTls,
    timeout: Duration,
) -> Result<Option<ReplicationTls>> {
    let Some(tls) = super::tls_for_attach(handle.tls.as_ref(), doc)? else {
        return Ok(None);
    };
    verify_master(&doc.master, tls, start, timeout).await?;
    Ok(Some(tls.clone()))
}

/// On a server re-pointed at a new source by `attach_replica` (switchover, failover), before
/// anything changes: `ctx`'s TLS section after `handle`'s policy
/// ([`tls_for_repoint`](super::tls_for_repoint)), with the new source's certificate verified
/// from this host. A certificate that does not verify leaves the server following its old
/// source.
///
/// # Errors
///
/// As [`tls_for_repoint`](super::tls_for_repoint) and [`verify_master`].
///
/// # Cancel safety
///
/// Cancel safe: it only opens and drops connections.
pub async fn repoint_section(
    handle: &DatastoreHandle,
    ctx: &ReplicaContext,
    start: &dyn StartTls,
    timeout: Duration,
) -> Result<Option<ReplicationTls>> {
    let Some(tls) = super::tls_for_repoint(handle.tls.as_ref(), ctx)? else {
        return Ok(None);
    };
    verify_master(&ctx.master, tls, start, timeout).await?;
    Ok(Some(tls.clone()))
}
