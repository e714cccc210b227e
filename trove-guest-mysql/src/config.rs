//! The override files this crate writes into the handle's `config_dir`, and nothing else.
//!
//! * `trove-guest-master.cnf` (enable_as_master; removed by demote): server id, binary logging,
//!   ROW format, and GTID mode on MySQL.
//! * `trove-guest-replica.cnf` (attach; removed by detach): server id, relay log, crash-safe
//!   relay log recovery, read-only (`super_read_only` on MySQL), `report_host`/`report_port`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use trove_guest_core::error::IoResultExt;
use trove_guest_core::{Error, Result};

use crate::flavor::{Flavor, FlavorKind, Version};

/// File name of the master override.
pub const MASTER_FILE: &str = "trove-guest-master.cnf";
/// File name of the replica override.
pub const REPLICA_FILE: &str = "trove-guest-replica.cnf";
/// File name of the one-start override that points `init_file` at the admin-account replay
/// after a restore (removed as soon as the server has started).
pub const INIT_FILE: &str = "trove-guest-init.cnf";
/// Every override file name this crate may write (demote/detach remove theirs).
/// The CA certificate a replica verifies its master's certificate with (written from the
/// snapshot document's `replication.tls`, 0644; `MASTER_SSL_CA` names it). Not `*.cnf`, so the
/// server's `!includedir` ignores it.
pub const REPLICATION_CA_FILE: &str = "trove-guest-replication-ca.pem";
/// Every override file this crate writes.
pub const ALL_FILES: [&str; 3] = [MASTER_FILE, REPLICA_FILE, INIT_FILE];

/// Checks a value for an option file line: no line breaks, comment characters or quotes.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub fn option_value(what: &str, v: &str) -> Result<String> {
    if v.is_empty() || v.contains(['\n', '\r', '#', ';', '"', '\'', '\0']) {
        return Err(Error::invalid(
            what,
            format!("{v:?} cannot be written to an option file"),
        ));
    }
    Ok(v.to_owned())
}

fn path_value(what: &str, p: &Path) -> Result<String> {
    option_value(what, &p.to_string_lossy())
}

/// The binary log base (`log_bin` value): `<binlog_dir>/<basename>` or the bare basename.
pub fn binlog_base(dir: Option<&Path>, basename: &str) -> PathBuf {
    match dir {
        Some(d) => d.join(basename),
        None => PathBuf::from(basename),
    }
}

/// The marker line recording that binary logging was already on before `enable_as_master`
/// (MySQL 8 turns it on by default): demote then leaves it on, as it found it.
pub const LOG_BIN_WAS_ON: &str = "# trove-guest: log_bin was ON before enable_as_master";

/// The master override. `log_bin_was_on` records the pre-replication state for demote.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a path that cannot be written to an option file.
pub fn master_override(
    flavor: Flavor,
    server_id: u32,
    binlog_base: &Path,
    log_bin_was_on: bool,
) -> Result<String> {
    let base = path_value("binlog path", binlog_base)?;
    let marker = if log_bin_was_on {
        format!("{LOG_BIN_WAS_ON}\n")
    } else {
        String::new()
    };
    let mut s = format!(
        "# Written by trove-guest (enable_as_master); removed by demote_replication_master.\n\
         {marker}\
         [mysqld]\n\
         server_id = {server_id}\n\
         log_bin = {base}\n\
         log_bin_index = {base}.index\n\
         binlog_format = ROW\n"
    );
    if flavor.kind == FlavorKind::Mysql {
        s.push_str("gtid_mode = ON\nenforce_gtid_consistency = ON\n");
    }
    if flavor.kind == FlavorKind::Mysql && flavor.version >= Version::new(8, 0, 26) {
        s.push_str("log_replica_updates = ON\n");
    } else {
        s.push_str("log_slave_updates = ON\n");
    }
    Ok(s)
}

/// The replica override.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a path or host that cannot be written to an option file.
pub fn replica_override(
    flavor: Flavor,
    server_id: u32,
    relay_base: &Path,
    report: Option<(&str, u16)>,
) -> Result<String> {
    let relay = path_value("relay log path", relay_base)?;
    let mut s = format!(
        "# Written by trove-guest (attach_replication_slave); removed by detach_replication_slave.\n\
         [mysqld]\n\
         server_id = {server_id}\n\
         relay_log = {relay}\n\
         relay_log_index = {relay}.index\n\
         relay_log_recovery = ON\n\
         read_only = ON\n"
    );
    if let Some((host, port)) = report {
        crate::sql::validate_connect_host(host)?;
        s.push_str(&format!("report_host = {host}\nreport_port = {port}\n"));
    }
    if flavor.kind == FlavorKind::Mysql {
        s.push_str("super_read_only = ON\ngtid_mode = ON\nenforce_gtid_consistency = ON\n");
        if flavor.version < Version::new(8, 0, 0) {
            s.push_str("master_info_repository = TABLE\nrelay_log_info_repository = TABLE\n");
        }
    }
    Ok(s)
}

/// The one-start override running `init_file` (see [`INIT_FILE`]).
///
/// # Errors
///
/// [`Error::InvalidInput`] for a path that cannot be written to an option file.
pub fn init_override(init_sql: &Path) -> Result<String> {
    Ok(format!(
        "# Written by trove-guest for one start after a restore; removed right after it.\n\
         [mysqld]\n\
         init_file = {}\n",
        path_value("init file path", init_sql)?
    ))
}

/// Writes `contents` to `dir/name` atomically (temp file, fsync, rename).
///
/// # Errors
///
/// [`Error::Io`].
pub fn write_override(dir: &Path, name: &str, contents: &str) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).context(|| format!("create {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// Removes `dir/name`; returns whether it existed.
///
/// # Errors
///
/// [`Error::Io`] for failures other than absence.
pub fn remove_override(dir: &Path, name: &str) -> Result<bool> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}
