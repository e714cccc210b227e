//! The pre-flight check: a TLS handshake with the master from the replica's host, verified
//! against the snapshot document's CA, before anything on the replica changes.

use std::time::Duration;

use async_trait::async_trait;
use rustls_pki_types::CertificateDer;
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
    served_certificates(master, tls, start, timeout)
        .await
        .map(|_| ())
}

/// [`verify_master`], returning each handshake's server (`host:port (as name)`) and the
/// end-entity certificate it served.
async fn served_certificates(
    master: &MasterAddress,
    tls: &ReplicationTls,
    start: &dyn StartTls,
    timeout: Duration,
) -> Result<Vec<(String, CertificateDer<'static>)>> {
    let mut served = vec![handshake(master, tls, &tls.server_name, start, timeout).await?];
    if !master.host.eq_ignore_ascii_case(&tls.server_name) {
        served.push(handshake(master, tls, &master.host, start, timeout).await?);
    }
    Ok(served)
}

/// One verified handshake: the server (`host:port (as name)`) and the end-entity certificate
/// it served.
async fn handshake(
    master: &MasterAddress,
    tls: &ReplicationTls,
    name: &str,
    start: &dyn StartTls,
    timeout: Duration,
) -> Result<(String, CertificateDer<'static>)> {
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
        let served = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.clone().into_owned())
            .ok_or_else(|| {
                refused(
                    TlsProblem::Handshake,
                    "the server presented no certificate".to_owned(),
                )
            })?;
        drop(stream);
        Ok::<_, Error>(served)
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r.map(|served| (server.clone(), served)),
        Err(_) => Err(refused(
            TlsProblem::Handshake,
            format!("no TLS handshake within {timeout:?}"),
        )),
    }
}

fn classify(e: &std::io::Error, refused: &dyn Fn(TlsProblem, String) -> Error) -> Error {
    match super::handshake_problem(e) {
        Some((problem, message)) => refused(problem, message),
        None => refused(TlsProblem::Handshake, e.to_string()),
    }
}

/// On a master: the `replication.tls` section of its snapshot documents when `handle` has TLS
/// (`None` without), checked against this running server first: it must serve a certificate
/// that verifies with the CA for the name replicas will verify. When the handle's
/// [`ServerTls`](super::ServerTls) names the server's certificate and key files
/// ([`with_certificate`](super::ServerTls::with_certificate)), they are read first (the key
/// as a private file, also accepted when owned by the handle's `os_user`), the certificate the
/// server serves must be the first one of `cert_file`, and the key must be that
/// certificate's.
///
/// # Errors
///
/// As [`ServerTls::replication_tls`](super::ServerTls::replication_tls),
/// [`ServerCertificate::load`](super::ServerCertificate::load) and [`verify_master`];
/// [`Error::Tls`] with [`TlsProblem::CertificateMismatch`] when the server serves another
/// certificate than `cert_file`'s; [`Error::InvalidInput`] naming `key_file` when the key is
/// another certificate's.
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
    let expected = own
        .certificate
        .as_ref()
        .map(|c| c.load(handle.os_user.map(|u| u.uid)))
        .transpose()?;
    let served = served_certificates(&handle.advertise, &tls, start, timeout).await?;
    if let Some(expected) = expected {
        for (server, cert) in &served {
            expected.check_served(server, cert)?;
        }
        // After the served certificate: a server still serving the old certificate is the
        // finding that matters, whatever the files say.
        expected.check_key()?;
        tracing::debug!(
            sha256 = %expected.fingerprint(),
            "the server serves the configured certificate, and the key matches it"
        );
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::tls::ServerTls;
    use crate::{AdminConnection, Secret, SystemdUnit};

    /// No protocol before the handshake: the test server speaks TLS at once.
    struct Immediate;

    #[async_trait]
    impl StartTls for Immediate {
        async fn negotiate(&self, _stream: &mut TcpStream) -> Result<()> {
            Ok(())
        }
    }

    struct Issued {
        cert_pem: String,
        key_pem: String,
    }

    struct Ca {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
        dir: tempfile::TempDir,
    }

    impl Ca {
        fn new() -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
            Ca { cert, key, dir }
        }

        fn ca_file(&self) -> PathBuf {
            self.dir.path().join("ca.pem")
        }

        fn issue(&self) -> Issued {
            let params =
                rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            Issued {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }

        fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    /// A TLS server on a loopback port serving `served`, counting the connections it accepts.
    async fn serve(served: &Issued) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        use rustls_pki_types::pem::PemObject;
        let certs = vec![CertificateDer::from_pem_slice(served.cert_pem.as_bytes()).unwrap()];
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(served.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        (port, accepted, task)
    }

    fn handle(port: u16, tls: ServerTls) -> DatastoreHandle {
        let admin = AdminConnection::new("127.0.0.1", port, "root", Secret::new(""));
        let service = Arc::new(SystemdUnit::new("test.service").unwrap());
        DatastoreHandle::new(admin, "/nonexistent/data", "/nonexistent/conf", service).with_tls(tls)
    }

    async fn section(port: u16, tls: ServerTls) -> Result<Option<ReplicationTls>> {
        master_section(&handle(port, tls), &Immediate, Duration::from_secs(10)).await
    }

    fn tls_problem(r: &Result<Option<ReplicationTls>>) -> Option<TlsProblem> {
        match r {
            Err(Error::Tls { problem, .. }) => Some(*problem),
            _ => None,
        }
    }

    fn key_line(key_pem: &str) -> &str {
        key_pem.lines().nth(1).unwrap()
    }

    fn with_files(ca: &Ca, cert: &Path, key: &Path) -> ServerTls {
        ServerTls::new(ca.ca_file())
            .with_server_name("localhost")
            .with_certificate(cert, key)
    }

    #[tokio::test]
    async fn the_served_certificate_and_its_key_in_the_named_files_pass() {
        let ca = Ca::new();
        let current = ca.issue();
        let (port, _, task) = serve(&current).await;
        let cert = ca.file("server.pem", &current.cert_pem, 0o644);
        let key = ca.file("server.key", &current.key_pem, 0o600);
        let tls = section(port, with_files(&ca, &cert, &key))
            .await
            .expect("the server serves cert_file's certificate")
            .expect("a section");
        assert_eq!(tls.ca_certificate, ca.cert.pem());
        let json = serde_json::to_string(&tls).unwrap();
        assert!(!json.contains(key_line(&current.key_pem)), "{json}");
        // Without the files, only the chain and the name are checked.
        assert!(
            section(
                port,
                ServerTls::new(ca.ca_file()).with_server_name("localhost")
            )
            .await
            .unwrap()
            .is_some()
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_server_still_serving_the_old_certificate_after_a_rotation_is_refused() {
        let ca = Ca::new();
        let old = ca.issue();
        let rotated = ca.issue();
        let (port, _, task) = serve(&old).await;
        // The files hold the new pair; the server was not reloaded.
        let cert = ca.file("server.pem", &rotated.cert_pem, 0o644);
        let key = ca.file("server.key", &rotated.key_pem, 0o600);
        let r = section(port, with_files(&ca, &cert, &key)).await;
        assert_eq!(
            tls_problem(&r),
            Some(TlsProblem::CertificateMismatch),
            "{r:?}"
        );
        // Another certificate of the same CA with the served key: the served certificate is
        // what is reported, ahead of the key that does not fit the file.
        let cert = ca.file("other.pem", &rotated.cert_pem, 0o644);
        let key = ca.file("old.key", &old.key_pem, 0o600);
        let r = section(port, with_files(&ca, &cert, &key)).await;
        assert_eq!(
            tls_problem(&r),
            Some(TlsProblem::CertificateMismatch),
            "{r:?}"
        );
        let text = format!("{:?}", r.unwrap_err());
        assert!(!text.contains(key_line(&old.key_pem)), "{text}");
        task.abort();
    }

    #[tokio::test]
    async fn a_key_that_is_not_the_certificates_is_refused_by_name() {
        let ca = Ca::new();
        let current = ca.issue();
        let stranger = ca.issue();
        let (port, _, task) = serve(&current).await;
        let cert = ca.file("server.pem", &current.cert_pem, 0o644);
        let key = ca.file("stranger.key", &stranger.key_pem, 0o600);
        let e = section(port, with_files(&ca, &cert, &key))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput { what, .. } if what == "key_file"),
            "{e:?}"
        );
        assert!(!format!("{e} {e:?}").contains(key_line(&stranger.key_pem)));
        task.abort();
    }

    #[tokio::test]
    async fn a_key_file_open_to_others_is_refused_before_any_connection() {
        let ca = Ca::new();
        let current = ca.issue();
        let (port, accepted, task) = serve(&current).await;
        let cert = ca.file("server.pem", &current.cert_pem, 0o644);
        let key = ca.file("server.key", &current.key_pem, 0o644);
        let e = section(port, with_files(&ca, &cert, &key))
            .await
            .unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(
            matches!(&e, Error::InvalidInput { what, .. } if what == "key_file"),
            "{text}"
        );
        assert!(text.contains("chmod 600"), "{text}");
        assert!(!text.contains(key_line(&current.key_pem)), "{text}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection made");
        task.abort();
    }
}
