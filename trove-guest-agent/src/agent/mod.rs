//! The embeddable HTTP/JSON guest agent.
//!
//! [`GuestAgent`] wraps one [`SharedStrategy`] (acting on one local server) and the snapshot store
//! the strategy writes to, and serves the guest calls of [`crate::api`] with axum. Embed it with
//! [`GuestAgent::router`] (mount it in your own server) or [`GuestAgent::spawn`] (serve it on a
//! listener of its own).

mod body;
mod error;
mod failover_routes;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_body;
mod ops;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use trove_guest_core::{RecoverOptions, RecoveryReport, SharedStrategy, SnapshotStore};

pub use error::ApiError;

use crate::api::EventLine;

/// What identifies the agent's server to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The instance id the agent answers to on `/instances/{id}/action`.
    pub instance_id: String,
}

impl AgentOptions {
    /// Options for the instance `instance_id`.
    pub fn new(instance_id: impl Into<String>) -> Self {
        AgentOptions {
            instance_id: instance_id.into(),
        }
    }
}

pub(crate) struct AgentState {
    pub(crate) strategy: SharedStrategy,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) options: AgentOptions,
    pub(crate) slot: Arc<ops::OpSlot>,
    pub(crate) events: broadcast::Sender<EventLine>,
    pub(crate) recovery: std::sync::Mutex<Option<RecoveryReport>>,
}

/// A guest agent for one server.
#[derive(Clone)]
pub struct GuestAgent {
    state: Arc<AgentState>,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("strategy", &self.state.strategy)
            .field("store", &self.state.store)
            .field("options", &self.state.options)
            .finish()
    }
}

impl GuestAgent {
    /// An agent serving `strategy`, whose snapshots live in `store` (the same store the strategy
    /// was built with: attach requests whose `snapshot_href` it does not own are refused).
    pub fn new(
        strategy: SharedStrategy,
        store: Arc<dyn SnapshotStore>,
        options: AgentOptions,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        GuestAgent {
            state: Arc::new(AgentState {
                strategy,
                store,
                options,
                slot: Arc::default(),
                events,
                recovery: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Runs the strategy's recovery ([`ReplicationStrategy::recover`]) and keeps its report for
    /// `GET /v1/recovery`. Call it once before serving: an interrupted change of an earlier
    /// agent is rolled forward or back and its leftovers removed, so the first request finds a
    /// consistent server. Each action is logged.
    ///
    /// [`ReplicationStrategy::recover`]: trove_guest_core::ReplicationStrategy::recover
    ///
    /// # Errors
    ///
    /// What the strategy's recovery reports (the server could not be started, a journaled step
    /// could not be completed or undone); recovery can then be run again.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, like the strategy's recovery; running it again completes it.
    pub async fn recover(&self, opts: &RecoverOptions) -> trove_guest_core::Result<RecoveryReport> {
        let report = self.state.strategy.recover(opts).await?;
        if report.is_empty() {
            tracing::info!("recovery: nothing to recover");
        }
        for action in &report.actions {
            tracing::info!(%action, "recovery action");
        }
        *self
            .state
            .recovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report.clone());
        Ok(report)
    }

    /// The axum router of the agent's API, to serve or to mount.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Serves the API on `listener` until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// The listener's I/O errors.
    ///
    /// # Cancel safety
    ///
    /// Cancelling stops serving; replication changes already started run to completion in their
    /// own tasks.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `addr` (use port 0 for a free port) and serves in a background task.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is served until it returns.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningAgent> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = self.state.clone();
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(RunningAgent {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// An agent serving in the background; dropping it stops serving.
pub struct RunningAgent {
    addr: SocketAddr,
    state: Arc<AgentState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningAgent {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving, aborts a replication change still running (its tools are killed; every
    /// call is safe to repeat later) and waits for both.
    ///
    /// # Errors
    ///
    /// The server's I/O error, if it failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the server is told to stop first; dropping the wait aborts it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.slot.abort_running().await;
        match self.task.take() {
            // Long-lived event streams would hold a graceful shutdown open: give open answers a
            // few seconds, then drop the connections.
            Some(mut task) => match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                Ok(joined) => joined.unwrap_or(Ok(())),
                Err(_) => {
                    task.abort();
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
