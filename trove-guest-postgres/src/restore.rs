//! Extracting a snapshot, verified as it streams, into a directory: the extraction step the
//! core restore lifecycle runs for attach and staging alike.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use trove_guest_core::progress::{Phase, Progress};
use trove_guest_core::store::CHUNK_SIZE;
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
    /// known) into `tar -x` in `staging`, to the reader's end. The reader verifies what it
    /// streams and fails its last read on a mismatch: a read error kills `tar` and becomes
    /// [`Error::Integrity`] (or the store's error). `tar` stops at its end-of-archive marker,
    /// so when it stops reading early the rest is still read to the verified end: a damaged
    /// snapshot is then reported as such. Reports [`Phase::Restore`] byte progress.
    pub(crate) async fn extract_into(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        staging: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let mut tool = ToolCommand::new(&self.opts.tar_program)
            .args(["-x", "-f", "-", "--no-same-owner", "-C"])
            .arg(staging)
            .current_dir(staging)
            .run_as(self.tool_user())
            .stdin_piped()
            .spawn()?;
        let mut stdin = tool.take_stdin().expect("stdin is piped");
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut done = 0u64;
        loop {
            // A read error is a damaged snapshot (or a store failure): abort, never swap.
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    drop(stdin);
                    drop(tool);
                    return Err(Error::from_read(format!("read snapshot {href}"), e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(write_err) = stdin.write_all(&buf[..n]).await {
                // tar stopped reading. Finish verifying: a damaged snapshot is the real cause
                // when the data does not match.
                drop(stdin);
                if let Err(e) = tokio::io::copy(reader, &mut tokio::io::sink()).await {
                    drop(tool);
                    return Err(Error::from_read(format!("read snapshot {href}"), e));
                }
                tool.wait().await?;
                return Err(Error::io("write to tar", write_err));
            }
            done += n as u64;
            progress.bytes(Phase::Restore, done, total);
        }
        drop(stdin);
        tool.wait().await?;
        Ok(done)
    }
}
