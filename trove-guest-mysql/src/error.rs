//! The crate's private errors, mapped into [`trove_guest_core::Error`].

use trove_guest_core::Error;

use crate::sql::Statement;

/// What went wrong talking to the server. Never holds a password: statements are kept in
/// redacted form, and the server's message for a statement that carries a password is dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MysqlError {
    #[error("connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("`{statement}` failed: {source}")]
    Query {
        statement: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error(
        "`{statement}` failed with server error {code} ({state}); message withheld because the statement carries a password"
    )]
    SecretQuery {
        statement: String,
        code: u16,
        state: String,
    },
    #[error("`{statement}` returned {detail}")]
    Unexpected { statement: String, detail: String },
}

impl MysqlError {
    pub(crate) fn query(statement: &Statement, source: mysql_async::Error) -> Self {
        if statement.holds_secret() {
            let (code, state) = match &source {
                mysql_async::Error::Server(s) => (s.code, s.state.clone()),
                _ => (0, "client".to_owned()),
            };
            MysqlError::SecretQuery {
                statement: statement.redacted().to_owned(),
                code,
                state,
            }
        } else {
            MysqlError::Query {
                statement: statement.redacted().to_owned(),
                source,
            }
        }
    }

    pub(crate) fn unexpected(statement: &Statement, detail: impl Into<String>) -> Self {
        MysqlError::Unexpected {
            statement: statement.redacted().to_owned(),
            detail: detail.into(),
        }
    }
}

impl From<MysqlError> for Error {
    fn from(e: MysqlError) -> Self {
        let message = e.to_string();
        match e {
            MysqlError::Connect { source, .. } | MysqlError::Query { source, .. } => {
                Error::Datastore {
                    message,
                    source: Some(Box::new(source)),
                }
            }
            MysqlError::SecretQuery { .. } | MysqlError::Unexpected { .. } => Error::Datastore {
                message,
                source: None,
            },
        }
    }
}
