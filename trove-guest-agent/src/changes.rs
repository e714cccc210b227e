//! One replication change at a time across all of the agent's front ends.
//!
//! [`ChangeSlot`] is the agent's single change lock (core's
//! [`ChangeLock`](trove_guest_core::lifecycle::ChangeLock)) plus what the running change is: the
//! HTTP front end ([`crate::GuestAgent`]) and Trove's RPC front end
//! ([`crate::rpc::TroveRpcServer`]) take the same slot, so an HTTP demote is refused while an
//! RPC attach runs and the other way round. A second change is refused at once ([`Busy`]), never
//! queued. Each change runs inside a `change` tracing span (operation, front end, operation id,
//! instance id) and logs one line when it ends, with its duration and outcome.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use trove_guest_core::ProgressEvent;
use trove_guest_core::lifecycle::{ChangeLock, OwnedChangeGuard};

/// Which front end a change came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FrontEnd {
    /// The HTTP/JSON API.
    Http,
    /// OpenStack Trove's RPC over RabbitMQ.
    TroveRpc,
}

impl FrontEnd {
    /// `http` or `trove_rpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontEnd::Http => "http",
            FrontEnd::TroveRpc => "trove_rpc",
        }
    }
}

/// The running change, as `GET /v1/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunningChange {
    /// The call (`attach_replication_slave`, `prepare`, ...).
    pub operation: String,
    /// The front end it came through.
    pub front_end: FrontEnd,
    /// The request id (HTTP) or message id (RPC) that started it.
    pub operation_id: String,
    /// When it started, seconds since the Unix epoch.
    pub since: f64,
    /// Seconds since it started.
    pub elapsed_secs: f64,
    /// Its latest progress event, if it reports progress.
    pub last_event: Option<ProgressEvent>,
}

/// A change was refused because another one runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "busy: {running} is already in progress on this server; {requested} was not started, retry when it has finished"
)]
#[non_exhaustive]
pub struct Busy {
    /// The running change's name.
    pub running: String,
    /// The refused change's name.
    pub requested: String,
}

struct Running {
    ticket: u64,
    operation: String,
    front_end: FrontEnd,
    operation_id: String,
    started: Instant,
    since: SystemTime,
    last_event: Option<ProgressEvent>,
    task: Option<tokio::task::AbortHandle>,
}

struct Inner {
    lock: ChangeLock,
    running: Mutex<Option<Running>>,
    next: std::sync::atomic::AtomicU64,
    instance_id: Mutex<String>,
    /// Woken each time a change ends (its record cleared).
    ended: tokio::sync::Notify,
}

/// The agent's one change slot, shared by its front ends (cheap to clone: clones share it).
#[derive(Clone)]
pub struct ChangeSlot {
    inner: Arc<Inner>,
}

impl Default for ChangeSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ChangeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeSlot")
            .field("running", &self.current().map(|r| r.operation))
            .finish()
    }
}

/// Identifies one change of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeId(u64);

/// Holds the slot while a change runs; dropping it frees the slot and logs the change's end
/// (outcome `aborted` unless [`ChangeTicket::finish`] recorded one).
pub struct ChangeTicket {
    slot: ChangeSlot,
    id: u64,
    span: tracing::Span,
    started: Instant,
    outcome: Option<String>,
    // Dropped last: the slot's record is cleared before the lock is free again.
    _guard: OwnedChangeGuard,
}

impl std::fmt::Debug for ChangeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeTicket")
            .field("id", &self.id)
            .finish()
    }
}

impl ChangeSlot {
    /// A free slot.
    pub fn new() -> Self {
        ChangeSlot {
            inner: Arc::new(Inner {
                lock: ChangeLock::new(),
                running: Mutex::new(None),
                next: std::sync::atomic::AtomicU64::new(1),
                instance_id: Mutex::new(String::new()),
                ended: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Names the instance in every change span (the agent sets it).
    pub fn set_instance_id(&self, id: &str) {
        *self
            .inner
            .instance_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = id.to_owned();
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the slot for `operation`, coming through `front_end` as `operation_id`; the change's
    /// span is a child of the current span.
    ///
    /// # Errors
    ///
    /// [`Busy`], naming the running change, while another change holds the slot.
    pub fn try_begin(
        &self,
        operation: &str,
        front_end: FrontEnd,
        operation_id: &str,
    ) -> Result<ChangeTicket, Busy> {
        let guard = self.inner.lock.begin_owned(operation).map_err(|_| Busy {
            running: self
                .current()
                .map(|r| r.operation)
                .unwrap_or_else(|| "a replication change".to_owned()),
            requested: operation.to_owned(),
        })?;
        let id = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let instance_id = self
            .inner
            .instance_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let span = tracing::info_span!(
            "change",
            operation,
            front_end = front_end.as_str(),
            operation_id,
            instance_id = %instance_id,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        *self.running() = Some(Running {
            ticket: id,
            operation: operation.to_owned(),
            front_end,
            operation_id: operation_id.to_owned(),
            started: Instant::now(),
            since: SystemTime::now(),
            last_event: None,
            task: None,
        });
        Ok(ChangeTicket {
            slot: self.clone(),
            id,
            span,
            started: Instant::now(),
            outcome: None,
            _guard: guard,
        })
    }

    /// The running change, if any.
    pub fn current(&self) -> Option<RunningChange> {
        self.running().as_ref().map(|r| RunningChange {
            operation: r.operation.clone(),
            front_end: r.front_end,
            operation_id: r.operation_id.clone(),
            since: r
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
            elapsed_secs: r.started.elapsed().as_secs_f64(),
            last_event: r.last_event.clone(),
        })
    }

    /// Registers the task running change `id`, so [`ChangeSlot::abort_running`] can abort it
    /// (ignored when that change has already ended).
    pub fn attach_task(&self, id: ChangeId, task: tokio::task::AbortHandle) {
        if let Some(r) = self.running().as_mut()
            && r.ticket == id.0
        {
            r.task = Some(task);
        }
    }

    /// Records `event` as the running change's latest progress.
    pub(crate) fn record(&self, event: &ProgressEvent) {
        if let Some(r) = self.running().as_mut() {
            r.last_event = Some(event.clone());
        }
    }

    /// Aborts the running change, whichever front end started it (its task is dropped: tools
    /// are killed; every call is safe to repeat), and waits until the slot is free, at most
    /// `wait`.
    ///
    /// # Errors
    ///
    /// None: a change still running after `wait` is left to finish.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the abort is requested at once; only the wait is dropped.
    pub async fn abort_running(&self, wait: Duration) {
        if let Some(task) = self.running().as_mut().and_then(|r| r.task.take()) {
            task.abort();
        }
        let deadline = trove_guest_core::deadline(wait);
        loop {
            // Registered before the check: an end between the check and the wait still wakes.
            let ended = self.inner.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.running().is_none() {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return;
            }
        }
    }
}

impl ChangeTicket {
    /// The change's tracing span (run the change inside it).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// This change's id in its slot (for [`ChangeSlot::attach_task`]).
    pub fn id(&self) -> ChangeId {
        ChangeId(self.id)
    }

    /// Records the change's outcome (`ok`, or the error's class) for its end line.
    pub fn finish(&mut self, outcome: impl Into<String>) {
        self.outcome = Some(outcome.into());
    }
}

impl Drop for ChangeTicket {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| "aborted".to_owned());
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.span.record("outcome", outcome.as_str());
        self.span.record("duration_ms", ms);
        self.span.in_scope(|| {
            if outcome == "ok" {
                tracing::info!(outcome = %outcome, duration_ms = ms, "change finished");
            } else {
                tracing::warn!(outcome = %outcome, duration_ms = ms, "change finished");
            }
        });
        let mut running = self.slot.running();
        if running.as_ref().is_some_and(|r| r.ticket == self.id) {
            *running = None;
        }
        drop(running);
        self.slot.inner.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound on waits that must end long before it (a hang fails instead of blocking).
    const HANG: Duration = Duration::from_secs(120);

    #[tokio::test]
    async fn abort_running_aborts_the_task_and_returns_when_its_change_ends() {
        let slot = ChangeSlot::new();
        let ticket = slot.try_begin("attach", FrontEnd::Http, "r-1").unwrap();
        let id = ticket.id();
        let task = tokio::spawn(async move {
            let _ticket = ticket;
            std::future::pending::<()>().await;
        });
        slot.attach_task(id, task.abort_handle());
        // The wait is far longer than the test's bound: only the change's end can finish it.
        tokio::time::timeout(HANG, slot.abort_running(HANG * 10))
            .await
            .expect("woken by the change's end");
        assert!(slot.current().is_none());
        assert!(task.await.unwrap_err().is_cancelled());
        // Nothing running: returns at once, again and again.
        tokio::time::timeout(HANG, slot.abort_running(HANG * 10))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_change_ending_on_its_own_wakes_the_waiter() {
        let slot = ChangeSlot::new();
        let ticket = slot.try_begin("demote", FrontEnd::TroveRpc, "m-1").unwrap();
        // No task attached: nothing to abort, the waiter waits for the end.
        let waiter = tokio::spawn({
            let slot = slot.clone();
            async move { slot.abort_running(HANG * 10).await }
        });
        tokio::task::yield_now().await;
        drop(ticket);
        tokio::time::timeout(HANG, waiter)
            .await
            .expect("woken by the drop")
            .unwrap();
        assert!(slot.current().is_none());
    }

    #[tokio::test]
    async fn a_change_outliving_the_wait_is_left_running() {
        let slot = ChangeSlot::new();
        let _ticket = slot.try_begin("demote", FrontEnd::Http, "r-2").unwrap();
        slot.abort_running(Duration::ZERO).await;
        assert_eq!(slot.current().unwrap().operation, "demote");
    }

    #[test]
    fn a_change_through_one_front_end_refuses_the_other_front_end() {
        let slot = ChangeSlot::new();
        let http = slot.clone();
        let mut t = slot
            .try_begin("attach_replica", FrontEnd::TroveRpc, "msg-1")
            .unwrap();
        let busy = http
            .try_begin("demote_replication_master", FrontEnd::Http, "req-1")
            .unwrap_err();
        assert_eq!(busy.running, "attach_replica");
        assert_eq!(busy.requested, "demote_replication_master");
        let now = slot.current().expect("a change runs");
        assert_eq!(now.front_end, FrontEnd::TroveRpc);
        assert_eq!(now.operation_id, "msg-1");
        t.finish("ok");
        drop(t);
        assert!(slot.current().is_none());
        http.try_begin("demote_replication_master", FrontEnd::Http, "req-2")
            .expect("free again");
    }
}
