//! How the PostgreSQL protocol starts TLS, for core's pre-flight check of a primary's
//! certificate ([`trove_guest_core::tls::verify_master`]): an `SSLRequest` answered by `S`;
//! the TLS handshake follows.

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trove_guest_core::wire::ReplicationTls;
use trove_guest_core::{Error, Result, SnapshotDocument, TlsProblem};

use crate::strategy::PostgresStrategy;

/// The `SSLRequest` message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// How long one pre-flight handshake may take.
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The PostgreSQL way of starting TLS.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PgStartTls;

#[async_trait]
impl trove_guest_core::tls::StartTls for PgStartTls {
    async fn negotiate(&self, stream: &mut TcpStream) -> Result<()> {
        let protocol = |m: String| Error::Datastore {
            message: m,
            source: None,
        };
        stream
            .write_all(&SSL_REQUEST)
            .await
            .map_err(|e| protocol(format!("send SSLRequest: {e}")))?;
        let mut answer = [0u8; 1];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| protocol(format!("read the SSLRequest answer: {e}")))?;
        match answer[0] {
            b'S' => Ok(()),
            b'N' => Err(Error::Tls {
                server: String::new(),
                problem: TlsProblem::NotOffered,
                message: "the server has ssl = off".into(),
            }),
            other => Err(protocol(format!(
                "unexpected answer {other:#04x} to SSLRequest"
            ))),
        }
    }
}

impl PostgresStrategy {
    /// On a master: the `replication.tls` section of its snapshot documents, checked against
    /// this running server ([`trove_guest_core::tls::master_section`]).
    pub(crate) async fn replication_tls(&self) -> Result<Option<ReplicationTls>> {
        trove_guest_core::tls::master_section(&self.handle, &PgStartTls, PREFLIGHT_TIMEOUT).await
    }

    /// On a replica, before anything changes: the document's TLS section after this
    /// server's policy, the master verified from here
    /// ([`trove_guest_core::tls::attach_section`]).
    pub(crate) async fn verify_master_tls(
        &self,
        doc: &SnapshotDocument,
    ) -> Result<Option<ReplicationTls>> {
        trove_guest_core::tls::attach_section(&self.handle, doc, &PgStartTls, PREFLIGHT_TIMEOUT)
            .await
    }

    /// On a standby re-pointed by `attach_replica`, before anything changes: the context's
    /// TLS section after this server's policy, the new primary verified from here
    /// ([`trove_guest_core::tls::repoint_section`]).
    pub(crate) async fn verify_source_tls(
        &self,
        ctx: &trove_guest_core::failover::ReplicaContext,
    ) -> Result<Option<ReplicationTls>> {
        trove_guest_core::tls::repoint_section(&self.handle, ctx, &PgStartTls, PREFLIGHT_TIMEOUT)
            .await
    }
}
