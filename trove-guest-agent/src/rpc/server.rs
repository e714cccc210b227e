//! The oslo.messaging RPC server over AMQP 0-9-1, as Trove's guest runs it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;
use tokio::sync::Mutex;
use trove_guest_core::{Secret, SharedStrategy};

use tracing::Instrument;

use super::conductor::{self, BackupUpdate, BuildPhase, CONDUCTOR_TOPIC, ServiceStatus};
use super::dispatch;
use super::envelope::{self, Failure, Request};
use super::guest_info::GuestInfo;
use crate::changes::{ChangeSlot, FrontEnd};

/// Trove's control exchange.
pub const EXCHANGE: &str = "trove";
/// How long a finished call's reply waits for the broker to come back, by default.
pub const DEFAULT_REPLY_PATIENCE: Duration = Duration::from_secs(120);
/// The pause between two attempts to publish a finished call's reply.
const REPLY_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How long one publish (and its confirmation) may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How many consecutive failed connection attempts end [`TroveRpcServer::run`], by default.
pub const DEFAULT_RECONNECT_ATTEMPTS: u32 = 100;

/// How long the heartbeat's status query may take before the server counts as not answering.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// How the RPC front end reaches the broker and whom it serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RpcOptions {
    /// The AMQP URL (`amqp://user:password@host:port/vhost`); a secret: never logged.
    pub url: Secret,
    /// The instance id and key from Trove's `guest_info.conf`.
    pub guest: GuestInfo,
    /// The longest pause between reconnection attempts (default 30 s; doubling from 250 ms).
    pub max_backoff: Duration,
    /// How often a heartbeat goes to trove-conductor (default 60 s; `None`: never).
    pub heartbeat: Option<Duration>,
    /// How many `_unique_id`s are remembered to drop duplicates (default 4096).
    pub remember: usize,
    /// How long a finished call's reply is retried while the broker is away (default
    /// [`DEFAULT_REPLY_PATIENCE`]); see [`ReplyRetry`].
    pub reply_patience: Duration,
    /// How many consecutive attempts to connect (and set up the queues) may fail before
    /// [`TroveRpcServer::run`] gives up with [`RpcError::BrokerUnreachable`] (default
    /// [`DEFAULT_RECONNECT_ATTEMPTS`]: with the 30 s pause, about 50 minutes; `None`: never).
    pub reconnect_attempts: Option<u32>,
    /// For a guest Trove builds as a replica: a file that records a successful
    /// `prepare(snapshot=...)`. While it is absent the agent sends trove-conductor no
    /// heartbeat, as Trove's guest sends none before its prepare ends, so Trove does not take
    /// the instance for active before its data is there. `None` (the default): the server is
    /// the operator's and its status is reported from the start. See [`super::conductor`].
    pub prepare_marker: Option<PathBuf>,
}

impl RpcOptions {
    /// Options for `guest` on the broker at `url`.
    pub fn new(url: Secret, guest: GuestInfo) -> Self {
        RpcOptions {
            url,
            guest,
            max_backoff: Duration::from_secs(30),
            heartbeat: Some(Duration::from_secs(60)),
            remember: 4096,
            reply_patience: DEFAULT_REPLY_PATIENCE,
            reconnect_attempts: Some(DEFAULT_RECONNECT_ATTEMPTS),
            prepare_marker: None,
        }
    }

    /// Sets the file that records a successful `prepare` (see [`RpcOptions::prepare_marker`]).
    pub fn with_prepare_marker(mut self, path: Option<PathBuf>) -> Self {
        self.prepare_marker = path;
        self
    }

    /// Sets how long a finished call's reply is retried while the broker is away.
    pub fn with_reply_patience(mut self, d: Duration) -> Self {
        self.reply_patience = d;
        self
    }

    /// Sets how many consecutive failed connection attempts end the server (`None`: never).
    pub fn with_reconnect_attempts(mut self, n: Option<u32>) -> Self {
        self.reconnect_attempts = n;
        self
    }

    /// Sets the longest pause between reconnection attempts.
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Sets (or disables) the heartbeat period.
    pub fn with_heartbeat(mut self, d: Option<Duration>) -> Self {
        self.heartbeat = d;
        self
    }
}

/// Why the RPC server stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The broker refused the queue layout (for example a queue declared with other flags).
    #[error("broker refused the queue layout: {0}")]
    Topology(String),
    /// The broker could not be reached (or the queues set up) in as many consecutive attempts
    /// as [`RpcOptions::reconnect_attempts`] allows.
    #[error("broker unreachable after {attempts} consecutive attempts; last: {last}")]
    BrokerUnreachable {
        /// The attempts made.
        attempts: u32,
        /// Why the last one failed (the URL redacted).
        last: String,
    },
}

/// The explicit bound on publishing a finished call's reply: at most `attempts` publishes,
/// `interval` apart, each bounded by its own timeout, and none started after `patience`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyRetry {
    /// The most publishes tried.
    pub attempts: u32,
    /// The pause between two.
    pub interval: Duration,
    /// No attempt starts later than this after the first.
    pub patience: Duration,
}

impl ReplyRetry {
    /// The bound for `patience`: one attempt every 500 ms for that long (at least one).
    pub fn for_patience(patience: Duration) -> Self {
        let n = patience.as_millis() / REPLY_RETRY_INTERVAL.as_millis();
        ReplyRetry {
            attempts: u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1),
            interval: REPLY_RETRY_INTERVAL,
            patience,
        }
    }

    /// Calls `attempt` until it succeeds or the bound is reached; the number of attempts made
    /// and whether the last succeeded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: stops between or inside attempts.
    ///
    /// # Errors
    ///
    /// None: the outcome says whether an attempt succeeded.
    pub async fn run<F, Fut>(&self, mut attempt: F) -> (u32, bool)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = trove_guest_core::deadline(self.patience);
        let mut made = 0;
        loop {
            made += 1;
            if attempt().await {
                return (made, true);
            }
            if made >= self.attempts || tokio::time::Instant::now() >= deadline {
                return (made, false);
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

/// What became of a message id.
enum Seen {
    /// Running; the deliveries of the same message the broker redelivered meanwhile (after a
    /// lost connection) are acknowledged together with the original, once the reply is out.
    Running(Vec<lapin::acker::Acker>),
    Done(Option<(String, Vec<u8>)>),
}

struct Shared {
    strategy: SharedStrategy,
    opts: RpcOptions,
    /// The channel replies go out on; replaced after each reconnection.
    channel: Mutex<Option<Channel>>,
    seen: std::sync::Mutex<(HashMap<String, Seen>, VecDeque<String>)>,
    changes: ChangeSlot,
    /// Where the instance is in Trove's build (what heartbeats report).
    phase: BuildPhase,
    /// One heartbeat at a time, from deciding its status to sending it: trove-conductor keeps
    /// the one sent last, so a slower older one must not overtake a newer one.
    heartbeat_turn: Mutex<()>,
}

/// Trove's RPC front end for one strategy.
#[derive(Clone)]
pub struct TroveRpcServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TroveRpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TroveRpcServer")
            .field("guest", &self.shared.opts.guest)
            .finish()
    }
}

fn props() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_priority(0)
        .with_headers(FieldTable::default())
}

impl TroveRpcServer {
    /// A server for `strategy`, with a change slot of its own (see
    /// [`TroveRpcServer::with_changes`] to share one with the HTTP front end).
    pub fn new(strategy: SharedStrategy, opts: RpcOptions) -> Self {
        Self::with_changes(strategy, opts, ChangeSlot::new())
    }

    /// A server for `strategy` taking its replication changes in `changes`, the slot the other
    /// front ends of this strategy use ([`crate::GuestAgent::changes`]): while a change runs,
    /// through any of them, another change is answered with a `GuestError` (busy), never queued.
    pub fn with_changes(strategy: SharedStrategy, opts: RpcOptions, changes: ChangeSlot) -> Self {
        changes.set_instance_id(&opts.guest.guest_id);
        let phase = BuildPhase::new(opts.prepare_marker.clone());
        TroveRpcServer {
            shared: Arc::new(Shared {
                strategy,
                phase,
                heartbeat_turn: Mutex::new(()),
                opts,
                channel: Mutex::new(None),
                seen: std::sync::Mutex::new((HashMap::new(), VecDeque::new())),
                changes,
            }),
        }
    }

    /// The queue Trove sends to: `guestagent.<guest_id>`.
    pub fn queue(&self) -> String {
        format!("guestagent.{}", self.shared.opts.guest.guest_id)
    }

    /// Serves until `shutdown` completes, reconnecting with backoff whenever the broker goes
    /// away. Each call is acknowledged only once its reply is published (a call interrupted by a
    /// broker restart is redelivered and answered then; its `_unique_id` keeps it from running
    /// twice); a cast is acknowledged once it has started.
    ///
    /// # Errors
    ///
    /// [`RpcError::Topology`] when the broker refuses the queue layout (not retried).
    ///
    /// # Cancel safety
    ///
    /// Cancelling stops consuming; methods already running finish in their own tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RpcError> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(250);
        // Consecutive attempts that did not get to serve.
        let mut failed = 0u32;
        loop {
            let session = self.session();
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = session => match r {
                    Ok(never) => match never {},
                    Err(SessionEnd::Fatal(e)) => {
                        tracing::error!(error = %e, "Trove RPC front end stops");
                        return Err(e);
                    }
                    Err(SessionEnd::Lost { why, served }) => {
                        *self.shared.channel.lock().await = None;
                        if served {
                            failed = 0;
                            backoff = Duration::from_millis(250);
                        }
                        failed += 1;
                        if let Some(max) = self.shared.opts.reconnect_attempts
                            && failed >= max.max(1)
                        {
                            tracing::error!(%why, attempts = failed, "broker unreachable: Trove RPC front end gives up");
                            return Err(RpcError::BrokerUnreachable { attempts: failed, last: why });
                        }
                        tracing::warn!(%why, retry_in = ?backoff, "broker connection lost");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.shared.opts.max_backoff);
        }
    }

    /// Connects, sets up the queues and serves until the connection is lost (never `Ok`).
    async fn session(&self) -> Result<std::convert::Infallible, SessionEnd> {
        let lost = |e: lapin::Error| SessionEnd::lost(e.to_string());
        let url = self.shared.opts.url.expose().to_owned();
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .map_err(|e| SessionEnd::lost(redact(&e.to_string(), &url)))?;
        let ch = conn.create_channel().await.map_err(lost)?;
        let topo = |e: lapin::Error| match e {
            lapin::Error::ProtocolError(p) => SessionEnd::Fatal(RpcError::Topology(p.to_string())),
            other => SessionEnd::lost(other.to_string()),
        };
        ch.basic_qos(0, BasicQosOptions::default())
            .await
            .map_err(lost)?;
        ch.exchange_declare(
            EXCHANGE,
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(topo)?;
        let topic = self.queue();
        let server = format!("{topic}.{}", self.shared.opts.guest.guest_id);
        for name in [&topic, &server] {
            ch.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default())
                .await
                .map_err(topo)?;
            ch.queue_bind(
                name,
                EXCHANGE,
                name,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(topo)?;
        }
        let fanout = format!("{topic}_fanout");
        ch.exchange_declare(
            &fanout,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(topo)?;
        let fanout_q = format!("{fanout}_{}", envelope::new_id());
        let mut fargs = FieldTable::default();
        fargs.insert("x-expires".into(), AMQPValue::LongInt(1_800_000));
        ch.queue_declare(&fanout_q, QueueDeclareOptions::default(), fargs)
            .await
            .map_err(topo)?;
        ch.queue_bind(
            &fanout_q,
            &fanout,
            &topic,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(topo)?;
        let mut consumers = futures::stream::select_all(Vec::new());
        for q in [&topic, &server, &fanout_q] {
            let c = ch
                .basic_consume(q, "", BasicConsumeOptions::default(), FieldTable::default())
                .await
                .map_err(lost)?;
            consumers.push(c);
        }
        *self.shared.channel.lock().await = Some(ch.clone());
        tracing::info!(queue = %topic, "serving Trove RPC");
        let heartbeat = self.heartbeats();
        tokio::pin!(heartbeat);
        let served = |why: String| SessionEnd::Lost { why, served: true };
        loop {
            tokio::select! {
                () = &mut heartbeat => {}
                d = consumers.next() => match d {
                    Some(Ok(d)) => self.on_delivery(d),
                    Some(Err(e)) => return Err(served(e.to_string())),
                    None => return Err(served("consumer closed".into())),
                }
            }
        }
    }

    fn on_delivery(&self, d: lapin::message::Delivery) {
        let key = self.shared.opts.guest.key.as_ref();
        let me = self.clone();
        match envelope::decode(&d.data, key) {
            Err((err, to)) => {
                tracing::warn!(error = %err, method = ?to.method, "undecodable message");
                tokio::spawn(async move {
                    if let (Some(m), Some(q)) = (&to.msg_id, &to.reply_q) {
                        let f = match &err {
                            envelope::EnvelopeError::Decrypt { .. } => {
                                Failure::trove("GuestError", err.to_string())
                            }
                            _ => Failure::remote("ValueError", err.to_string()),
                        };
                        me.publish(q, &envelope::failure_body(m, &f)).await;
                    }
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                });
            }
            Ok(req) => {
                let uid = req.unique_id.clone();
                if let Some(uid) = &uid {
                    let dup = {
                        let mut seen = self.lock_seen();
                        match seen.0.get_mut(uid) {
                            Some(Seen::Running(waiting)) if d.redelivered => {
                                tracing::info!(method = %req.method, "redelivered while running: answered when done");
                                waiting.push(d.acker.clone());
                                return;
                            }
                            Some(Seen::Running(_)) => Some(None),
                            // A broker redelivery of a call already answered (the reply or
                            // the ack was lost with the connection): answer it again. A plain
                            // duplicate is dropped.
                            Some(Seen::Done(r)) if d.redelivered => Some(r.clone()),
                            Some(Seen::Done(_)) => Some(None),
                            None => {
                                seen.0.insert(uid.clone(), Seen::Running(Vec::new()));
                                seen.1.push_back(uid.clone());
                                let cap = self.shared.opts.remember.max(1);
                                while seen.1.len() > cap {
                                    if let Some(old) = seen.1.pop_front() {
                                        seen.0.remove(&old);
                                    }
                                }
                                None
                            }
                        }
                    };
                    if let Some(cached) = dup {
                        tracing::info!(method = %req.method, "duplicate message dropped");
                        tokio::spawn(async move {
                            if let Some((q, body)) = cached {
                                me.publish(&q, &body).await;
                            }
                            let _ = d.acker.ack(BasicAckOptions::default()).await;
                        });
                        return;
                    }
                }
                tokio::spawn(async move { me.handle(req, d).await });
            }
        }
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Seen>, VecDeque<String>)> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn handle(&self, req: Request, d: lapin::message::Delivery) {
        let call = req.is_call();
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "rpc_request",
            method = %req.method,
            msg_id = req.msg_id.as_deref().unwrap_or(""),
            instance_id = %self.shared.opts.guest.guest_id,
            call,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        if !call {
            // A cast has no reply to wait for: acknowledge it once it has been taken on.
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
        let result = self.run_reported(&req).instrument(span.clone()).await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(f) => f.class.clone(),
        };
        span.record("outcome", outcome.as_str());
        span.record("duration_ms", ms);
        span.in_scope(|| match &result {
            Ok(_) => tracing::info!(outcome = %outcome, duration_ms = ms, "request finished"),
            Err(f) => tracing::warn!(
                outcome = %outcome,
                duration_ms = ms,
                message = %f.message,
                "request finished"
            ),
        });
        let reply = match (&req.msg_id, &req.reply_q) {
            (Some(m), Some(q)) => {
                let body = match &result {
                    Ok(v) => envelope::reply_body(m, v, self.shared.opts.guest.key.as_ref()),
                    Err(f) => envelope::failure_body(m, f),
                };
                Some((q.clone(), body))
            }
            _ => None,
        };
        let mut redelivered = Vec::new();
        if let Some(uid) = &req.unique_id
            && let Some(s) = self.lock_seen().0.get_mut(uid)
        {
            if let Seen::Running(waiting) = s {
                redelivered = std::mem::take(waiting);
            }
            *s = Seen::Done(reply.clone());
        }
        if let Some((q, body)) = reply {
            // The call is acknowledged only once its reply is out. A broker that went away
            // while the call ran is waited for, within an explicit bound (ReplyRetry): the
            // reply goes out on the next connection, where the caller's reply queue is
            // declared again.
            let retry = ReplyRetry::for_patience(self.shared.opts.reply_patience);
            let (attempts, sent) = retry.run(|| self.publish(&q, &body)).await;
            if sent {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                for acker in &redelivered {
                    let _ = acker.ack(BasicAckOptions::default()).await;
                }
            } else {
                span.in_scope(|| {
                    tracing::error!(
                        attempts,
                        patience = ?retry.patience,
                        "reply given up: broker unreachable (the call stays unacknowledged)"
                    )
                });
            }
        }
    }

    /// Runs one request and tells trove-conductor what Trove's guest would: the build phase
    /// around `prepare` (a heartbeat at its start and end) and the backup record's state around
    /// `get_replication_snapshot`.
    async fn run_reported(&self, req: &Request) -> Result<Value, Failure> {
        let prepare = req.method == "prepare";
        if prepare {
            self.shared.phase.begin_prepare();
            self.heartbeat_now().await;
        }
        if let Some(u) = BackupUpdate::before(req) {
            self.update_backup(&u).await;
        }
        let result = self.run_request(req).await;
        if let Some(u) = BackupUpdate::after(req, &result) {
            self.update_backup(&u).await;
        }
        if prepare {
            self.shared.phase.end_prepare(result.is_ok());
            self.heartbeat_now().await;
        }
        result
    }

    /// Runs one request: a change under the shared slot (busy: a `GuestError`), in a task of its
    /// own that the agent's shutdown can abort; a read at once.
    pub(crate) async fn run_request(&self, req: &Request) -> Result<Value, Failure> {
        if !dispatch::is_change(&req.method) {
            return dispatch::dispatch(&self.shared.strategy, req).await;
        }
        let op_id = req
            .msg_id
            .clone()
            .or_else(|| req.unique_id.clone())
            .unwrap_or_else(envelope::new_id);
        let mut ticket =
            match self
                .shared
                .changes
                .try_begin(&req.method, FrontEnd::TroveRpc, &op_id)
            {
                Ok(t) => t,
                Err(busy) => return Err(Failure::trove("GuestError", busy.to_string())),
            };
        let span = ticket.span().clone();
        let id = ticket.id();
        let strategy = self.shared.strategy.clone();
        let owned = req.clone();
        let task = tokio::spawn(
            async move {
                let r = dispatch::dispatch(&strategy, &owned).await;
                ticket.finish(match &r {
                    Ok(_) => "ok".to_owned(),
                    Err(f) => f.class.clone(),
                });
                r
            }
            .instrument(span),
        );
        self.shared.changes.attach_task(id, task.abort_handle());
        match task.await {
            Ok(r) => r,
            Err(e) => Err(Failure::trove(
                "GuestError",
                format!("{} was aborted: {e}", req.method),
            )),
        }
    }

    /// Publishes a reply on the current channel; false when there is none, it failed or it
    /// took longer than 10 s (the unacknowledged call is then redelivered after reconnecting
    /// and answered from the cache).
    async fn publish(&self, reply_q: &str, body: &[u8]) -> bool {
        let ch = self.shared.channel.lock().await.clone();
        let Some(ch) = ch else { return false };
        let publish = Self::publish_on(&ch, "", reply_q, true, body);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(sent) => sent,
            Err(_) => {
                tracing::warn!(timeout = ?PUBLISH_TIMEOUT, "reply not confirmed in time");
                false
            }
        }
    }

    async fn publish_on(
        ch: &Channel,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
    ) -> bool {
        let sent = ch
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                body,
                props(),
            )
            .await;
        match sent {
            Ok(confirm) => confirm.await.is_ok(),
            Err(e) => {
                tracing::warn!(error = %e, routing_key, "message not sent");
                false
            }
        }
    }

    /// Heartbeats to trove-conductor, as Trove's guest sends them (a cast of `heartbeat`).
    async fn heartbeats(&self) {
        let Some(period) = self.shared.opts.heartbeat else {
            return futures::future::pending().await;
        };
        loop {
            self.heartbeat_now().await;
            tokio::time::sleep(period).await;
        }
    }

    /// Sends one heartbeat with the instance's status now, unless the status is to be kept
    /// quiet (see [`conductor`]); at most one attempt, bounded: the next heartbeat replaces a
    /// lost one.
    async fn heartbeat_now(&self) {
        let _turn = self.shared.heartbeat_turn.lock().await;
        if let Some(status) = self.service_status().await {
            let guest = &self.shared.opts.guest;
            let args = conductor::heartbeat_args(&guest.guest_id, status);
            if !self.cast_to_conductor("heartbeat", args).await {
                tracing::warn!(status = status.description(), "heartbeat not sent");
            }
        }
    }

    /// The status a heartbeat reports now; `None`: send none.
    async fn service_status(&self) -> Option<ServiceStatus> {
        if let Some(fixed) = self.shared.phase.fixed_status() {
            return fixed;
        }
        let probe =
            tokio::time::timeout(STATUS_TIMEOUT, self.shared.strategy.replication_status()).await;
        match probe {
            Ok(Ok(_)) => Some(ServiceStatus::Healthy),
            // A running change may be restarting the server: say nothing, as Trove's guest
            // keeps quiet while it restarts its database.
            _ if self.shared.changes.current().is_some() => None,
            _ => Some(ServiceStatus::Shutdown),
        }
    }

    /// Reports a backup record's state, retried like a reply (see [`ReplyRetry`]): Trove
    /// deletes the replication backup record after building the replica, which it refuses
    /// while the record still says it is being built.
    async fn update_backup(&self, update: &BackupUpdate) {
        let args = update.args(&self.shared.opts.guest.guest_id);
        let retry = ReplyRetry::for_patience(self.shared.opts.reply_patience);
        let (attempts, sent) = retry
            .run(|| self.cast_to_conductor("update_backup", args.clone()))
            .await;
        if !sent {
            tracing::error!(
                backup_id = %update.backup_id,
                state = update.state.as_str(),
                attempts,
                "update_backup not sent: broker unreachable"
            );
        }
    }

    /// Casts `method` to trove-conductor on the current channel; false when there is none, it
    /// failed or it took longer than 10 s.
    async fn cast_to_conductor(&self, method: &str, args: serde_json::Map<String, Value>) -> bool {
        let ch = self.shared.channel.lock().await.clone();
        let Some(ch) = ch else { return false };
        let body = conductor::cast_body(&self.shared.opts.guest, method, args);
        let publish = Self::publish_on(&ch, EXCHANGE, CONDUCTOR_TOPIC, false, &body);
        tokio::time::timeout(PUBLISH_TIMEOUT, publish)
            .await
            .unwrap_or(false)
    }
}

enum SessionEnd {
    /// The connection failed or was lost; `served`: after the session was serving.
    Lost {
        why: String,
        served: bool,
    },
    Fatal(RpcError),
}

impl SessionEnd {
    fn lost(why: String) -> Self {
        SessionEnd::Lost { why, served: false }
    }
}

/// Removes the URL (which holds the broker password) from an error message.
fn redact(msg: &str, url: &str) -> String {
    if url.is_empty() {
        msg.to_owned()
    } else {
        msg.replace(url, "<amqp url>")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_reply_is_tried_at_most_its_attempts_then_given_up() {
        let retry = ReplyRetry {
            attempts: 5,
            interval: Duration::ZERO,
            patience: Duration::MAX / 4,
        };
        let calls = AtomicU32::new(0);
        let (made, sent) = retry
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { false }
            })
            .await;
        assert_eq!((made, sent, calls.load(Ordering::SeqCst)), (5, false, 5));
        // Success stops the retries.
        let calls = AtomicU32::new(0);
        let (made, sent) = retry
            .run(|| async { calls.fetch_add(1, Ordering::SeqCst) == 2 })
            .await;
        assert_eq!((made, sent), (3, true));
    }

    #[test]
    fn the_default_patience_allows_one_attempt_every_500_ms() {
        let r = ReplyRetry::for_patience(DEFAULT_REPLY_PATIENCE);
        assert_eq!(r.attempts, 241);
        assert_eq!(r.interval, Duration::from_millis(500));
        assert_eq!(ReplyRetry::for_patience(Duration::ZERO).attempts, 1);
    }
}
