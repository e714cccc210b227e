//! TLS for the administrator connection to the local server, and the classification of a
//! datastore client's TLS failure into [`TlsProblem`].

use std::path::PathBuf;

use crate::error::{Error, IoResultExt, Result, TlsProblem};
use crate::wire::ReplicationTls;

use super::ServerTls;

/// Whether the administrator connection to the local server
/// ([`AdminConnection`](crate::AdminConnection)) uses TLS.
///
/// TLS applies to TCP connections only: an admin connection over a Unix socket stays on the
/// socket, unencrypted, whatever this says (the socket's permissions protect it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AdminTls {
    /// Plaintext (the default).
    #[default]
    Off,
    /// TLS required, the server's certificate verified against a CA for a server name; a
    /// certificate that does not verify fails the login with [`Error::Tls`].
    Verify(AdminTlsVerify),
}

/// The trust an [`AdminTls::Verify`] connection checks the server against.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminTlsVerify {
    /// PEM file of the CA the server's certificate must chain to (only this CA is trusted,
    /// never the system's roots).
    pub ca_file: PathBuf,
    /// The name the certificate must be valid for (not necessarily the host connected to:
    /// the admin usually connects to loopback).
    pub server_name: String,
}

impl AdminTls {
    /// [`AdminTls::Verify`] with the CA in `ca_file` and the name `server_name`.
    pub fn verify(ca_file: impl Into<PathBuf>, server_name: impl Into<String>) -> Self {
        AdminTls::Verify(AdminTlsVerify {
            ca_file: ca_file.into(),
            server_name: server_name.into(),
        })
    }

    /// [`AdminTls::Verify`] with the trust replicas use for this server: `tls`'s CA file and
    /// server name (`advertised_host` when it names none).
    pub fn from_server(tls: &ServerTls, advertised_host: &str) -> Self {
        AdminTls::verify(
            tls.ca_file.clone(),
            tls.server_name
                .clone()
                .unwrap_or_else(|| advertised_host.to_owned()),
        )
    }

    /// The CA certificate (read from its file and checked: certificates only) and the server
    /// name, as the [`ReplicationTls`] the TLS clients take ([`client_config`](super::client_config));
    /// `None` for [`AdminTls::Off`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the CA file cannot be read, [`Error::InvalidInput`] when it holds
    /// anything but certificates or the server name is empty.
    pub fn trust(&self) -> Result<Option<ReplicationTls>> {
        let AdminTls::Verify(v) = self else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(&v.ca_file)
            .context(|| format!("read the CA certificate {}", v.ca_file.display()))?;
        let tls = ReplicationTls {
            ca_certificate: pem,
            server_name: v.server_name.clone(),
        };
        tls.validate().map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::invalid("admin TLS", reason),
            other => other,
        })?;
        Ok(Some(tls))
    }
}

/// What went wrong in a TLS client's handshake, found anywhere in `err`'s chain of sources
/// (a rustls error, directly or inside an [`std::io::Error`]): `None` when the chain holds no
/// rustls error.
pub fn handshake_problem(err: &(dyn std::error::Error + 'static)) -> Option<(TlsProblem, String)> {
    let mut next = Some(err);
    while let Some(e) = next {
        let found = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = found {
            return Some((classify(tls), tls.to_string()));
        }
        next = e.source();
    }
    None
}

fn classify(tls: &rustls::Error) -> TlsProblem {
    match tls {
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => TlsProblem::NameMismatch,
        rustls::Error::InvalidCertificate(_) => TlsProblem::UntrustedCertificate,
        _ => TlsProblem::Handshake,
    }
}

/// [`Error::Tls`] for a datastore client's failure to connect to `server` when `err`'s
/// chain holds a rustls error ([`handshake_problem`]); `None` otherwise.
pub fn refused_by_tls(server: &str, err: &(dyn std::error::Error + 'static)) -> Option<Error> {
    handshake_problem(err).map(|(problem, message)| Error::Tls {
        server: server.to_owned(),
        problem,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_inside_an_io_error_is_classified() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let (problem, _) = handshake_problem(&io).expect("found");
        assert_eq!(problem, TlsProblem::UntrustedCertificate);
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert_eq!(
            handshake_problem(&name).map(|p| p.0),
            Some(TlsProblem::NameMismatch)
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(handshake_problem(&plain).is_none());
    }

    #[test]
    fn admin_tls_off_has_no_trust_and_verify_reads_only_certificates() {
        assert_eq!(AdminTls::Off.trust().unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(AdminTls::verify(&key, "db").trust().is_err());
        assert!(
            AdminTls::verify(dir.path().join("missing"), "db")
                .trust()
                .is_err()
        );
    }
}
