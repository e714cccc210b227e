//! What a snapshot makes from its commit until its document is returned (the committed
//! snapshot, the replica's account), removed again when the document never reaches the
//! caller: on an error ([`UnreturnedSnapshot::clean_up`]) and when the call is cancelled
//! ([`Drop`]). Nobody could use them: the account's password exists only in that document.
//!
//! Before the commit a snapshot leaves nothing behind on its own: the backup tool is killed,
//! the scratch directory, option file and pending upload are removed when dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use trove_guest_core::{AdminConnection, Result, SnapshotStore};

use crate::client::Session;
use crate::sql::{Account, Sql};

/// How long the cleanup after a cancelled snapshot may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The snapshot and account of one snapshot call, until its document is returned.
///
/// Dropped while armed, it spawns a bounded best-effort cleanup on the current tokio runtime;
/// that task holds the strategy's lock until it is done, so the next call never races it.
pub(crate) struct UnreturnedSnapshot {
    store: Arc<dyn SnapshotStore>,
    href: Option<String>,
    admin: AdminConnection,
    sql: Sql,
    account: Option<Account>,
    lock: Option<OwnedMutexGuard<()>>,
}

impl UnreturnedSnapshot {
    /// Arms a guard for the snapshot at `href` (committed or being committed), holding the
    /// strategy's `lock`.
    pub(crate) fn new(
        store: Arc<dyn SnapshotStore>,
        href: String,
        admin: AdminConnection,
        sql: Sql,
        lock: OwnedMutexGuard<()>,
    ) -> Self {
        UnreturnedSnapshot {
            store,
            href: Some(href),
            admin,
            sql,
            account: None,
            lock: Some(lock),
        }
    }

    /// This call is about to create `account` (it did not exist): remove it too.
    pub(crate) fn creates_account(&mut self, account: Account) {
        self.account = Some(account);
    }

    /// The document is on its way: nothing is removed. Returns the strategy's lock.
    pub(crate) fn disarm(mut self) -> Option<OwnedMutexGuard<()>> {
        self.href = None;
        self.account = None;
        self.lock.take()
    }

    /// The snapshot failed: removes the snapshot and the account this call created, now.
    pub(crate) async fn clean_up(mut self) {
        let work = Work {
            store: self.store.clone(),
            href: self.href.take(),
            admin: self.admin.clone(),
            sql: self.sql,
            account: self.account.take(),
        };
        work.run().await;
    }
}

/// The removal itself, movable into a task.
struct Work {
    store: Arc<dyn SnapshotStore>,
    href: Option<String>,
    admin: AdminConnection,
    sql: Sql,
    account: Option<Account>,
}

impl Work {
    async fn run(self) {
        if let Some(href) = &self.href
            && let Err(e) = self.store.delete(href).await
        {
            tracing::warn!(error = %e, href, "could not remove the snapshot of a failed call");
        }
        if let Some(account) = &self.account
            && let Err(e) = drop_account(&self.admin, &self.sql, account).await
        {
            tracing::warn!(error = %e, %account, "could not drop the account of a failed snapshot");
        }
    }
}

/// Drops `account` without writing it to the binary log (it never was).
async fn drop_account(admin: &AdminConnection, sql: &Sql, account: &Account) -> Result<()> {
    let mut s = Session::open(admin).await?;
    s.exec(&sql.set_session_log_bin(false)).await?;
    s.exec(&sql.drop_user(account)).await?;
    s.close().await;
    Ok(())
}

impl Drop for UnreturnedSnapshot {
    fn drop(&mut self) {
        if self.href.is_none() && self.account.is_none() {
            return;
        }
        let lock = self.lock.take();
        let work = Work {
            store: self.store.clone(),
            href: self.href.take(),
            admin: self.admin.clone(),
            sql: self.sql,
            account: self.account.take(),
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                href = ?work.href,
                "a cancelled snapshot outlives its call: no runtime to remove it"
            );
            return;
        };
        rt.spawn(async move {
            let _lock = lock;
            let href = work.href.clone();
            match tokio::time::timeout(CLEANUP_TIMEOUT, work.run()).await {
                Ok(()) => tracing::info!(?href, "removed a cancelled snapshot"),
                Err(_) => tracing::warn!(?href, "cancelled snapshot cleanup timed out"),
            }
        });
    }
}
