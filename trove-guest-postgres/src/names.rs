//! Names of the roles and slots this crate makes, derived from replica ids and checked before use.

use trove_guest_core::{Error, Result, Secret};

/// The NOLOGIN group every replication login belongs to (hba entries and rewind grants name it).
pub(crate) const GROUP_ROLE: &str = "trove_replication";
/// Prefix of per-replica replication logins.
pub(crate) const ROLE_PREFIX: &str = "trove_repl_";
/// Prefix of per-replica physical slots.
pub(crate) const SLOT_PREFIX: &str = "trove_slot_";

/// Longest replica id kept in names (PostgreSQL names are at most 63 bytes, and a replica's
/// own slot appends `_<server id>` to the snapshot's).
const MAX_ID: usize = 40;

/// A replica id normalised for use in role and slot names: lowercase letters, digits and `_`
/// (`-` becomes `_`; upper case is lowered).
///
/// # Errors
///
/// [`Error::InvalidInput`] for an empty id, one longer than 48 bytes, or other characters.
pub(crate) fn replica_key(id: &str) -> Result<String> {
    let key: String = id
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if key.is_empty()
        || key.len() > MAX_ID
        || !key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::invalid(
            "replica id",
            format!("{id:?} must be 1 to {MAX_ID} letters, digits, '_' or '-'"),
        ));
    }
    Ok(key)
}

/// A random replica id.
pub(crate) fn random_replica_key() -> String {
    Secret::random(12).expose().to_ascii_lowercase()
}

/// The replication login of a replica.
pub(crate) fn role_name(key: &str) -> String {
    format!("{ROLE_PREFIX}{key}")
}

/// The slot made with a snapshot (it keeps the WAL from before the backup until a replica has
/// its own copy).
pub(crate) fn slot_name(key: &str) -> String {
    format!("{SLOT_PREFIX}{key}")
}

/// The slot a replica with `server_id` streams from: a copy of the snapshot's slot `snapshot`.
pub(crate) fn replica_slot_name(snapshot: &str, server_id: u32) -> String {
    format!("{snapshot}_{server_id}")
}

/// The snapshot slot a replica's own slot was copied from, and the replica key shared with
/// the login (`trove_slot_<key>_<server id>` -> `trove_slot_<key>`).
pub(crate) fn snapshot_slot_of(replica_slot: &str) -> Option<&str> {
    let (base, id) = replica_slot.rsplit_once('_')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && base.len() > SLOT_PREFIX.len())
        .then_some(base)
}

/// The snapshot slot to drop along with `replica_slot` at cleanup, judged by the login it was
/// made for: only when `replica_slot` is `trove_slot_<key>_<server id>` for the login
/// `trove_repl_<key>`. From the slot name alone the split is ambiguous (`trove_slot_node_2` is
/// the own slot of replica `node` on server 2 *and* the slot of a replica `node_2`), and
/// guessing wrong would drop another replica's slot.
pub(crate) fn snapshot_slot_for_cleanup(role: Option<&str>, replica_slot: &str) -> Option<String> {
    let key = role?.strip_prefix(ROLE_PREFIX).filter(|k| !k.is_empty())?;
    let base = slot_name(key);
    let id = replica_slot
        .strip_prefix(base.as_str())?
        .strip_prefix('_')?;
    (!id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && snapshot_slot_of(replica_slot) == Some(base.as_str()))
    .then_some(base)
}

fn ours(what: &str, name: &str, prefix: &str) -> Result<()> {
    let ok = name.len() <= 63
        && name.starts_with(prefix)
        && name.len() > prefix.len()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("{name:?} is not a name trove-guest made (expected {prefix}<id>)"),
        ))
    }
}

/// Checks that `name` is a replication login this crate would make.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub(crate) fn check_role(name: &str) -> Result<()> {
    ours("replication user", name, ROLE_PREFIX)
}

/// Checks that `name` is a slot this crate would make.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub(crate) fn check_slot(name: &str) -> Result<()> {
    ours("replication slot", name, SLOT_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_become_safe_names() {
        assert_eq!(replica_key("Replica-1").unwrap(), "replica_1");
        assert_eq!(slot_name(&replica_key("r1").unwrap()), "trove_slot_r1");
        for bad in ["", "a b", "a'b", "x\"; drop", &"a".repeat(41)] {
            assert!(replica_key(bad).is_err(), "{bad:?}");
        }
        assert!(replica_key(&random_replica_key()).is_ok());
    }

    #[test]
    fn replica_slots_derive_from_the_snapshot_slot_and_fit_63_bytes() {
        let key = "k".repeat(40);
        let own = replica_slot_name(&slot_name(&key), u32::MAX);
        assert!(own.len() <= 63, "{}", own.len());
        assert!(check_slot(&own).is_ok());
        assert_eq!(snapshot_slot_of(&own), Some(slot_name(&key).as_str()));
        assert_eq!(snapshot_slot_of("trove_slot_r_1_2"), Some("trove_slot_r_1"));
        assert_eq!(snapshot_slot_of("trove_slot_abc"), None);
    }

    #[test]
    fn cleanup_drops_the_snapshot_slot_of_the_replicas_own_login_only() {
        // Replica `node` on server 2: its own slot is a copy of the snapshot slot `trove_slot_node`.
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_node"), "trove_slot_node_2").as_deref(),
            Some("trove_slot_node")
        );
        // Replica `node_2` streaming through `trove_slot_node_2` (a rejoined standby): the slot
        // `trove_slot_node` belongs to replica `node`, not to it.
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_node_2"), "trove_slot_node_2"),
            None
        );
        assert_eq!(snapshot_slot_for_cleanup(None, "trove_slot_node_2"), None);
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_other"), "trove_slot_node_2"),
            None
        );
    }

    #[test]
    fn only_our_names_are_accepted_for_cleanup() {
        assert!(check_role("trove_repl_r1").is_ok());
        assert!(check_slot("trove_slot_r1").is_ok());
        for bad in [
            "postgres",
            "trove_repl_",
            "trove_slot_r1",
            "trove_repl_R1",
            "trove_repl_a;b",
        ] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
    }
}
