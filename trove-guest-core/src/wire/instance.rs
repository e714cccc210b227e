use serde::{Deserialize, Serialize};

/// `POST /instances` body: `{"instance": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCreateRequest {
    /// The instance to create.
    pub instance: InstanceCreate,
}

/// The instance-create request; `slaveOf` names the master of a new replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCreate {
    /// Instance name.
    pub name: String,
    /// Datastore type and version.
    pub datastore: DatastoreRef,
    /// The master's instance id, for a replica.
    #[serde(rename = "slaveOf", default, skip_serializing_if = "Option::is_none")]
    pub slave_of: Option<String>,
    /// Configuration group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    /// Flavor id.
    #[serde(rename = "flavorRef")]
    pub flavor_ref: String,
    /// Volume to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Volume>,
}

/// `{"type": "mysql", "version": "5.5"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatastoreRef {
    /// Datastore type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Datastore version.
    pub version: String,
}

/// `{"size": 1}` (GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Size in GiB.
    pub size: u64,
}

/// A hypermedia link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Target URL.
    pub href: String,
    /// Relation (`self`, `bookmark`).
    pub rel: String,
}

/// A reference to another resource: `{"id": ..., "links": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    /// Resource id.
    pub id: String,
    /// Links to it.
    #[serde(default)]
    pub links: Vec<Link>,
}

/// The instance-create response: `{"instance": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCreateResponse {
    /// The created instance.
    pub instance: InstanceView,
}

/// An instance as the API shows it, with `slaveOf` as a reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// `BUILD`, `ACTIVE`, ...
    pub status: String,
    /// Instance id.
    pub id: String,
    /// Instance name.
    pub name: String,
    /// Creation time.
    pub created: String,
    /// Last update time.
    pub updated: String,
    /// Links to the instance.
    pub links: Vec<Link>,
    /// Datastore type and version.
    pub datastore: DatastoreRef,
    /// The master, for a replica.
    #[serde(rename = "slaveOf", default, skip_serializing_if = "Option::is_none")]
    pub slave_of: Option<ResourceRef>,
    /// Configuration group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<ResourceRef>,
    /// Flavor.
    pub flavor: ResourceRef,
    /// Volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Volume>,
}

/// `POST /instances/{id}/action` bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstanceAction {
    /// `{"detach_replication": {}}`.
    DetachReplication(DetachReplication),
}

/// The (empty) body of the `detach_replication` action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachReplication {}
