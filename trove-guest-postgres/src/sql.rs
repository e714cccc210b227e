//! Every SQL statement this crate sends to PostgreSQL.
//!
//! Values go as bind parameters (`$1`) wherever PostgreSQL allows it. Utility statements
//! (`CREATE ROLE`, `GRANT`, ...) take no parameters: their identifiers go through
//! [`quote_ident`] and their literals through [`quote_literal`], both tested below. The only
//! statement carrying a credential ([`create_replication_role`] / [`set_role_password`]) carries
//! a SCRAM-SHA-256 verifier computed here, never the clear password, and is never logged or put
//! into an error.

use trove_guest_core::{Error, Result};

/// Quotes an SQL identifier (`"name"`, embedded `"` doubled).
///
/// # Errors
///
/// [`Error::InvalidInput`] for an empty identifier or one containing NUL.
pub(crate) fn quote_ident(name: &str) -> Result<String> {
    if name.is_empty() || name.contains('\0') {
        return Err(Error::invalid(
            "SQL identifier",
            format!("{name:?} is empty or contains NUL"),
        ));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Quotes an SQL string literal like PostgreSQL's `quote_literal`: `'...'` with `'` doubled, and
/// the `E'...'` form with doubled backslashes when the value holds a backslash (safe whatever
/// `standard_conforming_strings` is).
///
/// # Errors
///
/// [`Error::InvalidInput`] for a value containing NUL.
pub(crate) fn quote_literal(value: &str) -> Result<String> {
    if value.contains('\0') {
        return Err(Error::invalid("SQL literal", "contains NUL"));
    }
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        Ok(format!("E'{}'", body.replace('\\', "\\\\")))
    } else {
        Ok(format!("'{body}'"))
    }
}

/// `(server_version_num, server_version)`.
pub(crate) const SERVER_VERSION: &str = "SELECT current_setting('server_version_num')::int4, \
     current_setting('server_version')";

/// Whether the server is a standby.
pub(crate) const IS_IN_RECOVERY: &str = "SELECT pg_is_in_recovery()";

/// The hba file in use.
pub(crate) const HBA_FILE: &str = "SELECT current_setting('hba_file')";

/// Problems PostgreSQL found when parsing the hba file.
pub(crate) const HBA_ERRORS: &str =
    "SELECT line_number, coalesce(error, '') FROM pg_hba_file_rules WHERE error IS NOT NULL";

/// Re-reads configuration files.
pub(crate) const RELOAD: &str = "SELECT pg_reload_conf()";

/// Current value, pending-restart flag, source file and context of the settings named in `$1`.
pub(crate) const SETTINGS: &str = "SELECT name, setting, pending_restart, \
     coalesce(sourcefile, ''), context FROM pg_settings WHERE name = ANY($1::text[])";

/// One setting's current value.
pub(crate) const SETTING: &str = "SELECT current_setting($1)";

/// Whether a role exists.
pub(crate) const ROLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";

/// The login roles that are members of the group `$1`.
pub(crate) const GROUP_MEMBERS: &str = "SELECT r.rolname::text FROM pg_roles r \
     JOIN pg_auth_members m ON m.member = r.oid \
     JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = $1 ORDER BY 1";

/// The functions `pg_rewind` needs on its source server, with their argument lists.
pub(crate) const REWIND_FUNCTIONS: [&str; 4] = [
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// `CREATE ROLE <group> NOLOGIN`.
pub(crate) fn create_group_role(group: &str) -> Result<String> {
    Ok(format!("CREATE ROLE {} NOLOGIN", quote_ident(group)?))
}

/// Grants EXECUTE on one of [`REWIND_FUNCTIONS`] to `role`.
pub(crate) fn grant_rewind_function(function: &str, role: &str) -> Result<String> {
    check_rewind_function(function)?;
    Ok(format!(
        "GRANT EXECUTE ON FUNCTION {function} TO {}",
        quote_ident(role)?
    ))
}

/// Revokes EXECUTE on one of [`REWIND_FUNCTIONS`] from `role`.
pub(crate) fn revoke_rewind_function(function: &str, role: &str) -> Result<String> {
    check_rewind_function(function)?;
    Ok(format!(
        "REVOKE EXECUTE ON FUNCTION {function} FROM {}",
        quote_ident(role)?
    ))
}

fn check_rewind_function(function: &str) -> Result<()> {
    if REWIND_FUNCTIONS.contains(&function) {
        Ok(())
    } else {
        Err(Error::invalid(
            "function",
            format!("{function:?} is not a rewind function"),
        ))
    }
}

/// Creates a login role with the REPLICATION attribute only (explicitly not a superuser), a
/// member of `group` (for the hba entries and the rewind grants). `scram_verifier` is a
/// `SCRAM-SHA-256$...` verifier, never a clear password.
///
/// The result holds a credential verifier: never log it or put it in an error.
pub(crate) fn create_replication_role(
    name: &str,
    scram_verifier: &str,
    group: &str,
) -> Result<String> {
    check_verifier(scram_verifier)?;
    Ok(format!(
        "CREATE ROLE {} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE \
         NOBYPASSRLS INHERIT PASSWORD {} IN ROLE {}",
        quote_ident(name)?,
        quote_literal(scram_verifier)?,
        quote_ident(group)?
    ))
}

/// Sets a role's password to a SCRAM-SHA-256 verifier. Never log the result.
pub(crate) fn set_role_password(name: &str, scram_verifier: &str) -> Result<String> {
    check_verifier(scram_verifier)?;
    Ok(format!(
        "ALTER ROLE {} WITH LOGIN REPLICATION NOSUPERUSER PASSWORD {}",
        quote_ident(name)?,
        quote_literal(scram_verifier)?
    ))
}

/// Sets the password of a login role (the test servers' administrator) to a SCRAM-SHA-256
/// verifier, changing nothing else about the role. Never log the result.
#[cfg(feature = "testkit")]
pub(crate) fn set_admin_password(name: &str, scram_verifier: &str) -> Result<String> {
    check_verifier(scram_verifier)?;
    Ok(format!(
        "ALTER ROLE {} PASSWORD {}",
        quote_ident(name)?,
        quote_literal(scram_verifier)?
    ))
}

fn check_verifier(v: &str) -> Result<()> {
    if v.starts_with("SCRAM-SHA-256$") {
        Ok(())
    } else {
        Err(Error::invalid(
            "password",
            "only SCRAM-SHA-256 verifiers are sent to the server",
        ))
    }
}

/// `GRANT <group> TO <role>`.
pub(crate) fn grant_membership(group: &str, role: &str) -> Result<String> {
    Ok(format!(
        "GRANT {} TO {}",
        quote_ident(group)?,
        quote_ident(role)?
    ))
}

/// `DROP ROLE IF EXISTS <role>`.
pub(crate) fn drop_role(role: &str) -> Result<String> {
    Ok(format!("DROP ROLE IF EXISTS {}", quote_ident(role)?))
}

/// Creates a physical slot reserving WAL at once: `$1` slot name.
pub(crate) const CREATE_SLOT: &str = "SELECT pg_create_physical_replication_slot($1, true)::text";

/// Whether a slot exists: `$1` slot name.
pub(crate) const SLOT_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)";

/// Slots whose names start with `$1`.
pub(crate) const SLOTS_WITH_PREFIX: &str = "SELECT slot_name::text FROM pg_replication_slots \
     WHERE starts_with(slot_name::text, $1) ORDER BY 1";

/// Ends the WAL sender using slot `$1`, if any.
pub(crate) const TERMINATE_SLOT_USER: &str = "SELECT pg_terminate_backend(active_pid) \
     FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL";

/// Ends the sessions of role `$1`.
pub(crate) const TERMINATE_ROLE_SESSIONS: &str = "SELECT pg_terminate_backend(pid) \
     FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()";

/// Drops slot `$1` if it exists and is not in use.
pub(crate) const DROP_SLOT: &str = "SELECT pg_drop_replication_slot(slot_name) \
     FROM pg_replication_slots WHERE slot_name = $1 AND NOT active";

/// Copies physical slot `$1` (the snapshot's, reserving WAL from before the backup) into a new
/// slot `$2` for one replica; run on the master by the replica's replication login.
pub(crate) const COPY_SLOT: &str = "SELECT pg_copy_physical_replication_slot($1, $2)::text";

/// `(restart_lsn, active_pid)` of slot `$1`.
pub(crate) const SLOT_STATE: &str =
    "SELECT restart_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = $1";

/// Ends the WAL sender using slot `$1`, if any (by the replica's replication login, which owns
/// that sender).
pub(crate) const TERMINATE_SLOT_SENDER: &str = "SELECT count(pg_terminate_backend(active_pid))::int8 \
     FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL";

/// Drops slot `$1` if it exists and is not in use (by the replica's replication login).
pub(crate) const DROP_SLOT_IF_IDLE: &str = "SELECT count(pg_drop_replication_slot(slot_name))::int8 \
     FROM pg_replication_slots WHERE slot_name = $1 AND NOT active";

/// Promotes a standby and waits up to `$1` seconds: returns whether it finished.
pub(crate) const PROMOTE: &str = "SELECT pg_promote(true, $1)";

/// Forces a checkpoint.
pub(crate) const CHECKPOINT: &str = "CHECKPOINT";

/// Opens a transaction (a snapshot's password change waits in it for the store's commit).
pub(crate) const BEGIN: &str = "BEGIN";

/// Commits the open transaction.
pub(crate) const COMMIT: &str = "COMMIT";

/// Rolls the open transaction back.
pub(crate) const ROLLBACK: &str = "ROLLBACK";

/// `(current WAL LSN, its WAL file name)` on a primary; the file name starts with the timeline.
pub(crate) const CURRENT_WAL: &str =
    "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())";

/// `(last replayed LSN, last received LSN)` on a standby.
pub(crate) const REPLAY_POSITION: &str =
    "SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_receive_lsn()::text";

/// The WAL receiver of a standby: `(status, received_tli, flushed_lsn, sender_host,
/// sender_port, slot_name)` (PostgreSQL 13 and later).
pub(crate) const WAL_RECEIVER: &str = "SELECT status, received_tli, flushed_lsn::text, \
     sender_host, sender_port, slot_name FROM pg_stat_wal_receiver";

/// [`WAL_RECEIVER`] on PostgreSQL 12, where the flushed position is named `received_lsn`.
pub(crate) const WAL_RECEIVER_12: &str = "SELECT status, received_tli, received_lsn::text, \
     sender_host, sender_port, slot_name FROM pg_stat_wal_receiver";

/// The WAL segment size in bytes (`wal_keep_segments` counts segments).
pub(crate) const WAL_SEGMENT_BYTES: &str =
    "SELECT pg_size_bytes(current_setting('wal_segment_size'))::int8";

/// Whether replay is paused, and seconds since the last replayed transaction.
pub(crate) const REPLAY_STATE: &str = "SELECT pg_is_wal_replay_paused(), \
     extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8";

/// Replicas streaming from this primary: `(count, max replay lag in bytes)`.
pub(crate) const REPLICATION_SENDERS: &str = "SELECT count(*)::int8, \
     coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::int8 \
     FROM pg_stat_replication";

/// The contents of a file under the data directory (the timeline history): `$1` relative path.
pub(crate) const READ_DATA_FILE: &str = "SELECT pg_read_file($1)";

/// Total size of all databases in bytes.
pub(crate) const DATA_SIZE: &str = "SELECT sum(pg_database_size(oid))::int8 FROM pg_database";

/// Ends client sessions (other than ours) that hold a transaction id, i.e. are writing.
pub(crate) const TERMINATE_WRITERS: &str = "SELECT count(pg_terminate_backend(pid))::int8 \
     FROM pg_stat_activity WHERE backend_type = 'client backend' \
     AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL";

/// Where a standby is, for failover: `(last received LSN, last replayed LSN, timeline of the
/// last restartpoint, name of the newest timeline history file in pg_wal or '')`.
pub(crate) const STANDBY_POSITIONS: &str = "SELECT pg_last_wal_receive_lsn()::text, \
     pg_last_wal_replay_lsn()::text, (SELECT timeline_id FROM pg_control_checkpoint())::int4, \
     coalesce((SELECT max(name) FROM pg_ls_waldir() WHERE name LIKE '%.history'), '')";

/// Resumes WAL replay (paused by an operator): a failover applies everything received.
pub(crate) const RESUME_REPLAY: &str = "SELECT pg_wal_replay_resume()";

/// The WAL receiver's status, when one runs (any version).
pub(crate) const WAL_RECEIVER_STATUS: &str = "SELECT status::text FROM pg_stat_wal_receiver";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_double_quoted_with_quotes_doubled() {
        assert_eq!(quote_ident("trove_repl_a").unwrap(), "\"trove_repl_a\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(
            quote_ident("x\"; DROP ROLE postgres; --").unwrap(),
            "\"x\"\"; DROP ROLE postgres; --\""
        );
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0b").is_err());
    }

    #[test]
    fn literals_are_single_quoted_and_backslashes_escaped() {
        assert_eq!(quote_literal("abc").unwrap(), "'abc'");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("a\\b'c").unwrap(), "E'a\\\\b''c'");
        assert_eq!(quote_literal("').x; --").unwrap(), "''').x; --'");
        assert!(quote_literal("a\0").is_err());
    }

    proptest::proptest! {
        #[test]
        fn quoted_identifiers_round_trip(s in "[^\\x00]{1,40}") {
            let q = quote_ident(&s).unwrap();
            let inner = &q[1..q.len() - 1];
            proptest::prop_assert_eq!(inner.replace("\"\"", "\""), s.clone());
            // Every quote inside is doubled, so the identifier cannot end early.
            proptest::prop_assert!(!inner.replace("\"\"", "").contains('"'));
        }

        #[test]
        fn quoted_literals_round_trip(s in "[^\\x00]{0,40}") {
            let q = quote_literal(&s).unwrap();
            let (escaped, inner) = match q.strip_prefix('E') {
                Some(rest) => (true, &rest[1..rest.len() - 1]),
                None => (false, &q[1..q.len() - 1]),
            };
            proptest::prop_assert!(!inner.replace("''", "").contains('\''));
            let mut un = inner.replace("''", "'");
            if escaped {
                un = un.replace("\\\\", "\\");
            }
            proptest::prop_assert_eq!(un, s.clone());
        }
    }

    #[test]
    fn role_statements_never_take_a_clear_password() {
        assert!(create_replication_role("r", "hunter2", "g").is_err());
        assert!(set_role_password("r", "hunter2").is_err());
        let stmt = create_replication_role(
            "trove_repl_x",
            "SCRAM-SHA-256$4096:abc",
            "trove_replication",
        )
        .unwrap();
        assert!(stmt.contains("NOSUPERUSER"));
        assert!(stmt.contains("REPLICATION"));
        assert!(stmt.contains("IN ROLE \"trove_replication\""));
    }

    #[test]
    fn only_the_rewind_functions_are_granted() {
        for f in REWIND_FUNCTIONS {
            assert!(grant_rewind_function(f, "g").is_ok());
            assert!(revoke_rewind_function(f, "g").is_ok());
        }
        assert!(grant_rewind_function("pg_catalog.pg_read_file(text)", "g").is_err());
    }
}
