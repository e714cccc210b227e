//! One tracing span per HTTP request, and one log line when it ends.
//!
//! The span `http_request` carries `method`, `path`, `instance_id`, `request_id` (the caller's
//! `x-request-id` when it is a plain token, else a new one; echoed in the answer), and, once the
//! answer is ready, `status`, `outcome` and `duration_ms`. A replication change started by the
//! request runs in a `change` span below it ([`crate::changes`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::AgentState;

/// The header carrying the request id, both ways.
pub(crate) const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served by this task (a new one outside a request).
pub(crate) fn current_request_id() -> String {
    CURRENT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| crate::rpc::envelope::new_id())
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The middleware: opens the request's span, runs the request in it, logs its end.
pub(crate) async fn request(
    State(s): State<Arc<AgentState>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(crate::rpc::envelope::new_id, str::to_owned);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!(
        "http_request",
        method = %method,
        path = %path,
        instance_id = %s.options.instance_id,
        request_id = %id,
        status = tracing::field::Empty,
        outcome = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let mut response = CURRENT
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let status = response.status();
    let outcome = if status.is_server_error() {
        "server_error"
    } else if status.is_client_error() {
        "client_error"
    } else {
        "ok"
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.record("status", status.as_u16());
    span.record("outcome", outcome);
    span.record("duration_ms", ms);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            outcome,
            duration_ms = ms,
            "request finished"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn request_ids_are_plain_tokens_only() {
        assert!(acceptable("req-1_a.b"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("x\ny"));
        assert!(!acceptable(&"a".repeat(65)));
    }
}
