//! The server's own certificate and key, named so a master can check them: the certificate its
//! running server serves must be the one in `cert_file`, and `key_file` must be a private file
//! holding the key of that certificate. The agent reads these files; it never writes them nor
//! changes the server's TLS settings (MariaDB `ssl_cert`/`ssl_key`, PostgreSQL
//! `ssl_cert_file`/`ssl_key_file` stay the operator's).

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoResultExt, Result, TlsProblem};
use crate::private_file::{PrivateFileProblem, read_private_file_also_to};

/// The largest certificate file and key file read.
const MAX_PEM_LEN: u64 = 1 << 20;

/// Where the server's own certificate and private key live (the files its TLS configuration
/// names), for [`ServerTls::with_certificate`](super::ServerTls::with_certificate). `Debug`
/// shows the paths only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerCertificate {
    /// PEM file whose first `CERTIFICATE` block is the server's end-entity certificate (a
    /// chain may follow).
    pub cert_file: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1): a private file
    /// (regular, not a symbolic link, no permission for group or others, owned by the agent's
    /// uid, root, or the datastore's OS account, which the server runs as).
    pub key_file: PathBuf,
}

/// A [`ServerCertificate`] read and parsed: the end-entity certificate, and whether the key
/// matches it. The key itself is dropped once compared; `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct LoadedServerCertificate {
    cert: CertificateDer<'static>,
    key_matches: std::result::Result<(), String>,
    files: ServerCertificate,
}

impl std::fmt::Debug for LoadedServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedServerCertificate")
            .field("cert_file", &self.files.cert_file)
            .field("sha256", &fingerprint(&self.cert))
            .field("key_matches", &self.key_matches.is_ok())
            .finish()
    }
}

/// The SHA-256 fingerprint of a certificate's DER, as lowercase hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

impl ServerCertificate {
    /// The certificate in `cert_file`, its key in `key_file`.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        ServerCertificate {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }
    }

    /// Reads and parses both files: the first certificate of `cert_file`, and `key_file` with
    /// [`read_private_file_also_to`] (also owned by `server_uid`, the datastore's OS account,
    /// when given) parsed as a PEM private key. Whether the key belongs to the certificate is
    /// answered by [`LoadedServerCertificate::check_key`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (with the path) when `cert_file` cannot be read or `key_file` does not
    /// exist; [`Error::InvalidInput`] about `cert_file` or `key_file` when the certificate does
    /// not parse, the key file is not private (its mode, owner, a symbolic link) or holds no
    /// private key the TLS library can use. These name the setting, not the path (they may
    /// reach an API caller; the caller adds the path where it helps, as `--check-config`
    /// does). No error quotes the key file's content.
    pub fn load(&self, server_uid: Option<u32>) -> Result<LoadedServerCertificate> {
        let cert = first_certificate(&self.cert_file)?;
        let key_matches = key_matches(&cert, &self.key_file, server_uid)?;
        Ok(LoadedServerCertificate {
            cert,
            key_matches,
            files: self.clone(),
        })
    }

    /// [`ServerCertificate::load`], then [`LoadedServerCertificate::check_key`]: everything
    /// that can be checked without the running server (`guest_agent --check-config`).
    ///
    /// # Errors
    ///
    /// As both.
    pub fn check_files(&self, server_uid: Option<u32>) -> Result<LoadedServerCertificate> {
        let loaded = self.load(server_uid)?;
        loaded.check_key()?;
        Ok(loaded)
    }
}

impl LoadedServerCertificate {
    /// The end-entity certificate (DER) of `cert_file`.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Its SHA-256 fingerprint (hex).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// Checks that the key of `key_file` is the certificate's (their SubjectPublicKeyInfo
    /// compared, rustls' `CertifiedKey::keys_match`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] about `key_file` when it is another certificate's key.
    pub fn check_key(&self) -> Result<()> {
        self.key_matches
            .clone()
            .map_err(|reason| Error::invalid("key_file", reason))
    }

    /// Checks that `served`, the end-entity certificate a running server presented to
    /// `server` (`host:port (as name)`), is this one.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] with [`TlsProblem::CertificateMismatch`], naming both fingerprints.
    pub fn check_served(&self, server: &str, served: &CertificateDer<'_>) -> Result<()> {
        if served.as_ref() == self.cert.as_ref() {
            return Ok(());
        }
        Err(Error::Tls {
            server: server.to_owned(),
            problem: TlsProblem::CertificateMismatch,
            message: format!(
                "the server serves the certificate with SHA-256 fingerprint {}, but the first \
                 certificate of cert_file has fingerprint {}: reload the server after a \
                 certificate rotation, or name the certificate it is configured with",
                fingerprint(served),
                self.fingerprint()
            ),
        })
    }
}

fn first_certificate(path: &Path) -> Result<CertificateDer<'static>> {
    let pem = std::fs::read(path).context(|| format!("cert_file: read {}", path.display()))?;
    if pem.len() as u64 > MAX_PEM_LEN {
        return Err(Error::invalid(
            "cert_file",
            format!("larger than {MAX_PEM_LEN} bytes"),
        ));
    }
    match CertificateDer::pem_slice_iter(&pem).next() {
        Some(Ok(cert)) => {
            // Parsed as X.509 the way rustls parses end-entity certificates.
            webpki_parses(&cert).map_err(|e| {
                Error::invalid("cert_file", format!("not an X.509 certificate: {e}"))
            })?;
            Ok(cert)
        }
        Some(Err(_)) => Err(Error::invalid("cert_file", "unreadable PEM")),
        None => Err(Error::invalid("cert_file", "holds no PEM certificate")),
    }
}

fn webpki_parses(cert: &CertificateDer<'_>) -> std::result::Result<(), rustls::Error> {
    rustls::server::ParsedCertificate::try_from(cert).map(|_| ())
}

/// Reads `key_file` (private), parses it and compares its public key with `cert`'s: `Err`
/// for a file that cannot be used at all, `Ok(Err(reason))` for a usable key of another
/// certificate.
fn key_matches(
    cert: &CertificateDer<'static>,
    path: &Path,
    server_uid: Option<u32>,
) -> Result<std::result::Result<(), String>> {
    let bytes = read_private_file_also_to(path, MAX_PEM_LEN, server_uid).map_err(|e| {
        if matches!(
            e.problem,
            PrivateFileProblem::Missing | PrivateFileProblem::Io(_)
        ) {
            e.into_error("key_file")
        } else {
            Error::invalid("key_file", e.problem.to_string())
        }
    })?;
    // The PEM parser's messages may quote the file: say what is wrong, not what it said.
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(bytes.expose())
        .map_err(|_| Error::invalid("key_file", "no PEM private key (PKCS#8, PKCS#1 or SEC1)"))?;
    drop(bytes);
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|_| {
        Error::invalid(
            "key_file",
            "not an RSA, ECDSA or Ed25519 private key the TLS library can use",
        )
    })?;
    let certified = rustls::sign::CertifiedKey::new(vec![cert.clone()], signing);
    Ok(match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            tracing::warn!(
                key_file = %path.display(),
                "cannot tell whether the server's key matches its certificate"
            );
            Ok(())
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("the private key is not the key of the certificate in cert_file".to_owned())
        }
        Err(e) => Err(format!("cannot compare with the certificate: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    struct Pair {
        cert_pem: String,
        key_pem: String,
    }

    fn pair(ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> Pair {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca, ca_key).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// One line of the key's base64 body: what must never appear in an error.
    fn key_line(key_pem: &str) -> &str {
        key_pem.lines().nth(1).unwrap()
    }

    #[test]
    fn a_certificate_and_its_own_key_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = ca();
        let p = pair(&ca, &ca_key);
        let cert = write(dir.path(), "s.pem", &p.cert_pem, 0o644);
        let key = write(dir.path(), "s.key", &p.key_pem, 0o600);
        let loaded = ServerCertificate::new(&cert, &key)
            .check_files(None)
            .unwrap();
        assert_eq!(loaded.certificate(), &der(&p.cert_pem));
        loaded
            .check_served("db:3306", &der(&p.cert_pem))
            .expect("the same certificate");
        let debug = format!("{loaded:?}");
        assert!(!debug.contains(key_line(&p.key_pem)), "{debug}");
        assert!(debug.contains(&loaded.fingerprint()), "{debug}");
    }

    #[test]
    fn a_chain_counts_by_its_first_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = ca();
        let p = pair(&ca, &ca_key);
        let chain = format!("{}{}", p.cert_pem, ca.pem());
        let cert = write(dir.path(), "chain.pem", &chain, 0o644);
        let key = write(dir.path(), "s.key", &p.key_pem, 0o600);
        let loaded = ServerCertificate::new(&cert, &key)
            .check_files(None)
            .unwrap();
        assert_eq!(loaded.certificate(), &der(&p.cert_pem));
    }

    #[test]
    fn another_certificate_served_is_a_certificate_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = ca();
        let configured = pair(&ca, &ca_key);
        let served = pair(&ca, &ca_key);
        let cert = write(dir.path(), "s.pem", &configured.cert_pem, 0o644);
        let key = write(dir.path(), "s.key", &configured.key_pem, 0o600);
        let loaded = ServerCertificate::new(&cert, &key).load(None).unwrap();
        let e = loaded
            .check_served("db:3306 (as localhost)", &der(&served.cert_pem))
            .unwrap_err();
        match &e {
            Error::Tls {
                server, problem, ..
            } => {
                assert_eq!(*problem, TlsProblem::CertificateMismatch);
                assert_eq!(server, "db:3306 (as localhost)");
            }
            other => panic!("{other}"),
        }
        let text = e.to_string();
        assert!(
            text.contains(&fingerprint(&der(&served.cert_pem))),
            "{text}"
        );
        assert!(text.contains(&loaded.fingerprint()), "{text}");
        assert!(!text.contains(&cert.display().to_string()), "{text}");
    }

    #[test]
    fn the_key_of_another_certificate_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = ca();
        let a = pair(&ca, &ca_key);
        let b = pair(&ca, &ca_key);
        let cert = write(dir.path(), "a.pem", &a.cert_pem, 0o644);
        let key = write(dir.path(), "b.key", &b.key_pem, 0o600);
        let files = ServerCertificate::new(&cert, &key);
        // Loading succeeds (the key is usable); the match is a separate answer.
        let loaded = files.load(None).unwrap();
        let e = loaded.check_key().unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput { what, .. } if what == "key_file"),
            "{e:?}"
        );
        let text = format!("{e} {e:?}");
        assert!(text.contains("not the key of the certificate"), "{text}");
        assert!(!text.contains(key_line(&b.key_pem)), "{text}");
        assert!(files.check_files(None).is_err());
    }

    #[test]
    fn a_key_file_open_to_others_is_refused_before_it_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = ca();
        let p = pair(&ca, &ca_key);
        let cert = write(dir.path(), "s.pem", &p.cert_pem, 0o644);
        for mode in [0o644, 0o640, 0o604] {
            let key = write(dir.path(), "s.key", &p.key_pem, mode);
            let e = ServerCertificate::new(&cert, &key).load(None).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(
                matches!(&e, Error::InvalidInput { what, .. } if what == "key_file"),
                "{mode:o}: {text}"
            );
            assert!(text.contains("chmod 600"), "{text}");
            assert!(!text.contains(key_line(&p.key_pem)), "{text}");
            // The setting is named, not the path (the error may reach an API caller).
            assert!(!text.contains(&key.display().to_string()), "{text}");
        }
        // A symbolic link to a private key: refused, not followed.
        let key = write(dir.path(), "real.key", &p.key_pem, 0o600);
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let e = ServerCertificate::new(&cert, &link).load(None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn files_that_hold_no_certificate_or_no_key_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = ca();
        let p = pair(&ca, &ca_key);
        let cert = write(dir.path(), "s.pem", &p.cert_pem, 0o644);
        let key = write(dir.path(), "s.key", &p.key_pem, 0o600);
        // The key where the certificate should be.
        let swapped = write(dir.path(), "swapped.pem", &p.key_pem, 0o600);
        let e = ServerCertificate::new(&swapped, &key)
            .load(None)
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cert_file") && text.contains("no PEM certificate"),
            "{text}"
        );
        assert!(!text.contains(key_line(&p.key_pem)), "{text}");
        // The certificate where the key should be (private, but no key).
        let not_key = write(dir.path(), "cert-as-key.pem", &p.cert_pem, 0o600);
        let e = ServerCertificate::new(&cert, &not_key)
            .load(None)
            .unwrap_err();
        assert!(e.to_string().contains("no PEM private key"), "{e}");
        // A damaged key body.
        let mut damaged = p.key_pem.clone();
        damaged.insert_str(damaged.find('\n').unwrap() + 1, "!!");
        let bad = write(dir.path(), "bad.key", &damaged, 0o600);
        let e = ServerCertificate::new(&cert, &bad).load(None).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(text.contains("key_file"), "{text}");
        assert!(!text.contains(key_line(&p.key_pem)), "{text}");
        // Missing files.
        let e = ServerCertificate::new(dir.path().join("none.pem"), &key)
            .load(None)
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        let e = ServerCertificate::new(&cert, dir.path().join("none.key"))
            .load(None)
            .unwrap_err();
        assert!(e.to_string().contains("none.key"), "{e}");
    }
}
