//! Entry points for the `trove-guest-fuzz` harness (feature `fuzzing`): thin wrappers over this
//! crate's private parsers of text a server or a backup sent. Not an API.

use trove_guest_core::ReplicationStatus;

use crate::client::Row;
use crate::flavor::FlavorKind;

/// Interprets a replica status row (`SHOW SLAVE STATUS` / `SHOW REPLICA STATUS`) given as
/// `(column, value)` pairs, as `replication_status` does for a server of `kind`.
pub fn replica_status(columns: &[(String, Option<String>)], kind: FlavorKind) -> ReplicationStatus {
    let mut st = ReplicationStatus::default();
    crate::status::replica_fields(&mut st, &Row::from_columns(columns), kind);
    st
}
