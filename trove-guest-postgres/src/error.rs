//! The backend's private errors, mapped into [`trove_guest_core::Error`].

use trove_guest_core::Error;

/// What can go wrong inside this crate before it is mapped to the portable error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    /// Connecting to the local server failed.
    #[error("connect to PostgreSQL ({target}): {}", detail(.source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed. `action` names what was being done, never the statement text (which
    /// may carry a credential verifier).
    #[error("{action}: {}", detail(.source))]
    Sql {
        action: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server did not complete the connection and login within `after`.
    #[error("connect to PostgreSQL ({target}): no answer within {after:?}")]
    ConnectTimeout {
        target: String,
        after: std::time::Duration,
    },
    /// TLS to the server was refused: its certificate does not verify, or it offers no TLS.
    #[error("TLS to {server} refused ({problem}): {message}")]
    Tls {
        server: String,
        problem: trove_guest_core::TlsProblem,
        message: String,
    },
    /// The connection's own settings cannot be used (the admin TLS CA file): the core error
    /// as it is.
    #[error("{0}")]
    Settings(Box<Error>),
    /// The server answered something we cannot use.
    #[error("{action}: unexpected answer: {detail}")]
    Unexpected {
        action: &'static str,
        detail: String,
    },
}

/// The server's own words for a client error (`FATAL: password authentication failed for user
/// "x"`), or the client's description; tokio-postgres alone prints just "db error".
fn detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

impl PgError {
    /// Whether the server refused the login (SQLSTATE class 28: wrong password, no hba entry):
    /// retrying cannot help.
    pub(crate) fn is_auth(&self) -> bool {
        match self {
            PgError::Connect { source, .. } | PgError::Sql { source, .. } => {
                source.code().is_some_and(|c| c.code().starts_with("28"))
            }
            PgError::Unexpected { .. }
            | PgError::ConnectTimeout { .. }
            | PgError::Tls { .. }
            | PgError::Settings(_) => false,
        }
    }

    /// Whether retrying cannot help: a refused login ([`PgError::is_auth`]), refused TLS or
    /// unusable settings.
    pub(crate) fn is_final(&self) -> bool {
        self.is_auth() || matches!(self, PgError::Tls { .. } | PgError::Settings(_))
    }
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        match e {
            PgError::ConnectTimeout { target, after } => Error::timeout(
                format!("PostgreSQL ({target}) to accept a connection"),
                after,
            ),
            PgError::Settings(e) => *e,
            PgError::Tls {
                server,
                problem,
                message,
            } => Error::Tls {
                server,
                problem,
                message,
            },
            PgError::Unexpected { action, detail } => Error::Datastore {
                message: format!("{action}: unexpected answer: {detail}"),
                source: None,
            },
            other => {
                let message = other.to_string();
                let source = match other {
                    PgError::Connect { source, .. } | PgError::Sql { source, .. } => source,
                    _ => unreachable!("handled above"),
                };
                Error::datastore(message, source)
            }
        }
    }
}
