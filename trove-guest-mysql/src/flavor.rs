//! Which server this is: MariaDB or MySQL, and which version, detected from the server itself.

use std::fmt;

use trove_guest_core::{DatastoreKind, Error, Result};

/// The server family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlavorKind {
    /// MariaDB (10.6 and later, 11.x).
    MariaDb,
    /// Oracle MySQL or Percona Server (5.7, 8.0, 8.4 and later).
    Mysql,
}

/// A server version `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl Version {
    /// A version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses the leading `major.minor.patch` of a version string such as
    /// `10.11.19-MariaDB-0+deb12u1-log` or `8.0.36-28`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the string does not start with three dotted numbers.
    pub fn parse_prefix(s: &str) -> Result<Self> {
        let head: String = s
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = head.split('.').filter(|p| !p.is_empty());
        let mut num = || -> Option<u32> { it.next()?.parse().ok() };
        match (num(), num(), num()) {
            (Some(a), Some(b), Some(c)) => Ok(Version::new(a, b, c)),
            _ => Err(Error::invalid(
                "server version",
                format!("{s:?} does not start with major.minor.patch"),
            )),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A supported server flavor and version; decides which SQL and which backup tool are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flavor {
    /// MariaDB or MySQL.
    pub kind: FlavorKind,
    /// The server version.
    pub version: Version,
}

impl Flavor {
    /// MariaDB `major.minor.patch`.
    pub const fn mariadb(major: u32, minor: u32, patch: u32) -> Self {
        Flavor {
            kind: FlavorKind::MariaDb,
            version: Version::new(major, minor, patch),
        }
    }

    /// MySQL `major.minor.patch`.
    pub const fn mysql(major: u32, minor: u32, patch: u32) -> Self {
        Flavor {
            kind: FlavorKind::Mysql,
            version: Version::new(major, minor, patch),
        }
    }

    /// Detects the flavor from `SELECT VERSION()` and `@@version_comment`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an unreadable version; [`Error::Unsupported`] for MariaDB
    /// before 10.6 or MySQL before 5.7.
    pub fn detect(version: &str, version_comment: &str) -> Result<Self> {
        let v = Version::parse_prefix(version)?;
        let is_mariadb = version.to_ascii_lowercase().contains("mariadb")
            || version_comment.to_ascii_lowercase().contains("mariadb")
            || v.major >= 10;
        let flavor = Flavor {
            kind: if is_mariadb {
                FlavorKind::MariaDb
            } else {
                FlavorKind::Mysql
            },
            version: v,
        };
        let supported = match flavor.kind {
            FlavorKind::MariaDb => v >= Version::new(10, 6, 0),
            FlavorKind::Mysql => v >= Version::new(5, 7, 0),
        };
        if supported {
            Ok(flavor)
        } else {
            Err(Error::unsupported(format!(
                "{} {v}: MariaDB 10.6+ or MySQL 5.7+ is required",
                flavor.datastore()
            )))
        }
    }

    /// The datastore name used in snapshot documents.
    pub fn datastore(&self) -> DatastoreKind {
        match self.kind {
            FlavorKind::MariaDb => DatastoreKind::Mariadb,
            FlavorKind::Mysql => DatastoreKind::Mysql,
        }
    }

    /// The release series as the control plane names it, such as `mariadb-10.11` or `mysql-8.0`.
    pub fn datastore_version(&self) -> String {
        format!(
            "{}-{}.{}",
            self.datastore(),
            self.version.major,
            self.version.minor
        )
    }

    /// Whether this is MariaDB.
    pub fn is_mariadb(&self) -> bool {
        self.kind == FlavorKind::MariaDb
    }

    fn mysql_at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.kind == FlavorKind::Mysql && self.version >= Version::new(major, minor, patch)
    }

    /// MySQL 8.0.23+: `CHANGE REPLICATION SOURCE TO` with `SOURCE_*` options.
    pub fn uses_source_syntax(&self) -> bool {
        self.mysql_at_least(8, 0, 23)
    }

    /// MySQL 8.0.22+: `START/STOP/RESET REPLICA`, `SHOW REPLICA STATUS`.
    pub fn uses_replica_syntax(&self) -> bool {
        self.mysql_at_least(8, 0, 22)
    }

    /// MySQL 8.2+: `SHOW BINARY LOG STATUS` and `RESET BINARY LOGS AND GTIDS` (the old
    /// `MASTER` forms are gone in 8.4).
    pub fn uses_binary_log_syntax(&self) -> bool {
        self.mysql_at_least(8, 2, 0)
    }

    /// MySQL 8.0.26+: `SOURCE_POS_WAIT`.
    pub fn uses_source_pos_wait(&self) -> bool {
        self.mysql_at_least(8, 0, 26)
    }

    /// MySQL 8.0+: `caching_sha2_password` accounts need the source's public key over a
    /// non-TLS replication connection.
    pub fn needs_public_key(&self) -> bool {
        self.mysql_at_least(8, 0, 0)
    }

    /// MySQL 5.7+: `super_read_only` exists.
    pub fn has_super_read_only(&self) -> bool {
        self.kind == FlavorKind::Mysql
    }

    /// The physical backup tool: `mariabackup` or `xtrabackup`.
    pub fn backup_tool(&self) -> &'static str {
        match self.kind {
            FlavorKind::MariaDb => "mariabackup",
            FlavorKind::Mysql => "xtrabackup",
        }
    }

    /// The xbstream extractor: `mbstream` or `xbstream`.
    pub fn stream_tool(&self) -> &'static str {
        match self.kind {
            FlavorKind::MariaDb => "mbstream",
            FlavorKind::Mysql => "xbstream",
        }
    }

    /// Checks that a snapshot of `datastore` taken from server version `server_version` (or,
    /// when absent, release series `datastore_version` such as `mariadb-10.11`) can be restored
    /// on this server: same datastore and same `major.minor` series (physical backups are
    /// prepared and started only by the same series).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] naming both sides.
    pub fn check_restorable(
        &self,
        datastore: DatastoreKind,
        datastore_version: &str,
        server_version: Option<&str>,
    ) -> Result<()> {
        if datastore != self.datastore() {
            return Err(Error::Incompatible {
                reason: format!(
                    "snapshot of {datastore} cannot be restored on {} {}",
                    self.datastore(),
                    self.version
                ),
            });
        }
        let theirs = match server_version {
            Some(v) => Version::parse_prefix(v).map(|v| (v.major, v.minor)).ok(),
            None => None,
        }
        .or_else(|| {
            let series = datastore_version.rsplit('-').next()?;
            let mut it = series.split('.');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        });
        let Some((major, minor)) = theirs else {
            return Err(Error::Incompatible {
                reason: format!("snapshot version {datastore_version:?} is not readable"),
            });
        };
        if (major, minor) != (self.version.major, self.version.minor) {
            return Err(Error::Incompatible {
                reason: format!(
                    "snapshot of {datastore} {major}.{minor} cannot be restored on {} {}: \
                     physical snapshots need the same major.minor series",
                    self.datastore(),
                    self.version
                ),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.datastore(), self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_flavors_from_version_strings() {
        let m = Flavor::detect("10.11.19-MariaDB-0+deb12u1-log", "Debian 12").unwrap();
        assert_eq!(m, Flavor::mariadb(10, 11, 19));
        assert_eq!(m.datastore_version(), "mariadb-10.11");
        assert_eq!(
            Flavor::detect("11.4.2-MariaDB", "").unwrap(),
            Flavor::mariadb(11, 4, 2)
        );
        assert_eq!(
            Flavor::detect("8.0.36-28", "Percona Server (GPL), Release 28").unwrap(),
            Flavor::mysql(8, 0, 36)
        );
        assert_eq!(
            Flavor::detect("5.7.44-log", "MySQL Community Server (GPL)").unwrap(),
            Flavor::mysql(5, 7, 44)
        );
        assert_eq!(
            Flavor::detect("8.4.3", "MySQL Community Server - GPL")
                .unwrap()
                .datastore_version(),
            "mysql-8.4"
        );
    }

    #[test]
    fn refuses_old_or_garbled_versions() {
        assert!(matches!(
            Flavor::detect("10.5.9-MariaDB", ""),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            Flavor::detect("5.6.51", "MySQL"),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            Flavor::detect("garbage", ""),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn syntax_thresholds_follow_mysql_releases() {
        assert!(!Flavor::mysql(8, 0, 21).uses_replica_syntax());
        assert!(Flavor::mysql(8, 0, 22).uses_replica_syntax());
        assert!(!Flavor::mysql(8, 0, 22).uses_source_syntax());
        assert!(Flavor::mysql(8, 0, 23).uses_source_syntax());
        assert!(Flavor::mysql(8, 4, 0).uses_binary_log_syntax());
        assert!(!Flavor::mysql(8, 0, 40).uses_binary_log_syntax());
        assert!(!Flavor::mariadb(11, 4, 0).uses_source_syntax());
    }

    #[test]
    fn restore_needs_the_same_datastore_and_series() {
        let here = Flavor::mariadb(10, 11, 19);
        here.check_restorable(
            DatastoreKind::Mariadb,
            "mariadb-10.11",
            Some("10.11.6-MariaDB"),
        )
        .unwrap();
        here.check_restorable(DatastoreKind::Mariadb, "mariadb-10.11", None)
            .unwrap();
        for (ds, dv, sv) in [
            (DatastoreKind::Mysql, "mysql-8.0", Some("8.0.36")),
            (
                DatastoreKind::Mariadb,
                "mariadb-11.4",
                Some("11.4.2-MariaDB"),
            ),
            (DatastoreKind::Mariadb, "mariadb-10.6", None),
            (DatastoreKind::Postgresql, "postgresql-15", None),
            (DatastoreKind::Mariadb, "weird", None),
        ] {
            assert!(
                matches!(
                    here.check_restorable(ds, dv, sv),
                    Err(Error::Incompatible { .. })
                ),
                "{ds} {dv} accepted"
            );
        }
    }
}
