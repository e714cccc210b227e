//! Reads the backup's binlog position out of the xbstream while it flows to the store.
//!
//! The backup tool writes the position it recorded under the backup lock into the stream as a
//! small file: `xtrabackup_binlog_info` (MariaDB 10.x, MySQL) or `mariadb_backup_binlog_info`
//! (MariaDB 11.x), `file<TAB>offset<TAB>gtid`. [`BinlogInfoTap`] wraps the tool's stdout, passes
//! every byte on unchanged and parses the xbstream chunks on the side with the one xbstream
//! parser ([`trove_guest_core::archive::xbstream::ChunkParser`]), keeping the payload of those
//! files only. No temporary copy of the stream is made. A stream the parser cannot follow (an
//! unknown chunk type) stops the parsing: the position is then reported missing, never guessed.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use trove_guest_core::archive::xbstream::{ChunkEvent, ChunkParser};
use trove_guest_core::position::{BinlogFile, MariaDbGtidList, MysqlGtidSet};
use trove_guest_core::{Error, Result};

/// Names of the binlog position file, newest first.
pub const BINLOG_INFO_FILES: [&str; 2] = ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"];
const MAX_CAPTURE: u64 = 1 << 20;

/// An `AsyncRead` pass-through that extracts the binlog info file from an xbstream.
#[derive(Debug)]
pub struct BinlogInfoTap<R> {
    inner: R,
    parser: ChunkParser,
    /// Whether the payload now streaming belongs to the captured file.
    capturing: bool,
    captured: Option<(String, Vec<u8>)>,
}

impl<R> BinlogInfoTap<R> {
    /// Wraps the stream.
    pub fn new(inner: R) -> Self {
        BinlogInfoTap {
            inner,
            parser: ChunkParser::new(),
            capturing: false,
            captured: None,
        }
    }

    /// The binlog info file found in the stream: its name and contents.
    ///
    /// # Errors
    ///
    /// [`Error::Datastore`] when the stream held no such file or could not be parsed.
    pub fn binlog_info(&self) -> Result<(&str, &str)> {
        if let Some(why) = self.parser.broken()
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

    fn feed(&mut self, data: &[u8]) {
        let (capturing, captured) = (&mut self.capturing, &mut self.captured);
        // A parse failure is remembered by the parser and reported by `binlog_info`.
        let _ = self.parser.feed(data, |ev| {
            match ev {
                ChunkEvent::Chunk {
                    path, payload_len, ..
                } => {
                    let name = std::str::from_utf8(path).ok();
                    *capturing = name.is_some_and(|n| BINLOG_INFO_FILES.contains(&n))
                        && payload_len <= MAX_CAPTURE;
                    if *capturing
                        && let Some(name) = name
                        && captured.as_ref().is_none_or(|(n, _)| n != name)
                    {
                        *captured = Some((name.to_owned(), Vec::new()));
                    }
                }
                ChunkEvent::Payload(piece) => {
                    if *capturing
                        && let Some((_, buf)) = captured
                        && (buf.len() + piece.len()) as u64 <= MAX_CAPTURE
                    {
                        buf.extend_from_slice(piece);
                    }
                }
            }
            Ok(())
        });
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
        let mut v = b"XBSTCK01".to_vec();
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
