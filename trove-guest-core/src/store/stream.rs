//! The read side of an upload, shared by the stores: the source in chunks, hashed as it passes.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{CHUNK_SIZE, HashingReader};
use crate::error::{Error, Result};
use crate::progress::{Phase, Progress};

/// Bytes between two progress reports while an upload streams.
const REPORT_EVERY: u64 = 16 * CHUNK_SIZE as u64;

/// Reads the source of an upload in chunks of up to [`CHUNK_SIZE`] bytes, hashing everything it
/// reads and reporting [`Phase::Backup`] progress as the chunks are handed on.
pub(crate) struct UploadChunks<'a, R> {
    reader: HashingReader<R>,
    name: &'a str,
    progress: &'a Progress,
    last_report: u64,
}

impl<'a, R: AsyncRead + Unpin> UploadChunks<'a, R> {
    /// Chunks of `data`, the source of the snapshot `name` (named in read errors).
    pub(crate) fn new(data: R, name: &'a str, progress: &'a Progress) -> Self {
        UploadChunks {
            reader: HashingReader::new(data),
            name,
            progress,
            last_report: 0,
        }
    }

    /// The next chunk, filled as far as the source allows (pipes deliver 64 KiB at a time), or
    /// `None` at the end of the data.
    ///
    /// Asking for the next chunk means the previous one was handed on: progress is reported
    /// first (every 16 chunks' worth).
    ///
    /// # Errors
    ///
    /// A read error from the source, through [`Error::from_read`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled call loses what it had read.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        let count = self.reader.count();
        if count - self.last_report >= REPORT_EVERY {
            self.progress.bytes(Phase::Backup, count, None);
            self.last_report = count;
        }
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut filled = 0;
        while filled < CHUNK_SIZE {
            let n = self.reader.read(&mut buf[filled..]).await.map_err(|e| {
                Error::from_read(format!("read snapshot data for {}", self.name), e)
            })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(None);
        }
        buf.truncate(filled);
        Ok(Some(buf))
    }

    /// Size and hex SHA-256 of everything read; reports the final size as complete.
    pub(crate) fn finish(self) -> (u64, String) {
        let (size, sha256) = self.reader.finish();
        self.progress.bytes(Phase::Backup, size, Some(size));
        (size, sha256)
    }
}
