//! MySQL 8.0 with Percona XtraBackup in a separate tools container cannot run here: the exact
//! `exec` command lines of its backup, extract and prepare calls (and the option file's paths)
//! are pinned instead.

use std::path::Path;
use std::time::Duration;

use trove_guest_core::{AdminConnection, ContainerExec, OsUser, Secret, ToolPlace};
use trove_guest_mysql::commands::{
    BackupArgs, backup_command, extract_command, prepare_command, tool_option_file,
};

fn tools() -> ToolPlace {
    ToolPlace::Container(
        ContainerExec::new("/run/docker.sock", "db1-xtrabackup")
            .with_mount("/srv/trove/db1", "/var/lib/trove"),
    )
}

#[test]
fn xtrabackup_backup_runs_by_exec_in_the_tools_container_with_container_paths() {
    let cmd = backup_command(&BackupArgs {
        tool: Path::new("xtrabackup"),
        defaults_file: Path::new("/srv/trove/db1/workdir/.tg-secret-Ab12/backup.cnf"),
        data_dir: Path::new("/srv/trove/db1/data"),
        scratch_dir: Path::new("/srv/trove/db1/workdir/.tg-backup-Cd34"),
        log_copy_interval_ms: 200,
        parallel: Some(4),
    });
    let out = tools().prepare(cmd).unwrap();
    assert_eq!(
        out.display(),
        "docker --host unix:///run/docker.sock exec db1-xtrabackup xtrabackup \
         --defaults-file=/var/lib/trove/workdir/.tg-secret-Ab12/backup.cnf --backup \
         --stream=xbstream --datadir=/var/lib/trove/data \
         --target-dir=/var/lib/trove/workdir/.tg-backup-Cd34 --log-copy-interval=200 --parallel=4"
    );
    assert_eq!(
        out.program_name(),
        "xtrabackup (in container db1-xtrabackup)"
    );
}

#[test]
fn xbstream_extract_and_prepare_run_as_the_containers_mysql_uid() {
    let mysql = Some(OsUser { uid: 999, gid: 999 });
    let extract = extract_command(
        Path::new("xbstream"),
        Path::new("/srv/trove/db1/workdir/.tg-stage-x"),
        Some(2),
    )
    .run_as(mysql);
    assert_eq!(
        tools().prepare(extract).unwrap().display(),
        "docker --host unix:///run/docker.sock exec -i -u 999:999 db1-xtrabackup xbstream -x \
         -C /var/lib/trove/workdir/.tg-stage-x --parallel=2"
    );
    let prepare = prepare_command(
        Path::new("xtrabackup"),
        Path::new("/srv/trove/db1/workdir/.tg-stage-x"),
        Some("256M"),
    )
    .run_as(mysql)
    .timeout(Duration::from_secs(600));
    let out = tools().prepare(prepare).unwrap();
    assert_eq!(
        out.display(),
        "docker --host unix:///run/docker.sock exec -u 999:999 db1-xtrabackup xtrabackup \
         --defaults-file=/var/lib/trove/workdir/.tg-stage-x/backup-my.cnf --prepare \
         --target-dir=/var/lib/trove/workdir/.tg-stage-x --use-memory=256M"
    );
    assert_eq!(out.get_timeout(), Some(Duration::from_secs(600)));
}

#[test]
fn the_option_file_names_container_paths_and_its_password_never_reaches_argv() {
    let place = tools();
    let sock = place
        .path_for_tool(Path::new("/srv/trove/db1/mysqld.sock"))
        .unwrap();
    let cnf = place
        .path_for_tool(Path::new("/srv/trove/db1/my.cnf"))
        .unwrap();
    let admin = AdminConnection::new("127.0.0.1", 3306, "os_admin", Secret::new("s3cret-pw"))
        .with_socket(&sock);
    let text = tool_option_file(Some(&cnf), &admin).unwrap();
    assert!(
        text.starts_with("!include /var/lib/trove/my.cnf\n"),
        "{text}"
    );
    assert!(
        text.contains("socket = /var/lib/trove/mysqld.sock"),
        "{text}"
    );
    // A socket outside the mounts is refused instead of handing the tool a dead path.
    assert!(
        place
            .path_for_tool(Path::new("/run/mysqld/mysqld.sock"))
            .is_err()
    );
    let cmd = backup_command(&BackupArgs {
        tool: Path::new("xtrabackup"),
        defaults_file: Path::new("/srv/trove/db1/workdir/.tg-secret-Ab12/backup.cnf"),
        data_dir: Path::new("/srv/trove/db1/data"),
        scratch_dir: Path::new("/srv/trove/db1/workdir/s"),
        log_copy_interval_ms: 200,
        parallel: None,
    });
    assert!(!place.prepare(cmd).unwrap().display().contains("s3cret-pw"));
}
