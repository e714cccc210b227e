//! The version-specific settings, SQL and tool command lines pinned per PostgreSQL major version
//! with snapshot tests. Only PostgreSQL 15 runs live here; 12, 13, 14 and 16 are covered by
//! these snapshots alone.

use std::collections::HashMap;
use std::path::Path;

use trove_guest_core::wire::MasterAddress;
use trove_guest_core::{AdminConnection, Secret};

use crate::flavor::ServerVersion;
use crate::strategy::PostgresStrategyOptions;
use crate::{commands, conf, master, replica};

const ADMIN_PASSWORD: &str = "Adm1n-Secret-Password";
const REPLICATION_PASSWORD: &str = "Repl1cation-Secret-Password";

fn render(num: i64) -> String {
    let v = ServerVersion::from_num(num).unwrap();
    let f = v.flavor();
    let major = v.major();
    let mut out = format!("PostgreSQL {major} (server_version_num {num}): {f:?}\n\n");

    let opts = PostgresStrategyOptions::new();
    for (label, segment) in [("16 MiB", 16u64 << 20), ("64 MiB", 64 << 20)] {
        let settings = master::master_settings(f, &opts, &HashMap::new(), segment).unwrap();
        out.push_str(&format!(
            "## master override file (wal_keep_size_mb 1024, {label} WAL segments)\n{}\n",
            conf::render_settings("trove-guest: replication master settings", &settings)
        ));
    }
    let elsewhere: HashMap<String, String> = [
        ("wal_level", "logical"),
        ("max_wal_senders", "32"),
        ("max_replication_slots", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = master::master_settings(f, &opts, &elsewhere, 16 << 20).unwrap();
    out.push_str(&format!(
        "## master override file (logical, 32 senders and 4 slots set elsewhere)\n{}\n",
        conf::render_settings("trove-guest: replication master settings", &settings)
    ));
    out.push_str(&format!(
        "## settings demote reverts\n{}\n\n",
        f.master_settings().join(", ")
    ));
    out.push_str(&format!("## WAL receiver\n{}\n\n", f.wal_receiver_sql()));

    let bin = format!("/usr/lib/postgresql/{major}/bin");
    let admin = AdminConnection::new("127.0.0.1", 5432, "postgres", Secret::new(ADMIN_PASSWORD))
        .with_socket("/run/postgresql");
    let conninfo =
        commands::admin_conninfo(&admin, Some(Path::new("/tmp/tg-secret-x/pgpass"))).unwrap();
    let basebackup = commands::basebackup(
        Path::new(&bin).join("pg_basebackup"),
        &conninfo,
        "trove-guest trove_snap_r1",
        f,
    );
    out.push_str(&format!("## pg_basebackup\n{}\n\n", basebackup.display()));

    let pw = Secret::new(REPLICATION_PASSWORD);
    let passfile = Path::new("/etc/postgresql/conf.d/trove-replication.pgpass");
    let source = conf::conninfo(
        "10.0.0.5",
        5432,
        "trove_repl_r1",
        passfile,
        &[("dbname", "postgres")],
    )
    .unwrap();
    let rewind = commands::rewind(
        Path::new(&bin).join("pg_rewind"),
        Path::new("/var/lib/postgresql/data"),
        &source,
        Path::new("/var/lib/postgresql"),
        None,
    );
    out.push_str(&format!("## pg_rewind\n{}\n\n", rewind.display()));

    let master = MasterAddress {
        host: "10.0.0.5".into(),
        port: 5432,
    };
    let mut standby = replica::standby_settings(
        &master,
        "trove_repl_r1",
        &pw,
        Some("trove_slot_r1_2"),
        passfile,
        v,
        false,
        None,
    )
    .unwrap();
    standby.extend(replica::rewindable_settings(v, 1024));
    out.push_str(&format!(
        "## standby override file (settings reloadable: {})\n{}",
        f.standby_settings_reloadable(),
        conf::render_settings("trove-guest: standby of 10.0.0.5:5432", &standby)
    ));
    assert!(
        !out.contains(ADMIN_PASSWORD) && !out.contains(REPLICATION_PASSWORD),
        "no password in settings or command lines:\n{out}"
    );
    out
}

#[test]
fn version_specific_settings_sql_and_commands_postgresql_12() {
    insta::assert_snapshot!(render(120017));
}

#[test]
fn version_specific_settings_sql_and_commands_postgresql_13() {
    insta::assert_snapshot!(render(130013));
}

#[test]
fn version_specific_settings_sql_and_commands_postgresql_14() {
    insta::assert_snapshot!(render(140010));
}

#[test]
fn version_specific_settings_sql_and_commands_postgresql_15() {
    insta::assert_snapshot!(render(150004));
}

#[test]
fn version_specific_settings_sql_and_commands_postgresql_16() {
    insta::assert_snapshot!(render(160002));
}

#[test]
fn pg_basebackup_and_pg_rewind_in_a_container_exec_with_container_paths() {
    use trove_guest_core::{ContainerExec, OsUser, ToolPlace};
    let place = ToolPlace::Container(
        ContainerExec::new("/run/podman/podman.sock", "pg1")
            .with_client("podman")
            .with_mount("/srv/trove/pg1", "/var/lib/postgresql/trove"),
    );
    let admin = AdminConnection::new("127.0.0.1", 5432, "postgres", Secret::new(ADMIN_PASSWORD))
        .with_socket("/srv/trove/pg1/run");
    let conninfo = commands::admin_conninfo(
        &admin,
        Some(Path::new("/srv/trove/pg1/workdir/.tg-secret-x/pgpass")),
    )
    .unwrap();
    let basebackup = commands::basebackup(
        "/usr/lib/postgresql/15/bin/pg_basebackup".into(),
        &conninfo,
        "trove-guest trove_snap_r1",
        ServerVersion::from_num(150_000).unwrap().flavor(),
    );
    let out = place.prepare(basebackup).unwrap();
    let args: Vec<String> = out
        .get_args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        &args[..8],
        [
            "--remote",
            "--url",
            "unix:///run/podman/podman.sock",
            "exec",
            "pg1",
            "/usr/lib/postgresql/15/bin/pg_basebackup",
            "-d",
            "host='/var/lib/postgresql/trove/run' port=5432 user='postgres' \
             application_name='trove-guest-basebackup' \
             passfile='/var/lib/postgresql/trove/workdir/.tg-secret-x/pgpass'",
        ]
    );
    assert!(!out.display().contains(ADMIN_PASSWORD));

    let rewind = commands::rewind(
        "/usr/lib/postgresql/15/bin/pg_rewind".into(),
        Path::new("/srv/trove/pg1/data"),
        "host=10.0.0.5 port=5432 user=trove_repl_r1",
        Path::new("/srv/trove/pg1/workdir"),
        Some(OsUser { uid: 999, gid: 999 }),
    );
    assert_eq!(
        place.prepare(rewind).unwrap().display(),
        "podman --remote --url unix:///run/podman/podman.sock exec -u 999:999 -w \
         /var/lib/postgresql/trove/workdir pg1 /usr/lib/postgresql/15/bin/pg_rewind \
         --target-pgdata=/var/lib/postgresql/trove/data \
         --source-server=host=10.0.0.5 port=5432 user=trove_repl_r1"
    );
}
