//! The xbstream format (`mariabackup`/`xtrabackup --stream=xbstream`, read by `mbstream` /
//! `xbstream -x`): the one chunk parser, fed bytes as they stream, and the member check built on
//! it.
//!
//! Chunk layout (little endian): magic `XBSTCK01`, flags (1 byte), type (1 byte: `P` payload,
//! `E` end of file), path length (u32), path; for `P` then payload length (u64), offset (u64),
//! CRC-32 (u32) and the payload. Any other chunk type is refused: its layout is unknown, so
//! nothing after it could be checked.

use std::collections::HashSet;

use super::member::{MemberPath, Rejection};

const MAGIC: &[u8; 8] = b"XBSTCK01";
/// Fixed part of a chunk header: magic, flags, type, path length.
const FIXED: usize = 14;
/// Payload length, offset and CRC-32 after the path of a `P` chunk.
const PAYLOAD_FIELDS: usize = 20;
/// Longest path accepted (the tools use `FN_REFLEN`, 512).
pub const MAX_PATH: usize = 4096;

/// The type of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkKind {
    /// A piece of a file's data.
    Payload,
    /// The end of a file.
    End,
}

/// What the parser found, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEvent<'a> {
    /// A chunk header: the file it belongs to, its type and how many payload bytes follow.
    Chunk {
        /// The file's path as the stream spells it.
        path: &'a [u8],
        /// Payload or end of file.
        kind: ChunkKind,
        /// Payload bytes that follow (0 for [`ChunkKind::End`]).
        payload_len: u64,
    },
    /// Payload bytes of the last chunk announced (a chunk's payload may come in pieces).
    Payload(&'a [u8]),
}

#[derive(Debug)]
enum State {
    Header,
    Payload { remaining: u64 },
    Broken(Rejection),
}

/// A push parser of xbstream chunks: feed it the stream in pieces of any size.
#[derive(Debug)]
pub struct ChunkParser {
    state: State,
    header: Vec<u8>,
}

impl Default for ChunkParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        ChunkParser {
            state: State::Header,
            header: Vec::with_capacity(64),
        }
    }

    /// Parses `data`, the next bytes of the stream, calling `on` for each header and payload
    /// piece. Once the stream is found malformed, or `on` refused something, every later call
    /// fails with the same rejection.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] for a malformed stream (bad magic, unknown chunk type, path longer than
    /// [`MAX_PATH`]) or the one `on` returned.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on: impl FnMut(ChunkEvent<'_>) -> Result<(), Rejection>,
    ) -> Result<(), Rejection> {
        while !data.is_empty() {
            match &mut self.state {
                State::Broken(r) => return Err(r.clone()),
                State::Payload { remaining } => {
                    let n = (*remaining).min(data.len() as u64) as usize;
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                    let piece = &data[..n];
                    data = &data[n..];
                    if let Err(r) = on(ChunkEvent::Payload(piece)) {
                        return Err(self.fail(r));
                    }
                }
                State::Header => {
                    let need = match self.header_need() {
                        Ok(n) => n,
                        Err(r) => return Err(self.fail(r)),
                    };
                    let take = need.saturating_sub(self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == need
                        && let Err(r) = self.header_done(&mut on)
                    {
                        return Err(self.fail(r));
                    }
                }
            }
        }
        match &self.state {
            State::Broken(r) => Err(r.clone()),
            _ => Ok(()),
        }
    }

    /// True when the stream may end here: between chunks, nothing malformed seen.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.header.is_empty()
    }

    /// The rejection that stopped the parser, if any.
    pub fn broken(&self) -> Option<&Rejection> {
        match &self.state {
            State::Broken(r) => Some(r),
            _ => None,
        }
    }

    fn fail(&mut self, r: Rejection) -> Rejection {
        self.state = State::Broken(r.clone());
        r
    }

    /// How many header bytes are needed to make progress, given what is collected.
    fn header_need(&self) -> Result<usize, Rejection> {
        let h = &self.header;
        if h.len() < FIXED {
            return Ok(FIXED);
        }
        if &h[..8] != MAGIC {
            return Err(Rejection::archive("not an xbstream: bad chunk magic"));
        }
        let path_len = u32::from_le_bytes([h[10], h[11], h[12], h[13]]) as usize;
        if path_len > MAX_PATH {
            return Err(Rejection::archive(format!(
                "xbstream chunk path of {path_len} bytes"
            )));
        }
        match h[9] {
            b'E' => Ok(FIXED + path_len),
            b'P' => Ok(FIXED + path_len + PAYLOAD_FIELDS),
            t => Err(Rejection::archive(format!(
                "unknown xbstream chunk type {:?}",
                t as char
            ))),
        }
    }

    fn header_done(
        &mut self,
        on: &mut impl FnMut(ChunkEvent<'_>) -> Result<(), Rejection>,
    ) -> Result<(), Rejection> {
        let need = self.header_need()?;
        if self.header.len() < need {
            return Ok(()); // the fixed part is in; collect the path and fields
        }
        let h = std::mem::take(&mut self.header);
        let path_len = u32::from_le_bytes([h[10], h[11], h[12], h[13]]) as usize;
        let path = &h[FIXED..FIXED + path_len];
        let (kind, payload_len) = if h[9] == b'E' {
            (ChunkKind::End, 0)
        } else {
            let p = FIXED + path_len;
            let len = u64::from_le_bytes(h[p..p + 8].try_into().expect("8 bytes"));
            (ChunkKind::Payload, len)
        };
        on(ChunkEvent::Chunk {
            path,
            kind,
            payload_len,
        })?;
        self.header = h;
        self.header.clear();
        if payload_len > 0 {
            self.state = State::Payload {
                remaining: payload_len,
            };
        }
        Ok(())
    }
}

/// Checks every chunk's path as the stream passes: relative, no `..`, no NUL, not empty.
#[derive(Debug, Default)]
pub(crate) struct XbstreamInspector {
    parser: ChunkParser,
    files: HashSet<Vec<u8>>,
}

impl XbstreamInspector {
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), Rejection> {
        let files = &mut self.files;
        self.parser.feed(data, |ev| {
            if let ChunkEvent::Chunk { path, .. } = ev
                && !files.contains(path)
            {
                let checked = MemberPath::parse(path)?;
                if checked.is_root() {
                    return Err(Rejection::member(path, "names the extraction directory"));
                }
                files.insert(path.to_vec());
            }
            Ok(())
        })
    }

    pub(crate) fn finish(&self) -> Result<(), Rejection> {
        if let Some(r) = self.parser.broken() {
            return Err(r.clone());
        }
        if !self.parser.at_boundary() {
            return Err(Rejection::archive("the xbstream ends inside a chunk"));
        }
        Ok(())
    }

    pub(crate) fn members(&self) -> u64 {
        self.files.len() as u64
    }
}
