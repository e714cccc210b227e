//! The JSON documents of the replication design, read and written exactly.
//!
//! * [`SnapshotDocument`]: what `get_replication_snapshot` returns and `attach_replication_slave`
//!   takes (`master`, `dataset`, `binlog_position`, plus additive fields).
//! * [`TopologyDocument`]: the `topology` document with its `members`.
//! * [`InstanceCreateRequest`] / [`InstanceCreateResponse`]: instance create with `slaveOf`.
//! * [`InstanceAction`]: the `detach_replication` action.
//! * [`DatastoreKind`]: the datastore named in them; any well-formed name parses, so a datastore
//!   core does not know ([`DatastoreKind::Other`]) travels with its own position (the snapshot
//!   document's `position`) and its own topology section (kept in
//!   [`TopologyMember::extra`] under its name).
//!
//! Additions beyond the seed's fields are optional and skipped when absent, so a reader of the
//! seed's format reads our documents and we read theirs. Unknown fields are kept in `extra` maps
//! where a document is likely to grow, so they survive a round trip.

mod instance;
mod kind;
mod snapshot;
mod topology;

pub use instance::{
    DatastoreRef, DetachReplication, InstanceAction, InstanceCreate, InstanceCreateRequest,
    InstanceCreateResponse, InstanceView, Link, ResourceRef, Volume,
};
pub use kind::{DatastoreKind, DatastoreName};
pub use snapshot::{
    BinlogPosition, Dataset, MasterAddress, ReplicationGrant, ReplicationTls, SnapshotDocument,
};
pub use topology::{MemberRef, MemberReplication, Topology, TopologyDocument, TopologyMember};
