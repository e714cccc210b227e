//! Typed replication positions: binlog file/offset, MySQL GTID sets, MariaDB GTID lists and
//! PostgreSQL LSNs with timelines, and [`OpaquePosition`]s that the backend of a datastore core
//! does not know defines and compares itself.
//!
//! Every type parses with [`std::str::FromStr`], rejecting garbage with
//! [`Error::InvalidInput`], and serializes as the server's own text
//! form, so positions read from a server, a backup's metadata or a wire document are checked at
//! the edge.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::wire::DatastoreKind;

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A binary log file name such as `mariadb-bin.000002`: a base name of `[A-Za-z0-9._-]` and a
/// numeric extension, at most 255 bytes, no path separators.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BinlogFile(String);

impl BinlogFile {
    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BinlogFile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("binlog file name", format!("{s:?}: {reason}"));
        if s.is_empty() || s.len() > 255 {
            return Err(bad("must be 1 to 255 bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
        }
        match s.rsplit_once('.') {
            Some((base, ext))
                if !base.is_empty()
                    && !ext.is_empty()
                    && ext.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Ok(BinlogFile(s.to_owned()))
            }
            _ => Err(bad("expected <base>.<number>")),
        }
    }
}

impl fmt::Display for BinlogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(BinlogFile);

/// A binary log file and byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogCoordinates {
    /// The binlog file name.
    pub log_file: BinlogFile,
    /// The byte offset within it.
    pub log_position: u64,
}

impl fmt::Display for BinlogCoordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.log_file, self.log_position)
    }
}

/// One MariaDB GTID, `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariaDbGtid {
    /// Replication domain id.
    pub domain: u32,
    /// Originating server id.
    pub server: u32,
    /// Sequence number within the domain.
    pub sequence: u64,
}

/// A MariaDB GTID position (`gtid_binlog_pos`, `gtid_slave_pos`): at most one GTID per domain,
/// such as `0-1-42,1-2-7`. The empty string is the empty position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MariaDbGtidList {
    by_domain: BTreeMap<u32, MariaDbGtid>,
}

impl MariaDbGtidList {
    /// The GTIDs, ordered by domain.
    pub fn gtids(&self) -> impl Iterator<Item = &MariaDbGtid> {
        self.by_domain.values()
    }

    /// Whether the position has no GTID at all.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// Whether every transaction covered by `other` is also covered by `self` (per domain,
    /// `self`'s sequence is at least `other`'s).
    pub fn contains(&self, other: &MariaDbGtidList) -> bool {
        other.by_domain.iter().all(|(d, g)| {
            self.by_domain
                .get(d)
                .is_some_and(|mine| mine.sequence >= g.sequence)
        })
    }
}

impl FromStr for MariaDbGtidList {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut by_domain = BTreeMap::new();
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Ok(MariaDbGtidList::default());
        }
        for part in trimmed.split(',') {
            let part = part.trim();
            let bad = |reason: &str| {
                Error::invalid("MariaDB GTID list", format!("{s:?}: {part:?} {reason}"))
            };
            let mut it = part.split('-');
            let (Some(d), Some(sv), Some(q), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(bad("is not domain-server-sequence"));
            };
            let num = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
            if !(num(d) && num(sv) && num(q)) {
                return Err(bad("has a non-numeric field"));
            }
            let gtid = MariaDbGtid {
                domain: d.parse().map_err(|_| bad("has a domain out of range"))?,
                server: sv
                    .parse()
                    .map_err(|_| bad("has a server id out of range"))?,
                sequence: q.parse().map_err(|_| bad("has a sequence out of range"))?,
            };
            if by_domain.insert(gtid.domain, gtid).is_some() {
                return Err(bad("repeats a domain"));
            }
        }
        Ok(MariaDbGtidList { by_domain })
    }
}

impl fmt::Display for MariaDbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.by_domain.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}-{}-{}", g.domain, g.server, g.sequence)?;
        }
        Ok(())
    }
}
string_serde!(MariaDbGtidList);

/// A MySQL GTID set (`gtid_executed`), such as
/// `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,...` (tagged GTIDs of 8.4,
/// `uuid:tag:1-5`, are accepted). Whitespace and newlines the server inserts are ignored; UUIDs are
/// lower-cased and intervals normalised (sorted, merged).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MysqlGtidSet {
    /// (uuid, tag) -> sorted, merged, inclusive intervals.
    sets: BTreeMap<(String, String), Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Whether every GTID in `other` is also in `self`.
    pub fn contains(&self, other: &MysqlGtidSet) -> bool {
        other.sets.iter().all(|(key, ivs)| {
            let Some(mine) = self.sets.get(key) else {
                return false;
            };
            ivs.iter()
                .all(|&(a, b)| mine.iter().any(|&(c, d)| c <= a && b <= d))
        })
    }

    /// The GTIDs of `self` that are not in `other`, as a set (empty when `other` contains
    /// `self`). Used to find errant transactions on a replica.
    pub fn difference(&self, other: &MysqlGtidSet) -> MysqlGtidSet {
        let mut out = BTreeMap::new();
        for (key, ivs) in &self.sets {
            let theirs = other.sets.get(key).cloned().unwrap_or_default();
            let mut rest = Vec::new();
            for &(mut a, b) in ivs {
                let mut covered = false;
                for &(c, d) in &theirs {
                    if d < a || c > b {
                        continue;
                    }
                    if c > a {
                        rest.push((a, c - 1));
                    }
                    // Past `d`; nothing is past u64::MAX (a saturating add kept it uncovered).
                    match d.checked_add(1) {
                        Some(next) if next <= b => a = next,
                        _ => {
                            covered = true;
                            break;
                        }
                    }
                }
                if !covered {
                    rest.push((a, b));
                }
            }
            if !rest.is_empty() {
                out.insert(key.clone(), rest);
            }
        }
        MysqlGtidSet { sets: out }
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_tag(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && s.len() <= 32
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl FromStr for MysqlGtidSet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let mut sets: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
        if compact.is_empty() {
            return Ok(MysqlGtidSet::default());
        }
        for part in compact.split(',') {
            let bad = |reason: &str| {
                Error::invalid("MySQL GTID set", format!("{s:?}: {part:?} {reason}"))
            };
            let mut fields = part.split(':');
            let uuid = fields.next().unwrap_or_default();
            if !is_uuid(uuid) {
                return Err(bad("does not start with a UUID"));
            }
            let uuid = uuid.to_ascii_lowercase();
            let mut tag = String::new();
            let mut any = false;
            for field in fields {
                if is_tag(field) {
                    tag = field.to_ascii_lowercase();
                    continue;
                }
                let (a, b) = match field.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (field, field),
                };
                let num = |t: &str| -> Result<u64> {
                    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("has an interval that is not numeric"));
                    }
                    t.parse().map_err(|_| bad("has a number out of range"))
                };
                let (a, b) = (num(a)?, num(b)?);
                if a == 0 || a > b {
                    return Err(bad("has an empty or zero-based interval"));
                }
                sets.entry((uuid.clone(), tag.clone()))
                    .or_default()
                    .push((a, b));
                any = true;
            }
            if !any {
                return Err(bad("has no interval"));
            }
        }
        for ivs in sets.values_mut() {
            ivs.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
            for &(a, b) in ivs.iter() {
                match merged.last_mut() {
                    Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            *ivs = merged;
        }
        Ok(MysqlGtidSet { sets })
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last_uuid: Option<&str> = None;
        for ((uuid, tag), ivs) in &self.sets {
            if last_uuid == Some(uuid.as_str()) {
                // Same UUID, another tag: continue the same member.
            } else {
                if last_uuid.is_some() {
                    f.write_str(",")?;
                }
                f.write_str(uuid)?;
                last_uuid = Some(uuid);
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for &(a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}
string_serde!(MysqlGtidSet);

/// A PostgreSQL write-ahead log location, `XXXXXXXX/XXXXXXXX` in hex. Compared as a 64-bit
/// number, never as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("PostgreSQL LSN", format!("{s:?}: {reason}"));
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| bad("expected HI/LO in hex"))?;
        let hex = |t: &str| -> Result<u64> {
            if t.is_empty() || t.len() > 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("each half must be 1 to 8 hex digits"));
            }
            u64::from_str_radix(t, 16).map_err(|_| bad("not hex"))
        };
        Ok(Lsn((hex(hi)? << 32) | hex(lo)?))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}
string_serde!(Lsn);

/// A PostgreSQL position: an LSN on a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WalPosition {
    /// The WAL location.
    pub lsn: Lsn,
    /// The timeline id (1 for a cluster that was never promoted).
    pub timeline: u32,
}

/// The position of a datastore core has no typed position for: text its backend defines,
/// parses and compares itself (a Redis backend might use `"<replid>:<offset>"`).
///
/// Core never orders opaque positions: "has this server reached it" is answered by the
/// backend's [`wait_for_txn`](crate::ReplicationStrategy::wait_for_txn), and
/// [`ReplicationStrategyExt::catch_up_with`](crate::ReplicationStrategyExt::catch_up_with)
/// refuses one of another datastore before asking. Serialized as
/// `{"datastore": "redis", "value": "..."}`, both in
/// [`ReplicationPosition::Opaque`] and in the snapshot document's `position` field.
///
/// `value` is 1 to [`OpaquePosition::MAX_LEN`] bytes without control characters (it ends up in
/// messages and logs); anything else about it is the backend's to check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct OpaquePosition {
    /// The datastore whose backend defines `value`.
    pub datastore: DatastoreKind,
    value: String,
}

impl OpaquePosition {
    /// The longest `value` accepted, in bytes.
    pub const MAX_LEN: usize = 4096;

    /// A position of `datastore` with the backend's text `value`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `value` is empty, longer than
    /// [`MAX_LEN`](OpaquePosition::MAX_LEN) bytes or holds a control character.
    pub fn new(datastore: DatastoreKind, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "position",
                format!(
                    "the {datastore} position must be 1 to {} bytes",
                    Self::MAX_LEN
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(Error::invalid(
                "position",
                format!("the {datastore} position holds a control character"),
            ));
        }
        Ok(OpaquePosition { datastore, value })
    }

    /// The backend's text.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for OpaquePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.datastore, self.value)
    }
}

impl<'de> Deserialize<'de> for OpaquePosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            datastore: DatastoreKind,
            value: String,
        }
        let raw = Raw::deserialize(d)?;
        OpaquePosition::new(raw.datastore, raw.value).map_err(serde::de::Error::custom)
    }
}

/// A transaction position of any supported datastore, as returned by
/// [`get_latest_txn_id`](crate::ReplicationStrategy::get_latest_txn_id) and accepted by
/// [`wait_for_txn`](crate::ReplicationStrategy::wait_for_txn).
///
/// Serialized externally tagged: `{"mariadb_gtid": "0-1-42"}`, `{"mysql_gtid": "uuid:1-5"}`,
/// `{"binlog": {"log_file": "...", "log_position": 4}}`, `{"postgresql_lsn": "0/3000060"}`,
/// `{"postgresql_wal": {"lsn": "0/3000060", "timeline": 1}}`,
/// `{"opaque": {"datastore": "redis", "value": "..."}}`.
///
/// Code that orders positions (a backend's `wait_for_txn`) handles the variants of its own
/// datastore and refuses the rest with [`Error::InvalidInput`]; core itself never compares
/// positions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplicationPosition {
    /// Binary log file and offset (either MySQL flavor, without GTIDs).
    Binlog(BinlogCoordinates),
    /// A MySQL GTID set.
    MysqlGtid(MysqlGtidSet),
    /// A MariaDB GTID position.
    MariadbGtid(MariaDbGtidList),
    /// A PostgreSQL LSN.
    PostgresqlLsn(Lsn),
    /// A PostgreSQL LSN with the timeline it was written on: lets a server that left that
    /// timeline (a promoted replica) tell that it will never reach a later position on it.
    PostgresqlWal(WalPosition),
    /// A position of a datastore core does not know, defined and compared by its backend.
    Opaque(OpaquePosition),
}

impl ReplicationPosition {
    /// The datastore the position belongs to, when the variant says: `None` for
    /// [`Binlog`](ReplicationPosition::Binlog), which both MySQL and MariaDB use.
    pub fn datastore(&self) -> Option<DatastoreKind> {
        match self {
            ReplicationPosition::Binlog(_) => None,
            ReplicationPosition::MysqlGtid(_) => Some(DatastoreKind::Mysql),
            ReplicationPosition::MariadbGtid(_) => Some(DatastoreKind::Mariadb),
            ReplicationPosition::PostgresqlLsn(_) | ReplicationPosition::PostgresqlWal(_) => {
                Some(DatastoreKind::Postgresql)
            }
            ReplicationPosition::Opaque(p) => Some(p.datastore),
        }
    }
}

impl fmt::Display for ReplicationPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicationPosition::Binlog(c) => write!(f, "{c}"),
            ReplicationPosition::MysqlGtid(g) => write!(f, "{g}"),
            ReplicationPosition::MariadbGtid(g) => write!(f, "{g}"),
            ReplicationPosition::PostgresqlLsn(l) => write!(f, "{l}"),
            ReplicationPosition::PostgresqlWal(w) => {
                write!(f, "{} on timeline {}", w.lsn, w.timeline)
            }
            ReplicationPosition::Opaque(p) => write!(f, "{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_file_rejects_paths_and_quotes() {
        assert!("mariadb-bin.000002".parse::<BinlogFile>().is_ok());
        for bad in [
            "",
            "../etc/passwd.1",
            "bin'log.1",
            "binlog",
            "binlog.",
            ".000001",
            "a b.1",
        ] {
            assert!(bad.parse::<BinlogFile>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mariadb_gtid_list_parses_and_compares() {
        let a: MariaDbGtidList = "0-1-42,1-2-7".parse().unwrap();
        assert_eq!(a.to_string(), "0-1-42,1-2-7");
        let b: MariaDbGtidList = "0-1-40".parse().unwrap();
        assert!(a.contains(&b));
        assert!(!b.contains(&a));
        assert!("".parse::<MariaDbGtidList>().unwrap().is_empty());
        for bad in [
            "0-1",
            "0-1-x",
            "0-1-2-3",
            "0-1-2,0-1-3",
            "a-b-c",
            "-1-1-1",
            "0-1-2;DROP",
        ] {
            assert!(bad.parse::<MariaDbGtidList>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mysql_gtid_set_normalises_and_finds_errant_transactions() {
        let s: MysqlGtidSet =
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,\n 3e11fa47-71ca-11e1-9e33-c80aa9429562:6"
                .parse()
                .unwrap();
        assert_eq!(s.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7");
        let replica: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9".parse().unwrap();
        assert!(!s.contains(&replica));
        assert_eq!(
            replica.difference(&s).to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:8-9"
        );
        assert!(replica.contains(&s));
        assert!(s.difference(&replica).is_empty());
        for bad in [
            "zz:1-5",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:5-1",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:0",
        ] {
            assert!(bad.parse::<MysqlGtidSet>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_gtid_set_ending_at_the_largest_number_minus_itself_is_empty() {
        let s: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:546-18446744073709551615"
            .parse()
            .unwrap();
        assert!(s.difference(&s).is_empty(), "{}", s.difference(&s));
        let head: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:546-600"
            .parse()
            .unwrap();
        assert_eq!(
            s.difference(&head).to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:601-18446744073709551615"
        );
        assert!(head.difference(&s).is_empty());
    }

    #[test]
    fn lsn_parses_and_orders_numerically() {
        let a: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(a.0, 0x16_B374_D848);
        assert_eq!(a.to_string(), "16/B374D848");
        let b: Lsn = "0/FFFFFFFF".parse().unwrap();
        let c: Lsn = "1/0".parse().unwrap();
        assert!(b < c, "compared as numbers across the 32-bit boundary");
        for bad in ["", "16", "16/", "/1", "G/1", "123456789/0", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} accepted");
        }
    }
}
