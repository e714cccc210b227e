use serde::{Deserialize, Serialize};

/// `{"topology": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyDocument {
    /// The topology.
    pub topology: Topology,
}

/// The members of a replication set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Master first, then replicas.
    pub members: Vec<TopologyMember>,
}

/// One instance of the replication set. A master carries no datastore section; a replica carries
/// one named after its datastore (`mysql`, `mariadb` or `postgresql`).
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
}

/// How a replica replicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReplication {
    /// The masters it replicates from.
    pub slave_of: Vec<MemberRef>,
    /// Whether it refuses client writes.
    pub read_only: bool,
}

/// A reference to another member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRef {
    /// Instance id.
    pub id: String,
}
