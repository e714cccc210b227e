//! The agent's error answers: a status code and an [`ErrorBody`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use trove_guest_core::{Error, ErrorKind};

use crate::api::{ErrorBody, ErrorDetail, kinds};

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
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, kind) = ApiError::status_for(e.kind());
        let mut api = ApiError::new(status, kind, e.to_string());
        if let Error::Busy { what } = &e {
            api.detail.running = Some(what.clone());
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}
