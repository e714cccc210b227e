//! Timeline history files and WAL file names: which positions a server's history contains.

use trove_guest_core::{Error, Lsn, Result};

/// One line of a timeline history file: timeline `parent` ended at `switchpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Switch {
    pub(crate) parent: u32,
    pub(crate) switchpoint: Lsn,
}

/// Parses a `0000000N.history` file (`parentTLI<TAB>switchpoint<TAB>reason` lines; comments and
/// blank lines ignored).
///
/// # Errors
///
/// [`Error::InvalidInput`] for a malformed line.
pub(crate) fn parse_history(text: &str) -> Result<Vec<Switch>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (f.next(), f.next()) else {
            return Err(Error::invalid("timeline history", format!("{line:?}")));
        };
        let parent = tli
            .parse()
            .map_err(|_| Error::invalid("timeline history", format!("{line:?}: bad timeline")))?;
        out.push(Switch {
            parent,
            switchpoint: lsn.parse()?,
        });
    }
    Ok(out)
}

/// The timeline in a WAL file name (`TTTTTTTTXXXXXXXXYYYYYYYY`).
///
/// # Errors
///
/// [`Error::InvalidInput`] for a malformed name.
pub(crate) fn timeline_of_walfile(name: &str) -> Result<u32> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid("WAL file name", format!("{name:?}")));
    }
    u32::from_str_radix(&name[..8], 16)
        .map_err(|_| Error::invalid("WAL file name", name.to_owned()))
}

/// The history file of timeline `tli`, relative to the data directory.
pub(crate) fn history_path(tli: u32) -> String {
    format!("pg_wal/{tli:08X}.history")
}

/// Whether a server on timeline `current` whose history is `history`, now at `current_lsn`,
/// contains the position `lsn` written on timeline `tli`.
pub(crate) fn contains(
    current: u32,
    current_lsn: Lsn,
    history: &[Switch],
    tli: u32,
    lsn: Lsn,
) -> bool {
    if tli == current {
        return lsn <= current_lsn;
    }
    // An ancestor timeline: the position is ours if it precedes the point where we left it.
    history
        .iter()
        .find(|s| s.parent == tli)
        .is_some_and(|s| lsn <= s.switchpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_files_parse() {
        let h = parse_history("1\t0/3000158\tno recovery target specified\n\n2\t1/0\tx\n").unwrap();
        assert_eq!(
            h,
            vec![
                Switch {
                    parent: 1,
                    switchpoint: Lsn(0x3000158)
                },
                Switch {
                    parent: 2,
                    switchpoint: Lsn(1 << 32)
                }
            ]
        );
        assert!(parse_history("x y").is_err());
    }

    #[test]
    fn positions_after_a_switchpoint_on_the_old_timeline_are_never_reached() {
        let h = [Switch {
            parent: 1,
            switchpoint: Lsn(100),
        }];
        assert!(contains(2, Lsn(500), &h, 1, Lsn(100)));
        assert!(!contains(2, Lsn(500), &h, 1, Lsn(101)));
        assert!(contains(2, Lsn(500), &h, 2, Lsn(500)));
        assert!(!contains(2, Lsn(500), &h, 2, Lsn(501)));
        assert!(!contains(2, Lsn(500), &h, 3, Lsn(1)));
    }

    #[test]
    fn wal_file_names_carry_the_timeline() {
        assert_eq!(timeline_of_walfile("000000020000000000000003").unwrap(), 2);
        assert!(timeline_of_walfile("00000002").is_err());
    }
}
