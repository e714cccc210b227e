//! Reads the backup's binlog position out of the xbstream while it flows to the store.
//!
//! The backup tool writes the position it recorded under the backup lock into the stream as a
//! small file: `xtrabackup_binlog_info` (MariaDB 10.x, MySQL) or `mariadb_backup_binlog_info`
//! (MariaDB 11.x), `file<TAB>offset<TAB>gtid`. [`BinlogInfoTap`] wraps the tool's stdout, passes
//! every byte on unchanged and parses the xbstream chunk headers on the side, keeping the
//! payload of those files only. No temporary copy of the stream is made.
//!
//! Chunk layout (little endian): magic `XBSTCK01`, flags (1 byte), type (1 byte: `P` payload,
//! `E` end of file), path length (u32), path; for `P` then payload length (u64), offset (u64),
//! CRC-32 (u32) and the payload. An unknown chunk type stops the parsing (the position is then
//! reported missing, never guessed).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use trove_guest_core::position::{BinlogFile, MariaDbGtidList, MysqlGtidSet};
use trove_guest_core::{Error, Result};

const MAGIC: &[u8; 8] = b"XBSTCK01";
/// Names of the binlog position file, newest first.
pub const BINLOG_INFO_FILES: [&str; 2] = ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"];
const MAX_CAPTURE: u64 = 1 << 20;

#[derive(Debug)]
enum State {
    /// Collecting a chunk header.
    Header,
    /// Skipping or capturing `remaining` payload bytes.
    Payload { remaining: u64, capture: bool },
    /// The stream is not parseable any further.
    Broken(String),
}

/// An `AsyncRead` pass-through that extracts the binlog info file from an xbstream.
#[derive(Debug)]
pub struct BinlogInfoTap<R> {
    inner: R,
    state: State,
    header: Vec<u8>,
    captured: Option<(String, Vec<u8>)>,
}

impl<R> BinlogInfoTap<R> {
    /// Wraps the stream.
    pub fn new(inner: R) -> Self {
        BinlogInfoTap {
            inner,
            state: State::Header,
            header: Vec::with_capacity(64),
            captured: None,
        }
    }

    /// The binlog info file found in the stream: its name and contents.
    ///
    /// # Errors
    ///
    /// [`Error::ToolFailed`]-free: [`Error::Datastore`] when the stream held no such file or
    /// could not be parsed.
    pub fn binlog_info(&self) -> Result<(&str, &str)> {
        if let State::Broken(why) = &self.state
            && self.captured.is_none()
        {
            return Err(Error::Datastore {
                message: format!("the backup stream could not be parsed: {why}"),
                source: None,
            });
        }
        match &self.captured {
            Some((name, data)) => std::str::from_utf8(data)
                .map(|t| (name.as_str(), t))
                .map_err(|_| Error::Datastore {
                    message: format!("{name} in the backup is not UTF-8"),
                    source: None,
                }),
            None => Err(Error::Datastore {
                message: "the backup holds no binlog position (xtrabackup_binlog_info / \
                          mariadb_backup_binlog_info): is binary logging on?"
                    .into(),
                source: None,
            }),
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Broken(_) => return,
                State::Payload { remaining, capture } => {
                    let n = (*remaining).min(data.len() as u64) as usize;
                    if *capture && let Some((_, buf)) = &mut self.captured {
                        buf.extend_from_slice(&data[..n]);
                    }
                    *remaining -= n as u64;
                    data = &data[n..];
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    let need = self.header_need();
                    let take = need.saturating_sub(self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == need {
                        self.header_step();
                    }
                }
            }
        }
    }

    /// How many header bytes are needed to make progress, given what is collected.
    fn header_need(&self) -> usize {
        let h = &self.header;
        if h.len() < 14 {
            return 14;
        }
        let path_len = u32::from_le_bytes([h[10], h[11], h[12], h[13]]) as usize;
        match h[9] {
            b'E' => 14 + path_len,
            _ => 14 + path_len + 20,
        }
    }

    fn header_step(&mut self) {
        let h = &self.header;
        if h.len() == 14 {
            if &h[..8] != MAGIC {
                self.state = State::Broken("bad chunk magic".into());
                return;
            }
            if !matches!(h[9], b'P' | b'E') {
                self.state = State::Broken(format!("unknown chunk type {:?}", h[9] as char));
                return;
            }
            let path_len = u32::from_le_bytes([h[10], h[11], h[12], h[13]]) as usize;
            if path_len > 4096 {
                self.state = State::Broken("path too long".into());
                return;
            }
            if self.header_need() > 14 {
                return; // collect the rest
            }
        }
        let path_len = u32::from_le_bytes([h[10], h[11], h[12], h[13]]) as usize;
        let path = String::from_utf8_lossy(&h[14..14 + path_len]).into_owned();
        if h[9] == b'E' {
            self.header.clear();
            return;
        }
        let p = 14 + path_len;
        let len = u64::from_le_bytes(h[p..p + 8].try_into().expect("8 bytes"));
        let capture = BINLOG_INFO_FILES.contains(&path.as_str()) && len <= MAX_CAPTURE;
        if capture && self.captured.as_ref().is_none_or(|(n, _)| *n != path) {
            self.captured = Some((path, Vec::new()));
        }
        self.header.clear();
        self.state = if len == 0 {
            State::Header
        } else {
            State::Payload {
                remaining: len,
                capture,
            }
        };
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for BinlogInfoTap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = buf.filled()[before..].to_vec();
            this.feed(&new);
        }
        r
    }
}

/// A parsed binlog info file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogInfo {
    /// Binary log file.
    pub log_file: BinlogFile,
    /// Offset.
    pub log_position: u64,
    /// The GTID text (MariaDB list or MySQL set), possibly empty.
    pub gtid: String,
}

impl BinlogInfo {
    /// Parses `file<TAB>offset[<TAB>gtid]` (MySQL GTID sets may span lines).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a malformed file.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |r: &str| Error::invalid("backup binlog info", format!("{text:?}: {r}"));
        let mut parts = text.splitn(3, ['\t']);
        let file = parts.next().unwrap_or_default().trim();
        let pos = parts.next().ok_or_else(|| bad("no offset"))?.trim();
        let gtid: String = parts
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        Ok(BinlogInfo {
            log_file: file.parse()?,
            log_position: pos.parse().map_err(|_| bad("offset is not a number"))?,
            gtid,
        })
    }

    /// The GTID as a MariaDB list.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`].
    pub fn mariadb_gtid(&self) -> Result<MariaDbGtidList> {
        self.gtid.parse()
    }

    /// The GTID as a MySQL set.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`].
    pub fn mysql_gtid(&self) -> Result<MysqlGtidSet> {
        self.gtid.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn chunk(path: &str, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.push(0);
        v.push(kind);
        v.extend_from_slice(&(path.len() as u32).to_le_bytes());
        v.extend_from_slice(path.as_bytes());
        if kind == b'P' {
            v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(payload);
        }
        v
    }

    async fn tap_all(stream: Vec<u8>, step: usize) -> BinlogInfoTap<std::io::Cursor<Vec<u8>>> {
        let mut tap = BinlogInfoTap::new(std::io::Cursor::new(stream.clone()));
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = tap.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, stream, "bytes pass through unchanged");
        tap
    }

    #[tokio::test]
    async fn finds_the_binlog_info_at_any_read_size() {
        let mut s = chunk("ibdata1", b'P', &[7u8; 5000]);
        s.extend(chunk("ibdata1", b'E', b""));
        s.extend(chunk(
            "xtrabackup_binlog_info",
            b'P',
            b"mysql-bin.000001\t825\t0-1-3\n",
        ));
        s.extend(chunk("xtrabackup_binlog_info", b'E', b""));
        s.extend(chunk("xtrabackup_info", b'P', b"x"));
        for step in [1, 3, 13, 14, 64, 4096, 1 << 20] {
            let tap = tap_all(s.clone(), step).await;
            let (name, text) = tap.binlog_info().unwrap();
            assert_eq!(name, "xtrabackup_binlog_info");
            let info = BinlogInfo::parse(text).unwrap();
            assert_eq!(info.log_file.as_str(), "mysql-bin.000001");
            assert_eq!(info.log_position, 825);
            assert_eq!(info.mariadb_gtid().unwrap().to_string(), "0-1-3");
        }
    }

    #[tokio::test]
    async fn reports_missing_or_unparseable_positions() {
        let tap = tap_all(chunk("ibdata1", b'P', b"abc"), 7).await;
        assert!(tap.binlog_info().is_err());
        let tap = tap_all(b"not an xbstream at all".to_vec(), 7).await;
        assert!(
            tap.binlog_info()
                .unwrap_err()
                .to_string()
                .contains("parsed")
        );
    }

    #[test]
    fn parses_mysql_multiline_gtid_sets() {
        let info = BinlogInfo::parse(
            "binlog.000003\t157\t3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2\n",
        )
        .unwrap();
        assert_eq!(
            info.mysql_gtid().unwrap().to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2"
        );
        assert!(BinlogInfo::parse("x.1").is_err());
        assert!(BinlogInfo::parse("../x.1\t4").is_err());
    }
}
