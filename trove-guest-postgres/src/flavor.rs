//! What differs between the PostgreSQL major versions this crate supports (12 and later), in one
//! place: [`ServerVersion`] is parsed from `server_version_num`, and its [`Flavor`] picks the
//! setting, catalog column and tool option of that version.
//!
//! | | 12 | 13 and later |
//! |---|---|---|
//! | WAL kept for `pg_rewind` | `wal_keep_segments` (segments) | `wal_keep_size` (MB) |
//! | WAL receiver's flushed position | `pg_stat_wal_receiver.received_lsn` | `.flushed_lsn` |
//! | `pg_basebackup --no-manifest` | no such option (no manifests) | passed |
//! | WAL a slot may hold | unlimited | `max_slot_wal_keep_size` (set on masters) |
//! | `primary_conninfo` / `primary_slot_name` | need a restart | reloadable |
//!
//! From 14 on, a standby's settings add `recovery_init_sync_method = syncfs` (`fsync` when its
//! data directory was synced while staged)
//! ([`ServerVersion::recovery_init_sync_method`]).
//!
//! Everything else this crate uses exists unchanged from 12 on (`standby.signal`,
//! `pg_promote(wait, seconds)`, `pg_copy_physical_replication_slot`, the four functions
//! `pg_rewind` needs, `pg_stat_wal_receiver.sender_host`, `pg_hba_file_rules`). Older servers
//! are refused with [`Error::Unsupported`].

use trove_guest_core::{Error, Result};

use crate::sql;

/// The oldest supported `server_version_num`.
const MIN_VERSION_NUM: i64 = 120_000;

/// A server's version, from `server_version_num` (`150004` is 15.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ServerVersion {
    num: u32,
}

impl ServerVersion {
    /// Parses `server_version_num`.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for versions before 12 (and nonsense numbers).
    pub(crate) fn from_num(num: i64) -> Result<Self> {
        if !(MIN_VERSION_NUM..1_000_000).contains(&num) {
            return Err(Error::unsupported(format!(
                "PostgreSQL with server_version_num {num}: streaming replication here needs \
                 PostgreSQL 12 or later"
            )));
        }
        Ok(ServerVersion { num: num as u32 })
    }

    /// The major version (`15`).
    pub(crate) fn major(self) -> u32 {
        self.num / 10000
    }

    /// The version of a data directory whose `PG_VERSION` says `major`.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] before 12.
    pub(crate) fn from_major(major: u32) -> Result<Self> {
        Self::from_num(i64::from(major) * 10000)
    }

    /// `recovery_init_sync_method` for a standby (14 and later, on Linux). PostgreSQL syncs a
    /// restored data directory before recovery because of its `backup_label`. When the data is
    /// not on disk yet (`data_synced` false) that is one `syncfs` per file system instead of an
    /// `fsync` of every file, durable all the same (Linux reports write-back errors to `syncfs`
    /// since 5.8). When staging already synced every file (`data_synced`), `fsync` finds only
    /// clean files, where `syncfs` would also flush everything else dirty on the file system (a
    /// transient snapshot store, say). `None` where the setting or the method does not exist.
    pub(crate) fn recovery_init_sync_method(self, data_synced: bool) -> Option<&'static str> {
        (self.major() >= 14 && cfg!(target_os = "linux")).then_some(if data_synced {
            "fsync"
        } else {
            "syncfs"
        })
    }

    /// What this version does differently.
    pub(crate) fn flavor(self) -> Flavor {
        if self.major() == 12 {
            Flavor::Pg12
        } else {
            Flavor::Pg13Plus
        }
    }
}

/// The version-specific behaviour; every choice that depends on the server version is a method
/// here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// PostgreSQL 12: `wal_keep_segments`, `received_lsn`, no backup manifests, standby
    /// connection settings only at server start.
    Pg12,
    /// PostgreSQL 13 and later (tested live on 15): `wal_keep_size`, `flushed_lsn`, manifests.
    Pg13Plus,
}

impl Flavor {
    /// The setting that keeps WAL for `pg_rewind`.
    pub(crate) fn wal_keep_setting(self) -> &'static str {
        match self {
            Flavor::Pg12 => "wal_keep_segments",
            Flavor::Pg13Plus => "wal_keep_size",
        }
    }

    /// The value of [`Flavor::wal_keep_setting`] keeping at least `keep_mb` MiB of WAL, given
    /// the server's WAL segment size in bytes (configuration syntax).
    pub(crate) fn wal_keep_value(self, keep_mb: u64, segment_bytes: u64) -> String {
        match self {
            Flavor::Pg12 => {
                let seg = segment_bytes.max(1);
                keep_mb.saturating_mul(1 << 20).div_ceil(seg).to_string()
            }
            Flavor::Pg13Plus => format!("'{keep_mb}MB'"),
        }
    }

    /// The settings the master override file may set (and demote reverts).
    pub(crate) fn master_settings(self) -> Vec<&'static str> {
        let mut v = vec![
            "wal_level",
            "max_wal_senders",
            "max_replication_slots",
            "wal_log_hints",
            self.wal_keep_setting(),
        ];
        if let Some(cap) = self.slot_wal_cap_setting() {
            v.push(cap);
        }
        v
    }

    /// The setting capping the WAL a replication slot may hold (13+; before, a slot keeps WAL
    /// without limit).
    pub(crate) fn slot_wal_cap_setting(self) -> Option<&'static str> {
        match self {
            Flavor::Pg12 => None,
            Flavor::Pg13Plus => Some("max_slot_wal_keep_size"),
        }
    }

    /// The WAL receiver query: `(status, received_tli, flushed LSN, sender_host, sender_port,
    /// slot_name)`.
    pub(crate) fn wal_receiver_sql(self) -> &'static str {
        match self {
            Flavor::Pg12 => sql::WAL_RECEIVER_12,
            Flavor::Pg13Plus => sql::WAL_RECEIVER,
        }
    }

    /// `pg_basebackup` options after the connection string: a tar stream on stdout with the
    /// WAL fetched into it, fast checkpoint, verbose (for the WAL range), no manifest (13+).
    pub(crate) fn basebackup_options(self) -> Vec<&'static str> {
        let mut v = vec![
            "-D",
            "-",
            "--format=tar",
            "--wal-method=fetch",
            "--checkpoint=fast",
        ];
        if self == Flavor::Pg13Plus {
            v.push("--no-manifest");
        }
        v.push("--verbose");
        v
    }

    /// Whether `primary_conninfo` and `primary_slot_name` take effect on reload (13+); before,
    /// only at server start, which is when this crate writes them.
    pub(crate) fn standby_settings_reloadable(self) -> bool {
        self == Flavor::Pg13Plus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_12_are_refused() {
        for bad in [0, 90624, 110022, 119999, 1_000_000] {
            let err = ServerVersion::from_num(bad).unwrap_err();
            assert!(matches!(err, Error::Unsupported { .. }), "{bad}: {err}");
        }
        assert_eq!(ServerVersion::from_num(120000).unwrap().major(), 12);
        assert_eq!(
            ServerVersion::from_num(120017).unwrap().flavor(),
            Flavor::Pg12
        );
        for (num, major) in [(130000, 13), (140011, 14), (150004, 15), (160002, 16)] {
            let v = ServerVersion::from_num(num).unwrap();
            assert_eq!((v.major(), v.flavor()), (major, Flavor::Pg13Plus));
        }
    }

    #[test]
    fn standbys_sync_their_restored_data_directory_with_syncfs_from_14_on() {
        for (major, method) in [
            (12, None),
            (13, None),
            (14, Some("syncfs")),
            (16, Some("syncfs")),
        ] {
            let v = ServerVersion::from_major(major).unwrap();
            assert_eq!(v.major(), major);
            assert_eq!(v.recovery_init_sync_method(false), method, "{major}");
            let synced = method.map(|_| "fsync");
            assert_eq!(v.recovery_init_sync_method(true), synced, "{major}");
        }
        assert!(ServerVersion::from_major(11).is_err());
    }

    #[test]
    fn wal_keep_segments_round_up_to_whole_segments() {
        assert_eq!(Flavor::Pg12.wal_keep_value(1024, 16 << 20), "64");
        assert_eq!(Flavor::Pg12.wal_keep_value(100, 16 << 20), "7");
        assert_eq!(Flavor::Pg12.wal_keep_value(100, 64 << 20), "2");
        assert_eq!(Flavor::Pg12.wal_keep_value(0, 16 << 20), "0");
        assert_eq!(Flavor::Pg13Plus.wal_keep_value(1024, 16 << 20), "'1024MB'");
    }
}
