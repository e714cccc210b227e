//! TLS for replication connections, verified.
//!
//! A master configured with [`ServerTls`] puts into its snapshot documents only what a replica
//! may know: the CA certificate its server certificate chains to and the server name to verify
//! ([`ReplicationTls`], `replication.tls`). Never a private key: [`check_ca_pem`] refuses any
//! PEM block that is not a certificate, on the way out and on the way in.
//!
//! A replica checks the master before anything changes: [`verify_master`] opens a connection
//! from the replica's host, lets the backend's [`StartTls`] negotiate TLS in the datastore's
//! protocol and runs a rustls handshake against the document's CA, for the document's server
//! name and for the host the datastore itself will connect to. A certificate that does not
//! verify ends the attach with [`Error::Tls`] while the replica still serves its old data. Only
//! then does the backend write the CA next to its configuration ([`write_ca_file`], 0644: a CA
//! certificate is public) and configure the datastore to verify too (MariaDB/MySQL
//! `MASTER_SSL_VERIFY_SERVER_CERT=1`, PostgreSQL `sslmode=verify-full`).
//!
//! A master whose [`ServerTls`] names the server's own certificate and key files
//! ([`ServerTls::with_certificate`]) checks more before handing out a section: the running
//! server must serve exactly the first certificate of `cert_file`
//! ([`TlsProblem::CertificateMismatch`] otherwise: a server not reloaded after a rotation),
//! and `key_file` must be a private file (read with
//! [`private_file`](crate::private_file)) holding that certificate's key
//! ([`ServerCertificate`]). The agent reads those files only: the server's TLS settings stay
//! the operator's.
//!
//! Switchover and failover follow the same rules: the new source's replica context carries
//! the same section in its grant ([`master_section`]), and a server re-pointed at it checks
//! it with [`repoint_section`] before anything changes, keeping its old source when the
//! certificate does not verify.
//!
//! The administrator connection to the local server can use TLS too: [`AdminTls`] on the
//! [`AdminConnection`](crate::AdminConnection) (TCP only) names the CA and the server name its
//! certificate is verified for; backends map a datastore client's handshake failure to
//! [`Error::Tls`] with [`handshake_problem`] / [`refused_by_tls`].

mod admin;
mod probe;
mod server_cert;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoResultExt, Result, TlsProblem};
use crate::failover::ReplicaContext;
use crate::wire::{MasterAddress, ReplicationTls, SnapshotDocument};

pub use admin::{AdminTls, AdminTlsVerify, handshake_problem, refused_by_tls};
pub use probe::{StartTls, attach_section, master_section, repoint_section, verify_master};
pub use server_cert::{LoadedServerCertificate, ServerCertificate, fingerprint};

/// Whether a replica accepts snapshot documents without `replication.tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplicaTlsPolicy {
    /// Refuse a document without TLS ([`TlsProblem::Required`]): the recommended setting.
    #[default]
    Required,
    /// Replicate in plaintext when the master's document carries no TLS.
    AllowPlaintext,
}

/// How this server's replication uses TLS (set on the
/// [`DatastoreHandle`](crate::DatastoreHandle) with `with_tls`).
///
/// On a master, the CA certificate in `ca_file` and `server_name` go into every snapshot
/// document and replica context, after a check that the running server serves a certificate
/// that verifies with that CA for that name ([`master_section`]). The server's own certificate
/// and key are what its TLS configuration names (MariaDB `ssl_cert`/`ssl_key`, PostgreSQL
/// `ssl_cert_file`/`ssl_key_file`), which stays the operator's: the strategy never writes them
/// nor changes those settings. Naming the same files here
/// ([`with_certificate`](ServerTls::with_certificate)) makes the master's check stricter:
/// the server must serve exactly the first certificate of `cert_file` (a server not reloaded
/// after a rotation is refused with [`TlsProblem::CertificateMismatch`]), and `key_file`
/// must be a private file holding that certificate's key. The key never leaves the host and
/// never appears in documents, errors, logs or `Debug`. On a replica, `replicas` says whether
/// a document or context without TLS is refused. Replicas present no client certificate:
/// replication accounts require TLS (`REQUIRE SSL`, `hostssl`) and a password, not a
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTls {
    /// PEM file of the CA that signed the servers' certificates.
    pub ca_file: PathBuf,
    /// The name replicas verify this server's certificate for; default: the handle's
    /// advertised host.
    pub server_name: Option<String>,
    /// What this server accepts when it is made a replica (default
    /// [`ReplicaTlsPolicy::Required`]).
    pub replicas: ReplicaTlsPolicy,
    /// The server's own certificate and key files, checked by the master (default: none, and
    /// only the served certificate's chain and name are checked).
    pub certificate: Option<ServerCertificate>,
}

impl ServerTls {
    /// TLS with the CA in `ca_file`; replicas require TLS.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        ServerTls {
            ca_file: ca_file.into(),
            server_name: None,
            replicas: ReplicaTlsPolicy::Required,
            certificate: None,
        }
    }
    /// Sets [`ServerTls::certificate`]: the files the server's own TLS configuration names
    /// for its certificate (PEM, end-entity first) and its private key (PEM, a private file:
    /// mode 0600 or stricter, owned by the agent's uid, root or the datastore's OS account,
    /// not a symbolic link).
    pub fn with_certificate(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.certificate = Some(ServerCertificate::new(cert_file, key_file));
        self
    }
    /// Sets [`ServerTls::server_name`].
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
    /// Sets [`ServerTls::replicas`].
    pub fn with_replica_policy(mut self, policy: ReplicaTlsPolicy) -> Self {
        self.replicas = policy;
        self
    }

    /// The `replication.tls` section a master puts into its snapshot documents: the CA
    /// certificate read from `ca_file` and the server name (`advertised_host` when none is
    /// set).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `ca_file` cannot be read, [`Error::InvalidInput`] when it holds
    /// anything but certificates (a private key above all).
    pub fn replication_tls(&self, advertised_host: &str) -> Result<ReplicationTls> {
        let pem = std::fs::read_to_string(&self.ca_file)
            .context(|| format!("read the CA certificate {}", self.ca_file.display()))?;
        let tls = ReplicationTls {
            ca_certificate: pem,
            server_name: self
                .server_name
                .clone()
                .unwrap_or_else(|| advertised_host.to_owned()),
        };
        tls.validate()?;
        Ok(tls)
    }
}

/// The TLS section a replica uses for `doc`, after its policy: `Some` when the document
/// carries one (validated), `None` for plaintext when the policy allows it.
///
/// # Errors
///
/// [`Error::Tls`] with [`TlsProblem::Required`] when `own` requires TLS and the document has
/// none; [`Error::InvalidInput`] for a malformed section.
pub fn tls_for_attach<'d>(
    own: Option<&ServerTls>,
    doc: &'d SnapshotDocument,
) -> Result<Option<&'d ReplicationTls>> {
    tls_for_source(
        own,
        &doc.master,
        doc.replication.as_ref().and_then(|r| r.tls.as_ref()),
        "the snapshot document carries no replication.tls",
    )
}

/// The TLS section a server re-pointed by `attach_replica` (switchover, failover) uses for
/// `ctx`, after its policy: as [`tls_for_attach`], for the context's `replication.tls`.
///
/// # Errors
///
/// [`Error::Tls`] with [`TlsProblem::Required`] when `own` requires TLS and the context has
/// none; [`Error::InvalidInput`] for a malformed section.
pub fn tls_for_repoint<'c>(
    own: Option<&ServerTls>,
    ctx: &'c ReplicaContext,
) -> Result<Option<&'c ReplicationTls>> {
    tls_for_source(
        own,
        &ctx.master,
        ctx.replication.tls.as_ref(),
        "the replica context carries no replication.tls",
    )
}

fn tls_for_source<'d>(
    own: Option<&ServerTls>,
    master: &MasterAddress,
    section: Option<&'d ReplicationTls>,
    missing: &str,
) -> Result<Option<&'d ReplicationTls>> {
    match section {
        Some(tls) => {
            tls.validate()?;
            Ok(Some(tls))
        }
        None => match own.map(|t| t.replicas) {
            Some(ReplicaTlsPolicy::Required) => Err(Error::Tls {
                server: format!("{}:{}", master.host, master.port),
                problem: TlsProblem::Required,
                message: format!(
                    "this replica is configured to replicate over TLS only and {missing}"
                ),
            }),
            _ => {
                tracing::warn!(master = %master.host, "replicating in plaintext: {missing}");
                Ok(None)
            }
        },
    }
}

/// Checks that `pem` holds one or more certificates and nothing else: any other block (a
/// private key above all) is refused.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the problem (never the block's contents).
pub fn check_ca_pem(pem: &str) -> Result<()> {
    let mut certs = 0;
    for line in pem.lines() {
        let line = line.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if label != "CERTIFICATE" {
                return Err(Error::invalid(
                    "CA certificate",
                    format!("holds a {label:?} block; only certificates are accepted"),
                ));
            }
            certs += 1;
        }
    }
    if certs == 0 {
        return Err(Error::invalid("CA certificate", "holds no PEM certificate"));
    }
    certificates(pem).map(|_| ())
}

fn certificates(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("CA certificate", format!("unreadable PEM: {e}")))
}

/// A rustls client configuration trusting only `tls`'s CA (no client certificate), for
/// datastore clients that connect to a master over TLS.
///
/// # Errors
///
/// [`Error::InvalidInput`] when the CA does not parse or is not usable as a trust anchor.
pub fn client_config(tls: &ReplicationTls) -> Result<Arc<rustls::ClientConfig>> {
    check_ca_pem(&tls.ca_certificate)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(&tls.ca_certificate)? {
        roots
            .add(cert)
            .map_err(|e| Error::invalid("CA certificate", e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid("TLS configuration", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Writes `tls`'s CA certificate to `path` atomically, mode 0644 (a CA certificate is
/// public; the datastore's own account must read it). Writes nothing else.
///
/// # Errors
///
/// [`Error::Io`]; [`Error::InvalidInput`] when the section holds anything but certificates.
pub fn write_ca_file(tls: &ReplicationTls, path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    check_ca_pem(&tls.ca_certificate)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .context(|| format!("create {}", tmp.display()))?;
    f.write_all(tls.ca_certificate.as_bytes())
        .and_then(|()| f.sync_all())
        .context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(|| format!("rename to {}", path.display()))
}

/// Removes a CA file [`write_ca_file`] wrote for a replica (once it no longer replicates:
/// detach, or attaching without TLS); returns whether it existed.
///
/// # Errors
///
/// [`Error::Io`] for failures other than absence.
pub fn remove_ca_file(path: &Path) -> Result<bool> {
    crate::lifecycle::files::remove_file_if_exists(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificate_blocks_pass_as_a_ca() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
        let err = check_ca_pem(key).unwrap_err().to_string();
        assert!(
            err.contains("PRIVATE KEY") && !err.contains("MIIB"),
            "{err}"
        );
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        assert!(check_ca_pem(rsa).is_err());
        assert!(check_ca_pem("no pem here").is_err());
    }
}
