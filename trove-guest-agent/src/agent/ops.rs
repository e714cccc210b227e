//! One replication change at a time: the busy slot, progress fan-out and NDJSON streaming.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use trove_guest_core::{Progress, ProgressEvent, Result};

use super::error::ApiError;
use crate::api::{EventLine, OperationView, StreamLine};

struct Running {
    name: &'static str,
    started: Instant,
    last_event: Option<ProgressEvent>,
}

/// The agent's single slot for a replication change.
#[derive(Default)]
pub(crate) struct OpSlot {
    running: Mutex<Option<Running>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

/// Holds the slot; dropping it frees the slot.
pub(crate) struct OpGuard {
    slot: Arc<OpSlot>,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        *self.slot.running.lock().expect("op slot lock") = None;
    }
}

impl OpSlot {
    /// Takes the slot for `name`, or answers busy naming the change that holds it.
    pub(crate) fn try_begin(self: &Arc<Self>, name: &'static str) -> Result<OpGuard, ApiError> {
        let mut running = self.running.lock().expect("op slot lock");
        if let Some(r) = running.as_ref() {
            return Err(ApiError::busy(r.name, name));
        }
        *running = Some(Running {
            name,
            started: Instant::now(),
            last_event: None,
        });
        Ok(OpGuard { slot: self.clone() })
    }

    fn record(&self, event: &ProgressEvent) {
        if let Some(r) = self.running.lock().expect("op slot lock").as_mut() {
            r.last_event = Some(event.clone());
        }
    }

    /// Aborts the running change (its future is dropped: tools are killed) and waits until the
    /// slot is free.
    pub(crate) async fn abort_running(&self) {
        if let Some(task) = self.task.lock().expect("op slot lock").take() {
            task.abort();
        }
        while self.running.lock().expect("op slot lock").is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn view(&self) -> OperationView {
        let running = self.running.lock().expect("op slot lock");
        OperationView {
            running: running.as_ref().map(|r| r.name.to_owned()),
            elapsed_secs: running.as_ref().map(|r| r.started.elapsed().as_secs_f64()),
            last_event: running.as_ref().and_then(|r| r.last_event.clone()),
        }
    }
}

/// Runs a replication change `f` under the slot, in its own task so that a client hanging up
/// does not cancel a change half way (attach and demote are not cancel safe).
///
/// `f` gets a [`Progress`] feeding the slot's latest event, the agent's event stream and, when
/// `stream` is set, the NDJSON answer.
pub(crate) async fn run_change<T, F, Fut>(
    slot: &Arc<OpSlot>,
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
    let guard = match slot.try_begin(name) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
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
    let task = tokio::spawn(async move {
        let result = f(progress)
            .await
            .map(|v| serde_json::to_value(v).expect("agent results serialize"));
        drop(guard);
        result
    });
    *slot.task.lock().expect("op slot lock") = Some(task.abort_handle());

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
