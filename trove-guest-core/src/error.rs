//! The portable error type of every trove-guest crate.
//!
//! Backends keep a private error enum of their own and map it into [`Error`]; callers match on the
//! semantic variants (or on [`Error::kind`]) and never on a client library's error type.

use std::time::Duration;

use crate::strategy::Role;

/// A boxed error source, kept so `source()` chains work without exposing client library types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across trove-guest.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a replication call.
///
/// Messages never contain a password: secrets are held in [`crate::Secret`], whose `Debug` and
/// `Display` are redacted, and statements that carry a password are never put into an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Caller input was rejected before anything was changed.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was being validated (for example `"gtid list"` or `"snapshot href"`).
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Snapshot data did not match its recorded size or SHA-256, or could not be parsed.
    #[error("integrity check failed for {href}: {reason}")]
    Integrity {
        /// The snapshot the check was about.
        href: String,
        /// What did not match.
        reason: String,
    },
    /// The requested snapshot (or other object) does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was missing.
        what: String,
    },
    /// An external tool exited unsuccessfully.
    #[error("{tool} failed ({status}): {stderr_tail}")]
    ToolFailed {
        /// The program name.
        tool: String,
        /// Its exit status, as text (`exit status: 1`, `signal: 9`).
        status: String,
        /// The last lines it wrote to stderr.
        stderr_tail: String,
    },
    /// The database server rejected a statement or the connection failed.
    #[error("datastore error: {message}")]
    Datastore {
        /// What was being done and what the server said.
        message: String,
        /// The underlying client error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// A bounded wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long the wait lasted.
        after: Duration,
    },
    /// The datastore, version or option is not supported by this strategy.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: String,
    },
    /// The server is not in the role the call needs (for example attaching a master).
    #[error("server is {actual}, but this call needs a {expected}")]
    WrongRole {
        /// The role the call needs.
        expected: Role,
        /// The role the server is in.
        actual: Role,
    },
    /// The snapshot was taken from a datastore or version this server cannot restore.
    #[error("incompatible snapshot: {reason}")]
    Incompatible {
        /// Why the snapshot cannot be used here.
        reason: String,
    },
    /// The replica holds transactions its new master never had.
    #[error("errant transactions on the replica: {detail}")]
    Diverged {
        /// The transactions (GTIDs) the master does not have.
        detail: String,
    },
    /// Another replication change is already running on this server.
    #[error("busy: {what} is already in progress")]
    Busy {
        /// The call that is running.
        what: String,
    },
    /// Controlling the database service (start, stop) failed.
    #[error("service control failed: {message}")]
    Service {
        /// What failed.
        message: String,
    },
    /// A local file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot store failed for a reason other than integrity or absence.
    #[error("snapshot store error: {message}")]
    Store {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The snapshot store cannot be used as configured: its bucket is missing, it refused the
    /// credentials, or its endpoint cannot be reached. Retrying the same call will not help
    /// until the configuration (or the network) changes.
    #[error("snapshot store unusable ({problem}): {message}")]
    StoreAccess {
        /// Which of the three it is.
        problem: StoreAccessProblem,
        /// What was being done (never a credential).
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// TLS to a replication peer was refused before anything changed: its certificate does not
    /// verify with the CA the snapshot document carries, is not valid for the server name, the
    /// server offers no TLS, or this replica requires TLS and the document carries none; on a
    /// master, its own server serves a certificate that does not verify, or not the one its
    /// configured certificate file holds.
    #[error("TLS to {server} refused ({problem}): {message}")]
    Tls {
        /// The server (`host:port`) and the name its certificate was checked for.
        server: String,
        /// Which check failed.
        problem: TlsProblem,
        /// What the TLS library or the server said.
        message: String,
    },
}

/// Why TLS to a replication peer was refused ([`Error::Tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The certificate does not chain to the CA the document carries (wrong CA, bad
    /// signature, expired).
    UntrustedCertificate,
    /// The certificate is valid but not for the server name the replica verifies.
    NameMismatch,
    /// The server does not offer TLS.
    NotOffered,
    /// This replica requires TLS and the snapshot document carries no `replication.tls`.
    Required,
    /// The connection or the handshake failed for another reason.
    Handshake,
    /// On a master configured with its certificate file
    /// ([`ServerTls::with_certificate`](crate::ServerTls::with_certificate)): the running server
    /// serves another end-entity certificate than the first one in that file (a server not
    /// reloaded after a rotation, or a file naming another server's certificate).
    CertificateMismatch,
}

impl std::fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsProblem::UntrustedCertificate => "certificate not trusted",
            TlsProblem::NameMismatch => "certificate not valid for the server name",
            TlsProblem::NotOffered => "server offers no TLS",
            TlsProblem::Required => "TLS required but not offered by the document",
            TlsProblem::Handshake => "handshake failed",
            TlsProblem::CertificateMismatch => {
                "the server serves another certificate than its configured cert_file"
            }
        })
    }
}

/// Why a snapshot store cannot be used ([`Error::StoreAccess`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreAccessProblem {
    /// The bucket (or container) does not exist.
    BucketMissing,
    /// The store refused the credentials: unknown key, wrong secret, or no permission.
    BadCredentials,
    /// The endpoint did not answer (connection refused, DNS, TLS or timeouts after retries).
    Unreachable,
}

impl std::fmt::Display for StoreAccessProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreAccessProblem::BucketMissing => "bucket missing",
            StoreAccessProblem::BadCredentials => "bad credentials",
            StoreAccessProblem::Unreachable => "endpoint unreachable",
        })
    }
}

/// A coarse, stable classification of [`Error`], for callers that map errors to HTTP status codes
/// or retry policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller sent something invalid; retrying the same request will not help.
    InvalidInput,
    /// Snapshot data is corrupt or truncated.
    Integrity,
    /// Something asked for does not exist.
    NotFound,
    /// An external tool failed.
    ToolFailed,
    /// The database server failed.
    Datastore,
    /// A bounded wait ran out; the call may be retried.
    Timeout,
    /// Not supported here.
    Unsupported,
    /// Wrong role, incompatible snapshot or diverged history: the request conflicts with state.
    Conflict,
    /// Another change is running; retry later.
    Busy,
    /// Local I/O, service control or store failure.
    Internal,
}

impl Error {
    /// The stable classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Integrity { .. } => ErrorKind::Integrity,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::ToolFailed { .. } => ErrorKind::ToolFailed,
            Error::Datastore { .. } => ErrorKind::Datastore,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::WrongRole { .. }
            | Error::Incompatible { .. }
            | Error::Diverged { .. }
            | Error::Tls { .. } => ErrorKind::Conflict,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Service { .. }
            | Error::Io { .. }
            | Error::Store { .. }
            | Error::StoreAccess { .. } => ErrorKind::Internal,
        }
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// This error with `note` appended to its message, same kind; kinds without a free-text
    /// message keep theirs and the note is logged instead.
    pub fn with_note(self, note: &str) -> Self {
        match self {
            Error::Service { message } => Error::Service {
                message: format!("{message}; {note}"),
            },
            Error::Datastore { message, source } => Error::Datastore {
                message: format!("{message}; {note}"),
                source,
            },
            Error::Integrity { href, reason } => Error::Integrity {
                href,
                reason: format!("{reason}; {note}"),
            },
            Error::Timeout { what, after } => Error::Timeout {
                what: format!("{what} ({note})"),
                after,
            },
            other => {
                tracing::warn!(error = %other, "{note}");
                other
            }
        }
    }

    /// Shorthand for [`Error::Integrity`].
    pub fn integrity(href: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Integrity {
            href: href.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into() }
    }

    /// Shorthand for [`Error::Datastore`] with a source error.
    pub fn datastore(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Datastore {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Shorthand for [`Error::Io`]; `context` should name the path involved.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Maps an error from reading snapshot data: an [`IntegrityFailure`](crate::store::IntegrityFailure)
    /// inside the `io::Error` becomes [`Error::Integrity`], anything else [`Error::Io`].
    pub fn from_read(context: impl Into<String>, e: std::io::Error) -> Self {
        if let Some(f) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::store::IntegrityFailure>())
        {
            return Error::integrity(f.href.clone(), f.reason.clone());
        }
        Error::io(context, e)
    }

    /// Shorthand for [`Error::Timeout`].
    pub fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            what: what.into(),
            after,
        }
    }
}

/// Extension for attaching a path or action to an `io::Result`.
pub trait IoResultExt<T> {
    /// Maps the error into [`Error::Io`] with the given context.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
