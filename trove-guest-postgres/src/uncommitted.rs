//! What a snapshot makes before its commit (the `trove_snap_*` slot, the login), removed again
//! when the snapshot never commits: on an error ([`UncommittedSnapshot::clean_up`]) and when the
//! call is cancelled ([`Drop`]). A slot left behind would pin WAL on the primary for good.

use std::time::Duration;

use trove_guest_core::lifecycle::OwnedChangeGuard;
use trove_guest_core::{DatastoreHandle, Result};

use crate::client::Db;
use crate::master::{drop_login, drop_slot};
use crate::names;
use crate::sql;
use crate::strategy::PostgresStrategy;

/// How long the cleanup after a cancelled snapshot may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The slot and login one snapshot call created, until the snapshot is committed.
///
/// Dropped while armed (the call's future was dropped before the commit), it spawns a bounded
/// best-effort cleanup on the current tokio runtime; that task holds the strategy's lock until
/// it is done, so the next call never sees (or loses) a half-removed slot.
pub(crate) struct UncommittedSnapshot {
    handle: DatastoreHandle,
    slot: Option<String>,
    role: Option<String>,
    lock: Option<OwnedChangeGuard>,
}

impl UncommittedSnapshot {
    /// Arms a guard for `slot` and `role` (each `None` when it existed before this call and
    /// is therefore not this call's to remove), holding the strategy's `lock`.
    pub(crate) fn new(
        handle: DatastoreHandle,
        slot: Option<String>,
        role: Option<String>,
        lock: OwnedChangeGuard,
    ) -> Self {
        UncommittedSnapshot {
            handle,
            slot,
            role,
            lock: Some(lock),
        }
    }

    /// The snapshot is committed: nothing is removed. Returns the strategy's lock.
    pub(crate) fn disarm(mut self) -> Option<OwnedChangeGuard> {
        self.slot = None;
        self.role = None;
        self.lock.take()
    }

    /// The snapshot failed: removes what this call created, now, on `db`.
    pub(crate) async fn clean_up(mut self, db: &Db) {
        let (slot, role) = (self.slot.take(), self.role.take());
        remove(db, slot.as_deref(), role.as_deref()).await;
    }
}

/// Removes `slot` and `role`, logging (never failing) what could not be removed.
async fn remove(db: &Db, slot: Option<&str>, role: Option<&str>) {
    if let Some(slot) = slot
        && let Err(e) = drop_slot(db, slot).await
    {
        tracing::warn!(error = %e, slot, "could not drop the slot of a failed snapshot");
    }
    if let Some(role) = role
        && let Err(e) = drop_login(db, role).await
    {
        tracing::warn!(error = %e, role, "could not drop the login of a failed snapshot");
    }
}

impl Drop for UncommittedSnapshot {
    fn drop(&mut self) {
        if self.slot.is_none() && self.role.is_none() {
            return;
        }
        let (slot, role, lock) = (self.slot.take(), self.role.take(), self.lock.take());
        let handle = self.handle.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                ?slot,
                ?role,
                "a cancelled snapshot's slot and login outlive it: no runtime to remove them"
            );
            return;
        };
        rt.spawn(async move {
            let _lock = lock;
            let work = async {
                let db = Db::connect(&handle).await?;
                remove(&db, slot.as_deref(), role.as_deref()).await;
                Ok::<_, trove_guest_core::Error>(())
            };
            match tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
                Ok(Ok(())) => tracing::info!(?slot, ?role, "removed a cancelled snapshot's slot"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, ?slot, "cancelled snapshot cleanup failed")
                }
                Err(_) => tracing::warn!(?slot, "cancelled snapshot cleanup timed out"),
            }
        });
    }
}

impl PostgresStrategy {
    /// Drops the snapshot slot `slot` (`trove_snap_<id>`) of a snapshot that was never
    /// committed (the agent stopped half way, say), if it still exists; returns whether it
    /// did. The slot's login is left alone: an earlier, committed snapshot for the same
    /// replica id may have handed it out. Takes the strategy's lock (code of this crate that
    /// already holds it calls `drop_uncommitted_snapshot_locked`).
    ///
    /// # Errors
    ///
    /// [`trove_guest_core::Error::InvalidInput`] when `slot` is not a snapshot slot name this
    /// crate makes; [`trove_guest_core::Error::Datastore`];
    /// [`trove_guest_core::Error::Timeout`] when the slot stays in use.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a slot is dropped whole or not at all; a repeated call finishes the work.
    pub async fn drop_uncommitted_snapshot(&self, slot: &str) -> Result<bool> {
        names::check_snapshot_slot(slot)?;
        let _g = self.change.begin("drop_uncommitted_snapshot")?;
        self.drop_uncommitted_snapshot_locked(slot).await
    }

    /// [`PostgresStrategy::drop_uncommitted_snapshot`] for a caller holding the lock.
    pub(crate) async fn drop_uncommitted_snapshot_locked(&self, slot: &str) -> Result<bool> {
        names::check_snapshot_slot(slot)?;
        let db = self.db().await?;
        let exists: bool = db
            .one("look up the replication slot", sql::SLOT_EXISTS, &[&slot])
            .await?
            .get(0);
        if exists {
            drop_slot(&db, slot).await?;
        }
        Ok(exists)
    }
}
