//! What a snapshot makes from its commit until its document is returned (the committed
//! snapshot, the replica's account), removed again when the document never reaches the
//! caller: on an error ([`UnreturnedSnapshot::clean_up`]) and when the call is cancelled
//! ([`Drop`]). Nobody could use them: the account's password exists only in that document.
//!
//! Before the commit a snapshot leaves nothing behind on its own: the backup tool is killed,
//! the scratch directory, option file and pending upload are removed when dropped.
//!
//! A killed process runs no drop: so the same facts (the snapshot's href, the account it
//! created) are in the lifecycle journal while the guard is armed, and recovery removes them
//! ([`abandon`]).

use std::sync::Arc;
use std::time::Duration;

use trove_guest_core::lifecycle::OwnedChangeGuard;
use trove_guest_core::lifecycle::{Journal, JournalEntry, Operation};
use trove_guest_core::{AdminConnection, RecoveryAction, Result, SnapshotStore};

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
    lock: Option<OwnedChangeGuard>,
    journal: Journal,
}

/// The journal entry naming what is to be removed.
fn entry(href: &str, account: Option<&Account>) -> JournalEntry {
    JournalEntry::new(Operation::Snapshot).with_detail(serde_json::json!({
        "href": href,
        "account": account.map(|a| serde_json::json!({"user": a.user(), "host": a.host()})),
    }))
}

impl UnreturnedSnapshot {
    /// Arms a guard for the snapshot at `href` (committed or being committed), holding the
    /// strategy's `lock`.
    pub(crate) fn new(
        store: Arc<dyn SnapshotStore>,
        href: String,
        admin: AdminConnection,
        sql: Sql,
        lock: OwnedChangeGuard,
        journal: Journal,
    ) -> Result<Self> {
        journal.write(&entry(&href, None))?;
        Ok(UnreturnedSnapshot {
            store,
            href: Some(href),
            admin,
            sql,
            account: None,
            lock: Some(lock),
            journal,
        })
    }

    /// This call is about to create `account` (it did not exist): remove it too.
    pub(crate) fn creates_account(&mut self, account: Account) -> Result<()> {
        if let Some(href) = &self.href {
            self.journal.write(&entry(href, Some(&account)))?;
        }
        self.account = Some(account);
        Ok(())
    }

    /// The document is on its way: nothing is removed. Returns the strategy's lock.
    pub(crate) fn disarm(mut self) -> Option<OwnedChangeGuard> {
        self.href = None;
        self.account = None;
        if let Err(e) = self.journal.clear() {
            tracing::warn!(error = %e, "could not clear the snapshot's journal entry");
        }
        self.lock.take()
    }

    /// What is left to remove, taken out of the guard (which then removes nothing).
    fn take_work(&mut self) -> Work {
        Work {
            store: self.store.clone(),
            href: self.href.take(),
            admin: self.admin.clone(),
            sql: self.sql,
            account: self.account.take(),
            journal: Some(self.journal.clone()),
        }
    }

    /// The snapshot failed: removes the snapshot and the account this call created, now.
    pub(crate) async fn clean_up(mut self) {
        self.take_work().run().await;
    }
}

/// Recovery's half: removes the committed snapshot and the account the journal `detail`
/// names (see [`UnreturnedSnapshot`]). Idempotent.
pub(crate) async fn abandon(
    store: Arc<dyn SnapshotStore>,
    admin: &AdminConnection,
    sql: Sql,
    detail: &serde_json::Value,
) -> Result<Vec<RecoveryAction>> {
    let mut done = Vec::new();
    if let Some(href) = detail.get("href").and_then(|v| v.as_str())
        && store.stat(href).await.is_ok()
    {
        store.delete(href).await?;
        done.push(RecoveryAction::Removed {
            what: "snapshot whose document was never returned".into(),
            path: href.to_owned(),
        });
    }
    if let Some(a) = detail.get("account").filter(|a| !a.is_null()) {
        let user = a.get("user").and_then(|v| v.as_str()).unwrap_or_default();
        let host = a.get("host").and_then(|v| v.as_str()).unwrap_or_default();
        let account = Account::new(user, host)?;
        drop_account(admin, &sql, &account).await?;
        done.push(RecoveryAction::Dropped {
            what: "replication account of a snapshot never returned".into(),
            name: account.to_string(),
        });
    }
    Ok(done)
}

/// The removal itself, movable into a task.
struct Work {
    store: Arc<dyn SnapshotStore>,
    href: Option<String>,
    admin: AdminConnection,
    sql: Sql,
    account: Option<Account>,
    /// Cleared once everything is removed; kept (for recovery) otherwise.
    journal: Option<Journal>,
}

impl Work {
    async fn run(self) {
        let mut done = true;
        if let Some(href) = &self.href
            && let Err(e) = self.store.delete(href).await
        {
            tracing::warn!(error = %e, href, "could not remove the snapshot of a failed call");
            done = false;
        }
        if let Some(account) = &self.account
            && let Err(e) = drop_account(&self.admin, &self.sql, account).await
        {
            tracing::warn!(error = %e, %account, "could not drop the account of a failed snapshot");
            done = false;
        }
        if done
            && let Some(j) = &self.journal
            && let Err(e) = j.clear()
        {
            tracing::warn!(error = %e, "could not clear the snapshot's journal entry");
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
        let work = self.take_work();
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
