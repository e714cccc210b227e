//! The request-body parser for the fuzzing harness (feature `fuzzing`).

use trove_guest_core::wire::InstanceAction;
use trove_guest_core::{DetachedReplica, SnapshotDocument};

use super::body::{Expecting, parse};
use crate::api;

/// A request body the HTTP agent parses, by endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// `POST /v1/snapshot`.
    Snapshot,
    /// `POST /v1/attach`: a snapshot document (then validated).
    Attach,
    /// `POST /v1/stage`.
    Stage,
    /// `POST /v1/detach`.
    Detach,
    /// `POST /v1/cleanup`: a detached replica document.
    Cleanup,
    /// `POST /v1/demote`.
    Demote,
    /// `POST /v1/read_only`.
    ReadOnly,
    /// `POST /v1/wait_for_txn`.
    Wait,
    /// The instance action document.
    Action,
    /// Failover: replica context.
    Context,
    /// Failover: re-point.
    Repoint,
    /// Failover: fence.
    Fence,
}

impl Body {
    /// Every body.
    pub const ALL: [Body; 12] = [
        Body::Snapshot,
        Body::Attach,
        Body::Stage,
        Body::Detach,
        Body::Cleanup,
        Body::Demote,
        Body::ReadOnly,
        Body::Wait,
        Body::Action,
        Body::Context,
        Body::Repoint,
        Body::Fence,
    ];
}

fn run<T: serde::de::DeserializeOwned>(bytes: &[u8], empty_is_default: bool) -> Result<T, u16> {
    parse::<T>(
        bytes,
        Expecting {
            what: "a fuzzed body",
            empty_is_default,
        },
    )
    .map_err(|e| e.status.as_u16())
}

/// Parses `bytes` as the body of `body`'s endpoint, as the agent does before acting on it; the
/// error is the HTTP status of the answer (400 or 422).
///
/// # Errors
///
/// The status of the error answer.
pub fn request_body(body: Body, bytes: &[u8]) -> Result<(), u16> {
    match body {
        Body::Snapshot => run::<api::SnapshotCall>(bytes, true).map(drop),
        Body::Attach => {
            let doc = run::<SnapshotDocument>(bytes, false)?;
            doc.validate().map_err(|_| 422)
        }
        Body::Stage => run::<api::StageCall>(bytes, false).map(drop),
        Body::Detach => run::<api::DetachCall>(bytes, true).map(drop),
        Body::Cleanup => run::<DetachedReplica>(bytes, false).map(drop),
        Body::Demote => run::<api::DemoteCall>(bytes, true).map(drop),
        Body::ReadOnly => run::<api::ReadOnlyCall>(bytes, false).map(drop),
        Body::Wait => run::<api::WaitCall>(bytes, false).map(drop),
        Body::Action => run::<InstanceAction>(bytes, false).map(drop),
        Body::Context => run::<api::ContextCall>(bytes, false).map(drop),
        Body::Repoint => run::<api::RepointCall>(bytes, false).map(drop),
        Body::Fence => run::<api::FenceCall>(bytes, true).map(drop),
    }
}
