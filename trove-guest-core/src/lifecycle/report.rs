//! What [`ReplicationStrategy::recover`](crate::ReplicationStrategy::recover) is asked and what
//! it reports.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Options for [`ReplicationStrategy::recover`](crate::ReplicationStrategy::recover).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecoverOptions {
    /// Leftovers (staging, old data, partial uploads) younger than this are left alone unless
    /// the journal names them: another process may still own them. Default 0: the agent calls
    /// recovery before it serves anything, so nothing of this agent's is in flight.
    pub grace: Duration,
    /// Start the server at the end when it is not running (default true): after a crash of
    /// the whole host the agent is what brings its server back.
    pub ensure_running: bool,
    /// Data in the snapshot store without a manifest is removed only when older than this
    /// (default 15 minutes), so that recovery never races another agent's commit in a shared
    /// store. Partial uploads whose uploader is gone are removed at any age where the store
    /// can tell (the local store: the uploader's lock is free).
    pub store_grace: Duration,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            grace: Duration::ZERO,
            ensure_running: true,
            store_grace: Duration::from_secs(15 * 60),
        }
    }
}

impl RecoverOptions {
    /// Defaults: no grace period, start the server.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`RecoverOptions::grace`].
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
    /// Sets [`RecoverOptions::store_grace`].
    pub fn with_store_grace(mut self, grace: Duration) -> Self {
        self.store_grace = grace;
        self
    }
    /// Sets [`RecoverOptions::ensure_running`].
    pub fn with_ensure_running(mut self, v: bool) -> Self {
        self.ensure_running = v;
        self
    }
}

/// One thing recovery did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryAction {
    /// An interrupted change was undone: the server serves its previous data.
    RolledBack {
        /// The interrupted operation.
        operation: String,
        /// The last step its journal recorded.
        step: String,
    },
    /// An interrupted change was completed: the server serves the new data.
    RolledForward {
        /// The interrupted operation.
        operation: String,
        /// The last step its journal recorded.
        step: String,
    },
    /// A leftover file or directory was removed.
    Removed {
        /// What it was (staging, old data, partial upload, secret, override...).
        what: String,
        /// Its path or name.
        path: String,
    },
    /// Something made on the master for a snapshot that never committed was dropped.
    Dropped {
        /// What it was (slot, account).
        what: String,
        /// Its name.
        name: String,
    },
    /// The server was started.
    Started,
}

impl std::fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryAction::RolledBack { operation, step } => {
                write!(f, "rolled back an interrupted {operation} (at step {step})")
            }
            RecoveryAction::RolledForward { operation, step } => {
                write!(f, "completed an interrupted {operation} (at step {step})")
            }
            RecoveryAction::Removed { what, path } => write!(f, "removed {what} {path}"),
            RecoveryAction::Dropped { what, name } => write!(f, "dropped {what} {name}"),
            RecoveryAction::Started => f.write_str("started the server"),
        }
    }
}

/// What [`ReplicationStrategy::recover`](crate::ReplicationStrategy::recover) did, in order.
/// Empty when there was nothing to recover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The actions taken.
    pub actions: Vec<RecoveryAction>,
}

impl RecoveryReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records `action` and logs it.
    pub fn push(&mut self, action: RecoveryAction) {
        tracing::info!(action = %action, "recovery");
        self.actions.push(action);
    }
    /// Whether recovery did nothing.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}
