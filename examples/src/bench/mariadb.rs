//! The MariaDB rows: raw tools, trove-guest, the Trove-style gzip pipeline, logical.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trove_guest_core::{Error, Result, Secret, ToolCommand};
use trove_guest_mysql::testkit::MariaDbServer;

use super::Via;
use super::pin::{Side, tool};
use super::pipe::{pipeline, pipeline_tee};
use super::report::Sample;
use super::usage::Meter;
use super::{Env, mariadb_options};

/// Name of the replication account the hand-run rows use.
const REPL_USER: &str = "bench_repl";

/// The master's side of the hand-run rows.
pub(super) struct Master<'a> {
    pub(super) server: &'a MariaDbServer,
    pub(super) pgid: u32,
    pub(super) repl_password: Secret,
}

/// The process group (= pid) of a test server, from its pid file.
pub(super) fn pgid(server: &MariaDbServer) -> Result<u32> {
    let p = server.dir().join("mariadbd.pid");
    std::fs::read_to_string(&p)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| Error::NotFound {
            what: format!("server pid in {}", p.display()),
        })
}

/// Creates the hand-run rows' replication account (not binary-logged).
///
/// # Errors
///
/// [`Error::Datastore`] (without the statement, which holds the password).
pub(super) async fn create_repl_account(server: &MariaDbServer, password: &Secret) -> Result<()> {
    server
        .execute(&format!(
            "SET SESSION sql_log_bin = 0; \
             CREATE USER '{REPL_USER}'@'127.0.0.1' IDENTIFIED BY '{}'; \
             GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'127.0.0.1'",
            password.expose()
        ))
        .await
        .map_err(|_| Error::Datastore {
            message: format!("creating the benchmark's replication account {REPL_USER} failed"),
            source: None,
        })
}

fn defaults(server: &MariaDbServer) -> String {
    format!("--defaults-file={}", server.config_file().display())
}

fn backup_command(
    master: &MariaDbServer,
    scratch: &Path,
    parallel: Option<u32>,
    two_host: bool,
) -> ToolCommand {
    let mut cmd = tool("mariabackup", Side::Master, two_host)
        .arg(defaults(master))
        .args(["--backup", "--stream=xbstream", "--log-copy-interval=50"])
        .arg(format!("--target-dir={}", scratch.display()));
    if let Some(n) = parallel {
        cmd = cmd.arg(format!("--parallel={n}"));
    }
    cmd.stdout_piped()
}

fn extract_command(dir: &Path) -> ToolCommand {
    ToolCommand::new("mbstream")
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .stdin_piped()
}

fn prepare_command(dir: &Path) -> ToolCommand {
    ToolCommand::new("mariabackup")
        .arg(format!(
            "--defaults-file={}",
            dir.join("backup-my.cnf").display()
        ))
        .arg("--prepare")
        .arg(format!("--target-dir={}", dir.display()))
}

/// Where replication starts.
enum StartAt {
    Gtid(String),
    File(String, u64),
}

/// `CHANGE MASTER TO` + `START SLAVE` by hand, then waits until both threads run and the start
/// position is applied.
async fn start_replication(
    replica: &MariaDbServer,
    master: &Master<'_>,
    at: &StartAt,
) -> Result<()> {
    let position = match at {
        StartAt::Gtid(g) => {
            replica
                .execute(&format!("SET GLOBAL gtid_slave_pos = '{g}'"))
                .await?;
            "MASTER_USE_GTID = slave_pos".to_owned()
        }
        StartAt::File(f, p) => format!("MASTER_LOG_FILE = '{f}', MASTER_LOG_POS = {p}"),
    };
    replica
        .execute(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = '{REPL_USER}', \
             MASTER_PASSWORD = '{}', MASTER_CONNECT_RETRY = 1, {position}",
            master.server.port(),
            master.repl_password.expose()
        ))
        .await
        .map_err(|_| Error::Datastore {
            message: "CHANGE MASTER TO failed on the benchmark replica".into(),
            source: None,
        })?;
    replica.execute("START SLAVE").await?;
    let deadline = trove_guest_core::deadline(Duration::from_secs(120)).into_std();
    loop {
        let running = replica
            .query_one(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME = 'SLAVE_RUNNING'",
            )
            .await?;
        if running.as_deref() == Some("ON") {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::timeout(
                "the benchmark replica's threads to run",
                Duration::from_secs(120),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reached = match at {
        StartAt::Gtid(g) => replica
            .query_one(&format!("SELECT MASTER_GTID_WAIT('{g}', 120)"))
            .await?
            .is_some_and(|v| v == "0"),
        StartAt::File(f, p) => replica
            .query_one(&format!("SELECT MASTER_POS_WAIT('{f}', {p}, 120)"))
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|v| v >= 0),
    };
    if reached {
        Ok(())
    } else {
        Err(Error::timeout(
            "the benchmark replica to reach the start position",
            Duration::from_secs(120),
        ))
    }
}

/// The GTID position a backup recorded (`xtrabackup_binlog_info` / `mariadb_backup_binlog_info`).
fn backup_gtid(dir: &Path) -> Result<String> {
    for name in ["xtrabackup_binlog_info", "mariadb_backup_binlog_info"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            return Ok(text
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_owned());
        }
    }
    Err(Error::NotFound {
        what: format!("binlog info file in {}", dir.display()),
    })
}

/// Physical provisioning by hand: raw tools, raw tools through a file (`tee`), or the
/// Trove-style pipeline through a gzip file.
pub(super) async fn physical(
    env: &Env,
    master: &Master<'_>,
    server_id: u32,
    parallel: Option<u32>,
    via: Via,
) -> Result<Sample> {
    let gzip = via == Via::Gzip;
    let replica = MariaDbServer::start(mariadb_options(server_id)).await?;
    replica.stop().await?;
    let staging = replica.dir().join("work").join("staging");
    let scratch = replica.dir().join("tmp").join("backup-scratch");
    for d in [&staging, &scratch] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    }
    let file: PathBuf = env
        .scratch
        .join(format!("trove-style-{server_id}.xbstream.gz"));
    let mut meter = Meter::start(&[master.pgid]);
    let backup = backup_command(master.server, &scratch, parallel, env.two_host).spawn()?;
    let mut stored = None;
    if gzip {
        // Trove's backup compresses on the master's host.
        let gz = tool("gzip", Side::Master, env.two_host)
            .arg("-c")
            .stdin_piped()
            .stdout_to_file(&file)
            .spawn()?;
        pipeline(backup, gz, 0).await?;
        meter.phase("backup | gzip > file");
        stored = std::fs::metadata(&file).ok().map(|m| m.len());
        let gunzip = ToolCommand::new("gzip")
            .args(["-d", "-c"])
            .arg(&file)
            .stdout_piped()
            .spawn()?;
        pipeline(gunzip, extract_command(&staging).spawn()?, 0).await?;
        meter.phase("gunzip | mbstream -x");
    } else if via == Via::Tee {
        let tee = env.scratch.join(format!("raw-tee-{server_id}.xbstream"));
        let n = pipeline_tee(backup, extract_command(&staging).spawn()?, &tee).await?;
        meter.phase("backup | tee file | mbstream -x");
        stored = Some(n);
        let _ = std::fs::remove_file(&tee);
    } else {
        pipeline(backup, extract_command(&staging).spawn()?, 0).await?;
        meter.phase("backup | mbstream -x");
    }
    prepare_command(&staging).run().await?;
    meter.phase("prepare");
    let data = replica.data_dir();
    let old = replica.dir().join("data.old");
    std::fs::rename(&data, &old).map_err(|e| Error::io("move the old datadir aside", e))?;
    std::fs::rename(&staging, &data).map_err(|e| Error::io("move the restored datadir in", e))?;
    replica.handle().service.start().await?;
    meter.phase("move + start");
    let gtid = backup_gtid(&data)?;
    start_replication(&replica, master, &StartAt::Gtid(gtid)).await?;
    meter.phase("replicate");
    let cost = meter.finish(&[master.pgid, pgid(&replica)?]);
    let _ = std::fs::remove_file(&file);
    drop(replica);
    Ok(Sample {
        cost,
        agent_peak_rss_kib: None,
        agent_cpu: None,
        stored_bytes: stored,
    })
}

/// `mariadb-dump --single-transaction --master-data=2 | mariadb`, then replication from the
/// dump's binlog coordinates.
pub(super) async fn logical(env: &Env, master: &Master<'_>, server_id: u32) -> Result<Sample> {
    let replica = MariaDbServer::start(mariadb_options(server_id)).await?;
    let replica_pgid = pgid(&replica)?;
    let mut meter = Meter::start(&[master.pgid, replica_pgid]);
    let dump = tool("mariadb-dump", Side::Master, env.two_host)
        .arg(defaults(master.server))
        .args([
            "--single-transaction",
            "--master-data=2",
            "--databases",
            "bench",
        ])
        .stdout_piped()
        .spawn()?;
    let load = ToolCommand::new("mariadb")
        .arg(defaults(&replica))
        .stdin_piped()
        .spawn()?;
    let (bytes, head) = pipeline(dump, load, 256 * 1024).await?;
    meter.phase("mariadb-dump | mariadb");
    let at = change_master_of_dump(&String::from_utf8_lossy(&head))?;
    start_replication(&replica, master, &at).await?;
    meter.phase("replicate");
    let cost = meter.finish(&[master.pgid, replica_pgid]);
    drop(replica);
    Ok(Sample {
        cost,
        agent_peak_rss_kib: None,
        agent_cpu: None,
        stored_bytes: Some(bytes),
    })
}

/// The `-- CHANGE MASTER TO MASTER_LOG_FILE='f', MASTER_LOG_POS=n;` line of a dump.
fn change_master_of_dump(head: &str) -> Result<StartAt> {
    let bad = || Error::invalid("dump", "no CHANGE MASTER TO comment in its first 256 KiB");
    let line = head
        .lines()
        .find(|l| l.contains("CHANGE MASTER TO MASTER_LOG_FILE="))
        .ok_or_else(bad)?;
    let file = line
        .split("MASTER_LOG_FILE='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .ok_or_else(bad)?;
    let pos = line
        .split("MASTER_LOG_POS=")
        .nth(1)
        .map(|r| r.trim_end_matches(|c: char| !c.is_ascii_digit()))
        .and_then(|r| r.parse().ok())
        .ok_or_else(bad)?;
    if !file
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(bad());
    }
    Ok(StartAt::File(file.to_owned(), pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_coordinates_are_read_from_its_comment() {
        let head = "-- MariaDB dump\n--\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000002', MASTER_LOG_POS=3456;\n";
        match change_master_of_dump(head).unwrap() {
            StartAt::File(f, p) => {
                assert_eq!(f, "mysql-bin.000002");
                assert_eq!(p, 3456);
            }
            StartAt::Gtid(_) => panic!("file position expected"),
        }
        assert!(change_master_of_dump("-- nothing\n").is_err());
    }
}
