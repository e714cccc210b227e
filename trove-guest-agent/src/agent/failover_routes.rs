//! Routes of the switchover and failover calls: replica context, re-point, last transaction,
//! fencing and stopping the receiver. Changes run under the agent's single slot like every
//! other change; the last transaction is a read.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use trove_guest_core::failover::{FenceOptions, LastTxn, ReplicaContextOptions, RepointOptions};

use super::body::{Expecting, parse};
use super::error::ApiError;
use super::routes::{St, change, change_answering_done};
use crate::api;

/// Bounds a caller may ask for.
const MAX_SECS: u64 = 3600;

fn secs(t: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(t.unwrap_or(default).min(MAX_SECS))
}

pub(super) async fn replica_context(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let call: api::ContextCall = parse(
        &body,
        Expecting {
            what: r#"{"replica_id": "..."}"#,
            empty_is_default: false,
        },
    )?;
    let mut opts = ReplicaContextOptions::new(call.replica_id);
    if let Some(host) = call.replica_host {
        opts = opts.with_replica_host(host);
    }
    Ok(change(
        &s,
        "get_replica_context",
        false,
        move |strategy, _| async move { strategy.get_replica_context(&opts).await },
    )
    .await)
}

pub(super) async fn attach_replica(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let call: api::RepointCall = parse(
        &body,
        Expecting {
            what: "a re-point request (context, timeout_secs)",
            empty_is_default: false,
        },
    )?;
    let opts = RepointOptions::new().with_timeout(secs(call.timeout_secs, 60));
    let context = call.context;
    Ok(
        change(&s, "attach_replica", false, move |strategy, _| async move {
            strategy.attach_replica(&context, &opts).await
        })
        .await,
    )
}

pub(super) async fn last_txn(State(s): St) -> Result<Json<LastTxn>, ApiError> {
    Ok(Json(s.strategy.get_last_txn().await?))
}

fn fence_options(body: &Bytes) -> Result<FenceOptions, ApiError> {
    let call: api::FenceCall = parse(
        body,
        Expecting {
            what: "fence options",
            empty_is_default: true,
        },
    )?;
    Ok(FenceOptions::new().with_timeout(secs(call.timeout_secs, 30)))
}

pub(super) async fn fence(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let opts = fence_options(&body)?;
    Ok(
        change(&s, "fence_writes", false, move |strategy, _| async move {
            strategy.fence_writes(&opts).await
        })
        .await,
    )
}

pub(super) async fn unfence(State(s): St) -> Response {
    change_answering_done(&s, "unfence_writes", |strategy| async move {
        strategy.unfence_writes().await
    })
    .await
}

pub(super) async fn stop_receiver(State(s): St, body: Bytes) -> Result<Response, ApiError> {
    let opts = fence_options(&body)?;
    Ok(
        change(&s, "stop_receiver", false, move |strategy, _| async move {
            strategy.stop_receiver(&opts).await
        })
        .await,
    )
}
