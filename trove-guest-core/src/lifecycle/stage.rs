//! The stage flow: follow, verify, extract and prepare a snapshot into the staging directory
//! without touching the server, then name it with the marker.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, IoResultExt, Result};
use crate::progress::Phase;
use crate::strategy::{StageRequest, StagedSnapshot};

use super::failpoint::{failpoint, failpoint_armed};
use super::files;
use super::hooks::RestoreHooks;
use super::journal::{JournalEntry, Operation};
use super::layout::WorkLayout;
use super::recover::recover_journal;
use super::report::RecoveryReport;
use super::sync::{BackgroundSync, sync_tree};

/// Stages a snapshot as
/// [`ReplicationStrategy::stage_snapshot`](crate::ReplicationStrategy::stage_snapshot)
/// describes: the staged copy is reused when the marker already names `req.href` and agrees
/// with what is expected; otherwise the snapshot is followed in the store (while it may still
/// be uploading), extracted and prepared into the staging directory, written back to disk when
/// the hooks ask for it, and only then named by the marker (written durably, last).
///
/// # Errors
///
/// [`Error::InvalidInput`] for an href outside the store; the store's and the hooks' errors;
/// [`Error::Integrity`] when what was read is not what the store's manifest says. Nothing stays
/// staged after an error.
///
/// # Cancel safety
///
/// Cancel safe in effect: a cancel kills the extraction and leaves a staging directory without
/// a marker, which is never used and which the next change or recovery removes.
pub async fn stage<H: RestoreHooks + ?Sized>(
    hooks: &H,
    req: &StageRequest,
) -> Result<StagedSnapshot> {
    let href = req.href.as_str();
    if !hooks.store().owns(href) {
        return Err(Error::invalid(
            "snapshot href",
            format!("{href:?} is not in this agent's snapshot store"),
        ));
    }
    let layout = WorkLayout::new(&hooks.handle().work_dir);
    let journal = layout.journal();
    if journal.read()?.is_some() {
        recover_journal(hooks, &layout, &mut RecoveryReport::new()).await?;
    }
    if let Some(staged) = layout
        .marker()
        .usable(&layout.staging(), hooks.store())
        .await
        && staged.href == href
        && staged.agrees(&req.expected)
    {
        tracing::info!(%href, "snapshot already staged");
        req.progress
            .phase(Phase::Done, format!("{href} is already staged"));
        return Ok(StagedSnapshot::new(
            staged.href,
            staged.size,
            staged.sha256,
            true,
        ));
    }
    journal.write(&JournalEntry::new(Operation::Stage).with_href(href))?;
    let staged = stage_into(hooks, req, &layout).await;
    if staged.is_err() {
        let _ = files::discard_staging(&layout);
    }
    journal.clear()?;
    let staged = staged?;
    tracing::info!(%href, bytes = staged.size, "snapshot staged");
    req.progress.phase(Phase::Done, format!("{href} staged"));
    Ok(staged)
}

async fn stage_into<H: RestoreHooks + ?Sized>(
    hooks: &H,
    req: &StageRequest,
    layout: &WorkLayout,
) -> Result<StagedSnapshot> {
    let href = req.href.as_str();
    let progress = &req.progress;
    files::discard_staging(layout)?;
    files::create_staging(layout, hooks.handle())?;
    let staging = layout.staging();
    progress.phase(
        Phase::Restore,
        format!("following, verifying and extracting {href}"),
    );
    let reader = hooks
        .store()
        .follow(href, &req.expected, &req.follow)
        .await?;
    let mut reader = ParkAfterFirstRead {
        inner: reader,
        reads: 0,
    };
    let background = hooks.sync_staged().then(|| BackgroundSync::start(&staging));
    let bytes = hooks
        .extract(href, &mut reader, None, &staging, progress)
        .await?;
    drop(background);
    drop(reader);
    hooks.prepare(href, &staging, progress).await?;
    // The follower matched the bytes against the manifest the commit published.
    let stored = hooks.store().stat(href).await?;
    let staged = StagedSnapshot::new(href, stored.size, stored.sha256, false);
    if bytes != staged.size || !staged.agrees(&req.expected) {
        return Err(Error::integrity(
            href,
            format!(
                "read {bytes} bytes, the store's manifest says {}",
                staged.size
            ),
        ));
    }
    if hooks.sync_staged() {
        progress.phase(Phase::Restore, "syncing the staged snapshot to disk");
        let dir = staging.clone();
        tokio::task::spawn_blocking(move || sync_tree(&dir))
            .await
            .map_err(|e| Error::io("sync the staged snapshot", std::io::Error::other(e)))?
            .context(|| format!("sync {}", staging.display()))?;
    }
    failpoint("stage.prepared").await;
    layout.marker().write(&staged)?;
    Ok(staged)
}

/// The followed stream, parked for good on its second read when the test-only failpoint
/// `stage.extracting` is armed (the first bytes have reached the extractor by then).
struct ParkAfterFirstRead<R> {
    inner: R,
    reads: u32,
}

impl<R: AsyncRead + Unpin> AsyncRead for ParkAfterFirstRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.reads == 1 && failpoint_armed("stage.extracting") {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.reads = self.reads.saturating_add(1);
        }
        r
    }
}
