//! Configuration text this crate writes: override files, `primary_conninfo`, passfiles and the
//! marked replication block of the hba file. Every value goes through a tested quoting helper.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use trove_guest_core::error::IoResultExt;
use trove_guest_core::{Error, OsUser, Result, Secret};

/// Override file of a master (WAL senders, slots, `wal_log_hints`, `wal_keep_size`).
pub(crate) const MASTER_FILE: &str = "trove-replication-master.conf";
/// Override file of a standby (`primary_conninfo`, `primary_slot_name`).
pub(crate) const STANDBY_FILE: &str = "trove-replication-standby.conf";
/// Override file that keeps a standby rewindable after a promotion (`wal_log_hints`, WAL kept);
/// written with the standby's, kept by a detach for failover, removed by a plain detach and by
/// demote. Its name sorts before [`MASTER_FILE`]'s, so the master's values (its WAL retention
/// computed for the real segment size) win where both set one.
pub(crate) const REWIND_FILE: &str = "trove-replication-kept-wal.conf";
/// Override file of `make_read_only(true)`.
pub(crate) const READ_ONLY_FILE: &str = "trove-read-only.conf";
/// A standby's passfile (not `*.conf`, so `include_dir` ignores it).
pub(crate) const PASSFILE: &str = "trove-replication.pgpass";
/// The CA certificate a standby verifies its primary with (0644, not `*.conf`;
/// `sslrootcert` in `primary_conninfo` names it).
pub(crate) const REPLICATION_CA_FILE: &str = "trove-replication-ca.pem";
/// What a standby records about its master (not `*.conf`).
pub(crate) const STANDBY_STATE: &str = "trove-replication-standby.json";

/// First line of the replication block in the hba file.
pub(crate) const HBA_BEGIN: &str =
    "# BEGIN trove-guest replication (managed by trove-guest; do not edit)";
/// Last line of the replication block in the hba file.
pub(crate) const HBA_END: &str = "# END trove-guest replication";

/// Quotes a `postgresql.conf` string value: `'...'` with `'` doubled and `\` doubled.
///
/// # Errors
///
/// [`Error::InvalidInput`] for values with NUL or line breaks.
pub(crate) fn conf_quote(value: &str) -> Result<String> {
    if value.contains(['\0', '\n', '\r']) {
        return Err(Error::invalid(
            "configuration value",
            "contains NUL or a line break",
        ));
    }
    Ok(format!(
        "'{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// Quotes a libpq connection-string value: `'...'` with `\` and `'` backslash-escaped.
///
/// # Errors
///
/// [`Error::InvalidInput`] for values with NUL.
pub(crate) fn conninfo_quote(value: &str) -> Result<String> {
    if value.contains('\0') {
        return Err(Error::invalid("connection parameter", "contains NUL"));
    }
    Ok(format!(
        "'{}'",
        value.replace('\\', "\\\\").replace('\'', "\\'")
    ))
}

/// Escapes one field of a libpq passfile line (`\` and `:` backslash-escaped).
///
/// # Errors
///
/// [`Error::InvalidInput`] for values with NUL or line breaks.
pub(crate) fn passfile_field(value: &str) -> Result<String> {
    if value.contains(['\0', '\n', '\r']) {
        return Err(Error::invalid(
            "passfile field",
            "contains NUL or a line break",
        ));
    }
    Ok(value.replace('\\', "\\\\").replace(':', "\\:"))
}

/// A passfile line matching any host, port and database for `user`.
pub(crate) fn passfile_line(user: &str, password: &Secret) -> Result<String> {
    Ok(format!(
        "*:*:*:{}:{}\n",
        passfile_field(user)?,
        passfile_field(password.expose())?
    ))
}

/// The password of a passfile line [`passfile_line`] wrote (`*:*:*:user:password`, with `\`
/// and `:` escaped by a `\`).
pub(crate) fn passfile_password(text: &str) -> Option<Secret> {
    let line = text.lines().next()?;
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.push(chars.next()?),
            ':' => fields.push(std::mem::take(&mut field)),
            other => field.push(other),
        }
    }
    fields.push(field);
    (fields.len() == 5).then(|| Secret::new(fields.swap_remove(4)))
}

/// A `primary_conninfo` / `--source-server` connection string. It names a passfile and holds
/// no password.
pub(crate) fn conninfo(
    host: &str,
    port: u16,
    user: &str,
    passfile: &Path,
    extra: &[(&str, &str)],
) -> Result<String> {
    let mut s = format!(
        "host={} port={port} user={} passfile={} connect_timeout=10",
        conninfo_quote(host)?,
        conninfo_quote(user)?,
        conninfo_quote(&passfile.to_string_lossy())?
    );
    for (k, v) in extra {
        s.push_str(&format!(" {k}={}", conninfo_quote(v)?));
    }
    Ok(s)
}

/// Renders an override file from `name = value` pairs (values already in configuration syntax).
pub(crate) fn render_settings(header: &str, settings: &[(&str, String)]) -> String {
    let mut s =
        format!("# {header}\n# Managed by trove-guest; removed when replication is undone.\n");
    for (k, v) in settings {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

/// `existing` without the replication block.
pub(crate) fn hba_without_block(existing: &str) -> String {
    let mut out = String::with_capacity(existing.len());
    let mut inside = false;
    for line in existing.lines() {
        if line.trim_end() == HBA_BEGIN {
            inside = true;
            continue;
        }
        if inside {
            if line.trim_end() == HBA_END {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether `existing` holds the replication block.
pub(crate) fn hba_has_block(existing: &str) -> bool {
    existing.lines().any(|l| l.trim_end() == HBA_BEGIN)
}

/// Which connections the replication block admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HbaTransport {
    /// TLS or plaintext (`host`): a master without TLS configured.
    Any,
    /// TLS only (`hostssl`).
    Tls,
}

/// The replication block for members of `group` connecting from `networks` (hba address
/// fields such as `all`, `samenet`, `10.0.0.0/8`).
#[cfg(test)]
pub(crate) fn hba_block(
    group: &str,
    networks: &[String],
    transport: HbaTransport,
) -> Result<String> {
    hba_block_restricted(group, networks, &[], transport)
}

impl HbaTransport {
    /// The hba connection type admitting this transport.
    fn kind(self) -> &'static str {
        match self {
            HbaTransport::Any => "host",
            HbaTransport::Tls => "hostssl",
        }
    }
}

/// Whether `s` is safe as one hba field (no spaces, quotes, line breaks or comment signs).
fn hba_field_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-'))
}

/// The hba address of a replica host: an IP address as a single-host network (`/32`,
/// `/128`); a host name as is (PostgreSQL then admits a client whose address resolves back to
/// it, forward and reverse).
///
/// # Errors
///
/// [`Error::InvalidInput`] for anything else (patterns, spaces, more than 253 bytes).
pub(crate) fn hba_address(host: &str) -> Result<String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(match ip {
            std::net::IpAddr::V4(v4) => format!("{v4}/32"),
            std::net::IpAddr::V6(v6) => format!("{v6}/128"),
        });
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        && host.bytes().any(|b| b.is_ascii_alphabetic())
        && !matches!(host, "all" | "samehost" | "samenet");
    if !name_ok {
        return Err(Error::invalid(
            "replica host",
            format!(
                "{:?} is neither an IP address nor a host name",
                host.chars().take(64).collect::<String>()
            ),
        ));
    }
    Ok(host.to_owned())
}

/// The lines restricting `login` to `address`: admitted from there (over `transport`), rejected
/// from anywhere else and over any other transport (they precede the group's lines, and the
/// first matching line wins).
fn restriction_lines(login: &str, address: &str, transport: HbaTransport) -> Result<String> {
    if !hba_field_ok(login) || login.starts_with('+') || !hba_field_ok(address) {
        return Err(Error::invalid(
            "hba restriction",
            format!("{login:?} from {address:?}"),
        ));
    }
    let mut s = String::new();
    for db in ["replication", "postgres"] {
        s.push_str(&format!(
            "{} {db} {login} {address} scram-sha-256\n",
            transport.kind()
        ));
    }
    for db in ["replication", "postgres"] {
        s.push_str(&format!("host {db} {login} all reject\n"));
    }
    Ok(s)
}

/// The logins restricted to one address inside the block of `existing`, with their address.
pub(crate) fn hba_restrictions(existing: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in existing.lines() {
        let l = line.trim_end();
        if l == HBA_BEGIN {
            inside = true;
            continue;
        }
        if l == HBA_END {
            inside = false;
        }
        if !inside {
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [
            "host" | "hostssl",
            "replication",
            login,
            addr,
            "scram-sha-256",
        ] = f[..]
            && !login.starts_with('+')
        {
            out.push((login.to_owned(), addr.to_owned()));
        }
    }
    out
}

/// `existing` without the restriction lines of `login` (inside the block only).
pub(crate) fn hba_unrestrict(existing: &str, login: &str) -> String {
    let mut out = String::with_capacity(existing.len());
    let mut inside = false;
    for line in existing.lines() {
        let l = line.trim_end();
        if l == HBA_BEGIN {
            inside = true;
        } else if l == HBA_END {
            inside = false;
        } else if inside && l.split_whitespace().nth(2) == Some(login) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `existing` with `login` restricted to `address` (any earlier restriction of it replaced).
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad login or address; [`Error::Unsupported`] when `existing`
/// has no replication block (`enable_as_master` has not run).
pub(crate) fn hba_restrict(
    existing: &str,
    login: &str,
    address: &str,
    transport: HbaTransport,
) -> Result<String> {
    if !hba_has_block(existing) {
        return Err(Error::unsupported(
            "restricting a replication login before enable_as_master wrote the hba block",
        ));
    }
    let lines = restriction_lines(login, address, transport)?;
    let mut out = String::with_capacity(existing.len() + lines.len());
    for line in hba_unrestrict(existing, login).lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_end() == HBA_BEGIN {
            out.push_str(&lines);
        }
    }
    Ok(out)
}

/// Like [`hba_block`], with `restricted` logins (login, address) admitted only from their
/// address, before the group's lines.
pub(crate) fn hba_block_restricted(
    group: &str,
    networks: &[String],
    restricted: &[(String, String)],
    transport: HbaTransport,
) -> Result<String> {
    if !hba_field_ok(group) {
        return Err(Error::invalid("replication group", format!("{group:?}")));
    }
    let mut s = format!("{HBA_BEGIN}\n");
    for (login, address) in restricted {
        s.push_str(&restriction_lines(login, address, transport)?);
    }
    for net in networks {
        if !hba_field_ok(net) {
            return Err(Error::invalid(
                "replica network",
                format!("{net:?} is not an hba address"),
            ));
        }
        // Streaming replication, and pg_rewind's source connection (database postgres).
        let kind = transport.kind();
        s.push_str(&format!(
            "{kind} replication +{group} {net} scram-sha-256\n"
        ));
        s.push_str(&format!("{kind} postgres +{group} {net} scram-sha-256\n"));
    }
    s.push_str(HBA_END);
    s.push('\n');
    Ok(s)
}

/// `existing` with the replication block placed first (first match wins in pg_hba.conf, so it
/// precedes any reject lines of the operator's).
pub(crate) fn hba_with_block(existing: &str, block: &str) -> String {
    format!("{block}{}", hba_without_block(existing))
}

/// Writes `contents` to `path` atomically (temp file in the same directory, fsync, rename),
/// with `mode`, owned by `owner` (or keeping the previous file's owner when `owner` is None and
/// the file existed).
pub(crate) fn write_atomic(
    path: &Path,
    contents: &str,
    mode: u32,
    owner: Option<OsUser>,
) -> Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid("path", format!("{} has no parent", path.display())))?;
    let previous_owner = std::fs::metadata(path).ok().map(|m| OsUser {
        uid: m.uid(),
        gid: m.gid(),
    });
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .context(|| format!("create {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .context(|| format!("write {}", tmp.display()))?;
    drop(f);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {}", tmp.display()))?;
    // Only root can give files away; otherwise they stay ours (and the server runs as us).
    if is_root()
        && let Some(o) = owner.or(previous_owner)
    {
        o.chown(&tmp)?;
    }
    std::fs::rename(&tmp, path).context(|| format!("rename into {}", path.display()))
}

fn is_root() -> bool {
    OsUser::current().uid == 0
}

/// Removes a file; a missing file is fine. Returns whether it existed.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("a").unwrap(), "'a'");
        assert_eq!(conf_quote("it's \\ x").unwrap(), "'it''s \\\\ x'");
        assert!(conf_quote("a\nb = 1").is_err());
    }

    #[test]
    fn conninfo_values_are_quoted_and_hold_no_password() {
        let c = conninfo(
            "127.0.0.1",
            5432,
            "o'brien",
            Path::new("/x/p ass"),
            &[("application_name", "s")],
        )
        .unwrap();
        assert_eq!(
            c,
            "host='127.0.0.1' port=5432 user='o\\'brien' passfile='/x/p ass' connect_timeout=10 application_name='s'"
        );
        assert!(!c.contains("password"));
    }

    #[test]
    fn passfile_fields_escape_colons_and_backslashes() {
        assert_eq!(passfile_field("a:b\\c").unwrap(), "a\\:b\\\\c");
        let line = passfile_line("u", &Secret::new("p:w")).unwrap();
        assert_eq!(line, "*:*:*:u:p\\:w\n");
        assert!(passfile_field("a\nb").is_err());
    }

    #[test]
    fn a_passfile_line_gives_back_its_password() {
        for pw in ["plain", "p:w", "back\\slash:and:colons\\", ""] {
            let line = passfile_line("trove_repl_r1", &Secret::new(pw)).unwrap();
            assert_eq!(passfile_password(&line).unwrap().expose(), pw);
        }
        assert!(passfile_password("not a passfile").is_none());
        assert!(passfile_password("").is_none());
    }

    #[test]
    fn hba_block_is_first_replaced_and_removed_cleanly() {
        let original = "local all all trust\nhost all all 0.0.0.0/0 reject\n";
        let block = hba_block("trove_replication", &["all".into()], HbaTransport::Any).unwrap();
        let tls = hba_block("trove_replication", &["all".into()], HbaTransport::Tls).unwrap();
        assert!(tls.contains("\nhostssl replication +trove_replication all scram-sha-256\n"));
        assert!(tls.contains("\nhostssl postgres +trove_replication all scram-sha-256\n"));
        assert!(!tls.contains("\nhost "));
        let with = hba_with_block(original, &block);
        assert!(with.starts_with(HBA_BEGIN));
        assert!(with.contains("host replication +trove_replication all scram-sha-256"));
        assert!(hba_has_block(&with));
        // Idempotent.
        assert_eq!(hba_with_block(&with, &block), with);
        assert_eq!(hba_without_block(&with), original);
        assert!(!hba_has_block(original));
        assert!(
            hba_block(
                "g",
                &["all\nhost all all 0/0 trust".into()],
                HbaTransport::Tls
            )
            .is_err()
        );
    }

    #[test]
    fn a_login_restricted_to_its_host_is_admitted_there_and_rejected_elsewhere() {
        let original = "local all all trust\n";
        let block = hba_block("trove_replication", &["all".into()], HbaTransport::Any).unwrap();
        let with = hba_with_block(original, &block);
        let addr = hba_address("10.0.0.12").unwrap();
        assert_eq!(addr, "10.0.0.12/32");
        assert_eq!(hba_address("::1").unwrap(), "::1/128");
        assert_eq!(
            hba_address("replica-7.example").unwrap(),
            "replica-7.example"
        );
        for bad in [
            "",
            "all",
            "10.0.0.0/8",
            "a b",
            "host\nlocal all all trust",
            "-x",
            "%",
        ] {
            assert!(hba_address(bad).is_err(), "{bad:?}");
        }
        let r = hba_restrict(&with, "trove_repl_r7", &addr, HbaTransport::Any).unwrap();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], HBA_BEGIN);
        assert_eq!(
            lines[1],
            "host replication trove_repl_r7 10.0.0.12/32 scram-sha-256"
        );
        assert_eq!(lines[3], "host replication trove_repl_r7 all reject");
        // Before the group's lines: the first matching line wins.
        assert!(
            r.find("trove_repl_r7 all reject").unwrap() < r.find("+trove_replication").unwrap()
        );
        assert_eq!(
            hba_restrictions(&r),
            vec![("trove_repl_r7".to_owned(), addr.clone())]
        );
        // Re-restricting replaces; re-rendering the block keeps it; unrestricting removes it.
        assert_eq!(
            hba_restrict(&r, "trove_repl_r7", &addr, HbaTransport::Any).unwrap(),
            r
        );
        let rerendered = hba_with_block(
            &r,
            &hba_block_restricted(
                "trove_replication",
                &["all".into()],
                &hba_restrictions(&r),
                HbaTransport::Any,
            )
            .unwrap(),
        );
        assert_eq!(rerendered, r);
        assert_eq!(hba_unrestrict(&r, "trove_repl_r7"), with);
        assert!(hba_restrict(original, "trove_repl_r7", &addr, HbaTransport::Any).is_err());
        assert!(hba_restrict(&with, "+group", &addr, HbaTransport::Any).is_err());
    }
}
