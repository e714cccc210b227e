//! Every SQL statement this crate sends, per flavor and version, and the helpers that make
//! caller input safe inside them.
//!
//! Nothing outside this module builds SQL text. Values reach statements only through
//! [`quote_string`] (after validation by [`validate_user`], [`validate_host`],
//! [`validate_password`], or by the typed positions of `trove_guest_core::position`, whose
//! `Display` output is checked text). A [`Statement`] that carries a password says so: its
//! `Display`/`Debug` (what logs and errors use) show the password as `[REDACTED]`.
//!
//! Sessions opened by this crate run with `NO_BACKSLASH_ESCAPES` removed from `sql_mode`
//! ([`Sql::session_setup`]), which is what [`quote_string`]'s backslash escapes assume.
//!
//! This module is public so operators can audit what runs on their servers; its output for
//! MariaDB, MySQL 5.7, 8.0 and 8.4 is pinned by snapshot tests.

use std::fmt;
use std::time::Duration;

use trove_guest_core::position::{BinlogCoordinates, MariaDbGtidList, MysqlGtidSet};
use trove_guest_core::{Error, Result, Secret};

use crate::flavor::Flavor;

/// The longest user name accepted (MySQL's limit; MariaDB allows more).
pub const MAX_USER_LEN: usize = 32;
/// The longest host accepted.
pub const MAX_HOST_LEN: usize = 255;
/// The longest password accepted (MySQL 5.7's limit for `MASTER_PASSWORD`).
pub const MAX_PASSWORD_LEN: usize = 32;

const REDACTED: &str = "'[REDACTED]'";

/// One SQL statement. `Display` and `Debug` never show a password it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    text: String,
    redacted: Option<String>,
}

impl Statement {
    fn plain(text: impl Into<String>) -> Self {
        Statement {
            text: text.into(),
            redacted: None,
        }
    }

    fn secret(text: String, redacted: String) -> Self {
        Statement {
            text,
            redacted: Some(redacted),
        }
    }

    /// The text sent to the server. When [`Statement::holds_secret`] is true it contains a
    /// password: never log it.
    pub fn expose_text(&self) -> &str {
        &self.text
    }

    /// The text with any password replaced by `'[REDACTED]'`; safe for logs and errors.
    pub fn redacted(&self) -> &str {
        self.redacted.as_deref().unwrap_or(&self.text)
    }

    /// Whether the statement carries a password.
    pub fn holds_secret(&self) -> bool {
        self.redacted.is_some()
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.redacted())
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Statement({:?})", self.redacted())
    }
}

/// Quotes `s` as a MySQL/MariaDB string literal: `'`, `\`, NUL, newline, carriage return and
/// Ctrl-Z are backslash-escaped. Any string, of any length, round-trips. Assumes
/// `NO_BACKSLASH_ESCAPES` is off (see [`Sql::session_setup`]).
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an identifier (a table or schema name) in backticks, doubling backticks inside.
///
/// # Errors
///
/// [`Error::InvalidInput`] for an empty name, a name over 64 characters, or one holding NUL.
pub fn quote_ident(name: &str) -> Result<String> {
    if name.is_empty() || name.chars().count() > 64 || name.contains('\0') {
        return Err(Error::invalid(
            "SQL identifier",
            format!(
                "{:?} must be 1 to 64 characters without NUL",
                truncate(name)
            ),
        ));
    }
    Ok(format!("`{}`", name.replace('`', "``")))
}

/// Escapes `%`, `_` and `\` for a `LIKE` pattern (the result still needs [`quote_string`]).
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn truncate(s: &str) -> String {
    if s.len() <= 40 {
        s.to_owned()
    } else {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    }
}

/// Checks an account user name: 1 to 32 of `[A-Za-z0-9_.-]`.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub fn validate_user(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "user name",
            format!(
                "{:?} must be 1 to {MAX_USER_LEN} of letters, digits, '_', '.', '-'",
                truncate(user)
            ),
        ))
    }
}

/// Checks an account host: `%`, an IPv4/IPv6 address (optionally `/netmask`), a host name, or
/// a pattern of those with `%`/`_` wildcards; at most 255 bytes of `[A-Za-z0-9.:%_/-]`, not
/// starting with `-`.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub fn validate_host(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && !host.starts_with('-')
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'%' | b'_' | b'/' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "host",
            format!(
                "{:?} must be '%', an address or a host name (at most {MAX_HOST_LEN} bytes of \
                 letters, digits, '.', ':', '%', '_', '/', '-')",
                truncate(host)
            ),
        ))
    }
}

/// Checks a host a replica connects to (`MASTER_HOST`): like [`validate_host`] without
/// wildcards or netmasks.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub fn validate_connect_host(host: &str) -> Result<()> {
    validate_host(host)?;
    if host.contains(['%', '_', '/']) {
        return Err(Error::invalid(
            "master host",
            format!("{:?} is a pattern, not an address", truncate(host)),
        ));
    }
    Ok(())
}

/// Checks a password: 1 to 32 characters, no control characters (so it is safe in option files
/// too). Its value never appears in the error.
///
/// # Errors
///
/// [`Error::InvalidInput`] otherwise.
pub fn validate_password(password: &Secret) -> Result<()> {
    let p = password.expose();
    let n = p.chars().count();
    if n == 0 || n > MAX_PASSWORD_LEN {
        return Err(Error::invalid(
            "password",
            format!("must be 1 to {MAX_PASSWORD_LEN} characters (got {n})"),
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(Error::invalid(
            "password",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A validated `'user'@'host'` account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    user: String,
    host: String,
}

impl Account {
    /// Validates both parts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] from [`validate_user`] or [`validate_host`].
    pub fn new(user: impl Into<String>, host: impl Into<String>) -> Result<Self> {
        let (user, host) = (user.into(), host.into());
        validate_user(&user)?;
        validate_host(&host)?;
        Ok(Account { user, host })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}",
            quote_string(&self.user),
            quote_string(&self.host)
        )
    }
}

/// Where a replica starts reading its master's binary log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt<'a> {
    /// By GTID: MariaDB `MASTER_USE_GTID=slave_pos` (after `gtid_slave_pos` is set), MySQL
    /// auto-position (after `gtid_purged` is set).
    Gtid,
    /// At a binary log file and offset.
    File(&'a BinlogCoordinates),
}

/// The settings of a `CHANGE MASTER TO` / `CHANGE REPLICATION SOURCE TO`.
#[derive(Debug, Clone, Copy)]
pub struct ChangeMaster<'a> {
    /// Master host (address or name, no wildcards).
    pub host: &'a str,
    /// Master port.
    pub port: u16,
    /// Replication user.
    pub user: &'a str,
    /// Its password.
    pub password: &'a Secret,
    /// Where to start.
    pub start: StartAt<'a>,
    /// Seconds between reconnection attempts.
    pub connect_retry: u32,
}

/// The files of a replica's TLS connection to its master ([`Sql::change_master_tls`]).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaTls<'a> {
    /// The CA certificate the master's certificate must chain to.
    pub ca_file: &'a std::path::Path,
}

/// A GTID position of either flavor, to seed a replica with.
#[derive(Debug, Clone, Copy)]
pub enum GtidStart<'a> {
    /// MariaDB: `gtid_slave_pos`.
    MariaDb(&'a MariaDbGtidList),
    /// MySQL: `gtid_purged`.
    Mysql(&'a MysqlGtidSet),
}

fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// The statements of one server flavor and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sql {
    flavor: Flavor,
}

impl Sql {
    /// Statements for `flavor`.
    pub fn new(flavor: Flavor) -> Self {
        Sql { flavor }
    }

    /// The flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Identifies the server (`version`, `comment`); flavor independent.
    pub fn server_identity() -> Statement {
        Statement::plain("SELECT VERSION() AS version, @@version_comment AS comment")
    }

    /// Run first on every session: string literals use backslash escapes.
    pub fn session_setup() -> Statement {
        Statement::plain(
            "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
        )
    }

    /// Replication-relevant server variables, as columns `log_bin`, `binlog_format`,
    /// `server_id`, `read_only`, `gtid` (MariaDB `gtid_current_pos`, MySQL `gtid_executed`),
    /// `gtid_binlog` (MariaDB `gtid_binlog_pos`, MySQL `gtid_executed`) and `gtid_mode`.
    pub fn server_variables(&self) -> Statement {
        if self.flavor.is_mariadb() {
            Statement::plain(
                "SELECT @@GLOBAL.log_bin AS log_bin, @@GLOBAL.binlog_format AS binlog_format, \
                 @@GLOBAL.server_id AS server_id, @@GLOBAL.read_only AS read_only, \
                 @@GLOBAL.gtid_current_pos AS gtid, @@GLOBAL.gtid_binlog_pos AS gtid_binlog, \
                 'ON' AS gtid_mode",
            )
        } else {
            Statement::plain(
                "SELECT @@GLOBAL.log_bin AS log_bin, @@GLOBAL.binlog_format AS binlog_format, \
                 @@GLOBAL.server_id AS server_id, @@GLOBAL.read_only AS read_only, \
                 @@GLOBAL.gtid_executed AS gtid, @@GLOBAL.gtid_executed AS gtid_binlog, \
                 @@GLOBAL.gtid_mode AS gtid_mode",
            )
        }
    }

    /// `SET GLOBAL binlog_format = 'ROW'`.
    pub fn set_binlog_format_row(&self) -> Statement {
        Statement::plain("SET GLOBAL binlog_format = 'ROW'")
    }

    /// `SET GLOBAL server_id = n`.
    pub fn set_server_id(&self, id: u32) -> Statement {
        Statement::plain(format!("SET GLOBAL server_id = {id}"))
    }

    /// Turns binary logging of this session's statements off or on (account changes made for
    /// replication are kept out of the binary log, so replicas neither get them nor see GTIDs
    /// for them).
    pub fn set_session_log_bin(&self, on: bool) -> Statement {
        Statement::plain(format!("SET SESSION sql_log_bin = {}", u8::from(on)))
    }

    /// Creates an account if missing, with `password`.
    pub fn create_user(&self, account: &Account, password: &Secret) -> Statement {
        let head = format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY ");
        Statement::secret(
            format!("{head}{}", quote_string(password.expose())),
            format!("{head}{REDACTED}"),
        )
    }

    /// Sets an account's password.
    pub fn set_password(&self, account: &Account, password: &Secret) -> Statement {
        let head = format!("ALTER USER {account} IDENTIFIED BY ");
        Statement::secret(
            format!("{head}{}", quote_string(password.expose())),
            format!("{head}{REDACTED}"),
        )
    }

    /// Grants replication only (least privilege).
    pub fn grant_replication(&self, account: &Account) -> Statement {
        Statement::plain(format!("GRANT REPLICATION SLAVE ON *.* TO {account}"))
    }

    /// Drops an account if it exists.
    pub fn drop_user(&self, account: &Account) -> Statement {
        Statement::plain(format!("DROP USER IF EXISTS {account}"))
    }

    /// Accounts whose user name starts with `prefix` (columns `user`, `host`).
    pub fn accounts_with_prefix(&self, prefix: &str) -> Statement {
        Statement::plain(format!(
            "SELECT User AS user, Host AS host FROM mysql.user WHERE User LIKE {} ORDER BY User, Host",
            quote_string(&format!("{}%", escape_like(prefix)))
        ))
    }

    /// Accounts named `user`, any host (columns `user`, `host`).
    pub fn accounts_named(&self, user: &str) -> Statement {
        Statement::plain(format!(
            "SELECT User AS user, Host AS host FROM mysql.user WHERE User = {} ORDER BY Host",
            quote_string(user)
        ))
    }

    /// Connection ids of sessions logged in as `user` (column `id`).
    pub fn connections_of(&self, user: &str) -> Statement {
        Statement::plain(format!(
            "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = {}",
            quote_string(user)
        ))
    }

    /// Ends a connection.
    pub fn kill_connection(&self, id: u64) -> Statement {
        Statement::plain(format!("KILL CONNECTION {id}"))
    }

    /// Number of connected replicas (column `n`).
    pub fn connected_replicas(&self) -> Statement {
        Statement::plain(
            "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        )
    }

    /// The replica status (no row when not a replica).
    pub fn replica_status(&self) -> Statement {
        Statement::plain(if self.flavor.uses_replica_syntax() {
            "SHOW REPLICA STATUS"
        } else {
            "SHOW SLAVE STATUS"
        })
    }

    /// The binary log position (no row when binary logging is off).
    pub fn binlog_status(&self) -> Statement {
        Statement::plain(if self.flavor.uses_binary_log_syntax() {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW MASTER STATUS"
        })
    }

    /// Starts both replication threads.
    pub fn start_replica(&self) -> Statement {
        Statement::plain(if self.flavor.uses_replica_syntax() {
            "START REPLICA"
        } else {
            "START SLAVE"
        })
    }

    /// Stops both replication threads.
    pub fn stop_replica(&self) -> Statement {
        Statement::plain(if self.flavor.uses_replica_syntax() {
            "STOP REPLICA"
        } else {
            "STOP SLAVE"
        })
    }

    /// Forgets the master connection and relay logs.
    pub fn reset_replica_all(&self) -> Statement {
        Statement::plain(if self.flavor.uses_replica_syntax() {
            "RESET REPLICA ALL"
        } else {
            "RESET SLAVE ALL"
        })
    }

    /// Deletes every binary log (and, on MySQL, the executed GTID set).
    pub fn reset_binary_logs(&self) -> Statement {
        Statement::plain(if self.flavor.uses_binary_log_syntax() {
            "RESET BINARY LOGS AND GTIDS"
        } else {
            "RESET MASTER"
        })
    }

    /// Seeds the replica's GTID state with the snapshot's: MariaDB `gtid_slave_pos`; MySQL
    /// clears its own binary log GTID state and sets `gtid_purged`, with `super_read_only`
    /// lifted around the two (`read_only` stays on).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the position is of the other flavor.
    pub fn seed_gtid(&self, start: GtidStart<'_>) -> Result<Vec<Statement>> {
        match (self.flavor.is_mariadb(), start) {
            (true, GtidStart::MariaDb(g)) => Ok(vec![Statement::plain(format!(
                "SET GLOBAL gtid_slave_pos = {}",
                quote_string(&g.to_string())
            ))]),
            (false, GtidStart::Mysql(g)) => Ok(vec![
                Statement::plain("SET GLOBAL super_read_only = OFF"),
                self.reset_binary_logs(),
                Statement::plain(format!(
                    "SET GLOBAL gtid_purged = {}",
                    quote_string(&g.to_string())
                )),
                Statement::plain("SET GLOBAL super_read_only = ON"),
            ]),
            _ => Err(Error::invalid(
                "GTID position",
                format!("not a {} GTID position", self.flavor.datastore()),
            )),
        }
    }

    /// Points the replica at its master.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad host, user or password.
    pub fn change_master(&self, cm: &ChangeMaster<'_>) -> Result<Statement> {
        validate_connect_host(cm.host)?;
        validate_user(cm.user)?;
        validate_password(cm.password)?;
        let source = self.flavor.uses_source_syntax();
        let (verb, p) = if source {
            ("CHANGE REPLICATION SOURCE TO", "SOURCE")
        } else {
            ("CHANGE MASTER TO", "MASTER")
        };
        let head = format!(
            "{verb} {p}_HOST={}, {p}_PORT={}, {p}_USER={}, {p}_PASSWORD=",
            quote_string(cm.host),
            cm.port,
            quote_string(cm.user)
        );
        let mut tail = format!(", {p}_CONNECT_RETRY={}", cm.connect_retry.max(1));
        match (self.flavor.is_mariadb(), cm.start) {
            (true, StartAt::Gtid) => tail.push_str(", MASTER_USE_GTID=slave_pos"),
            (true, StartAt::File(c)) => tail.push_str(&format!(
                ", MASTER_LOG_FILE={}, MASTER_LOG_POS={}, MASTER_USE_GTID=no",
                quote_string(c.log_file.as_str()),
                c.log_position
            )),
            (false, StartAt::Gtid) => tail.push_str(&format!(", {p}_AUTO_POSITION=1")),
            (false, StartAt::File(c)) => tail.push_str(&format!(
                ", {p}_AUTO_POSITION=0, {p}_LOG_FILE={}, {p}_LOG_POS={}",
                quote_string(c.log_file.as_str()),
                c.log_position
            )),
        }
        if self.flavor.needs_public_key() {
            tail.push_str(if source {
                ", GET_SOURCE_PUBLIC_KEY=1"
            } else {
                ", GET_MASTER_PUBLIC_KEY=1"
            });
        }
        Ok(Statement::secret(
            format!("{head}{}{tail}", quote_string(cm.password.expose())),
            format!("{head}{REDACTED}{tail}"),
        ))
    }

    /// Requires TLS of an account's connections: `ALTER USER .. REQUIRE SSL` (the password
    /// still authenticates; no client certificate is asked for). Kept out of
    /// [`create_user`](Self::create_user) so plaintext setups are unchanged.
    pub fn require_tls(&self, account: &Account) -> Statement {
        Statement::plain(format!("ALTER USER {account} REQUIRE SSL"))
    }

    /// The TLS settings of a replica's connection to its master, run right after
    /// [`change_master`](Self::change_master): TLS on, the master's certificate verified
    /// against the CA in `ca_file` and for the host the replica connects to. MariaDB and MySQL
    /// before 8.0.23: `CHANGE MASTER TO MASTER_SSL=1, MASTER_SSL_CA=..,
    /// MASTER_SSL_VERIFY_SERVER_CERT=1`; MySQL 8.0.23+: `CHANGE REPLICATION SOURCE TO
    /// SOURCE_SSL=1, SOURCE_SSL_CA=.., SOURCE_SSL_VERIFY_SERVER_CERT=1`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a path that is not valid UTF-8 text without NUL bytes.
    pub fn change_master_tls(&self, tls: &ReplicaTls<'_>) -> Result<Statement> {
        let text = |p: &std::path::Path, what: &str| {
            p.to_str()
                .filter(|t| !t.is_empty() && !t.contains('\0'))
                .map(quote_string)
                .ok_or_else(|| Error::invalid(what.to_owned(), format!("{}", p.display())))
        };
        let (verb, p) = if self.flavor.uses_source_syntax() {
            ("CHANGE REPLICATION SOURCE TO", "SOURCE")
        } else {
            ("CHANGE MASTER TO", "MASTER")
        };
        Ok(Statement::plain(format!(
            "{verb} {p}_SSL=1, {p}_SSL_CA={}, {p}_SSL_VERIFY_SERVER_CERT=1",
            text(tls.ca_file, "CA file")?
        )))
    }

    /// The latest executed GTID position (column `gtid`): MariaDB `gtid_current_pos`, MySQL
    /// `gtid_executed`.
    pub fn latest_gtid(&self) -> Statement {
        Statement::plain(if self.flavor.is_mariadb() {
            "SELECT @@GLOBAL.gtid_current_pos AS gtid"
        } else {
            "SELECT @@GLOBAL.gtid_executed AS gtid"
        })
    }

    /// Waits (server side, at most `timeout`) until a GTID position is applied (column `r`):
    /// MariaDB `MASTER_GTID_WAIT` (0 reached, -1 timeout), MySQL
    /// `WAIT_FOR_EXECUTED_GTID_SET` (0 reached, 1 timeout).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the position is of the other flavor.
    pub fn wait_for_gtid(&self, target: GtidStart<'_>, timeout: Duration) -> Result<Statement> {
        match (self.flavor.is_mariadb(), target) {
            (true, GtidStart::MariaDb(g)) => Ok(Statement::plain(format!(
                "SELECT MASTER_GTID_WAIT({}, {}) AS r",
                quote_string(&g.to_string()),
                seconds(timeout)
            ))),
            (false, GtidStart::Mysql(g)) => Ok(Statement::plain(format!(
                "SELECT WAIT_FOR_EXECUTED_GTID_SET({}, {}) AS r",
                quote_string(&g.to_string()),
                seconds(timeout)
            ))),
            _ => Err(Error::invalid(
                "GTID position",
                format!("not a {} GTID position", self.flavor.datastore()),
            )),
        }
    }

    /// Waits (server side, at most `timeout`) until the replica has applied up to binlog
    /// coordinates of its master (column `r`: events waited for, -1 timeout, NULL when
    /// replication is not running).
    pub fn wait_for_position(&self, c: &BinlogCoordinates, timeout: Duration) -> Statement {
        let f = if self.flavor.uses_source_pos_wait() {
            "SOURCE_POS_WAIT"
        } else {
            "MASTER_POS_WAIT"
        };
        Statement::plain(format!(
            "SELECT {f}({}, {}, {}) AS r",
            quote_string(c.log_file.as_str()),
            c.log_position,
            seconds(timeout)
        ))
    }

    /// The master's executed GTID position, readable by the replication account (column
    /// `gtid`; global variables need no privilege): MariaDB `gtid_binlog_pos`, MySQL
    /// `gtid_executed`.
    pub fn master_gtid(&self) -> Statement {
        Statement::plain(if self.flavor.is_mariadb() {
            "SELECT @@GLOBAL.gtid_binlog_pos AS gtid"
        } else {
            "SELECT @@GLOBAL.gtid_executed AS gtid"
        })
    }

    /// The account this session is logged in as (column `account`, `user@host`).
    pub fn current_user(&self) -> Statement {
        Statement::plain("SELECT CURRENT_USER() AS account")
    }

    /// MySQL 8.0.17+: print password hashes in hex, so `SHOW CREATE USER` output is text.
    pub fn print_hashes_as_hex(&self) -> Option<Statement> {
        (self.flavor.kind == crate::flavor::FlavorKind::Mysql
            && self.flavor.version >= crate::flavor::Version::new(8, 0, 17))
        .then(|| Statement::plain("SET SESSION print_identified_with_as_hex = ON"))
    }

    /// The statement that recreates `account` with its authentication (first column).
    pub fn show_create_user(&self, account: &Account) -> Statement {
        Statement::plain(format!("SHOW CREATE USER {account}"))
    }

    /// The grants of `account` (first column, one row each).
    pub fn show_grants(&self, account: &Account) -> Statement {
        Statement::plain(format!("SHOW GRANTS FOR {account}"))
    }

    /// An `init_file` that recreates this server's own admin account after a physical restore
    /// replaced the privilege tables with the master's: drop the master's version of the
    /// account, replay `create_user` and `grants` as this server printed them before the
    /// restore. Not binary-logged. Holds password hashes: the result is a [`Secret`] to be
    /// written only to a 0600 file.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when a replayed statement spans lines (an init file runs one
    /// statement per line).
    pub fn admin_init_file(
        &self,
        account: &Account,
        create_user: &str,
        grants: &[String],
    ) -> Result<Secret> {
        let mut out = String::new();
        let super_ro = self.flavor.has_super_read_only();
        if super_ro {
            // The replica override sets super_read_only, which would block even this.
            out.push_str("SET GLOBAL super_read_only = OFF;\n");
        }
        out.push_str("SET SESSION sql_log_bin = 0;\n");
        out.push_str(&format!("{};\n", self.drop_user(account)));
        for st in std::iter::once(create_user).chain(grants.iter().map(String::as_str)) {
            if st.contains(['\n', '\r']) {
                return Err(Error::invalid(
                    "admin account definition",
                    "a statement printed by the server spans lines",
                ));
            }
            out.push_str(st.trim_end_matches(';'));
            out.push_str(";\n");
        }
        if super_ro {
            out.push_str("SET GLOBAL super_read_only = ON;\n");
        }
        Ok(Secret::new(out))
    }

    /// Makes the server refuse client writes, or accept them again (MySQL also flips
    /// `super_read_only`, in the order the server requires).
    pub fn set_read_only(&self, on: bool) -> Vec<Statement> {
        let v = if on { "ON" } else { "OFF" };
        if !self.flavor.has_super_read_only() {
            return vec![Statement::plain(format!("SET GLOBAL read_only = {v}"))];
        }
        let ro = Statement::plain(format!("SET GLOBAL read_only = {v}"));
        let sro = Statement::plain(format!("SET GLOBAL super_read_only = {v}"));
        if on { vec![ro, sro] } else { vec![sro, ro] }
    }
}

/// Statements of switchover and failover (MariaDB).
impl Sql {
    /// MariaDB's GTID state (columns `binlog_pos`, `binlog_state`, `slave_pos`, `current_pos`,
    /// `log_bin`, `server_id`).
    pub fn gtid_state(&self) -> Statement {
        Statement::plain(
            "SELECT @@GLOBAL.gtid_binlog_pos AS binlog_pos, @@GLOBAL.gtid_binlog_state AS binlog_state, \
             @@GLOBAL.gtid_slave_pos AS slave_pos, @@GLOBAL.gtid_current_pos AS current_pos, \
             @@GLOBAL.log_bin AS log_bin, @@GLOBAL.server_id AS server_id",
        )
    }

    /// Client sessions that hold or are running a write (column `id`): an open InnoDB
    /// transaction or a running statement, other than this session, server threads and
    /// replication (binlog dump) connections.
    pub fn writing_sessions(&self) -> Statement {
        Statement::plain(
            "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
             AND USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user') \
             AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID', 'Killed', \
             'Slave_IO', 'Slave_SQL', 'Slave_worker') \
             AND (COMMAND = 'Query' OR ID IN \
             (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX))",
        )
    }

    /// Bounds how long this session waits for a metadata or global lock.
    pub fn lock_wait_timeout(&self, timeout: Duration) -> Statement {
        Statement::plain(format!(
            "SET SESSION lock_wait_timeout = {}",
            timeout.as_secs().max(1)
        ))
    }

    /// Takes the global read lock: every write blocks, privileged sessions included, while
    /// this session holds it.
    pub fn global_read_lock(&self) -> Statement {
        Statement::plain("FLUSH TABLES WITH READ LOCK")
    }

    /// Releases the global read lock.
    pub fn unlock_tables(&self) -> Statement {
        Statement::plain("UNLOCK TABLES")
    }

    /// Stops the replica's receiver (IO thread) only; the applier goes on.
    pub fn stop_replica_receiver(&self) -> Statement {
        Statement::plain(if self.flavor.uses_replica_syntax() {
            "STOP REPLICA IO_THREAD"
        } else {
            "STOP SLAVE IO_THREAD"
        })
    }
}

#[cfg(test)]
pub(crate) fn unquote_string(q: &str) -> Option<String> {
    let inner = q.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => out.push(match it.next()? {
                '0' => '\0',
                'n' => '\n',
                'r' => '\r',
                'Z' => '\u{1a}',
                other => other,
            }),
            '\'' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tls_statements_per_version() {
        let ca = std::path::Path::new("/etc/trove/conf.d/trove-replication-ca.pem");
        let tls = ReplicaTls { ca_file: ca };
        let expect = [
            (
                Flavor::mariadb(10, 11, 6),
                "CHANGE MASTER TO MASTER_SSL=1, MASTER_SSL_CA='/etc/trove/conf.d/trove-replication-ca.pem', MASTER_SSL_VERIFY_SERVER_CERT=1",
            ),
            (
                Flavor::mysql(5, 7, 44),
                "CHANGE MASTER TO MASTER_SSL=1, MASTER_SSL_CA='/etc/trove/conf.d/trove-replication-ca.pem', MASTER_SSL_VERIFY_SERVER_CERT=1",
            ),
            (
                Flavor::mysql(8, 0, 22),
                "CHANGE MASTER TO MASTER_SSL=1, MASTER_SSL_CA='/etc/trove/conf.d/trove-replication-ca.pem', MASTER_SSL_VERIFY_SERVER_CERT=1",
            ),
            (
                Flavor::mysql(8, 0, 23),
                "CHANGE REPLICATION SOURCE TO SOURCE_SSL=1, SOURCE_SSL_CA='/etc/trove/conf.d/trove-replication-ca.pem', SOURCE_SSL_VERIFY_SERVER_CERT=1",
            ),
            (
                Flavor::mysql(8, 4, 3),
                "CHANGE REPLICATION SOURCE TO SOURCE_SSL=1, SOURCE_SSL_CA='/etc/trove/conf.d/trove-replication-ca.pem', SOURCE_SSL_VERIFY_SERVER_CERT=1",
            ),
        ];
        for (flavor, sql) in expect {
            let st = Sql::new(flavor).change_master_tls(&tls).unwrap();
            assert_eq!(st.expose_text(), sql, "{flavor}");
            assert!(!st.holds_secret());
        }
        let quoted = std::path::Path::new("/etc/trove/it's-ca.pem");
        assert_eq!(
            Sql::new(Flavor::mysql(8, 4, 3))
                .change_master_tls(&ReplicaTls { ca_file: quoted })
                .unwrap()
                .expose_text(),
            "CHANGE REPLICATION SOURCE TO SOURCE_SSL=1, SOURCE_SSL_CA='/etc/trove/it\\'s-ca.pem', SOURCE_SSL_VERIFY_SERVER_CERT=1"
        );
        let account = Account::new("trove_repl_r1", "%").unwrap();
        for flavor in [Flavor::mariadb(10, 11, 6), Flavor::mysql(8, 0, 36)] {
            assert_eq!(
                Sql::new(flavor).require_tls(&account).expose_text(),
                "ALTER USER 'trove_repl_r1'@'%' REQUIRE SSL"
            );
        }
    }

    #[test]
    fn quote_string_escapes_hostile_values() {
        assert_eq!(quote_string("it's"), r"'it\'s'");
        assert_eq!(quote_string(r"a\b"), r"'a\\b'");
        assert_eq!(quote_string("nul\0end"), r"'nul\0end'");
        assert_eq!(
            quote_string("x\\'; DROP USER root; --"),
            r"'x\\\'; DROP USER root; --'"
        );
        let long = "'\\".repeat(100_000);
        let q = quote_string(&long);
        assert_eq!(unquote_string(&q).as_deref(), Some(long.as_str()));
    }

    proptest! {
        #[test]
        fn quoted_strings_round_trip_and_never_end_early(s in any::<String>()) {
            let q = quote_string(&s);
            prop_assert_eq!(unquote_string(&q), Some(s));
        }
    }

    #[test]
    fn validators_reject_hostile_names() {
        for bad in [
            "",
            "a'b",
            "a\\b",
            "a\0b",
            "a b",
            "root'@'%",
            &"x".repeat(33),
            "ü",
        ] {
            assert!(validate_user(bad).is_err(), "user {bad:?} accepted");
        }
        validate_user("trove_repl_conf-writes").unwrap();
        for bad in [
            "",
            "a'b",
            "a\\b",
            "h\0",
            "-opt",
            "host name",
            &"h".repeat(256),
            "x\n",
        ] {
            assert!(validate_host(bad).is_err(), "host {bad:?} accepted");
        }
        for good in [
            "%",
            "127.0.0.1",
            "10.0.0.%",
            "::1",
            "db-1.example.com",
            "10.0.0.0/255.0.0.0",
        ] {
            validate_host(good).unwrap();
        }
        assert!(validate_connect_host("10.0.0.%").is_err());
        assert!(validate_password(&Secret::new("")).is_err());
        assert!(validate_password(&Secret::new("a".repeat(33))).is_err());
        assert!(validate_password(&Secret::new("nul\0")).is_err());
        validate_password(&Secret::new(r#"q'uo"te\back"#)).unwrap();
        let e = validate_password(&Secret::new("hunter2hunter2hunter2hunter2hunter2")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn quote_ident_doubles_backticks() {
        assert_eq!(quote_ident("a`b").unwrap(), "`a``b`");
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0").is_err());
        assert!(quote_ident(&"t".repeat(65)).is_err());
    }

    #[test]
    fn statements_with_passwords_are_redacted_in_display_and_debug() {
        let sql = Sql::new(Flavor::mariadb(10, 11, 19));
        let acct = Account::new("trove_repl_x", "%").unwrap();
        let pw = Secret::new("S3cr3t'pw");
        let st = sql.create_user(&acct, &pw);
        assert!(st.holds_secret());
        assert!(st.expose_text().contains(r"S3cr3t\'pw"));
        for shown in [st.to_string(), format!("{st:?}"), st.redacted().to_owned()] {
            assert!(!shown.contains("S3cr3t"), "{shown}");
            assert!(shown.contains("[REDACTED]"));
        }
    }

    #[test]
    fn gtid_positions_of_the_other_flavor_are_refused() {
        let maria = Sql::new(Flavor::mariadb(10, 11, 19));
        let mysql = Sql::new(Flavor::mysql(8, 0, 36));
        let mg: MariaDbGtidList = "0-1-5".parse().unwrap();
        let my: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".parse().unwrap();
        assert!(maria.seed_gtid(GtidStart::Mysql(&my)).is_err());
        assert!(mysql.seed_gtid(GtidStart::MariaDb(&mg)).is_err());
        assert!(
            maria
                .wait_for_gtid(GtidStart::Mysql(&my), Duration::from_secs(1))
                .is_err()
        );
    }
}
