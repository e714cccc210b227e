//! The exact SQL per flavor and version, the backup tool command lines, and the quoting of
//! hostile values, pinned by snapshot tests. MySQL and xtrabackup are covered only here (no
//! MySQL server or xtrabackup package exists on Debian 12); MariaDB also runs live.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use trove_guest_core::position::{BinlogCoordinates, MariaDbGtidList, MysqlGtidSet};
use trove_guest_core::{AdminConnection, Secret};
use trove_guest_mysql::Flavor;
use trove_guest_mysql::commands::{
    BackupArgs, backup_command, extract_command, prepare_command, quote_option, tool_option_file,
};
use trove_guest_mysql::config::{master_override, replica_override};
use trove_guest_mysql::sql::{
    Account, ChangeMaster, GtidStart, Sql, StartAt, quote_ident, quote_string, validate_host,
    validate_password, validate_user,
};

const FLAVORS: [(&str, Flavor); 5] = [
    ("mariadb_10_11", Flavor::mariadb(10, 11, 19)),
    ("mysql_5_7", Flavor::mysql(5, 7, 44)),
    ("mysql_8_0_20", Flavor::mysql(8, 0, 20)),
    ("mysql_8_0", Flavor::mysql(8, 0, 36)),
    ("mysql_8_4", Flavor::mysql(8, 4, 3)),
];

fn every_statement(flavor: Flavor) -> String {
    let sql = Sql::new(flavor);
    let acct = Account::new("trove_repl_replica-1", "10.0.0.7").unwrap();
    let pw = Secret::new("Pa55'w\\rd\"x");
    let coords = BinlogCoordinates {
        log_file: "mysql-bin.000002".parse().unwrap(),
        log_position: 825,
    };
    let mariadb_gtid: MariaDbGtidList = "0-1-42,1-2-7".parse().unwrap();
    let mysql_gtid: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42".parse().unwrap();
    let gtid = if flavor.is_mariadb() {
        GtidStart::MariaDb(&mariadb_gtid)
    } else {
        GtidStart::Mysql(&mysql_gtid)
    };
    let cm = |start| ChangeMaster {
        host: "10.0.0.5",
        port: 3306,
        user: "trove_repl_replica-1",
        password: &pw,
        start,
        connect_retry: 1,
    };
    let mut lines = vec![
        ("server_identity", Sql::server_identity()),
        ("session_setup", Sql::session_setup()),
        ("server_variables", sql.server_variables()),
        ("set_binlog_format_row", sql.set_binlog_format_row()),
        ("set_server_id", sql.set_server_id(2)),
        ("set_session_log_bin", sql.set_session_log_bin(false)),
        ("create_user", sql.create_user(&acct, &pw)),
        ("set_password", sql.set_password(&acct, &pw)),
        ("grant_replication", sql.grant_replication(&acct)),
        ("drop_user", sql.drop_user(&acct)),
        (
            "accounts_with_prefix",
            sql.accounts_with_prefix("trove_repl_"),
        ),
        ("accounts_named", sql.accounts_named("trove_repl_replica-1")),
        ("connections_of", sql.connections_of("trove_repl_replica-1")),
        ("kill_connection", sql.kill_connection(42)),
        ("connected_replicas", sql.connected_replicas()),
        ("replica_status", sql.replica_status()),
        ("binlog_status", sql.binlog_status()),
        ("start_replica", sql.start_replica()),
        ("stop_replica", sql.stop_replica()),
        ("reset_replica_all", sql.reset_replica_all()),
        ("reset_binary_logs", sql.reset_binary_logs()),
        (
            "change_master_gtid",
            sql.change_master(&cm(StartAt::Gtid)).unwrap(),
        ),
        (
            "change_master_file",
            sql.change_master(&cm(StartAt::File(&coords))).unwrap(),
        ),
        ("latest_gtid", sql.latest_gtid()),
        (
            "wait_for_gtid",
            sql.wait_for_gtid(gtid, Duration::from_millis(2500))
                .unwrap(),
        ),
        (
            "wait_for_position",
            sql.wait_for_position(&coords, Duration::from_secs(30)),
        ),
    ];
    for (i, st) in sql.seed_gtid(gtid).unwrap().into_iter().enumerate() {
        lines.push(if i == 0 {
            ("seed_gtid", st)
        } else {
            ("seed_gtid+", st)
        });
    }
    for (i, st) in sql.set_read_only(true).into_iter().enumerate() {
        lines.push(if i == 0 {
            ("read_only_on", st)
        } else {
            ("read_only_on+", st)
        });
    }
    for (i, st) in sql.set_read_only(false).into_iter().enumerate() {
        lines.push(if i == 0 {
            ("read_only_off", st)
        } else {
            ("read_only_off+", st)
        });
    }
    let admin = Account::new("root", "localhost").unwrap();
    let init = sql
        .admin_init_file(
            &admin,
            "CREATE USER `root`@`localhost` IDENTIFIED BY PASSWORD '*0123456789ABCDEF'",
            &["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION".to_owned()],
        )
        .unwrap();
    lines.push(("current_user", sql.current_user()));
    lines.push(("show_create_user", sql.show_create_user(&admin)));
    lines.push(("show_grants", sql.show_grants(&admin)));
    lines.push(("master_gtid", sql.master_gtid()));
    if let Some(st) = sql.print_hashes_as_hex() {
        lines.push(("print_hashes_as_hex", st));
    }
    let mut out = format!("# {flavor}\n");
    for (name, st) in lines {
        writeln!(out, "{name}: {}", st.expose_text()).unwrap();
        if st.holds_secret() {
            writeln!(out, "{name} (logged as): {st}").unwrap();
            assert!(
                !st.to_string().contains("Pa55"),
                "redacted form leaks the password"
            );
        }
    }
    out.push_str("--- admin init file (0600, one start) ---\n");
    out.push_str(init.expose());
    out
}

#[test]
fn sql_per_flavor_and_version_is_pinned() {
    for (name, flavor) in FLAVORS {
        insta::assert_snapshot!(format!("sql_{name}"), every_statement(flavor));
    }
}

#[test]
fn override_files_per_flavor_are_pinned() {
    let mut out = String::new();
    for (name, flavor) in FLAVORS {
        writeln!(out, "## {name} master").unwrap();
        let was_on = !flavor.is_mariadb() && flavor.version.major >= 8;
        out.push_str(
            &master_override(flavor, 1, Path::new("/srv/binlog/mysql-bin"), was_on).unwrap(),
        );
        writeln!(out, "## {name} replica").unwrap();
        out.push_str(
            &replica_override(
                flavor,
                2,
                Path::new("/srv/relay/relay-bin"),
                Some(("10.0.0.7", 3306)),
            )
            .unwrap(),
        );
    }
    insta::assert_snapshot!("override_files", out);
    assert!(master_override(FLAVORS[0].1, 1, Path::new("/x\nlog_bin=/etc/x"), false).is_err());
    assert!(replica_override(FLAVORS[0].1, 1, Path::new("/r"), Some(("h\nx", 1))).is_err());
}

#[test]
fn backup_tool_command_lines_are_pinned() {
    let mut out = String::new();
    for (tool, stream) in [
        ("/usr/bin/mariabackup", "/usr/bin/mbstream"),
        ("/usr/bin/xtrabackup", "/usr/bin/xbstream"),
    ] {
        let backup = backup_command(&BackupArgs {
            tool: Path::new(tool),
            defaults_file: Path::new("/tmp/tg-secret-XXXX/backup.cnf"),
            data_dir: Path::new("/var/lib/mysql"),
            scratch_dir: Path::new("/var/lib/.tg-backup-XXXX"),
            log_copy_interval_ms: 50,
            parallel: Some(2),
        });
        writeln!(out, "{}", backup.display()).unwrap();
        assert!(
            backup.get_args()[0]
                .to_string_lossy()
                .starts_with("--defaults-file="),
            "--defaults-file must come first"
        );
        writeln!(
            out,
            "{}",
            extract_command(
                Path::new(stream),
                Path::new("/var/lib/.tg-restore"),
                Some(2)
            )
            .display()
        )
        .unwrap();
        writeln!(
            out,
            "{}",
            extract_command(Path::new(stream), Path::new("/var/lib/.tg-restore"), None).display()
        )
        .unwrap();
        let prepare = prepare_command(
            Path::new(tool),
            Path::new("/var/lib/.tg-restore"),
            Some("256M"),
        );
        assert!(
            prepare.get_args()[0]
                .to_string_lossy()
                .starts_with("--defaults-file=")
        );
        writeln!(out, "{}", prepare.display()).unwrap();
    }
    let admin = AdminConnection::new("127.0.0.1", 3306, "admin", Secret::new("p\"w\\d#;x"))
        .with_socket("/run/mysqld/mysqld.sock");
    writeln!(out, "--- tool option file (0600 SecretFile) ---").unwrap();
    out.push_str(&tool_option_file(Some(Path::new("/etc/mysql/my.cnf")), &admin).unwrap());
    let tcp = AdminConnection::new("db.local", 3307, "admin", Secret::new(""));
    writeln!(out, "--- over TCP, no password ---").unwrap();
    out.push_str(&tool_option_file(None, &tcp).unwrap());
    insta::assert_snapshot!("tool_command_lines", out);
    let cmd = backup_command(&BackupArgs {
        tool: Path::new("mariabackup"),
        defaults_file: Path::new("/tmp/x.cnf"),
        data_dir: Path::new("/d"),
        scratch_dir: Path::new("/s"),
        log_copy_interval_ms: 50,
        parallel: None,
    });
    assert!(!cmd.display().contains("password"), "no password on argv");
}

/// Control characters shown as `<U+XXXX>`, everything else as it is.
fn visible(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("<U+{:04X}>", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[test]
fn hostile_values_are_quoted_or_refused() {
    let long = "x'".repeat(5000);
    let hostile: [(&str, &str); 8] = [
        ("single quote", "O'Brien"),
        ("backslash quote", "\\'; DROP USER root; --"),
        ("backslashes", "a\\\\b\\"),
        ("nul", "nul\0byte"),
        ("newline and ctrl-z", "a\nb\r\u{1a}"),
        ("double quote", "say \"hi\""),
        ("backtick", "t`x"),
        ("very long", &long),
    ];
    let mut out = String::new();
    for (name, v) in hostile {
        let shown = if v.len() > 60 {
            let q = quote_string(v);
            format!("{}... ({} bytes)", &q[..40], q.len())
        } else {
            visible(&quote_string(v))
        };
        writeln!(out, "{name}: string {shown}").unwrap();
        writeln!(
            out,
            "{name}: ident {}",
            quote_ident(v).map_or_else(|_| "refused".to_owned(), |q| visible(&q))
        )
        .unwrap();
        writeln!(
            out,
            "{name}: user {}",
            if validate_user(v).is_ok() {
                "accepted"
            } else {
                "refused"
            }
        )
        .unwrap();
        writeln!(
            out,
            "{name}: host {}",
            if validate_host(v).is_ok() {
                "accepted"
            } else {
                "refused"
            }
        )
        .unwrap();
        let pw = validate_password(&Secret::new(v));
        writeln!(
            out,
            "{name}: password {}",
            if pw.is_ok() { "accepted" } else { "refused" }
        )
        .unwrap();
        writeln!(
            out,
            "{name}: option file {}",
            if v.len() > 60 {
                "(long)".to_owned()
            } else {
                quote_option(v).unwrap_or_else(|_| "refused".into())
            }
        )
        .unwrap();
    }
    for bad in ["0-1-2'; DROP", "0-1-2\\", "0-1-\x002"] {
        assert!(bad.parse::<MariaDbGtidList>().is_err(), "{bad:?}");
    }
    assert!(
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5'"
            .parse::<MysqlGtidSet>()
            .is_err()
    );
    assert!(Account::new("ok", "10.0.0.%'--").is_err());
    assert!(Account::new("x'y", "%").is_err());
    insta::assert_snapshot!("hostile_values", out);
}
