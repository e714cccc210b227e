//! The one extraction loop: snapshot reader → member check → extractor's stdin.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Inspector;
use crate::error::{Error, Result};
use crate::progress::{Phase, Progress};
use crate::runner::RunningTool;
use crate::store::CHUNK_SIZE;

/// Streams `reader` (the snapshot at `href`, `total` bytes when known) through `inspector` into
/// the stdin of `tool` (an extractor spawned with piped stdin), to the reader's end, then
/// waits for the tool. Returns the number of bytes read. Reports [`Phase::Restore`] byte
/// progress.
///
/// Each chunk is checked before any of it is written, so nothing of a refused member reaches
/// the extractor. The reader is expected to verify what it streams (a
/// [`VerifyingReader`](crate::store::VerifyingReader) or a follower) and to fail a read on a
/// mismatch. When the extractor stops reading early, the rest is still read to the reader's
/// end, so a damaged snapshot is reported as such rather than as the extractor's complaint.
///
/// # Errors
///
/// [`Error::Integrity`] for a refused member or a snapshot failing verification (through
/// [`Error::from_read`]); the store's errors; [`Error::ToolFailed`] when the extractor fails;
/// [`Error::Io`] when it stops reading and exits successfully anyway. On any error the tool is
/// killed; cleaning the extraction directory is the caller's.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future drops the tool, which kills its process group. What it
/// extracted so far stays for the caller to remove.
pub async fn pump(
    href: &str,
    reader: &mut (dyn AsyncRead + Send + Unpin),
    total: Option<u64>,
    mut tool: RunningTool,
    inspector: &mut Inspector,
    progress: &Progress,
) -> Result<u64> {
    let name = tool.name().to_owned();
    let Some(mut stdin) = tool.take_stdin() else {
        return Err(Error::invalid(
            "extractor",
            format!("{name} was not started with piped stdin"),
        ));
    };
    let read_error = |e| Error::from_read(format!("read snapshot {href}"), e);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut done = 0u64;
    loop {
        // A read error is a damaged snapshot (or a store failure): the tool is killed when
        // dropped on return.
        let n = reader.read(&mut buf).await.map_err(read_error)?;
        if n == 0 {
            break;
        }
        // Checked before the extractor sees a byte of it.
        inspector.feed(&buf[..n])?;
        if let Err(write_err) = stdin.write_all(&buf[..n]).await {
            // The extractor stopped reading. Read the rest through the verifier first: a
            // snapshot that fails verification is an integrity error, whatever the extractor
            // said.
            drop(stdin);
            while reader.read(&mut buf).await.map_err(read_error)? > 0 {}
            tool.wait().await?;
            return Err(Error::io(format!("feed {name}"), write_err));
        }
        done += n as u64;
        progress.bytes(Phase::Restore, done, total);
    }
    inspector.finish()?;
    stdin
        .shutdown()
        .await
        .map_err(|e| Error::io(format!("close {name} input"), e))?;
    drop(stdin);
    tool.wait().await?;
    Ok(done)
}
