//! Recovery: what runs before a strategy serves, and before each change when an earlier one
//! left its journal behind.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::service::ServiceStatus;

use super::attach::finish;
use super::files;
use super::hooks::RestoreHooks;
use super::journal::{JournalEntry, Operation, Step};
use super::layout::WorkLayout;
use super::report::{RecoverOptions, RecoveryAction, RecoveryReport};

/// Recovers the server behind `hooks` as
/// [`ReplicationStrategy::recover`](crate::ReplicationStrategy::recover) describes.
///
/// 1. The journal, if any: an attach that reached [`Step::Replicating`] is completed (old data
///    removed); one that stopped the server is rolled back (old data and configuration put
///    back); an earlier attach or a stage only loses its staging directory (a staged copy
///    whose marker was written stays); a snapshot's slot and account are dropped through
///    [`RestoreHooks::abandon_snapshot`] and its partial upload removed; any other change gets
///    its server started again.
/// 2. Files valid only during a flow ([`RestoreHooks::transient_files`]) are removed.
/// 3. A data directory left aside without a journal (a swap of an earlier release cut short)
///    is put back.
/// 4. Lifecycle leftovers in the work directory older than [`RecoverOptions::grace`] are
///    removed, and the store's incomplete uploads
///    ([`SnapshotStore::sweep_incomplete`](crate::SnapshotStore::sweep_incomplete), with
///    [`RecoverOptions::store_grace`]).
/// 5. The server is started when it is not running ([`RecoverOptions::ensure_running`]).
/// 6. With the server running, [`RestoreHooks::reconcile`] makes the configuration agree with
///    what the server is (a promoted server loses leftover standby settings).
///
/// # Errors
///
/// [`Error::Io`], [`Error::Service`], the hooks' errors. The journal is kept until its change
/// is finished or undone, so a later call tries again.
///
/// # Cancel safety
///
/// Not cancel safe, but idempotent: calling it again completes the recovery.
pub async fn recover<H: RestoreHooks + ?Sized>(
    hooks: &H,
    opts: &RecoverOptions,
) -> Result<RecoveryReport> {
    let handle = hooks.handle();
    let layout = WorkLayout::new(&handle.work_dir);
    let mut report = RecoveryReport::new();
    recover_journal(hooks, &layout, &mut report).await?;
    for f in hooks.transient_files() {
        if files::remove_file_if_exists(&f)? {
            report.push(RecoveryAction::Removed {
                what: "stale override".into(),
                path: f.display().to_string(),
            });
        }
    }
    if !handle.data_dir.exists() && files::put_back(&layout, &handle.data_dir)? {
        report.push(RecoveryAction::RolledBack {
            operation: "data directory swap".into(),
            step: "unjournaled".into(),
        });
    }
    sweep(&layout, handle.data_dir.exists(), opts.grace, &mut report)?;
    for name in hooks.store().sweep_incomplete(opts.store_grace).await? {
        report.push(RecoveryAction::Removed {
            what: "incomplete upload".into(),
            path: name,
        });
    }
    if opts.ensure_running && handle.service.status().await? != ServiceStatus::Running {
        handle.service.start().await?;
        hooks.wait_serving().await?;
        report.push(RecoveryAction::Started);
    }
    if handle.service.status().await? == ServiceStatus::Running {
        // Running is not answering yet (a server doing its own crash recovery after a reboot).
        hooks.wait_serving().await?;
        for action in hooks.reconcile().await? {
            report.push(action);
        }
    }
    Ok(report)
}

/// Finishes or undoes the change the journal records (nothing without a journal).
pub(crate) async fn recover_journal<H: RestoreHooks + ?Sized>(
    hooks: &H,
    layout: &WorkLayout,
    report: &mut RecoveryReport,
) -> Result<()> {
    let journal = layout.journal();
    let Some(entry) = journal.read()? else {
        return Ok(());
    };
    tracing::warn!(operation = %entry.operation, step = %entry.step, pid = entry.pid, "an interrupted change is in the journal");
    let (operation, step) = (entry.operation.to_string(), entry.step.to_string());
    match entry.operation {
        Operation::Attach if entry.step >= Step::Replicating => {
            finish(layout).await?;
            let _ = files::discard_staging(layout);
            report.push(RecoveryAction::RolledForward { operation, step });
        }
        Operation::Attach if entry.step >= Step::Stopping => {
            roll_back(hooks, None, layout, &entry).await?;
            report.push(RecoveryAction::RolledBack { operation, step });
        }
        Operation::Attach | Operation::Stage => {
            // Nothing outside the work directory changed. A stage that wrote its marker had
            // finished: its copy stays.
            let complete = entry.operation == Operation::Stage
                && layout.marker().read().is_some()
                && layout.staging().is_dir();
            if !complete {
                files::discard_staging(layout)?;
            }
            files::remove_tree(layout.saved()).await?;
            journal.clear()?;
            report.push(RecoveryAction::RolledBack { operation, step });
        }
        Operation::Snapshot => {
            for action in hooks.abandon_snapshot(&entry.detail).await? {
                report.push(action);
            }
            journal.clear()?;
            report.push(RecoveryAction::RolledBack { operation, step });
        }
        Operation::Other => {
            if entry.server_stopped
                && hooks.handle().service.status().await? != ServiceStatus::Running
            {
                hooks.handle().service.start().await?;
                hooks.wait_serving().await?;
                report.push(RecoveryAction::Started);
            }
            journal.clear()?;
            report.push(RecoveryAction::RolledBack { operation, step });
        }
    }
    Ok(())
}

/// Puts the previous data directory and configuration back after an attach failed (or was
/// cut short) past the stop, starts the server and clears the journal. `plan` is there when the
/// attach that failed runs in this process (then its [`RestoreHooks::rolled_back`] runs too).
pub(crate) async fn roll_back<H: RestoreHooks + ?Sized>(
    hooks: &H,
    plan: Option<&H::Plan>,
    layout: &WorkLayout,
    entry: &JournalEntry,
) -> Result<()> {
    let handle = hooks.handle();
    // A server that exited during its start is not running: stop is then a no-op.
    handle
        .service
        .stop()
        .await
        .map_err(|e| e.with_note("stopping the restored server for the rollback"))?;
    for f in hooks.transient_files() {
        files::remove_file_if_exists(&f)?;
    }
    files::put_back(layout, &handle.data_dir)?;
    files::restore_files(layout, &entry.saved)?;
    if let Some(plan) = plan {
        hooks.rolled_back(plan).await;
    }
    handle.service.start().await?;
    hooks.wait_serving().await?;
    files::remove_tree(layout.failed()).await?;
    let _ = files::discard_staging(layout);
    files::remove_tree(layout.saved()).await?;
    layout.journal().clear()
}

/// Removes lifecycle leftovers older than `grace` from the work directory: everything the
/// layout names except a staged copy its marker names, and a marker without its directory.
/// Nothing is removed while the data directory is missing: an old copy may be all there is.
fn sweep(
    layout: &WorkLayout,
    data_dir_exists: bool,
    grace: Duration,
    report: &mut RecoveryReport,
) -> Result<()> {
    if !data_dir_exists {
        tracing::error!(
            "the data directory is missing and no previous copy is known; leaving the work directory as it is"
        );
        return Ok(());
    }
    let staged = layout.marker().read().is_some();
    let staging_dir = layout.staging();
    if staged && !staging_dir.is_dir() {
        layout.marker().remove()?;
        report.push(RecoveryAction::Removed {
            what: "staging marker without its directory".into(),
            path: layout.marker().path().display().to_string(),
        });
    }
    let entries = match std::fs::read_dir(layout.work_dir()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                format!("list {}", layout.work_dir().display()),
                e,
            ));
        }
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !WorkLayout::is_leftover(&name) || (staged && e.path() == staging_dir) {
            continue;
        }
        let old_enough = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_none_or(|age| age >= grace);
        if !old_enough {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            crate::staging::remove_dir_if_exists(&path)?;
        } else {
            files::remove_file_if_exists(&path)?;
        }
        report.push(RecoveryAction::Removed {
            what: describe(&name).into(),
            path: path.display().to_string(),
        });
    }
    Ok(())
}

fn describe(name: &str) -> &'static str {
    if name.starts_with(super::layout::SECRET_PREFIX) {
        "secret files"
    } else if name.starts_with(super::layout::BACKUP_SCRATCH_PREFIX) {
        "backup scratch directory"
    } else if name.contains("old-data") || name.contains("previous") {
        "old data directory"
    } else if name.contains("failed") {
        "rolled-back data directory"
    } else if name.contains("saved") {
        "saved configuration"
    } else {
        "staging directory"
    }
}
