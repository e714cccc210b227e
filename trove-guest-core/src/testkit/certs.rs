//! Test certificates, generated per run with `rcgen` and never committed: a CA and server
//! certificates it signs, written as PEM files into a directory of the test's.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoResultExt, Result};
use crate::runner::OsUser;

/// A throwaway certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    ca_file: PathBuf,
    dir: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// A server certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct TestCertificate {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// The private key (PEM, 0600).
    pub key_file: PathBuf,
}

fn rc(e: rcgen::Error) -> Error {
    Error::invalid("test certificate", e.to_string())
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] writing the file; [`Error::InvalidInput`] from certificate generation.
    pub fn generate(dir: &Path, name: &str) -> Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().map_err(rc)?;
        let cert = params.self_signed(&key).map_err(rc)?;
        let ca_file = dir.join(format!("{name}-ca.pem"));
        write(&ca_file, &cert.pem(), 0o644, None)?;
        Ok(TestCa {
            cert,
            key,
            ca_file,
            dir: dir.to_path_buf(),
        })
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses, all in its subject
    /// alternative names) signed by this CA, written as `<file_stem>.pem` and
    /// `<file_stem>.key` (0600, owned by `owner` when given: PostgreSQL insists).
    ///
    /// # Errors
    ///
    /// As [`TestCa::generate`].
    pub fn server_certificate(
        &self,
        file_stem: &str,
        names: &[&str],
        owner: Option<OsUser>,
    ) -> Result<TestCertificate> {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .map_err(rc)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().map_err(rc)?;
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(rc)?;
        let cert_file = self.dir.join(format!("{file_stem}.pem"));
        let key_file = self.dir.join(format!("{file_stem}.key"));
        write(&cert_file, &cert.pem(), 0o644, owner)?;
        write(&key_file, &key.serialize_pem(), 0o600, owner)?;
        Ok(TestCertificate {
            cert_file,
            key_file,
        })
    }
}

fn write(path: &Path, text: &str, mode: u32, owner: Option<OsUser>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {}", path.display()))?;
    if let Some(o) = owner {
        std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))
            .context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}
