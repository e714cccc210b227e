//! How the MySQL protocol starts TLS, for core's pre-flight check of a master's certificate
//! ([`trove_guest_core::tls::verify_master`]): read the server's greeting, check it offers TLS
//! (`CLIENT_SSL`), send an `SSLRequest` packet; the TLS handshake follows.

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trove_guest_core::wire::ReplicationTls;
use trove_guest_core::{Error, Result, SnapshotDocument, TlsProblem};

use trove_guest_core::failover::ReplicaContext;

use crate::config::REPLICATION_CA_FILE;
use crate::sql::{ReplicaTls, Sql, Statement};
use crate::strategy::MysqlStrategy;

/// How long one pre-flight handshake may take.
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl MysqlStrategy {
    /// On a master: the `replication.tls` section of its snapshot documents, checked against
    /// this running server ([`trove_guest_core::tls::master_section`]).
    pub(crate) async fn replication_tls(&self) -> Result<Option<ReplicationTls>> {
        trove_guest_core::tls::master_section(&self.handle, &MysqlStartTls, PREFLIGHT_TIMEOUT).await
    }

    /// On a replica, before anything changes: the document's TLS section after this
    /// server's policy, the master verified from here
    /// ([`trove_guest_core::tls::attach_section`]).
    pub(crate) async fn verify_master_tls(
        &self,
        doc: &SnapshotDocument,
    ) -> Result<Option<ReplicationTls>> {
        trove_guest_core::tls::attach_section(&self.handle, doc, &MysqlStartTls, PREFLIGHT_TIMEOUT)
            .await
    }

    /// On a server re-pointed by `attach_replica`, before anything changes: the context's TLS
    /// section after this server's policy, the new source verified from here
    /// ([`trove_guest_core::tls::repoint_section`]).
    pub(crate) async fn verify_source_tls(
        &self,
        ctx: &ReplicaContext,
    ) -> Result<Option<ReplicationTls>> {
        trove_guest_core::tls::repoint_section(&self.handle, ctx, &MysqlStartTls, PREFLIGHT_TIMEOUT)
            .await
    }

    /// The TLS settings of this replica's connection to its source, run right after `CHANGE
    /// MASTER`: writes the (verified) CA next to the configuration and returns the statement
    /// that turns TLS and verification on ([`Sql::change_master_tls`]); without TLS, removes a
    /// CA an earlier source left and returns `None`.
    pub(crate) fn replica_tls_statement(
        &self,
        sql: &Sql,
        tls: Option<&ReplicationTls>,
    ) -> Result<Option<Statement>> {
        let ca_file = self.handle.config_dir.join(REPLICATION_CA_FILE);
        let Some(tls) = tls else {
            // A CA left by an earlier replication over TLS is no longer referenced.
            trove_guest_core::tls::remove_ca_file(&ca_file)?;
            return Ok(None);
        };
        trove_guest_core::tls::write_ca_file(tls, &ca_file)?;
        sql.change_master_tls(&ReplicaTls { ca_file: &ca_file })
            .map(Some)
    }
}

/// [`Error::Tls`] when the replica's IO thread stopped on a failed TLS connection to `master`
/// (error 2026: its certificate is not trusted or not for the master's host, for example
/// changed since the pre-flight check); the IO thread would retry it for ever. `None` otherwise.
pub(crate) fn io_thread_tls_failure(
    row: &crate::client::Row,
    master: &trove_guest_core::wire::MasterAddress,
) -> Option<Error> {
    (row.get(&["Last_IO_Errno"]) == Some("2026")).then(|| Error::Tls {
        server: format!("{}:{}", master.host, master.port),
        problem: TlsProblem::Handshake,
        message: row
            .non_empty(&["Last_IO_Error"])
            .unwrap_or_default()
            .to_owned(),
    })
}

/// `CLIENT_SSL` in the capability flags.
const CLIENT_SSL: u32 = 0x0800;
/// What the `SSLRequest` announces: `CLIENT_LONG_PASSWORD` (MariaDB's `CLIENT_MYSQL`),
/// `CLIENT_LONG_FLAG`, `CLIENT_PROTOCOL_41`, `CLIENT_SSL`, `CLIENT_SECURE_CONNECTION`.
const REQUEST_FLAGS: u32 = 0x0001 | 0x0004 | 0x0200 | CLIENT_SSL | 0x8000;

/// The MySQL / MariaDB way of starting TLS.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MysqlStartTls;

fn protocol(message: impl Into<String>) -> Error {
    Error::Datastore {
        message: message.into(),
        source: None,
    }
}

/// The capability flags of a server greeting (`payload` without the packet header).
pub(crate) fn greeting_capabilities(payload: &[u8]) -> Result<u32> {
    match payload.first() {
        Some(10) => {}
        Some(0xff) => {
            let text = String::from_utf8_lossy(payload.get(3..).unwrap_or_default());
            return Err(protocol(format!(
                "the server refused the connection: {text}"
            )));
        }
        _ => return Err(protocol("not a MySQL protocol 10 greeting")),
    }
    let version_end = payload
        .iter()
        .skip(1)
        .position(|b| *b == 0)
        .ok_or_else(|| protocol("truncated greeting"))?
        + 1;
    // NUL, thread id (4), auth data (8), filler (1), then the low capability bytes.
    let at = version_end + 1 + 4 + 8 + 1;
    let low = payload
        .get(at..at + 2)
        .ok_or_else(|| protocol("truncated greeting"))?;
    Ok(u32::from(u16::from_le_bytes([low[0], low[1]])))
}

/// The `SSLRequest` packet, header included (sequence id 1).
pub(crate) fn ssl_request() -> [u8; 36] {
    let mut p = [0u8; 36];
    p[0] = 32;
    p[3] = 1;
    p[4..8].copy_from_slice(&REQUEST_FLAGS.to_le_bytes());
    p[8..12].copy_from_slice(&(16u32 << 20).to_le_bytes());
    p[12] = 45; // utf8mb4_general_ci
    p
}

#[async_trait]
impl trove_guest_core::tls::StartTls for MysqlStartTls {
    async fn negotiate(&self, stream: &mut TcpStream) -> Result<()> {
        let mut header = [0u8; 4];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| protocol(format!("read the server greeting: {e}")))?;
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if len > 64 * 1024 {
            return Err(protocol("greeting too long"));
        }
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| protocol(format!("read the server greeting: {e}")))?;
        if greeting_capabilities(&payload)? & CLIENT_SSL == 0 {
            return Err(Error::Tls {
                server: String::new(),
                problem: TlsProblem::NotOffered,
                message: "the server has no TLS configured (no CLIENT_SSL in its greeting)".into(),
            });
        }
        stream
            .write_all(&ssl_request())
            .await
            .map_err(|e| protocol(format!("send SSLRequest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_are_read_and_ssl_requests_are_well_formed() {
        let mut g = vec![10u8];
        g.extend_from_slice(b"10.11.6-MariaDB\0");
        g.extend_from_slice(&[1, 0, 0, 0]);
        g.extend_from_slice(&[b'a'; 8]);
        g.push(0);
        g.extend_from_slice(&0xfffeu16.to_le_bytes());
        assert_eq!(greeting_capabilities(&g).unwrap() & CLIENT_SSL, CLIENT_SSL);
        assert!(greeting_capabilities(&g[..g.len() - 1]).is_err());
        assert!(greeting_capabilities(b"\xff\x15\x04Host blocked").is_err());
        let r = ssl_request();
        assert_eq!(&r[..4], &[32, 0, 0, 1]);
        assert_eq!(
            u32::from_le_bytes([r[4], r[5], r[6], r[7]]) & CLIENT_SSL,
            CLIENT_SSL
        );
    }
}
