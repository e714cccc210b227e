//! Extracting a snapshot, verified as it streams, into a directory: the extraction step the
//! core restore lifecycle runs for attach and staging alike.

use std::path::Path;

use tokio::io::AsyncRead;
use trove_guest_core::archive::{self, ArchiveFormat, Inspector, own_tree};
use trove_guest_core::progress::Progress;
use trove_guest_core::{Error, Result, ToolCommand};

use crate::strategy::PostgresStrategy;

impl PostgresStrategy {
    /// Fails with [`Error::InvalidInput`] unless `href` is in this strategy's store.
    pub(crate) fn check_owned(&self, href: &str) -> Result<()> {
        if self.store.owns(href) {
            Ok(())
        } else {
            Err(Error::invalid(
                "snapshot href",
                format!("{href:?} is not in this agent's snapshot store"),
            ))
        }
    }

    /// The one extraction loop: streams `reader` (the snapshot at `href`, `total` bytes when
    /// known) through the core member check into `tar -x` in `staging`, to the reader's end,
    /// with [`archive::pump`]. The snapshot is untrusted: a member that would land outside
    /// `staging` (absolute, `..`, through or as an escaping symbolic link), a device or FIFO is
    /// refused as [`Error::Integrity`] before `tar` sees a byte of it; `tar` runs as the
    /// server's account, and what it extracted is given to that account. The reader verifies
    /// what it streams and fails its last read on a mismatch: a read error kills `tar` and
    /// becomes [`Error::Integrity`] (or the store's error). `tar` stops at its end-of-archive
    /// marker, so when it stops reading early the rest is still read to the verified end: a
    /// damaged snapshot is then reported as such. Reports
    /// [`Phase::Restore`](trove_guest_core::Phase::Restore) byte progress.
    pub(crate) async fn extract_into(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        staging: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let tool = self
            .handle
            .tool(
                ToolCommand::new(&self.opts.tar_program)
                    .args(["-x", "-f", "-", "--no-same-owner", "-C"])
                    .arg(staging)
                    .current_dir(staging)
                    .run_as(self.tool_user())
                    .stdin_piped()
                    .timeout(self.opts.extract_timeout),
            )?
            .spawn()?;
        let mut inspector = Inspector::new(ArchiveFormat::Tar, href);
        let done = archive::pump(href, reader, total, tool, &mut inspector, progress).await?;
        if let Some(owner) = self.file_owner() {
            let tree = staging.to_path_buf();
            tokio::task::spawn_blocking(move || own_tree(&tree, owner))
                .await
                .map_err(|e| Error::io("give the restored tree to its owner", e.into()))??;
        }
        Ok(done)
    }
}
