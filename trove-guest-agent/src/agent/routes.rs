//! The agent's routes: parse and check the request, then call the strategy.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use trove_guest_core::wire::InstanceAction;
use trove_guest_core::{
    AttachRequest, DatastoreKind, DemoteOptions, DetachOptions, DetachedReplica,
    EnableMasterOptions, Progress, ReplicationPosition, ReplicationStatus, SharedStrategy,
    SnapshotDocument, SnapshotRequest, StageRequest,
};

use super::AgentState;
use super::body::{Expecting, parse};
use super::error::ApiError;
use super::ops::run_change;
use crate::api::{self, kinds};

pub(super) type St = State<Arc<AgentState>>;

pub(crate) fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route(api::STATUS, get(status))
        .route(api::ENABLE_MASTER, post(enable_master))
        .route(api::SNAPSHOT, post(snapshot))
        .route(api::STAGE, post(stage))
        .route(api::ATTACH, post(attach))
        .route(api::DETACH, post(detach))
        .route(api::CLEANUP, post(cleanup))
        .route(api::DEMOTE, post(demote))
        .route(api::READ_ONLY, put(read_only))
        .route(api::LATEST_TXN, get(latest_txn))
        .route(api::WAIT_FOR_TXN, post(wait_for_txn))
        .route(
            api::REPLICA_CONTEXT,
            post(super::failover_routes::replica_context),
        )
        .route(
            api::ATTACH_REPLICA,
            post(super::failover_routes::attach_replica),
        )
        .route(api::LAST_TXN, get(super::failover_routes::last_txn))
        .route(api::FENCE, post(super::failover_routes::fence))
        .route(api::UNFENCE, post(super::failover_routes::unfence))
        .route(
            api::STOP_RECEIVER,
            post(super::failover_routes::stop_receiver),
        )
        .route(api::OPERATION, get(operation))
        .route(api::EVENTS, get(events))
        .route(api::RECOVERY, get(recovery))
        .route(api::HEALTH, get(health))
        .route("/instances/{id}/action", post(action))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::trace::request,
        ))
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        kinds::NOT_FOUND,
        format!("no route {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        kinds::INVALID_INPUT,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            kinds::INVALID_QUERY,
            format!("invalid query string: {}", e.body_text()),
        )
    })
}

fn wants_stream(flag: Option<bool>, headers: &HeaderMap) -> bool {
    flag.unwrap_or_else(|| {
        headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/x-ndjson"))
    })
}

fn done() -> serde_json::Value {
    json!({})
}

/// Runs the replication change `name` under the agent's slot (see [`run_change`]), handing `f`
/// the strategy and the change's progress.
pub(super) async fn change<T, F, Fut>(
    s: &AgentState,
    name: &'static str,
    stream: bool,
    f: F,
) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(SharedStrategy, Progress) -> Fut + Send + 'static,
    Fut: Future<Output = trove_guest_core::Result<T>> + Send + 'static,
{
    let strategy = s.strategy.clone();
    run_change(&s.slot, &s.events, name, stream, move |progress| {
        f(strategy, progress)
    })
    .await
}

/// Runs a change that has no result of its own: it answers `{}` and never streams.
pub(super) async fn change_answering_done<F, Fut>(
    s: &AgentState,
    name: &'static str,
    f: F,
) -> Response
where
    F: FnOnce(SharedStrategy) -> Fut + Send + 'static,
    Fut: Future<Output = trove_guest_core::Result<()>> + Send + 'static,
{
    change(s, name, false, move |strategy, _| async move {
        f(strategy).await?;
        Ok(done())
    })
    .await
}

async fn recovery(State(s): St) -> Json<api::RecoveryView> {
    let report = s
        .recovery
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Json(api::RecoveryView {
        ran: report.is_some(),
        actions: report.map(|r| r.actions).unwrap_or_default(),
    })
}

/// Whether the server answers (one bounded status query) and whether a change runs.
async fn health(State(s): St) -> Response {
    let answer =
        tokio::time::timeout(s.options.health_timeout, s.strategy.replication_status()).await;
    let problem = match answer {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(ApiError::status_for(e.kind()).1.to_owned()),
        Err(_) => Some("timeout".to_owned()),
    };
    let recovery = s
        .recovery
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map(|r| r.actions.len());
    let view = api::HealthView {
        server: if problem.is_none() {
            api::ANSWERING
        } else {
            api::NOT_ANSWERING
        }
        .to_owned(),
        change: s.slot.current(),
        recovery: api::HealthRecovery {
            ran: recovery.is_some(),
            actions: recovery.unwrap_or(0),
        },
        problem,
    };
    let code = if view.problem.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(view)).into_response()
}

async fn status(State(s): St) -> Result<Json<ReplicationStatus>, ApiError> {
    Ok(Json(s.strategy.replication_status().await?))
}

async fn enable_master(State(s): St) -> Response {
    change_answering_done(&s, "enable_as_master", |strategy| async move {
        strategy.enable_as_master(&EnableMasterOptions::new()).await
    })
    .await
}

async fn snapshot(
    State(s): St,
    q: Result<Query<api::StreamQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let call: api::SnapshotCall = parse(
        &body,
        Expecting {
            what: "snapshot options",
            empty_is_default: true,
        },
    )?;
    let stream = wants_stream(q.stream, &headers);
    Ok(change(
        &s,
        "get_replication_snapshot",
        stream,
        move |strategy, progress| async move {
            let mut req = SnapshotRequest::new().with_progress(progress);
            if let Some(id) = call.replica_id {
                req = req.with_replica_id(id);
            }
            if let Some(host) = call.replica_host {
                req = req.with_replica_host(host);
            }
            if let Some(name) = call.snapshot_name {
                req = req.with_snapshot_name(name);
            }
            if let Some(n) = call.parallel {
                req = req.with_parallel(n);
            }
            strategy.get_replication_snapshot(&req).await
        },
    )
    .await)
}

/// The family the agent compares; a datastore core does not know is its own family.
fn family(kind: &DatastoreKind) -> &str {
    match kind {
        DatastoreKind::Postgresql => "PostgreSQL",
        DatastoreKind::Mysql | DatastoreKind::Mariadb => "MySQL/MariaDB",
        other => other.as_str(),
    }
}

/// The checks an attach request passes before anything changes.
fn check_snapshot(s: &AgentState, doc: &SnapshotDocument) -> Result<(), ApiError> {
    // Families only: a MySQL-family strategy may learn its flavor (MySQL or MariaDB) from the
    // server on first use, and refuses a snapshot of the other flavor itself (`Incompatible`).
    let served = s.strategy.datastore();
    let ours = family(&served);
    let theirs = family(&doc.dataset.datastore);
    if ours != theirs {
        let (kind, message) = if doc.dataset.datastore.is_known() {
            (
                kinds::WRONG_DATASTORE,
                format!(
                    "wrong datastore: the snapshot is of {} ({theirs}), this server runs {ours}",
                    doc.dataset.datastore
                ),
            )
        } else {
            (
                kinds::UNKNOWN_DATASTORE,
                format!(
                    "unknown datastore at dataset.datastore: {} (this server runs {ours})",
                    doc.dataset.datastore
                ),
            )
        };
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, kind, message)
                .with_field("dataset.datastore"),
        );
    }
    doc.validate().map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kinds::INVALID_DOCUMENT,
            e.to_string(),
        )
    })?;
    if !s.store.owns(&doc.dataset.snapshot_href) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kinds::HREF_OUTSIDE_STORE,
            format!(
                "snapshot href {:?} is outside this agent's snapshot store",
                doc.dataset.snapshot_href
            ),
        )
        .with_field("dataset.snapshot_href"));
    }
    Ok(())
}

async fn attach(
    State(s): St,
    q: Result<Query<api::AttachQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let doc: SnapshotDocument = parse(
        &body,
        Expecting {
            what: "a snapshot document",
            empty_is_default: false,
        },
    )?;
    check_snapshot(&s, &doc)?;
    let timeout = bounded_timeout(q.timeout_secs)?;
    let stream = wants_stream(q.stream, &headers);
    Ok(change(
        &s,
        "attach_replication_slave",
        stream,
        move |strategy, progress| async move {
            let mut req = AttachRequest::new().with_progress(progress);
            if let Some(p) = q.positioning {
                req = req.with_positioning(p);
            }
            if let Some(t) = timeout {
                req = req.with_timeout(t);
            }
            if let Some(id) = q.server_id {
                req = req.with_server_id(id);
            }
            strategy.attach_replication_slave(&doc, &req).await
        },
    )
    .await)
}

async fn stage(
    State(s): St,
    q: Result<Query<api::StreamQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let call: api::StageCall = parse(
        &body,
        Expecting {
            what: "a snapshot to stage",
            empty_is_default: false,
        },
    )?;
    let bad = |message: String, field: &'static str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kinds::INVALID_DOCUMENT,
            message,
        )
        .with_field(field)
    };
    let href = match (&call.snapshot_href, &call.snapshot_name) {
        (Some(h), None) => h.clone(),
        (None, Some(n)) => s
            .store
            .snapshot_href(n)
            .map_err(|e| bad(e.to_string(), "snapshot_name"))?,
        _ => {
            return Err(bad(
                "give exactly one of snapshot_href and snapshot_name".into(),
                "snapshot_href",
            ));
        }
    };
    if !s.store.owns(&href) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kinds::HREF_OUTSIDE_STORE,
            format!("snapshot href {href:?} is outside this agent's snapshot store"),
        )
        .with_field("snapshot_href"));
    }
    let expected = trove_guest_core::store::Expected {
        size: call.size_bytes,
        sha256: call.sha256.clone(),
    };
    let stream = wants_stream(q.stream, &headers);
    Ok(change(
        &s,
        "stage_snapshot",
        stream,
        move |strategy, progress| async move {
            let req = StageRequest::new(href)
                .with_expected(expected)
                .with_progress(progress);
            strategy.stage_snapshot(&req).await
        },
    )
    .await)
}

/// A caller's `timeout_secs`, refused above [`api::MAX_TIMEOUT_SECS`].
fn bounded_timeout(secs: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match secs {
        Some(t) if t > api::MAX_TIMEOUT_SECS => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            kinds::TIMEOUT_TOO_LONG,
            format!(
                "timeout_secs {t} is above the maximum of {} seconds",
                api::MAX_TIMEOUT_SECS
            ),
        )
        .with_field("timeout_secs")),
        other => Ok(other.map(Duration::from_secs)),
    }
}

fn detach_options(call: &api::DetachCall) -> Result<DetachOptions, ApiError> {
    let mut opts = DetachOptions::new();
    if let Some(t) = bounded_timeout(call.timeout_secs)? {
        opts.timeout = t;
    }
    if let Some(f) = call.for_failover {
        opts.for_failover = f;
    }
    Ok(opts)
}

/// The detach change (from its own route or the instance action).
async fn run_detach(s: &AgentState, opts: DetachOptions) -> Response {
    change(
        s,
        "detach_replication_slave",
        false,
        move |strategy, _| async move { strategy.detach_replication_slave(&opts).await },
    )
    .await
}

async fn detach(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let call: api::DetachCall = parse(
        &body,
        Expecting {
            what: "detach options",
            empty_is_default: true,
        },
    )?;
    Ok(run_detach(&s, detach_options(&call)?).await)
}

async fn cleanup(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let replica: DetachedReplica = parse(
        &body,
        Expecting {
            what: "a detached replica document",
            empty_is_default: false,
        },
    )?;
    Ok(change_answering_done(
        &s,
        "cleanup_source_on_replica_detach",
        move |strategy| async move { strategy.cleanup_source_on_replica_detach(&replica).await },
    )
    .await)
}

async fn demote(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let call: api::DemoteCall = parse(
        &body,
        Expecting {
            what: "demote options",
            empty_is_default: true,
        },
    )?;
    let mut opts = DemoteOptions::new();
    if let Some(p) = call.purge_logs {
        opts.purge_logs = p;
    }
    Ok(change_answering_done(
        &s,
        "demote_replication_master",
        move |strategy| async move { strategy.demote_replication_master(&opts).await },
    )
    .await)
}

async fn read_only(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let call: api::ReadOnlyCall = parse(
        &body,
        Expecting {
            what: r#"{"read_only": true|false}"#,
            empty_is_default: false,
        },
    )?;
    let answer = change_answering_done(&s, "make_read_only", move |strategy| async move {
        strategy.make_read_only(call.read_only).await
    })
    .await;
    Ok(answer)
}

async fn latest_txn(State(s): St) -> Result<Json<ReplicationPosition>, ApiError> {
    Ok(Json(s.strategy.get_latest_txn_id().await?))
}

/// The longest wait a caller may ask for.
const MAX_WAIT: Duration = Duration::from_secs(3600);

async fn wait_for_txn(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let call: api::WaitCall = parse(
        &body,
        Expecting {
            what: "a wait request",
            empty_is_default: false,
        },
    )?;
    let timeout = match call.timeout_secs {
        None => Duration::from_secs(30),
        // `try_`: a finite but huge value overflows a Duration (`from_secs_f64` would panic).
        Some(t) if t.is_finite() && t >= 0.0 => Duration::try_from_secs_f64(t)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT),
        Some(t) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                kinds::INVALID_DOCUMENT,
                format!("invalid wait request at timeout_secs: {t} is not a duration"),
            )
            .with_field("timeout_secs"));
        }
    };
    s.strategy.wait_for_txn(&call.txn, timeout).await?;
    Ok(Json(done()).into_response())
}

async fn operation(State(s): St) -> Response {
    Json(super::ops::view(&s.slot)).into_response()
}

async fn events(State(s): St) -> Response {
    let rx = s.events.subscribe();
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => {
                    let mut v = serde_json::to_vec(&line).expect("event lines serialize");
                    v.push(b'\n');
                    return Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(v)), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

async fn action(State(s): St, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    if id != s.options.instance_id {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            kinds::UNKNOWN_INSTANCE,
            format!(
                "unknown instance {id:?}: this agent serves instance {:?}",
                s.options.instance_id
            ),
        ));
    }
    let action: InstanceAction = parse(
        &body,
        Expecting {
            what: r#"an action document such as {"detach_replication": {}}"#,
            empty_is_default: false,
        },
    )?;
    match action {
        InstanceAction::DetachReplication(_) => Ok(run_detach(&s, DetachOptions::new()).await),
        other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kinds::UNKNOWN_ACTION,
            format!("unknown action: {other:?} is not served by the guest agent"),
        )),
    }
}
