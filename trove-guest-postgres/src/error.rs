//! The backend's private errors, mapped into [`trove_guest_core::Error`].

use trove_guest_core::Error;

/// What can go wrong inside this crate before it is mapped to the portable error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    /// Connecting to the local server failed.
    #[error("connect to PostgreSQL ({target}): {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed. `action` names what was being done, never the statement text (which
    /// may carry a credential verifier).
    #[error("{action}: {source}")]
    Sql {
        action: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server answered something we cannot use.
    #[error("{action}: unexpected answer: {detail}")]
    Unexpected {
        action: &'static str,
        detail: String,
    },
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        match e {
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
