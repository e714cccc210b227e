use serde::{Deserialize, Serialize};

use super::kind::DatastoreKind;
use crate::error::{Error, Result};

/// `{"topology": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyDocument {
    /// The topology.
    pub topology: Topology,
    /// Fields this version does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TopologyDocument {
    /// `{"topology": topology}`.
    pub fn new(topology: Topology) -> Self {
        TopologyDocument {
            topology,
            extra: serde_json::Map::new(),
        }
    }
}

/// The members of a replication set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Master first, then replicas.
    pub members: Vec<TopologyMember>,
    /// Fields this version does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Topology {
    /// A topology of `members` (master first).
    pub fn new(members: Vec<TopologyMember>) -> Self {
        Topology {
            members,
            extra: serde_json::Map::new(),
        }
    }
}

/// The fields of a member that are not replica sections.
const MEMBER_FIELDS: [&str; 2] = ["id", "name"];

/// One instance of the replication set. A master carries no datastore section; a replica carries
/// one named after its datastore: `mysql`, `mariadb` or `postgresql` in their typed fields, the
/// section of any other datastore (`"redis": {...}`) in `extra` under its name. Use
/// [`replication`](TopologyMember::replication) and
/// [`set_replication`](TopologyMember::set_replication) to reach a section by
/// [`DatastoreKind`] whatever the datastore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyMember {
    /// Instance id.
    pub id: String,
    /// Instance name.
    pub name: String,
    /// MySQL replica section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MemberReplication>,
    /// MariaDB replica section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mariadb: Option<MemberReplication>,
    /// PostgreSQL replica section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<MemberReplication>,
    /// Fields this version does not know, among them the replica sections of datastores core
    /// has no field for, kept for the round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TopologyMember {
    /// A member without a replica section (a master).
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        TopologyMember {
            id: id.into(),
            name: name.into(),
            mysql: None,
            mariadb: None,
            postgresql: None,
            extra: serde_json::Map::new(),
        }
    }

    /// The replica section of `kind`, if the member has one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the section of a datastore core does not know (read from
    /// `extra`) is not a replica section.
    pub fn replication(&self, kind: &DatastoreKind) -> Result<Option<MemberReplication>> {
        match kind {
            DatastoreKind::Mysql => Ok(self.mysql.clone()),
            DatastoreKind::Mariadb => Ok(self.mariadb.clone()),
            DatastoreKind::Postgresql => Ok(self.postgresql.clone()),
            DatastoreKind::Other(name) => match self.extra.get(name.as_str()) {
                None => Ok(None),
                Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                    Error::invalid(
                        format!("topology member {:?} section {name}", self.id),
                        e.to_string(),
                    )
                }),
            },
        }
    }

    /// Sets (or with `None` removes) the replica section of `kind`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a datastore named like a member's own field (`id`, `name`),
    /// whose section the document cannot hold.
    pub fn set_replication(
        &mut self,
        kind: &DatastoreKind,
        section: Option<MemberReplication>,
    ) -> Result<()> {
        match kind {
            DatastoreKind::Mysql => self.mysql = section,
            DatastoreKind::Mariadb => self.mariadb = section,
            DatastoreKind::Postgresql => self.postgresql = section,
            DatastoreKind::Other(name) => {
                let key = name.as_str();
                if MEMBER_FIELDS.contains(&key) {
                    return Err(Error::invalid(
                        "topology member",
                        format!("a datastore named {key:?} cannot have a replica section"),
                    ));
                }
                match section {
                    Some(s) => {
                        let value = serde_json::to_value(s)
                            .map_err(|e| Error::invalid("topology member", e.to_string()))?;
                        self.extra.insert(key.to_owned(), value);
                    }
                    None => {
                        self.extra.remove(key);
                    }
                }
            }
        }
        Ok(())
    }
}

/// How a replica replicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReplication {
    /// The masters it replicates from.
    pub slave_of: Vec<MemberRef>,
    /// Whether it refuses client writes.
    pub read_only: bool,
    /// Fields this version does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MemberReplication {
    /// A section replicating from `slave_of`.
    pub fn new(slave_of: Vec<MemberRef>, read_only: bool) -> Self {
        MemberReplication {
            slave_of,
            read_only,
            extra: serde_json::Map::new(),
        }
    }
}

/// A reference to another member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRef {
    /// Instance id.
    pub id: String,
}
