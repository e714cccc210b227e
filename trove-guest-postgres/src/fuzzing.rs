//! Entry points for the `trove-guest-fuzz` harness (feature `fuzzing`): thin wrappers over this
//! crate's private parsers of text a server sent. Not an API.

use trove_guest_core::{Lsn, Result};

/// The LSN column of a `pg_stat_wal_receiver` / `pg_stat_replication` row (`flushed_lsn`,
/// `replay_lsn`, ...), as `replication_status` reads it (NULL is `None`).
///
/// # Errors
///
/// As the status call: a malformed LSN.
pub fn stat_lsn(column: Option<String>) -> Result<Option<Lsn>> {
    crate::status::parse_lsn(column)
}

/// A timeline history file (`0000000N.history`) as `(parent timeline, switchpoint)` pairs, and
/// whether that history contains `(tli, lsn)` for a server on `current` at `current_lsn`.
///
/// # Errors
///
/// A malformed line.
pub fn timeline_history(
    text: &str,
    current: u32,
    current_lsn: Lsn,
    tli: u32,
    lsn: Lsn,
) -> Result<(Vec<(u32, Lsn)>, bool)> {
    let history = crate::timeline::parse_history(text)?;
    let contains = crate::timeline::contains(current, current_lsn, &history, tli, lsn);
    Ok((
        history.iter().map(|s| (s.parent, s.switchpoint)).collect(),
        contains,
    ))
}

/// The timeline of a WAL file name (`TTTTTTTTXXXXXXXXYYYYYYYY`).
///
/// # Errors
///
/// A malformed name.
pub fn walfile_timeline(name: &str) -> Result<u32> {
    crate::timeline::timeline_of_walfile(name)
}

/// `pg_basebackup -v`'s report of a backup's WAL range: `(start, timeline, end)`.
pub fn backup_range(stderr: &str) -> Option<(Lsn, u32, Option<Lsn>)> {
    crate::master::parse_backup_range(stderr).map(|r| (r.start, r.timeline, r.end))
}
