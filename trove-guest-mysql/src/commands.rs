//! The command lines of the backup tools (`mariabackup` / `xtrabackup`, `mbstream` /
//! `xbstream`), built for the core [`ToolCommand`] runner. Public so they can be audited; pinned
//! by snapshot tests.
//!
//! Credentials reach the backup tool only through a private 0600 option file
//! ([`tool_option_file`], held in a `SecretFile`) passed as the **first** argument,
//! `--defaults-file=...`, which also keeps the distribution's `/etc/mysql/my.cnf` from leaking
//! in. That file `!include`s the server's own option file when one is configured.

use std::path::Path;

use trove_guest_core::tls::AdminTls;
use trove_guest_core::{AdminConnection, Result, ToolCommand};

use crate::config::option_value;

/// Inputs of a streaming backup.
#[derive(Debug, Clone, Copy)]
pub struct BackupArgs<'a> {
    /// The backup tool.
    pub tool: &'a Path,
    /// The private option file with the credentials.
    pub defaults_file: &'a Path,
    /// The server's datadir.
    pub data_dir: &'a Path,
    /// Scratch directory for the tool (`--target-dir`; nothing large is written there when
    /// streaming).
    pub scratch_dir: &'a Path,
    /// `--log-copy-interval` in milliseconds.
    pub log_copy_interval_ms: u32,
    /// `--parallel`.
    pub parallel: Option<u32>,
}

/// `mariabackup|xtrabackup --defaults-file=F --backup --stream=xbstream ...`; the stream goes to
/// stdout (piped).
pub fn backup_command(a: &BackupArgs<'_>) -> ToolCommand {
    let mut cmd = ToolCommand::new(a.tool)
        .arg(format!("--defaults-file={}", a.defaults_file.display()))
        .arg("--backup")
        .arg("--stream=xbstream")
        .arg(format!("--datadir={}", a.data_dir.display()))
        .arg(format!("--target-dir={}", a.scratch_dir.display()))
        .arg(format!("--log-copy-interval={}", a.log_copy_interval_ms));
    if let Some(n) = a.parallel {
        cmd = cmd.arg(format!("--parallel={n}"));
    }
    cmd.stdout_piped()
}

/// `mbstream|xbstream -x -C DIR [--parallel=N]`, reading the stream from stdin (piped). The
/// extractors read no option files.
pub fn extract_command(tool: &Path, dir: &Path, parallel: Option<u32>) -> ToolCommand {
    let mut cmd = ToolCommand::new(tool).arg("-x").arg("-C").arg(dir);
    if let Some(n) = parallel {
        cmd = cmd.arg(format!("--parallel={n}"));
    }
    cmd.stdin_piped()
}

/// `mariabackup|xtrabackup --defaults-file=DIR/backup-my.cnf --prepare --target-dir=DIR`:
/// applies the redo log copied during the backup. `backup-my.cnf` holds the InnoDB settings it
/// needs; the one that came in the snapshot is untrusted and is replaced by
/// [`prepare_option_file`] before this runs. `--defaults-file` keeps every other option file
/// out.
pub fn prepare_command(tool: &Path, dir: &Path, use_memory: Option<&str>) -> ToolCommand {
    let mut cmd = ToolCommand::new(tool)
        .arg(format!(
            "--defaults-file={}",
            dir.join("backup-my.cnf").display()
        ))
        .arg("--prepare")
        .arg(format!("--target-dir={}", dir.display()));
    if let Some(m) = use_memory {
        cmd = cmd.arg(format!("--use-memory={m}"));
    }
    cmd
}

/// What a value of a `backup-my.cnf` key that `--prepare` needs may look like.
#[derive(Debug, Clone, Copy)]
enum PrepareValue {
    /// Decimal digits.
    Number,
    /// Decimal digits with an optional `K`/`M`/`G` suffix.
    Size,
    /// A name: letters, digits, `_`.
    Word,
    /// `innodb_data_file_path`: `file:size[:autoextend][:max:size]`, `;`-separated, plain file
    /// names only.
    DataFiles,
    /// A directory inside the backup: `.`, `./` or a relative path without `..`.
    InsideDir,
    /// A server UUID.
    Uuid,
}

/// The keys of a backup's `backup-my.cnf` that `--prepare` needs (what mariabackup 10.11 and
/// xtrabackup 8 write), and their values' shapes. Every other key is dropped.
const PREPARE_KEYS: [(&str, PrepareValue); 15] = [
    ("innodb_checksum_algorithm", PrepareValue::Word),
    ("innodb_data_file_path", PrepareValue::DataFiles),
    ("innodb_log_file_size", PrepareValue::Size),
    ("innodb_log_files_in_group", PrepareValue::Number),
    ("innodb_log_block_size", PrepareValue::Size),
    ("innodb_page_size", PrepareValue::Size),
    ("innodb_undo_directory", PrepareValue::InsideDir),
    ("innodb_undo_tablespaces", PrepareValue::Number),
    ("innodb_undo_logs", PrepareValue::Number),
    ("innodb_compression_level", PrepareValue::Number),
    ("innodb_fast_checksum", PrepareValue::Word),
    ("innodb_log_checksums", PrepareValue::Word),
    ("redo_log_version", PrepareValue::Number),
    ("server_id", PrepareValue::Number),
    ("server_uuid", PrepareValue::Uuid),
];

/// Prefixes the option parser accepts in front of any option name.
const OPTION_PREFIXES: [&str; 6] = [
    "loose_", "skip_", "enable_", "disable_", "maximum_", "autoset_",
];

impl PrepareValue {
    fn accepts(self, v: &str) -> bool {
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        let size = |s: &str| {
            let body = s.strip_suffix(['K', 'M', 'G', 'k', 'm', 'g']).unwrap_or(s);
            digits(body)
        };
        let file_name = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        match self {
            PrepareValue::Number => digits(v),
            PrepareValue::Size => size(v),
            PrepareValue::Word => {
                !v.is_empty()
                    && v.len() <= 64
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }
            PrepareValue::DataFiles => v.split(';').all(|spec| {
                let parts: Vec<&str> = spec.split(':').collect();
                match parts.as_slice() {
                    [name, sz] => file_name(name) && size(sz),
                    [name, sz, "autoextend"] => file_name(name) && size(sz),
                    [name, sz, "autoextend", "max", max] => {
                        file_name(name) && size(sz) && size(max)
                    }
                    _ => false,
                }
            }),
            PrepareValue::InsideDir => {
                !v.is_empty()
                    && !v.starts_with('/')
                    && v.split('/')
                        .all(|c| c.is_empty() || c == "." || file_name(c))
            }
            PrepareValue::Uuid => {
                v.len() == 36 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            }
        }
    }
}

/// The `backup-my.cnf` `--prepare` reads, made from the one that came in the snapshot at
/// `href`: only the keys `--prepare` needs ([`PREPARE_KEYS`]), values checked, under
/// `[mysqld]`. Other keys are dropped.
///
/// # Errors
///
/// [`trove_guest_core::Error::Integrity`] naming `href` when the file names plugins
/// (`plugin_load`, `plugin_load_add`, `plugin_dir`, `plugin-*`, with any option prefix),
/// includes other files (`!include`, `!includedir`), or gives a needed key a value of another
/// shape (a data file or undo directory outside the backup, say).
pub fn prepare_option_file(href: &str, stream_file: &str) -> Result<String> {
    let refuse =
        |why: String| trove_guest_core::Error::integrity(href, format!("backup-my.cnf: {why}"));
    let mut kept: Vec<(&'static str, String)> = Vec::new();
    for (n, raw) in stream_file.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('!') {
            return Err(refuse(format!("line {}: includes another file", n + 1)));
        }
        if line.starts_with('[') {
            continue; // every group is read the same way below
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        let key = key.to_ascii_lowercase().replace('-', "_");
        let bare = OPTION_PREFIXES
            .iter()
            .fold(key.as_str(), |k, p| k.strip_prefix(p).unwrap_or(k));
        if bare.starts_with("plugin") {
            return Err(refuse(format!("line {}: sets {key} (plugins)", n + 1)));
        }
        let Some((name, shape)) = PREPARE_KEYS.iter().find(|(k, _)| *k == key) else {
            tracing::warn!(%href, key = %key, "dropping a backup-my.cnf key --prepare does not need");
            continue;
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        if !shape.accepts(value) {
            return Err(refuse(format!(
                "line {}: {name} = {value:?} is not allowed",
                n + 1
            )));
        }
        match kept.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => kept.push((name, value.to_owned())),
        }
    }
    let mut out = String::from(
        "# Written by trove-guest from the snapshot's backup-my.cnf: only what --prepare needs.\n[mysqld]\n",
    );
    for (k, v) in kept {
        out.push_str(&format!("{k}={v}\n"));
    }
    Ok(out)
}

/// Quotes a value for an option file (`"..."`, backslash escapes), so any printable password
/// is read back exactly (`#`, `;`, quotes and backslashes included).
///
/// # Errors
///
/// [`trove_guest_core::Error::InvalidInput`] for control characters (NUL, line breaks), which
/// option files cannot carry reliably. The value never appears in the error.
pub fn quote_option(v: &str) -> Result<String> {
    if v.chars().any(char::is_control) {
        return Err(trove_guest_core::Error::invalid(
            "option file value",
            "control characters cannot be written to an option file",
        ));
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// The contents of the backup tool's private option file: an `!include` of the server's
/// option file (when given) and a `[client]` group with the admin login (over TCP with
/// [`AdminTls::Verify`]: `ssl-ca` and `ssl-verify-server-cert`, which checks the certificate
/// for the admin host). Write it only into a 0600 `SecretFile`.
///
/// # Errors
///
/// [`trove_guest_core::Error::InvalidInput`] for a server config path or user name that cannot
/// be written to an option file.
pub fn tool_option_file(server_config: Option<&Path>, admin: &AdminConnection) -> Result<String> {
    let mut s = String::new();
    if let Some(p) = server_config {
        s.push_str(&format!(
            "!include {}\n",
            option_value("server config path", &p.to_string_lossy())?
        ));
    }
    s.push_str("[client]\n");
    s.push_str(&format!(
        "user = {}\n",
        option_value("admin user", &admin.user)?
    ));
    if !admin.password.is_empty() {
        s.push_str(&format!(
            "password = {}\n",
            quote_option(admin.password.expose())?
        ));
    }
    match &admin.socket {
        Some(sock) => s.push_str(&format!(
            "socket = {}\n",
            option_value("socket path", &sock.to_string_lossy())?
        )),
        None => {
            s.push_str(&format!(
                "host = {}\nport = {}\n",
                option_value("admin host", &admin.host)?,
                admin.port
            ));
            // TLS verified against the CA; the MariaDB/MySQL client checks the certificate
            // for the host it connects to (it cannot be told another name).
            if let AdminTls::Verify(v) = &admin.tls {
                s.push_str(&format!(
                    "ssl-ca = {}\nssl-verify-server-cert\n",
                    option_value("admin CA file", &v.ca_file.to_string_lossy())?
                ));
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What mariabackup 10.11 writes (taken from a real backup).
    const MARIABACKUP_10_11: &str = "# This options file was generated by innobackupex.\n\n\
        # The server\n[mysqld]\ninnodb_checksum_algorithm=crc32\n\
        innodb_data_file_path=ibdata1:12M:autoextend\ninnodb_log_file_size=33554432\n\
        innodb_page_size=16384\ninnodb_undo_directory=./\ninnodb_undo_tablespaces=0\n\
        innodb_compression_level=6\n\n\n";

    fn refusal(text: &str) -> String {
        let err = prepare_option_file("file:///s/x.xb", text).expect_err("refused");
        assert_eq!(err.kind(), trove_guest_core::ErrorKind::Integrity, "{err}");
        assert!(err.to_string().contains("file:///s/x.xb"), "{err}");
        err.to_string()
    }

    #[test]
    fn a_tls_admin_option_file_asks_for_verified_tls_over_tcp_only() {
        use trove_guest_core::Secret;
        let tcp = AdminConnection::new("127.0.0.1", 3306, "root", Secret::new("x"))
            .with_tls(AdminTls::verify("/etc/trove/tls/ca.pem", "db1.example.net"));
        let text = tool_option_file(None, &tcp).unwrap();
        assert!(
            text.contains("ssl-ca = /etc/trove/tls/ca.pem\nssl-verify-server-cert\n"),
            "{text}"
        );
        let sock = tcp.clone().with_socket("/run/mysqld/mysqld.sock");
        assert!(!tool_option_file(None, &sock).unwrap().contains("ssl"));
        let plain = tcp.with_tls(AdminTls::Off);
        assert!(!tool_option_file(None, &plain).unwrap().contains("ssl"));
    }

    #[test]
    fn the_backup_my_cnf_of_mariabackup_keeps_what_prepare_needs() {
        assert_eq!(
            prepare_option_file("h", MARIABACKUP_10_11).unwrap(),
            "# Written by trove-guest from the snapshot's backup-my.cnf: only what --prepare \
             needs.\n[mysqld]\ninnodb_checksum_algorithm=crc32\n\
             innodb_data_file_path=ibdata1:12M:autoextend\ninnodb_log_file_size=33554432\n\
             innodb_page_size=16384\ninnodb_undo_directory=./\ninnodb_undo_tablespaces=0\n\
             innodb_compression_level=6\n"
        );
    }

    #[test]
    fn plugins_and_includes_in_backup_my_cnf_are_refused() {
        for line in [
            "plugin_load=evil.so",
            "plugin-load-add = evil.so",
            "loose_plugin_dir=/tmp/x",
            "PLUGIN_MATURITY=unknown",
            "!include /etc/passwd",
            "!includedir /tmp",
        ] {
            let text = format!("{MARIABACKUP_10_11}[mariabackup]\n{line}\n");
            let err = refusal(&text);
            assert!(
                err.contains("plugin") || err.contains("includes"),
                "{line}: {err}"
            );
        }
    }

    #[test]
    fn needed_keys_pointing_outside_the_backup_are_refused_and_others_dropped() {
        for line in [
            "innodb_data_file_path=/etc/passwd:12M",
            "innodb_data_file_path=ibdata1:12M;../../x:1M",
            "innodb_data_file_path=/dev/sda:10Gnewraw",
            "innodb_undo_directory=/var/tmp",
            "innodb_undo_directory=../..",
            "innodb_page_size=16k; rm",
        ] {
            let err = refusal(&format!("[mysqld]\n{line}\n"));
            assert!(err.contains("is not allowed"), "{line}: {err}");
        }
        let kept = prepare_option_file(
            "h",
            "[mysqld]\ninnodb_log_group_home_dir=/elsewhere\ndatadir=/x\ninnodb_page_size=16k\n",
        )
        .unwrap();
        assert!(
            !kept.contains("/elsewhere") && !kept.contains("datadir"),
            "{kept}"
        );
        assert!(kept.ends_with("[mysqld]\ninnodb_page_size=16k\n"), "{kept}");
    }
}
