//! The one concurrency policy of every strategy: one change at a time, refused (never queued)
//! while another runs.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard, OwnedMutexGuard};

use crate::error::{Error, Result};

/// Serializes the changes of one strategy: [`ChangeLock::begin`] fails at once with
/// [`Error::Busy`] while another change holds it. Read-only calls do not take it.
#[derive(Debug, Default)]
pub struct ChangeLock {
    lock: Arc<Mutex<()>>,
}

/// Held while a change runs; dropping it ends the change.
#[derive(Debug)]
pub struct ChangeGuard<'a> {
    _guard: MutexGuard<'a, ()>,
}

/// A [`ChangeGuard`] that is not tied to the strategy's lifetime: a cleanup task spawned when a
/// change is cancelled takes it over, so the next change cannot race the cleanup.
#[derive(Debug)]
pub struct OwnedChangeGuard {
    _guard: OwnedMutexGuard<()>,
}

impl ChangeLock {
    /// A free lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins the change `what` (the call's name, for the error).
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another change runs.
    pub fn begin(&self, what: &str) -> Result<ChangeGuard<'_>> {
        self.lock
            .try_lock()
            .map(|g| ChangeGuard { _guard: g })
            .map_err(|_| busy(what))
    }

    /// Like [`ChangeLock::begin`], as an [`OwnedChangeGuard`].
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another change runs.
    pub fn begin_owned(&self, what: &str) -> Result<OwnedChangeGuard> {
        self.lock
            .clone()
            .try_lock_owned()
            .map(|g| OwnedChangeGuard { _guard: g })
            .map_err(|_| busy(what))
    }
}

fn busy(what: &str) -> Error {
    Error::Busy {
        what: format!("a replication change ({what} requested)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_change_is_refused_until_the_first_ends() {
        let lock = ChangeLock::new();
        let first = lock.begin("attach").unwrap();
        let err = lock.begin("demote").unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        assert!(err.to_string().contains("demote"), "{err}");
        drop(first);
        let owned = lock.begin_owned("snapshot").unwrap();
        assert!(
            lock.begin("demote").is_err(),
            "an owned guard holds the lock too"
        );
        drop(owned);
        lock.begin("demote").unwrap();
    }
}
