//! The datastore a document or a strategy is about: the three core knows by name, and any other
//! a backend crate brings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The datastore a snapshot was taken from (`dataset.datastore`), a strategy serves, or a
/// position belongs to.
///
/// Serialized as its lowercase name (`"mysql"`, `"mariadb"`, `"postgresql"`, or the name of a
/// datastore core does not know, such as `"redis"`). Parsing maps core's names (and the alias
/// `"postgres"`) to their variants and any other valid name to [`DatastoreKind::Other`], so a
/// backend in its own crate needs no change to core: it serves
/// `"redis".parse::<DatastoreKind>()?`. A name is 1 to [`DatastoreName::MAX_LEN`] bytes of
/// `[a-z0-9_-]`, starting with a letter.
///
/// The type stays `Copy`: the name of an [`Other`](DatastoreKind::Other) datastore is held
/// inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatastoreKind {
    /// Oracle MySQL (and Percona Server).
    Mysql,
    /// MariaDB.
    Mariadb,
    /// PostgreSQL.
    Postgresql,
    /// A datastore core has no variant for, named by its backend (never one of core's names:
    /// those parse to their own variants).
    Other(DatastoreName),
}

impl DatastoreKind {
    /// The lowercase name used on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            DatastoreKind::Mysql => "mysql",
            DatastoreKind::Mariadb => "mariadb",
            DatastoreKind::Postgresql => "postgresql",
            DatastoreKind::Other(name) => name.as_str(),
        }
    }

    /// Whether this is a datastore core has its own variant for.
    pub fn is_known(&self) -> bool {
        !matches!(self, DatastoreKind::Other(_))
    }

    fn known(name: &str) -> Option<DatastoreKind> {
        match name {
            "mysql" => Some(DatastoreKind::Mysql),
            "mariadb" => Some(DatastoreKind::Mariadb),
            "postgresql" | "postgres" => Some(DatastoreKind::Postgresql),
            _ => None,
        }
    }
}

impl fmt::Display for DatastoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatastoreKind {
    type Err = Error;
    /// Core's names (and `postgres`) to their variants, any other valid name to
    /// [`DatastoreKind::Other`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a name that is empty, too long or not `[a-z0-9_-]` starting
    /// with a letter.
    fn from_str(s: &str) -> Result<Self> {
        match DatastoreKind::known(s) {
            Some(k) => Ok(k),
            None => DatastoreName::new(s).map(DatastoreKind::Other),
        }
    }
}

impl From<DatastoreName> for DatastoreKind {
    fn from(name: DatastoreName) -> Self {
        DatastoreKind::Other(name)
    }
}

impl Serialize for DatastoreKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DatastoreKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DatastoreKind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a datastore name")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                v.parse().map_err(|e: Error| E::custom(e))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// The name of a datastore core does not know (the payload of [`DatastoreKind::Other`]):
/// 1 to [`MAX_LEN`](DatastoreName::MAX_LEN) bytes of lowercase ASCII letters, digits, `_` and
/// `-`, starting with a letter, and not one of core's own names. Held inline, so it is `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatastoreName {
    len: u8,
    bytes: [u8; DatastoreName::MAX_LEN],
}

impl DatastoreName {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 32;

    /// Checks `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `name` is not a valid datastore name, or is one of core's own
    /// names (`mysql`, `mariadb`, `postgresql`, `postgres`: use [`DatastoreKind::from_str`],
    /// which gives their variants).
    pub fn new(name: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Error::invalid(
                "datastore",
                format!("{:?} is not a datastore name: {reason}", truncated(name)),
            )
        };
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(bad(&format!("must be 1 to {} bytes", Self::MAX_LEN)));
        }
        if !name.as_bytes()[0].is_ascii_lowercase() {
            return Err(bad("must start with a lowercase letter"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(bad(
                "only lowercase letters, digits, '_' and '-' are allowed",
            ));
        }
        if DatastoreKind::known(name).is_some() {
            return Err(bad("core knows it: parse it as a DatastoreKind"));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(DatastoreName {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// At most 64 characters of untrusted input, for an error message.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Debug for DatastoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for DatastoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatastoreName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DatastoreName::new(s)
    }
}

impl PartialEq<str> for DatastoreName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for DatastoreName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_parse_to_their_variants_and_others_to_other() {
        assert_eq!(
            "mariadb".parse::<DatastoreKind>().unwrap(),
            DatastoreKind::Mariadb
        );
        assert_eq!(
            "postgres".parse::<DatastoreKind>().unwrap(),
            DatastoreKind::Postgresql
        );
        let redis: DatastoreKind = "redis".parse().unwrap();
        assert!(matches!(redis, DatastoreKind::Other(n) if n == "redis"));
        assert_eq!(redis.to_string(), "redis");
        assert!(!redis.is_known());
    }

    #[test]
    fn invalid_names_are_refused() {
        let long = "a".repeat(DatastoreName::MAX_LEN + 1);
        for bad in [
            "",
            "Redis",
            "re dis",
            "1redis",
            "-x",
            "redis;drop",
            "ré",
            long.as_str(),
        ] {
            assert!(bad.parse::<DatastoreKind>().is_err(), "{bad:?} accepted");
        }
        assert!(
            "a".repeat(DatastoreName::MAX_LEN)
                .parse::<DatastoreKind>()
                .is_ok()
        );
    }

    #[test]
    fn a_name_core_knows_is_never_an_other_name() {
        for known in ["mysql", "mariadb", "postgresql", "postgres"] {
            assert!(DatastoreName::new(known).is_err(), "{known} accepted");
        }
    }
}
