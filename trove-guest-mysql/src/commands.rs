//! The command lines of the backup tools (`mariabackup` / `xtrabackup`, `mbstream` /
//! `xbstream`), built for the core [`ToolCommand`] runner. Public so they can be audited; pinned
//! by snapshot tests.
//!
//! Credentials reach the backup tool only through a private 0600 option file
//! ([`tool_option_file`], held in a `SecretFile`) passed as the **first** argument,
//! `--defaults-file=...`, which also keeps the distribution's `/etc/mysql/my.cnf` from leaking
//! in. That file `!include`s the server's own option file when one is configured.

use std::path::Path;

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
/// applies the redo log copied during the backup. The backup's own `backup-my.cnf` holds the
/// InnoDB settings it needs.
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
/// option file (when given) and a `[client]` group with the admin login. Write it only into a
/// 0600 `SecretFile`.
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
        None => s.push_str(&format!(
            "host = {}\nport = {}\n",
            option_value("admin host", &admin.host)?,
            admin.port
        )),
    }
    Ok(s)
}
