//! Names of the roles and slots this crate makes, derived from replica ids and checked before use.

use trove_guest_core::{Error, Result, Secret};

/// The NOLOGIN group every replication login belongs to (hba entries and rewind grants name it).
pub(crate) const GROUP_ROLE: &str = "trove_replication";
/// Prefix of per-replica replication logins.
pub(crate) const ROLE_PREFIX: &str = "trove_repl_";
/// Prefix of the slot a snapshot (or `grant_standby`) makes: `trove_snap_<key>`.
pub(crate) const SNAPSHOT_SLOT_PREFIX: &str = "trove_snap_";
/// Prefix of a replica's own physical slot: `trove_slot_<key>_<server id>`.
pub(crate) const SLOT_PREFIX: &str = "trove_slot_";
/// Every prefix our slots carry (demote drops all of them).
pub(crate) const SLOT_PREFIXES: [&str; 2] = [SNAPSHOT_SLOT_PREFIX, SLOT_PREFIX];

/// Longest replica id kept in names (PostgreSQL names are at most 63 bytes, and a replica's
/// own slot is `trove_slot_<id>_<server id>`: 11 + 40 + 1 + 10 bytes).
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
/// its own copy), or by `grant_standby` for a standby streaming through it directly:
/// `trove_snap_<key>`.
pub(crate) fn snapshot_slot_name(key: &str) -> String {
    format!("{SNAPSHOT_SLOT_PREFIX}{key}")
}

/// The slot the replica with `server_id` streams from, a copy of the snapshot slot of replica
/// `key`: `trove_slot_<key>_<server id>`. A distinct prefix from snapshot slots, and a server id
/// of digits only after the last `_`, make every such name parse back into exactly one
/// `(key, server id)`, and never equal a snapshot slot.
pub(crate) fn replica_slot_name(key: &str, server_id: u32) -> String {
    format!("{SLOT_PREFIX}{key}_{server_id}")
}

fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_ID
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The replica key of a snapshot slot (`trove_snap_<key>` -> `<key>`).
pub(crate) fn snapshot_slot_key(slot: &str) -> Option<&str> {
    slot.strip_prefix(SNAPSHOT_SLOT_PREFIX)
        .filter(|k| is_key(k))
}

/// The replica key and server id of a replica's own slot (`trove_slot_<key>_<server id>`).
pub(crate) fn replica_slot_parts(slot: &str) -> Option<(&str, u32)> {
    let (key, id) = slot.strip_prefix(SLOT_PREFIX)?.rsplit_once('_')?;
    if !is_key(key) || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let server_id: u32 = id.parse().ok()?;
    // One spelling per server id (no leading zeros), so one slot per (key, server id).
    (server_id.to_string() == id).then_some((key, server_id))
}

/// The replica key a slot of ours was made for, whichever kind it is.
pub(crate) fn slot_key(slot: &str) -> Option<&str> {
    snapshot_slot_key(slot).or_else(|| replica_slot_parts(slot).map(|(k, _)| k))
}

/// The snapshot slot to drop along with `replica_slot` at cleanup: the one it was copied from,
/// `trove_snap_<key>` for `trove_slot_<key>_<server id>`, and only when the detached replica's
/// login is that snapshot's, `trove_repl_<key>`.
pub(crate) fn snapshot_slot_for_cleanup(role: Option<&str>, replica_slot: &str) -> Option<String> {
    let key = role?.strip_prefix(ROLE_PREFIX).filter(|k| is_key(k))?;
    let (slot_key, _) = replica_slot_parts(replica_slot)?;
    (slot_key == key).then(|| snapshot_slot_name(key))
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

/// Checks that `name` is a slot this crate would make (a snapshot slot or a replica's own).
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub(crate) fn check_slot(name: &str) -> Result<()> {
    if name.len() <= 63 && slot_key(name).is_some() {
        return Ok(());
    }
    Err(Error::invalid(
        "replication slot",
        format!(
            "{name:?} is not a slot trove-guest made (expected {SNAPSHOT_SLOT_PREFIX}<id> or \
             {SLOT_PREFIX}<id>_<server id>)"
        ),
    ))
}

/// Checks that `name` is a snapshot slot this crate would make (`trove_snap_<id>`).
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub(crate) fn check_snapshot_slot(name: &str) -> Result<()> {
    if snapshot_slot_key(name).is_some() {
        return Ok(());
    }
    Err(Error::invalid(
        "snapshot replication slot",
        format!(
            "{name:?} is not a snapshot slot trove-guest made (expected {SNAPSHOT_SLOT_PREFIX}<id>)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_become_safe_names() {
        assert_eq!(replica_key("Replica-1").unwrap(), "replica_1");
        assert_eq!(
            snapshot_slot_name(&replica_key("r1").unwrap()),
            "trove_snap_r1"
        );
        for bad in ["", "a b", "a'b", "x\"; drop", &"a".repeat(41)] {
            assert!(replica_key(bad).is_err(), "{bad:?}");
        }
        assert!(replica_key(&random_replica_key()).is_ok());
    }

    #[test]
    fn replica_slots_derive_from_the_replica_key_and_fit_63_bytes() {
        let key = "k".repeat(40);
        let own = replica_slot_name(&key, u32::MAX);
        assert!(own.len() <= 63, "{}", own.len());
        assert!(check_slot(&own).is_ok());
        assert!(check_slot(&snapshot_slot_name(&key)).is_ok());
        assert!(check_snapshot_slot(&snapshot_slot_name(&key)).is_ok());
        assert!(check_snapshot_slot(&own).is_err());
        assert_eq!(replica_slot_parts(&own), Some((key.as_str(), u32::MAX)));
        assert_eq!(replica_slot_parts("trove_slot_r_1_2"), Some(("r_1", 2)));
        assert_eq!(replica_slot_parts("trove_slot_abc"), None);
        assert_eq!(replica_slot_parts("trove_slot_abc_02"), None);
        assert_eq!(replica_slot_parts("trove_snap_abc_2"), None);
        assert_eq!(snapshot_slot_key("trove_snap_abc_2"), Some("abc_2"));
    }

    #[test]
    fn snapshot_and_replica_slot_names_never_collide() {
        // The collision this scheme exists to avoid: the own slot of replica `node` on server 2
        // and the snapshot slot of replica `node_2`.
        assert_ne!(replica_slot_name("node", 2), snapshot_slot_name("node_2"));
        let keys = ["n", "node", "node_2", "node_2_3", "2", "_", "a__1", "node_"];
        let ids = [0, 1, 2, 3, 23, u32::MAX];
        let mut seen = std::collections::HashMap::new();
        for key in keys {
            let snap = snapshot_slot_name(key);
            assert_eq!(seen.insert(snap.clone(), (key, None)), None, "{snap}");
            assert_eq!(slot_key(&snap), Some(key));
            for id in ids {
                let own = replica_slot_name(key, id);
                assert_eq!(seen.insert(own.clone(), (key, Some(id))), None, "{own}");
                assert_eq!(replica_slot_parts(&own), Some((key, id)), "{own}");
                assert_eq!(slot_key(&own), Some(key));
            }
        }
    }

    #[test]
    fn cleanup_drops_the_snapshot_slot_of_the_replicas_own_login_only() {
        // Replica `node` on server 2: its own slot is a copy of the snapshot slot `trove_snap_node`.
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_node"), "trove_slot_node_2").as_deref(),
            Some("trove_snap_node")
        );
        // Replica `node_2` on server 5.
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_node_2"), "trove_slot_node_2_5").as_deref(),
            Some("trove_snap_node_2")
        );
        // A standby streaming through the snapshot slot itself (grant_standby): nothing more.
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_node_2"), "trove_snap_node_2"),
            None
        );
        assert_eq!(snapshot_slot_for_cleanup(None, "trove_slot_node_2"), None);
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_other"), "trove_slot_node_2"),
            None
        );
        assert_eq!(
            snapshot_slot_for_cleanup(Some("trove_repl_node_2"), "trove_slot_node_2"),
            None
        );
    }

    #[test]
    fn only_our_names_are_accepted_for_cleanup() {
        assert!(check_role("trove_repl_r1").is_ok());
        assert!(check_slot("trove_snap_r1").is_ok());
        assert!(check_slot("trove_slot_r1_2").is_ok());
        for bad in [
            "postgres",
            "trove_repl_",
            "trove_slot_r1",
            "trove_repl_R1",
            "trove_repl_a;b",
        ] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "postgres",
            "trove_slot_r1",
            "trove_slot_",
            "trove_snap_",
            "trove_slot_r1_x",
            "trove_snap_R1",
            "trove_snap_a;b",
        ] {
            assert!(check_slot(bad).is_err(), "{bad:?}");
        }
    }
}
