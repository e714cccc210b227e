//! Writing a durable upload around the page cache: chunks go to the disk with `O_DIRECT`, so the
//! writer spends no CPU copying a snapshot into cached pages that must be written back anyway
//! (the largest cost of keeping a snapshot, measured at about 1.4 CPU-s per GB). Filesystems
//! without `O_DIRECT` (tmpfs), unaligned memory and the unaligned end of the data take the
//! ordinary write path.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;

use bytes::{Buf as _, BytesMut};

use super::CHUNK_SIZE;

/// Alignment of `O_DIRECT` buffers, file offsets and lengths (the largest logical block size
/// in common use).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// An empty buffer with room for [`CHUNK_SIZE`] bytes whose start is [`DIRECT_ALIGN`]-aligned,
/// so a chunk read into it can be written with `O_DIRECT` as it is.
pub(crate) fn aligned_chunk_buffer() -> BytesMut {
    let mut b = BytesMut::with_capacity(CHUNK_SIZE + DIRECT_ALIGN);
    let off = b.as_ptr().align_offset(DIRECT_ALIGN);
    b.resize(off, 0);
    b.advance(off);
    b
}

/// Writes a file front to back: through an `O_DIRECT` descriptor while buffers, offsets and
/// lengths allow it, through the ordinary one otherwise.
pub(crate) struct UploadWriter<'a> {
    file: &'a File,
    direct: Option<File>,
    offset: u64,
}

impl<'a> UploadWriter<'a> {
    /// A writer for `file` (open for writing, at `path`, empty); `direct` asks for `O_DIRECT`
    /// where the filesystem supports it.
    pub(crate) fn new(file: &'a File, path: &Path, direct: bool) -> Self {
        let direct = direct
            .then(|| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
                    .open(path)
                    .ok()
            })
            .flatten();
        UploadWriter {
            file,
            direct,
            offset: 0,
        }
    }

    /// Whether writes may still bypass the page cache.
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut rest = data;
        if let Some(direct) = &self.direct
            && self.offset % DIRECT_ALIGN as u64 == 0
            && rest.as_ptr().align_offset(DIRECT_ALIGN) == 0
        {
            let len = rest.len() - rest.len() % DIRECT_ALIGN;
            if len > 0 {
                match direct.write_all_at(&rest[..len], self.offset) {
                    Ok(()) => {
                        self.offset += len as u64;
                        rest = &rest[len..];
                    }
                    // A filesystem that opens with O_DIRECT but refuses the write: stop trying.
                    Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => self.direct = None,
                    Err(e) => return Err(e),
                }
            }
        }
        if !rest.is_empty() {
            self.file.write_all_at(rest, self.offset)?;
            self.offset += rest.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_start_aligned_and_hold_a_chunk() {
        let mut b = aligned_chunk_buffer();
        assert_eq!(b.as_ptr().align_offset(DIRECT_ALIGN), 0);
        b.resize(CHUNK_SIZE, 7);
        assert_eq!(b.as_ptr().align_offset(DIRECT_ALIGN), 0, "no reallocation");
    }

    #[test]
    fn mixed_direct_and_buffered_writes_make_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut expected = Vec::new();
        let mut w = UploadWriter::new(&file, &path, true);
        // Aligned chunks, an unaligned buffer, and an unaligned end.
        for (i, len) in [CHUNK_SIZE, CHUNK_SIZE, 5000, CHUNK_SIZE, 123]
            .into_iter()
            .enumerate()
        {
            let mut b = aligned_chunk_buffer();
            b.resize(len, i as u8 + 1);
            let data: &[u8] = if i == 1 { &b[1..] } else { &b[..] };
            w.write(data).unwrap();
            expected.extend_from_slice(data);
        }
        drop(w);
        file.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
