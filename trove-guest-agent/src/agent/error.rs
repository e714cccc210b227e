//! The agent's error answers: a status code and an [`ErrorBody`], with the server's insides
//! (tool stderr, file paths, server messages) kept in the log unless the agent discloses them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use trove_guest_core::{Error, ErrorKind};

use crate::api::{ErrorBody, ErrorDetail, kinds};

/// How much of an internal error's detail the agent's error bodies carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorDisclosure {
    /// Errors of kinds `tool_failed`, `datastore` and `internal` answer with their kind, a
    /// generic message and an `error_id`; the detail (tool stderr, file paths, server messages)
    /// is logged under that id. The default.
    #[default]
    Redacted,
    /// The detail goes into the body too (for debugging; it can show paths and tool output to
    /// every client).
    Full,
}

tokio::task_local! {
    /// The disclosure of the agent serving the current request (set by its middleware).
    static DISCLOSURE: ErrorDisclosure;
}

/// The disclosure of the agent serving the current request; `Redacted` outside one.
pub(crate) fn disclosure() -> ErrorDisclosure {
    DISCLOSURE.try_with(|d| *d).unwrap_or_default()
}

/// Runs `f` (a request's handling) with `disclosure` in effect.
pub(crate) async fn with_disclosure<F: std::future::Future>(
    disclosure: ErrorDisclosure,
    f: F,
) -> F::Output {
    DISCLOSURE.scope(disclosure, f).await
}

/// An error answer of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body's content.
    pub detail: ErrorDetail,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                kind: kind.to_owned(),
                message: message.into(),
                field: None,
                running: None,
                error_id: None,
            },
        }
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if !field.is_empty() && field != "." {
            self.detail.field = Some(field);
        }
        self
    }

    /// The `409 busy` answer while `running` is in progress.
    pub fn busy(running: &str, requested: &str) -> Self {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            kinds::BUSY,
            format!(
                "busy: {running} is already in progress on this server; {requested} was not started, retry when it has finished"
            ),
        );
        e.detail.running = Some(running.to_owned());
        e
    }

    /// The status code for a core error kind.
    pub fn status_for(kind: ErrorKind) -> (StatusCode, &'static str) {
        match kind {
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, kinds::INVALID_INPUT),
            ErrorKind::Integrity => (StatusCode::UNPROCESSABLE_ENTITY, kinds::INTEGRITY),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, kinds::NOT_FOUND),
            ErrorKind::ToolFailed => (StatusCode::INTERNAL_SERVER_ERROR, kinds::TOOL_FAILED),
            ErrorKind::Datastore => (StatusCode::BAD_GATEWAY, kinds::DATASTORE),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, kinds::TIMEOUT),
            ErrorKind::Unsupported => (StatusCode::NOT_IMPLEMENTED, kinds::UNSUPPORTED),
            ErrorKind::Conflict => (StatusCode::CONFLICT, kinds::CONFLICT),
            ErrorKind::Busy => (StatusCode::CONFLICT, kinds::BUSY),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, kinds::INTERNAL),
        }
    }

    /// The answer for a core error under `disclosure`: errors about the request (invalid input,
    /// not found, conflict, busy, ...) keep their message; errors about the server's insides
    /// (a tool's stderr, a server's message, local I/O with its paths) are logged with an id and
    /// answered with the id and a generic message unless `disclosure` is `Full`.
    pub(crate) fn from_core(e: Error, disclosure: ErrorDisclosure) -> Self {
        let kind = e.kind();
        let (status, name) = ApiError::status_for(kind);
        let mut api = ApiError::new(status, name, e.to_string());
        if let Error::Busy { what } = &e {
            api.detail.running = Some(what.clone());
        }
        let about_the_request = matches!(
            kind,
            ErrorKind::InvalidInput
                | ErrorKind::Integrity
                | ErrorKind::NotFound
                | ErrorKind::Timeout
                | ErrorKind::Unsupported
                | ErrorKind::Conflict
                | ErrorKind::Busy
        );
        if about_the_request {
            api
        } else {
            api.withheld(disclosure)
        }
    }

    /// Logs the full message under a new error id and, unless `disclosure` is `Full`, replaces
    /// it in the body by a generic one naming the id.
    pub(crate) fn withheld(mut self, disclosure: ErrorDisclosure) -> Self {
        let id = format!("{:016x}", rand::random::<u64>());
        tracing::error!(
            error_id = %id,
            kind = %self.detail.kind,
            error = %self.detail.message,
            "request failed"
        );
        if disclosure != ErrorDisclosure::Full {
            self.detail.message = format!(
                "{}: the agent could not complete the request; its log has the detail under \
                 error_id {id}",
                self.detail.kind
            );
        }
        self.detail.error_id = Some(id.into_boxed_str());
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::from_core(e, disclosure())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}
