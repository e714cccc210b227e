//! TLS checks every backend's live tests run the same way, against its own servers: the admin
//! connection's refusals ([`admin_tls_refusals`]) and a master's check of the certificate and
//! key its server serves ([`server_certificate_checks`]).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::TestCertificate;
use crate::error::{Error, TlsProblem};
use crate::strategy::ReplicationStrategy;
use crate::tls::AdminTls;
use crate::wire::SnapshotDocument;
use crate::{OsUser, SnapshotRequest};

/// The problem of an [`Error::Tls`]; `None` for any other error.
pub fn tls_problem(e: &Error) -> Option<TlsProblem> {
    match e {
        Error::Tls { problem, .. } => Some(*problem),
        _ => None,
    }
}

/// Copies of the TLS snapshot document `doc` a replica must refuse before it changes anything,
/// each with the problem it must give: its CA replaced by `other_ca_pem`
/// ([`TlsProblem::UntrustedCertificate`]), a server name the certificate is not valid for
/// ([`TlsProblem::NameMismatch`]), and no TLS section at all ([`TlsProblem::Required`], for a
/// replica that requires TLS).
///
/// # Panics
///
/// When `doc` carries no `replication.tls`.
pub fn tampered_documents(
    doc: &SnapshotDocument,
    other_ca_pem: &str,
) -> Vec<(SnapshotDocument, TlsProblem)> {
    let tampered = |change: &dyn Fn(&mut Option<crate::wire::ReplicationTls>)| {
        let mut d = doc.clone();
        let tls = &mut d.replication.as_mut().expect("a replication section").tls;
        assert!(tls.is_some(), "a document with replication.tls");
        change(tls);
        d
    };
    vec![
        (
            tampered(&|t| t.as_mut().unwrap().ca_certificate = other_ca_pem.to_owned()),
            TlsProblem::UntrustedCertificate,
        ),
        (
            tampered(&|t| t.as_mut().unwrap().server_name = "db.elsewhere.invalid".into()),
            TlsProblem::NameMismatch,
        ),
        (tampered(&|t| *t = None), TlsProblem::Required),
    ]
}

/// Builds a strategy whose admin connection uses the given TLS settings.
pub type WithAdminTls<'a> = dyn Fn(AdminTls) -> Arc<dyn ReplicationStrategy> + 'a;

/// Checks that a strategy's admin connection, given `name` as the server name its certificate
/// is valid for and `ca` as the CA that signed it, refuses: a CA file that does not exist
/// (`dir/missing.pem`: the I/O error itself, at once), a CA that did not sign the certificate
/// (`other_ca`: [`TlsProblem::UntrustedCertificate`]) and a name the certificate is not valid
/// for ([`TlsProblem::NameMismatch`]). Each is a read-only call.
///
/// # Panics
///
/// When a refusal is missing or of another kind.
pub async fn admin_tls_refusals(
    strategy: &WithAdminTls<'_>,
    dir: &Path,
    ca: &Path,
    other_ca: &Path,
    name: &str,
) {
    let e = strategy(AdminTls::verify(dir.join("missing.pem"), name))
        .get_latest_txn_id()
        .await
        .expect_err("no CA file");
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let e = strategy(AdminTls::verify(other_ca, name))
        .get_latest_txn_id()
        .await
        .expect_err("wrong CA");
    assert_eq!(
        tls_problem(&e),
        Some(TlsProblem::UntrustedCertificate),
        "{e}"
    );
    let e = strategy(AdminTls::verify(ca, "db.elsewhere.invalid"))
        .get_latest_txn_id()
        .await
        .expect_err("wrong name");
    assert_eq!(tls_problem(&e), Some(TlsProblem::NameMismatch), "{e}");
}

/// Builds a master's strategy whose `ServerTls` names this certificate and key file.
pub type WithCertificate<'a> = dyn Fn(&Path, &Path) -> Arc<dyn ReplicationStrategy> + 'a;

/// What a master has made for replicas (accounts, logins, slots) as text, to compare.
pub type MadeForReplicas<'a> = dyn Fn() -> BoxFuture<'a, String> + 'a;

/// The certificate and key files of one [`server_certificate_checks`] run.
#[derive(Debug, Clone, Copy)]
pub struct CertificateCase<'a> {
    /// What the master's server serves.
    pub served: &'a TestCertificate,
    /// Another certificate of the same CA for the same names, which the server does not serve.
    pub rotated: &'a TestCertificate,
    /// A directory for a copy of the key open to others.
    pub dir: &'a Path,
    /// The owner of that copy (the datastore's OS account, when the server's key is its), or
    /// `None` for the agent's own user.
    pub key_owner: Option<OsUser>,
}

/// Checks that a master named its server's certificate and key refuses to snapshot while its
/// server serves another certificate ([`TlsProblem::CertificateMismatch`]) or the key file is
/// open to others (`InvalidInput` naming `key_file`), makes nothing for replicas then and never
/// quotes the key; and that with the served pair the snapshot is taken, carrying no key.
/// Returns that snapshot's document.
///
/// # Panics
///
/// When a refusal is missing or of another kind, something was made by a refused call, or the
/// key shows.
pub async fn server_certificate_checks(
    named: &WithCertificate<'_>,
    made: &MadeForReplicas<'_>,
    case: CertificateCase<'_>,
) -> SnapshotDocument {
    let request = SnapshotRequest::new().with_replica_id("tlscert");
    let key_text = std::fs::read_to_string(&case.served.key_file).unwrap();
    let key_line = key_text.lines().nth(1).unwrap().to_owned();
    let before = made().await;

    // A new pair on disk the server was not reloaded with, or another certificate next to the
    // server's own key.
    for (cert, key) in [
        (&case.rotated.cert_file, &case.rotated.key_file),
        (&case.rotated.cert_file, &case.served.key_file),
    ] {
        let e = named(cert, key)
            .get_replication_snapshot(&request)
            .await
            .expect_err("the server serves another certificate");
        assert_eq!(
            tls_problem(&e),
            Some(TlsProblem::CertificateMismatch),
            "{e}"
        );
        assert!(!format!("{e} {e:?}").contains(&key_line), "{e}");
        assert_eq!(made().await, before, "a refused snapshot made something");
    }

    // The server's key in a file others may read.
    let open_key = case.dir.join("open.key");
    std::fs::write(&open_key, &key_text).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    if let Some(owner) = case.key_owner {
        std::os::unix::fs::chown(&open_key, Some(owner.uid), Some(owner.gid)).unwrap();
    }
    let e = named(&case.served.cert_file, &open_key)
        .get_replication_snapshot(&request)
        .await
        .expect_err("a key open to others");
    assert!(
        matches!(&e, Error::InvalidInput { what, .. } if what == "key_file"),
        "{e:?}"
    );
    assert!(e.to_string().contains("chmod 600"), "{e}");
    assert!(!format!("{e} {e:?}").contains(&key_line), "{e}");
    assert_eq!(made().await, before, "a refused snapshot made something");

    // The served certificate with its own (private) key.
    let doc = named(&case.served.cert_file, &case.served.key_file)
        .get_replication_snapshot(&request)
        .await
        .expect("snapshot with the served certificate named");
    let json = serde_json::to_string(&doc).unwrap();
    assert!(!json.contains("PRIVATE KEY") && !json.contains(&key_line));
    assert_ne!(made().await, before, "the snapshot made its account");
    doc
}
