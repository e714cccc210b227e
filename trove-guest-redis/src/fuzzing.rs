//! Entry points for the `trove-guest-fuzz` harness (feature `fuzzing`): thin wrappers over this
//! crate's private parsers of bytes a server sent. Not an API.

use trove_guest_core::Result;

use crate::resp::{Conn, Reply};

/// What reading a stream of RESP replies found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RespSummary {
    /// Replies read (server errors included).
    pub replies: usize,
    /// Server errors (`-ERR ...`) among them.
    pub server_errors: usize,
    /// Nested values in the replies read.
    pub values: usize,
    /// Whether reading stopped on a malformed or cut reply.
    pub malformed: bool,
}

fn count(r: &Reply) -> usize {
    match r {
        Reply::Array(Some(v)) => 1 + v.iter().map(count).sum::<usize>(),
        _ => 1,
    }
}

/// Reads `bytes` as the replies of a Redis server, as the client does, until the stream ends or a
/// reply is malformed; at most `limit` replies. Runs on any executor (the stream is in memory).
pub async fn resp_replies(bytes: Vec<u8>, limit: usize) -> RespSummary {
    let io = tokio::io::join(std::io::Cursor::new(bytes), tokio::io::sink());
    let mut conn = Conn::over(Box::new(io));
    let mut s = RespSummary::default();
    while s.replies < limit {
        match conn.next_reply().await {
            Ok(Ok(r)) => {
                s.values += count(&r);
                let _ = (r.text(), r.texts());
            }
            Ok(Err(_)) => s.server_errors += 1,
            Err(_) => {
                s.malformed = true;
                break;
            }
        }
        s.replies += 1;
    }
    s
}

/// Reads `bytes` line by line as the `PSYNC` exchange does (`+FULLRESYNC <replid> <offset>`,
/// then `$<length>`), at most `limit` lines.
pub async fn psync_lines(bytes: Vec<u8>, limit: usize) -> Vec<String> {
    let io = tokio::io::join(std::io::Cursor::new(bytes), tokio::io::sink());
    let mut conn = Conn::over(Box::new(io));
    let mut lines = Vec::new();
    while lines.len() < limit {
        match conn.read_line().await {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    lines
}

/// A replication position `<40 hex digit replid>:<offset>`.
///
/// # Errors
///
/// A malformed position.
pub fn position(text: &str) -> Result<(String, u64)> {
    crate::strategy::Pos::parse(text).map(|p| (p.replid, p.offset))
}

/// The header fields of an RDB file (or a prefix of one): version and auxiliary fields.
pub fn rdb_header(bytes: &[u8]) -> Option<(u32, Vec<(String, String)>)> {
    crate::rdb::parse_header(bytes).map(|h| (h.version, h.aux.into_iter().collect()))
}

/// `(host, port, user)` of a replica override file.
pub fn replica_override(text: &str) -> Option<(String, u16, String)> {
    crate::commands::parse_replica_override(text)
}
