use serde::{Deserialize, Serialize};

use super::kind::DatastoreKind;
use crate::error::{Error, Result};
use crate::position::{BinlogFile, MariaDbGtidList, MysqlGtidSet, OpaquePosition, WalPosition};
use crate::secret::TransportSecret;

/// Where replicas reach the master (`master`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// The snapshot itself (`dataset`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// The datastore the snapshot was taken from.
    pub datastore: DatastoreKind,
    /// The datastore version, as the control plane names it (for example `mariadb-10.11`).
    pub datastore_version: String,
    /// Size of the data in GiB, rounded up (what a replica's volume must hold).
    pub dataset_size: u64,
    /// Where the snapshot is stored.
    pub snapshot_href: String,
    /// Addition: exact size of the stored snapshot in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Addition: lowercase hex SHA-256 of the stored snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Addition: the full server version string (`SELECT VERSION()` / `server_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Addition: the stream format (`xbstream`, `tar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Addition: compression applied in the store (`zstd`), absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// The MySQL/MariaDB position of a snapshot (`binlog_position`): the binlog coordinates recorded
/// by the backup tool, and the GTID state at the same point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Binary log file name.
    pub log_file: BinlogFile,
    /// Offset in that file.
    pub log_position: u64,
    /// MariaDB: the GTID position (`gtid_binlog_pos`) at the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_list: Option<MariaDbGtidList>,
    /// MySQL: the executed GTID set at the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<MysqlGtidSet>,
}

/// Addition: the replication account (and slot) the master made for this replica.
///
/// The password travels in clear only in `password`, a [`TransportSecret`]: the document is
/// handed from master to replica by the control plane over its own secured channel, like Trove's.
/// Deployments with a secret store put a reference in `password_ref` instead. The stored snapshot
/// never contains either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationGrant {
    /// The replication user name.
    pub user: String,
    /// The password, carried to the replica (credential in transit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<TransportSecret>,
    /// A reference to the password in the deployment's secret store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<String>,
    /// PostgreSQL: the physical replication slot reserved for the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_name: Option<String>,
    /// The replica host the account is restricted to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_host: Option<String>,
    /// Addition: TLS for the replication connection (recommended). Absent: the master was not
    /// configured for TLS and replication runs in plaintext, which a replica configured with
    /// [`ReplicaTlsPolicy::Required`](crate::ReplicaTlsPolicy::Required) refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ReplicationTls>,
}

/// Addition: what a replica needs to verify its master's TLS certificate
/// (`replication.tls`): public information only, never a private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationTls {
    /// The PEM certificate(s) of the CA the master's certificate chains to.
    pub ca_certificate: String,
    /// The name the master's certificate must be valid for (a DNS name or an IP address in
    /// its subject alternative names).
    pub server_name: String,
}

impl ReplicationTls {
    /// Checks the section: at least one PEM certificate, no private key of any kind, a
    /// non-empty server name without spaces or control characters.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        crate::tls::check_ca_pem(&self.ca_certificate)?;
        let n = &self.server_name;
        if n.is_empty()
            || n.len() > 253
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
        {
            return Err(Error::invalid(
                "snapshot document",
                "replication.tls.server_name is not a host name or IP address",
            ));
        }
        Ok(())
    }
}

/// The replication snapshot document returned by `get_replication_snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDocument {
    /// Where the replica connects to.
    pub master: MasterAddress,
    /// The stored snapshot.
    pub dataset: Dataset,
    /// MySQL/MariaDB position (the seed's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_position: Option<BinlogPosition>,
    /// Addition: PostgreSQL position, in place of `binlog_position`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_position: Option<WalPosition>,
    /// Addition: the position of a datastore core has no typed position for
    /// ([`DatastoreKind::Other`]), in place of `binlog_position` / `wal_position`:
    /// `"position": {"datastore": "redis", "value": "<backend-defined text>"}`. Its
    /// `datastore` is the document's `dataset.datastore`; only that datastore's backend reads
    /// `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<OpaquePosition>,
    /// Addition: the account (and slot) made for the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationGrant>,
    /// Fields this version does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl SnapshotDocument {
    /// Checks what serde cannot: a non-empty host, a non-zero port, a position matching the
    /// datastore (`binlog_position` for MySQL and MariaDB, `wal_position` for PostgreSQL,
    /// `position` of the same datastore for any other) and a well-formed SHA-256.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the first problem found.
    pub fn validate(&self) -> Result<()> {
        if self.master.host.trim().is_empty() {
            return Err(Error::invalid("snapshot document", "master.host is empty"));
        }
        if self.master.port == 0 {
            return Err(Error::invalid("snapshot document", "master.port is 0"));
        }
        if self.dataset.snapshot_href.is_empty() {
            return Err(Error::invalid(
                "snapshot document",
                "dataset.snapshot_href is empty",
            ));
        }
        if let Some(h) = &self.dataset.sha256
            && (h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err(Error::invalid(
                "snapshot document",
                "dataset.sha256 is not 64 lowercase hex digits",
            ));
        }
        if let Some(p) = &self.position
            && p.datastore != self.dataset.datastore
        {
            return Err(Error::invalid(
                "snapshot document",
                format!(
                    "position.datastore is {} but dataset.datastore is {}",
                    p.datastore, self.dataset.datastore
                ),
            ));
        }
        if let Some(tls) = self.replication.as_ref().and_then(|r| r.tls.as_ref()) {
            tls.validate()?;
        }
        match self.dataset.datastore {
            DatastoreKind::Mysql | DatastoreKind::Mariadb if self.binlog_position.is_none() => Err(
                Error::invalid("snapshot document", "binlog_position is missing"),
            ),
            DatastoreKind::Postgresql if self.wal_position.is_none() => Err(Error::invalid(
                "snapshot document",
                "wal_position is missing",
            )),
            DatastoreKind::Other(_) if self.position.is_none() => {
                Err(Error::invalid("snapshot document", "position is missing"))
            }
            _ => Ok(()),
        }
    }

    /// Reads a snapshot document from JSON and [`validate`](SnapshotDocument::validate)s it:
    /// the one entry point for documents received from a control plane.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the text is not JSON, lacks a field, holds a malformed
    /// position or fails validation. The message gives the line and column and never echoes
    /// the replication password.
    pub fn from_json(text: &str) -> Result<Self> {
        let doc: SnapshotDocument = serde_json::from_str(text).map_err(|e| {
            // serde_json quotes offending values of the wrong type; a password given as a
            // non-string would be echoed, so only the category and position are kept then.
            let reason = if e.to_string().contains("invalid type") {
                format!(
                    "a field has the wrong type at line {} column {}",
                    e.line(),
                    e.column()
                )
            } else {
                e.to_string()
            };
            Error::invalid("snapshot document", reason)
        })?;
        doc.validate()?;
        Ok(doc)
    }

    /// The size in GiB, rounded up, as `dataset_size` records it.
    pub fn gib_rounded_up(bytes: u64) -> u64 {
        bytes.div_ceil(1 << 30)
    }
}
