//! The read side of an upload, shared by the stores: the source in chunks, hashed as it passes;
//! and [`ChunkCarver`], which hands read chunks on without copying them.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

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
    recycled: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
}

impl<'a, R: AsyncRead + Unpin> UploadChunks<'a, R> {
    /// Chunks of `data`, the source of the snapshot `name` (named in read errors).
    pub(crate) fn new(data: R, name: &'a str, progress: &'a Progress) -> Self {
        UploadChunks {
            reader: HashingReader::new(data),
            name,
            progress,
            last_report: 0,
            recycled: None,
        }
    }

    /// Takes chunk buffers back from `recycled` (a writer that is done with a chunk sends it
    /// there) instead of allocating and zeroing a fresh one for every chunk.
    pub(crate) fn with_recycling(mut self, recycled: mpsc::UnboundedReceiver<Vec<u8>>) -> Self {
        self.recycled = Some(recycled);
        self
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
        let mut buf = self
            .recycled
            .as_mut()
            .and_then(|r| r.try_recv().ok())
            .unwrap_or_default();
        // A recycled buffer is initialised already: this zeroes only what it lacks.
        buf.resize(CHUNK_SIZE, 0);
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

/// Reads below this size start a new block rather than use the end of the current one.
const MIN_SPARE: usize = 64 * 1024;

/// Carves chunks out of [`CHUNK_SIZE`] blocks for a reader that hands each chunk on as
/// [`Bytes`]: a block is zeroed once, filled by successive reads, and every chunk shares it, so
/// nothing is copied. A block whose chunks have all been dropped is reused.
pub(crate) struct ChunkCarver {
    block: BytesMut,
}

impl ChunkCarver {
    /// A carver with no block yet.
    pub(crate) fn new() -> Self {
        ChunkCarver {
            block: BytesMut::new(),
        }
    }

    /// Room for the next read: the rest of the current block, or a fresh one when fewer than
    /// 64 KiB are left.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.block.len() < MIN_SPARE {
            self.block.clear();
            self.block.resize(CHUNK_SIZE, 0);
        }
        &mut self.block[..]
    }

    /// The first `n` bytes of [`ChunkCarver::spare`] (what the read filled), as a chunk.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        self.block.split_to(n).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carved_chunks_keep_their_bytes_while_the_block_is_reused() {
        let mut carver = ChunkCarver::new();
        let mut chunks = Vec::new();
        for round in 0..40u8 {
            let spare = carver.spare();
            assert!(spare.len() >= MIN_SPARE);
            let n = 100_000.min(spare.len());
            spare[..n].fill(round);
            chunks.push(carver.take(n));
            if round % 3 == 0 {
                chunks.remove(0); // dropped chunks let a block be reused
            }
        }
        for c in &chunks {
            assert!(
                c.iter().all(|&b| b == c[0]),
                "a chunk changed after it was handed on"
            );
        }
        let rounds: Vec<u8> = chunks.iter().map(|c| c[0]).collect();
        let mut sorted = rounds.clone();
        sorted.dedup();
        assert_eq!(rounds, sorted, "chunks are distinct and in order");
    }

    #[test]
    fn a_block_is_reused_once_its_chunks_are_dropped_and_not_before() {
        let mut carver = ChunkCarver::new();
        let first = carver.spare().as_ptr() as usize;
        let whole = carver.spare().len();
        let held = carver.take(whole);
        // A chunk of the first block is still alive: the next block is another allocation.
        let second = carver.spare().as_ptr() as usize;
        assert_ne!(second, first);
        drop(held);
        let whole = carver.spare().len();
        drop(carver.take(whole));
        // Every chunk of the second block dropped: it is filled again.
        assert_eq!(carver.spare().as_ptr() as usize, second);
    }
}
