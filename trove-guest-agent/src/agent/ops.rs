//! One replication change at a time: the busy slot, progress fan-out and NDJSON streaming.

use std::convert::Infallible;
use std::future::Future;

use axum::Json;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use trove_guest_core::{Progress, ProgressEvent, Result};

use tracing::Instrument;

use super::error::ApiError;
use crate::api::{EventLine, OperationView, StreamLine};
use crate::changes::{ChangeSlot, FrontEnd};

/// The agent's view of the shared slot (`GET /v1/operation`).
pub(crate) fn view(slot: &ChangeSlot) -> OperationView {
    let running = slot.current();
    OperationView {
        running: running.as_ref().map(|r| r.operation.clone()),
        elapsed_secs: running.as_ref().map(|r| r.elapsed_secs),
        last_event: running.and_then(|r| r.last_event),
    }
}

/// Runs a replication change `f` under the slot, in its own task so that a client hanging up
/// does not cancel a change half way (attach and demote are not cancel safe).
///
/// `f` gets a [`Progress`] feeding the slot's latest event, the agent's event stream and, when
/// `stream` is set, the NDJSON answer.
pub(crate) async fn run_change<T, F, Fut>(
    slot: &ChangeSlot,
    events: &broadcast::Sender<EventLine>,
    name: &'static str,
    stream: bool,
    f: F,
) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(Progress) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    // The stream's last line is made after the handler returned: take the disclosure now.
    let disclosure = super::error::disclosure();
    let request_id = super::trace::current_request_id();
    let mut ticket = match slot.try_begin(name, FrontEnd::Http, &request_id) {
        Ok(t) => t,
        Err(busy) => return ApiError::busy(&busy.running, name).into_response(),
    };
    let (tx, rx) = mpsc::unbounded_channel::<ProgressEvent>();
    let progress = {
        let slot = slot.clone();
        let events = events.clone();
        Progress::new(move |event| {
            slot.record(&event);
            let _ = events.send(EventLine {
                operation: name.to_owned(),
                event: event.clone(),
            });
            let _ = tx.send(event);
        })
    };
    let span = ticket.span().clone();
    let change_id = ticket.id();
    let task = tokio::spawn(
        async move {
            let result = f(progress)
                .await
                .map(|v| serde_json::to_value(v).expect("agent results serialize"));
            ticket.finish(match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => ApiError::status_for(e.kind()).1.to_owned(),
            });
            drop(ticket);
            result
        }
        .instrument(span),
    );
    slot.attach_task(change_id, task.abort_handle());

    if !stream {
        // Dropping the JoinHandle (client hung up) detaches the task; the change completes.
        return match task.await {
            Ok(Ok(v)) => Json(v).into_response(),
            Ok(Err(e)) => ApiError::from_core(e, disclosure).into_response(),
            Err(e) => internal(format!("{name} task failed: {e}"), disclosure).into_response(),
        };
    }
    let lines = futures::stream::unfold(Some((rx, task)), move |state| async move {
        let (mut rx, mut task) = state?;
        tokio::select! {
            biased;
            Some(event) = rx.recv() => {
                Some((line(&StreamLine::Progress(event)), Some((rx, task))))
            }
            joined = &mut task => {
                let mut out = Vec::new();
                while let Ok(event) = rx.try_recv() {
                    out.extend_from_slice(&line(&StreamLine::Progress(event)));
                }
                let last = match joined {
                    Ok(Ok(v)) => StreamLine::Result(v),
                    Ok(Err(e)) => StreamLine::Error(ApiError::from_core(e, disclosure).detail),
                    Err(e) => StreamLine::Error(
                        internal(format!("{name} task failed: {e}"), disclosure).detail,
                    ),
                };
                out.extend_from_slice(&line(&last));
                Some((Bytes::from(out), None))
            }
        }
    });
    let body = Body::from_stream(futures::StreamExt::map(lines, Ok::<Bytes, Infallible>));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

fn line<T: Serialize>(v: &T) -> Bytes {
    let mut s = serde_json::to_vec(v).expect("stream lines serialize");
    s.push(b'\n');
    Bytes::from(s)
}

fn internal(message: String, disclosure: super::ErrorDisclosure) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::api::kinds::INTERNAL,
        message,
    )
    .withheld(disclosure)
}
