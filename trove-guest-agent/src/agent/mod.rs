//! The embeddable HTTP/JSON guest agent.
//!
//! [`GuestAgent`] wraps one [`SharedStrategy`] (acting on one local server) and the snapshot store
//! the strategy writes to, and serves the guest calls of [`crate::api`] with axum. Embed it with
//! [`GuestAgent::router`] (mount it in your own server) or [`GuestAgent::spawn_on`] (serve it on
//! a listener of its own: TCP, TLS or a Unix socket, see [`ListenOn`]).
//!
//! Who may call it is [`AgentOptions::auth`]: a bearer token over TCP and TLS, the peer's uid
//! over the Unix socket ([`AgentAuth`]). Error bodies keep tool stderr, file paths and server
//! messages in the log unless [`AgentOptions::errors`] says otherwise ([`ErrorDisclosure`]).

mod auth;
mod body;
mod error;
mod failover_routes;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_body;
mod listen;
mod ops;
mod routes;
mod trace;

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use trove_guest_core::{
    Error, RecoverOptions, RecoveryReport, Result, SharedStrategy, SnapshotStore,
};

pub use auth::AgentAuth;
pub use error::{ApiError, ErrorDisclosure};
pub(crate) use listen::read_tls_key_file;
pub use listen::{Endpoint, ListenOn, TlsFiles};

use crate::changes::ChangeSlot;

use crate::api::EventLine;

/// What identifies the agent's server to the control plane, who may call the agent and what its
/// error bodies show.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The instance id the agent answers to on `/instances/{id}/action`.
    pub instance_id: String,
    /// How callers are authenticated (default: no token; the Unix socket admits the agent's
    /// own uid and root).
    pub auth: AgentAuth,
    /// What error bodies show of the server's insides (default: nothing; the log keeps it).
    pub errors: ErrorDisclosure,
    /// How long `GET /v1/health` waits for the server to answer (default 5 s).
    pub health_timeout: Duration,
}

impl AgentOptions {
    /// Options for the instance `instance_id`.
    pub fn new(instance_id: impl Into<String>) -> Self {
        AgentOptions {
            instance_id: instance_id.into(),
            auth: AgentAuth::default(),
            errors: ErrorDisclosure::default(),
            health_timeout: Duration::from_secs(5),
        }
    }

    /// Authenticates callers with `auth`.
    pub fn with_auth(mut self, auth: AgentAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Shows `errors` of the server's insides in error bodies.
    pub fn with_errors(mut self, errors: ErrorDisclosure) -> Self {
        self.errors = errors;
        self
    }

    /// Sets how long `GET /v1/health` waits for the server to answer.
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }
}

pub(crate) struct AgentState {
    pub(crate) strategy: SharedStrategy,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) options: AgentOptions,
    pub(crate) slot: ChangeSlot,
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
        Self::with_changes(strategy, store, options, ChangeSlot::new())
    }

    /// Like [`GuestAgent::new`], taking its replication changes in `changes`: give the same slot
    /// to the other front ends serving this strategy ([`crate::rpc::TroveRpcServer::with_changes`])
    /// so that one change runs at a time whichever front end it comes through.
    pub fn with_changes(
        strategy: SharedStrategy,
        store: Arc<dyn SnapshotStore>,
        options: AgentOptions,
        changes: ChangeSlot,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        changes.set_instance_id(&options.instance_id);
        GuestAgent {
            state: Arc::new(AgentState {
                strategy,
                store,
                options,
                slot: changes,
                events,
                recovery: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The agent's change slot (shared with the front ends it was given to).
    pub fn changes(&self) -> ChangeSlot {
        self.state.slot.clone()
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

    /// The axum router of the agent's API, to serve or to mount. Every request must carry the
    /// agent's token when [`AgentAuth::token`] is set.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone()).layer(axum::middleware::from_fn_with_state(
            self.state.clone(),
            auth::require_token,
        ))
    }

    /// The router behind the Unix socket, whose peers' uids were checked as they connected.
    fn peer_checked_router(&self) -> axum::Router {
        routes::router(self.state.clone()).layer(axum::middleware::from_fn_with_state(
            self.state.clone(),
            auth::peer_checked,
        ))
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
        serve_listener(listener, self.router(), shutdown).await
    }

    /// Binds `addr` (use port 0 for a free port) and serves plain HTTP in a background task
    /// (`spawn_on(&ListenOn::Tcp(addr))`).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is served until it returns.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningAgent> {
        self.spawn_on(&ListenOn::Tcp(addr))
            .await
            .map_err(|e| match e {
                Error::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            })
    }

    /// Binds `on` and serves in a background task: plain HTTP or HTTPS on TCP (both ask for the
    /// token when one is set), or HTTP on a Unix socket admitting only
    /// [`AgentAuth::effective_uids`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address or socket cannot be bound; [`Error::InvalidInput`] for
    /// unreadable TLS files, a key that does not fit the certificate, a socket mode other than
    /// 0600 or 0660, or a socket path taken by another kind of file.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is served until it returns.
    pub async fn spawn_on(self, on: &ListenOn) -> Result<RunningAgent> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let state = self.state.clone();
        let bind = |addr: SocketAddr| async move {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("bind the guest agent on {addr}"), e))?;
            let local = l
                .local_addr()
                .map_err(|e| Error::io("the agent's address", e))?;
            Ok::<_, Error>((l, local))
        };
        let (endpoint, task, socket) = match on {
            ListenOn::Tcp(addr) => {
                let (l, local) = bind(*addr).await?;
                let task = tokio::spawn(serve_listener(l, self.router(), shutdown));
                (Endpoint::Tcp(local), task, None)
            }
            ListenOn::Tls { addr, tls } => {
                let config = listen::server_config(tls)?;
                let (l, local) = bind(*addr).await?;
                let l = listen::TlsListener::new(l, config)
                    .map_err(|e| Error::io("the agent's TLS listener", e))?;
                let task = tokio::spawn(serve_listener(l, self.router(), shutdown));
                (Endpoint::Tls(local), task, None)
            }
            ListenOn::Unix { path, mode } => {
                let uids = self.state.options.auth.effective_uids();
                let l = listen::PeerCheckedUnix::bind(path, *mode, uids)?;
                let socket = SocketFile(path.clone());
                let task = tokio::spawn(serve_listener(l, self.peer_checked_router(), shutdown));
                (Endpoint::Unix(path.clone()), task, Some(socket))
            }
        };
        Ok(RunningAgent {
            endpoint,
            state,
            stop: Some(stop),
            task: Some(task),
            _socket: socket,
        })
    }
}

async fn serve_listener<L>(
    listener: L,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The agent's socket file, removed when the agent stops.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An agent serving in the background; dropping it stops serving (and removes its socket file).
pub struct RunningAgent {
    endpoint: Endpoint,
    state: Arc<AgentState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _socket: Option<SocketFile>,
}

impl RunningAgent {
    /// The TCP address it listens on (`None` on a Unix socket).
    pub fn addr(&self) -> Option<SocketAddr> {
        match &self.endpoint {
            Endpoint::Tcp(a) | Endpoint::Tls(a) => Some(*a),
            Endpoint::Unix(_) => None,
        }
    }

    /// Where it listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its base URL: `http://127.0.0.1:PORT`, `https://127.0.0.1:PORT` (the certificate must
    /// name that address), or `http://localhost` on a Unix socket (the client connects to the
    /// socket, see [`crate::client::ClientOptions::with_unix_socket`]).
    pub fn url(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(a) => format!("http://{a}"),
            Endpoint::Tls(a) => format!("https://{a}"),
            Endpoint::Unix(_) => "http://localhost".to_owned(),
        }
    }

    /// Stops serving, aborts a replication change still running, whichever front end started
    /// it (its tools are killed; every call is safe to repeat later) and waits for both (the
    /// change at most 60 s).
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
        self.state.slot.abort_running(Duration::from_secs(60)).await;
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
            .field("endpoint", &self.endpoint)
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
