//! The attach flow: restore (or take the staged copy), check, save configuration, stop, swap,
//! configure, start, replicate, commit; journaled before each irreversible step, rolled back on
//! any failure after the swap.

use crate::error::{Error, Result};
use crate::progress::Phase;
use crate::store::Expected;
use crate::strategy::{AttachOutcome, AttachRequest};
use crate::wire::SnapshotDocument;

use super::failpoint::failpoint;
use super::files;
use super::hooks::RestoreHooks;
use super::journal::{JournalEntry, Operation, Step};
use super::layout::WorkLayout;
use super::recover::{recover_journal, roll_back};
use super::report::RecoveryReport;

/// Restores `doc`'s snapshot on the server behind `hooks` and makes it a replica, as
/// [`ReplicationStrategy::attach_replication_slave`](crate::ReplicationStrategy::attach_replication_slave)
/// describes. `plan` is what the backend checked and prepared for this document.
///
/// Steps, each recorded in the journal before it is taken: the snapshot is restored into the
/// staging directory (or the staged copy the marker names is taken), prepared and checked; the
/// configuration files the hooks name are saved; the server is stopped; the data directory goes
/// aside and the staging directory takes its place; the hooks configure and start the server and
/// start replication; once it replicates, the old data and the saved files are removed. Any
/// failure before the swap leaves the server as it was; any failure after it puts the old data
/// and configuration back and starts the server again. A crash anywhere leaves a journal that
/// [`recover`](super::recover) finishes.
///
/// # Errors
///
/// The hooks' errors; [`Error::Integrity`] for a snapshot that fails verification;
/// [`Error::Service`] when the rollback itself fails (the journal is kept for recovery).
///
/// # Cancel safety
///
/// Not cancel safe: a cancel after the server was stopped leaves the journal, and the next
/// change or [`recover`](super::recover) rolls back.
pub async fn attach<H: RestoreHooks + ?Sized>(
    hooks: &H,
    plan: &H::Plan,
    doc: &SnapshotDocument,
    req: &AttachRequest,
) -> Result<AttachOutcome> {
    let handle = hooks.handle();
    let layout = WorkLayout::new(&handle.work_dir);
    let journal = layout.journal();
    let href = doc.dataset.snapshot_href.as_str();
    if !hooks.store().owns(href) {
        return Err(Error::invalid(
            "snapshot href",
            format!("{href:?} is not in this agent's snapshot store"),
        ));
    }
    // A change an earlier process left half done is finished before this one starts.
    if journal.read()?.is_some() {
        recover_journal(hooks, &layout, &mut RecoveryReport::new()).await?;
    }
    let mut entry = JournalEntry::new(Operation::Attach).with_href(href);
    journal.write(&entry)?;

    // 1. The snapshot in staging, checked. Nothing outside the work directory changes.
    let restored = match restore(hooks, plan, doc, req, &layout).await {
        Ok(r) => r,
        Err(e) => {
            let _ = files::discard_staging(&layout);
            journal.clear()?;
            return Err(e);
        }
    };
    failpoint("attach.staged").await;

    // 2. Save what the hooks will rewrite, then stop the server.
    let saved = match files::save_files(&layout, &hooks.config_files()) {
        Ok(s) => s,
        Err(e) => {
            let _ = files::discard_staging(&layout);
            let _ = files::remove_tree(layout.saved()).await;
            journal.clear()?;
            return Err(e);
        }
    };
    entry.saved = saved;
    entry.server_stopped = true;
    journal.step(&mut entry, Step::Stopping)?;
    req.progress.phase(
        Phase::Start,
        "stopping the server and swapping the data directory",
    );
    if let Err(e) = handle.service.stop().await {
        // Stopping failed: the data directory is untouched; bring the server back.
        let _ = handle.service.start().await;
        let _ = files::discard_staging(&layout);
        let _ = files::remove_tree(layout.saved()).await;
        journal.clear()?;
        return Err(e);
    }
    failpoint("attach.stopped").await;

    // 3. Swap by rename.
    journal.step(&mut entry, Step::Swapping)?;
    if let Err(e) = files::swap_in(&layout, &handle.data_dir) {
        let back = roll_back(hooks, Some(plan), &layout, &entry).await;
        return Err(rolled_back_or_not(e, back));
    }
    failpoint("attach.swapped").await;

    // 4. Configure, start, replicate. Any failure puts the old data back.
    let after_swap = async {
        hooks
            .configure(plan, &layout.old_data(), restored.staged)
            .await?;
        failpoint("attach.configured").await;
        journal.step(&mut entry, Step::Starting)?;
        hooks.start(plan).await?;
        failpoint("attach.started").await;
        req.progress
            .phase(Phase::CatchUp, "starting replication and catching up");
        hooks.replicate(plan, req.timeout, &req.progress).await
    }
    .await;
    let applied = match after_swap {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "the restored server does not replicate; putting the previous data directory back");
            let back = roll_back(hooks, Some(plan), &layout, &entry).await;
            return Err(rolled_back_or_not(e, back));
        }
    };

    // 5. Commit: the restored data is the server's for good.
    entry.server_stopped = false;
    journal.step(&mut entry, Step::Replicating)?;
    failpoint("attach.replicating").await;
    finish(&layout).await?;
    hooks.committed(plan).await;
    req.progress.phase(Phase::Done, "replicating");
    Ok(AttachOutcome::new(restored.bytes, applied))
}

/// Removes the old data and the saved files, then the journal.
pub(crate) async fn finish(layout: &WorkLayout) -> Result<()> {
    files::remove_tree(layout.old_data()).await?;
    files::remove_tree(layout.saved()).await?;
    layout.journal().clear()
}

/// `e` when the rollback worked (with a note), else an error saying both.
fn rolled_back_or_not(e: Error, back: Result<()>) -> Error {
    match back {
        Ok(()) => {
            e.with_note("the previous data directory was put back and the server started again")
        }
        Err(rb) => Error::Service {
            message: format!(
                "the restored data directory did not become a replica ({e}), and putting the \
                 previous one back failed: {rb}; the journal is kept and recovery tries again"
            ),
        },
    }
}

/// What step 1 produced.
struct Restored {
    bytes: u64,
    staged: bool,
}

/// Step 1: the staged copy when the marker names `doc`'s snapshot and the store still holds
/// exactly it; otherwise a fresh restore, verified as it is read, and prepared. Then the
/// document check, and the marker goes: the staging directory belongs to this attach now.
async fn restore<H: RestoreHooks + ?Sized>(
    hooks: &H,
    plan: &H::Plan,
    doc: &SnapshotDocument,
    req: &AttachRequest,
    layout: &WorkLayout,
) -> Result<Restored> {
    let href = doc.dataset.snapshot_href.as_str();
    let progress = &req.progress;
    let staged = layout
        .marker()
        .usable(&layout.staging(), hooks.store())
        .await
        .filter(|s| {
            let ok = s.matches(doc);
            if !ok {
                tracing::info!(staged = %s.href, wanted = %href, "the staged snapshot is not the document's; discarding it");
            }
            ok
        });
    let restored = match staged {
        Some(s) => {
            tracing::info!(%href, bytes = s.size, "using the staged copy of the snapshot");
            progress.phase(Phase::Restore, format!("using the staged copy of {href}"));
            Restored {
                bytes: s.size,
                staged: true,
            }
        }
        None => {
            files::discard_staging(layout)?;
            files::create_staging(layout, hooks.handle())?;
            let expected = Expected {
                size: doc.dataset.size_bytes,
                sha256: doc.dataset.sha256.clone(),
            };
            progress.phase(Phase::Restore, format!("verifying and extracting {href}"));
            let mut reader = hooks.store().get(href, &expected).await?;
            let total = reader.expected_size();
            let bytes = hooks
                .extract(href, &mut reader, Some(total), &layout.staging(), progress)
                .await?;
            if !reader.verified() {
                return Err(Error::integrity(href, "snapshot stream ended unverified"));
            }
            drop(reader);
            hooks.prepare(href, &layout.staging(), progress).await?;
            Restored {
                bytes,
                staged: false,
            }
        }
    };
    hooks.check_restored(plan, &layout.staging())?;
    layout.marker().remove()?;
    Ok(restored)
}
