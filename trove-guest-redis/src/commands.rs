//! Every command this crate sends to Redis, and every line it writes into Redis configuration
//! files, with the validation of the names and values built into them.

use sha2::{Digest, Sha256};
use trove_guest_core::{Error, Result, Secret};

/// The prefix of every replication user this crate makes.
pub const USER_PREFIX: &str = "trove_repl_";

/// A command ready to send: its name (all that errors and logs show) and its arguments.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Cmd {
    name: &'static str,
    args: Vec<Vec<u8>>,
    secret: bool,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.secret {
            return write!(f, "{} <redacted>", self.name);
        }
        let args: Vec<_> = self
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect();
        write!(f, "{}", args.join(" "))
    }
}

impl Cmd {
    fn new(name: &'static str, args: &[&str]) -> Cmd {
        Cmd {
            name,
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            secret: false,
        }
    }

    /// The command's name (`"ACL SETUSER"`), never its arguments.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The words sent.
    pub(crate) fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    /// Whether an argument is a secret (the server's error text is then not repeated).
    pub(crate) fn is_secret(&self) -> bool {
        self.secret
    }
}

fn invalid(what: &str, reason: &str) -> Error {
    Error::invalid(what, reason)
}

/// Checks a user name: 1 to 64 bytes of `[A-Za-z0-9_-]`.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub(crate) fn check_user(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid("Redis user", "must be 1 to 64 of [A-Za-z0-9_-]"))
    }
}

/// The replication user for a replica id (lower-cased, other characters become `_`).
///
/// # Errors
///
/// [`Error::InvalidInput`] for an empty or over-long id.
pub(crate) fn replication_user(replica_id: &str) -> Result<String> {
    if replica_id.is_empty() || replica_id.len() > 48 {
        return Err(invalid("replica id", "must be 1 to 48 bytes"));
    }
    let id: String = replica_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    Ok(format!("{USER_PREFIX}{id}"))
}

/// Checks a host for `REPLICAOF` and the override file: a name or address without spaces,
/// quotes or control characters.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub(crate) fn check_host(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "master host",
            "must be a host name or an IP address",
        ))
    }
}

/// Checks a replication password: what [`Secret::random`] makes (alphanumeric, 16 to 128
/// characters), so it needs no quoting in the override file.
///
/// # Errors
///
/// [`Error::InvalidInput`] (without the password) otherwise.
pub(crate) fn check_password(password: &Secret) -> Result<()> {
    let p = password.expose();
    let ok = (16..=128).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "replication password",
            "must be 16 to 128 alphanumeric characters",
        ))
    }
}

/// `AUTH user password`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad user name.
pub(crate) fn auth(user: &str, password: &Secret) -> Result<Cmd> {
    check_user(user)?;
    let mut c = Cmd::new("AUTH", &["AUTH", user, password.expose()]);
    c.secret = true;
    Ok(c)
}

/// Any command, for test servers and test data only (feature `testkit`).
#[cfg(feature = "testkit")]
pub(crate) fn test_command(args: &[&str]) -> Cmd {
    Cmd::new("test command", args)
}

/// The test server's user file: `default` off, the administrator with every right, its
/// password given as its SHA-256.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad user name or password.
#[cfg(feature = "testkit")]
pub(crate) fn admin_acl_file(user: &str, password: &Secret) -> Result<String> {
    check_user(user)?;
    check_password(password)?;
    let hash = hex::encode(Sha256::digest(password.expose().as_bytes()));
    Ok(format!(
        "user default off\nuser {user} on #{hash} ~* &* +@all\n"
    ))
}

/// `PING`.
pub(crate) fn ping() -> Cmd {
    Cmd::new("PING", &["PING"])
}

/// `INFO <section>` for a fixed section.
pub(crate) fn info(section: &'static str) -> Cmd {
    Cmd::new("INFO", &["INFO", section])
}

/// `CONFIG GET name` for a fixed name.
pub(crate) fn config_get(name: &'static str) -> Cmd {
    Cmd::new("CONFIG GET", &["CONFIG", "GET", name])
}

/// `CONFIG SET name value` for a fixed name and a checked value.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a value with whitespace or control characters.
pub(crate) fn config_set(name: &'static str, value: &str) -> Result<Cmd> {
    if value
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"')
    {
        return Err(invalid(
            "Redis setting",
            "the value holds whitespace or quotes",
        ));
    }
    Ok(Cmd::new("CONFIG SET", &["CONFIG", "SET", name, value]))
}

/// `CONFIG SET masteruser "" masterauth ""`: forgets the replication login.
pub(crate) fn forget_master_login() -> Cmd {
    Cmd::new(
        "CONFIG SET",
        &["CONFIG", "SET", "masteruser", "", "masterauth", ""],
    )
}

/// The ACL rules of a replication user: enabled, password given as its SHA-256, no keys, no
/// channels, only what a replica sends while it syncs and streams. Without `new`, only the
/// password is added (an existing user keeps its other passwords and its replicas).
pub(crate) fn replication_rules(password: &Secret, new: bool) -> Vec<String> {
    let hash = format!(
        "#{}",
        hex::encode(Sha256::digest(password.expose().as_bytes()))
    );
    let rules: &[&str] = if new {
        &[
            "reset",
            "on",
            &hash,
            "-@all",
            "+psync",
            "+replconf",
            "+ping",
        ]
    } else {
        &["on", &hash]
    };
    rules.iter().map(|s| (*s).to_owned()).collect()
}

/// `ACL SETUSER user <replication rules>` (see [`replication_rules`]).
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad user name or password.
pub(crate) fn create_replication_user(user: &str, password: &Secret, new: bool) -> Result<Cmd> {
    check_user(user)?;
    check_password(password)?;
    let rules = replication_rules(password, new);
    let mut args = vec!["ACL", "SETUSER", user];
    args.extend(rules.iter().map(String::as_str));
    let mut c = Cmd::new("ACL SETUSER", &args);
    c.secret = true;
    Ok(c)
}

/// `ACL DELUSER user`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad user name.
pub(crate) fn drop_user(user: &str) -> Result<Cmd> {
    check_user(user)?;
    Ok(Cmd::new("ACL DELUSER", &["ACL", "DELUSER", user]))
}

/// `ACL USERS`.
pub(crate) fn users() -> Cmd {
    Cmd::new("ACL USERS", &["ACL", "USERS"])
}

/// `ACL SAVE` (when the server keeps its users in an ACL file).
pub(crate) fn acl_save() -> Cmd {
    Cmd::new("ACL SAVE", &["ACL", "SAVE"])
}

/// `PSYNC ? -1`: a full resynchronisation, answered `+FULLRESYNC <replid> <offset>` and the
/// RDB as a bulk payload.
pub(crate) fn psync_full() -> Cmd {
    Cmd::new("PSYNC", &["PSYNC", "?", "-1"])
}

/// `REPLCONF capa psync2`: what a replica announces before `PSYNC`.
pub(crate) fn replconf_capa() -> Cmd {
    Cmd::new("REPLCONF", &["REPLCONF", "capa", "psync2"])
}

/// `REPLICAOF NO ONE`.
pub(crate) fn replicaof_no_one() -> Cmd {
    Cmd::new("REPLICAOF", &["REPLICAOF", "NO", "ONE"])
}

/// The write fence of `make_read_only`: with more required replicas than can exist, a master
/// refuses every write (`NOREPLICAS`) while replication and reads go on.
pub(crate) const FENCE_REPLICAS: &str = "1000000";

/// The replica's override file: where it replicates from, as whom, read-only.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad host, user or password.
pub(crate) fn replica_override(
    host: &str,
    port: u16,
    user: &str,
    password: &Secret,
) -> Result<String> {
    check_host(host)?;
    check_user(user)?;
    check_password(password)?;
    Ok(format!(
        "# Written by trove-guest: this server replicates. Removed when it is detached.\n\
         replicaof {host} {port}\n\
         masteruser {user}\n\
         masterauth {}\n\
         replica-read-only yes\n",
        password.expose()
    ))
}

/// `(host, port, user)` of an override file written by [`replica_override`].
pub(crate) fn parse_replica_override(text: &str) -> Option<(String, u16, String)> {
    let mut master = None;
    let mut user = None;
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("replicaof"), Some(h), Some(p)) => master = Some((h.to_owned(), p.parse().ok()?)),
            (Some("masteruser"), Some(u), None) => user = Some(u.to_owned()),
            _ => {}
        }
    }
    let (h, p) = master?;
    Some((h, p, user?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_user_names_are_sanitised_and_prefixed() {
        assert_eq!(
            replication_user("Replica 1/a").unwrap(),
            "trove_repl_replica_1_a"
        );
        assert!(replication_user("").is_err());
        assert!(check_user("a b").is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_or_the_acl_rules() {
        let pw = Secret::new("abcdefghABCDEFGH1234");
        assert!(check_password(&pw).is_ok());
        let c = create_replication_user("trove_repl_x", &pw, true).unwrap();
        assert!(!format!("{c:?}").contains("abcdefgh"));
        let sent: Vec<u8> = c.args().concat();
        assert!(
            !String::from_utf8_lossy(&sent).contains("abcdefgh"),
            "only the digest is sent"
        );
        assert!(!format!("{:?}", auth("u", &pw).unwrap()).contains("abcdefgh"));
    }

    #[test]
    fn hosts_and_values_that_could_inject_are_refused() {
        assert!(check_host("h\nreplicaof evil 1").is_err());
        assert!(replica_override("h st", 1, "u", &Secret::random(32)).is_err());
        assert!(config_set("min-replicas-to-write", "1 2").is_err());
        assert!(check_password(&Secret::new("short")).is_err());
        assert!(check_password(&Secret::new("with space and more than 16")).is_err());
    }

    #[test]
    fn override_file_round_trips_master_and_user() {
        let t = replica_override("10.0.0.1", 6379, "trove_repl_a", &Secret::random(32)).unwrap();
        assert_eq!(
            parse_replica_override(&t),
            Some(("10.0.0.1".into(), 6379, "trove_repl_a".into()))
        );
    }
}
