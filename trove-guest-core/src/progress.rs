//! Progress events for long calls (snapshot, restore).
//!
//! A [`Progress`] is a cheap, cloneable sink handed to a call in its request struct; the call
//! reports [`ProgressEvent`]s to it. The default sink drops everything.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The phase a long call is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Making the server ready (binary logging, accounts, slots).
    Prepare,
    /// Streaming the backup into the snapshot store.
    Backup,
    /// Reading the snapshot from the store and extracting it.
    Restore,
    /// Applying the redo log / making the copy consistent.
    Apply,
    /// Starting the server and replication.
    Start,
    /// Waiting for the replica to reach the snapshot position.
    CatchUp,
    /// The call finished.
    Done,
}

/// One progress report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Current phase.
    pub phase: Phase,
    /// Bytes (or units) done in this phase.
    pub done: u64,
    /// Total expected in this phase, when known.
    pub total: Option<u64>,
    /// A short human-readable note.
    pub message: String,
}

impl ProgressEvent {
    /// An event for a phase with a message and no byte counts.
    pub fn phase(phase: Phase, message: impl Into<String>) -> Self {
        ProgressEvent {
            phase,
            done: 0,
            total: None,
            message: message.into(),
        }
    }
}

/// Where progress events go. Cloning shares the sink.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn Fn(ProgressEvent) + Send + Sync>>);

impl Progress {
    /// A sink that drops events.
    pub fn none() -> Self {
        Progress(None)
    }

    /// A sink that calls `f` for every event. `f` must be quick and must not block.
    pub fn new(f: impl Fn(ProgressEvent) + Send + Sync + 'static) -> Self {
        Progress(Some(Arc::new(f)))
    }

    /// A sink feeding an unbounded channel, and its receiver.
    pub fn channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<ProgressEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Progress::new(move |e| {
                let _ = tx.send(e);
            }),
            rx,
        )
    }

    /// Reports an event.
    pub fn report(&self, event: ProgressEvent) {
        if let Some(f) = &self.0 {
            f(event);
        }
    }

    /// Reports the start of a phase.
    pub fn phase(&self, phase: Phase, message: impl Into<String>) {
        self.report(ProgressEvent::phase(phase, message));
    }

    /// Reports bytes done in a phase.
    pub fn bytes(&self, phase: Phase, done: u64, total: Option<u64>) {
        self.report(ProgressEvent {
            phase,
            done,
            total,
            message: String::new(),
        });
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(sink)"
        } else {
            "Progress(none)"
        })
    }
}
