//! The PostgreSQL rows: raw `pg_basebackup`, the Trove-style gzip pipeline, logical.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use trove_guest_core::{Error, OsUser, Result, ServiceControl, ToolCommand};
use trove_guest_postgres::testkit::DEFAULT_BIN_DIR;
use trove_guest_postgres::testkit::PostgresServer;

use super::Via;
use super::pin::{Side, tool};
use super::pipe::{pipeline, pipeline_tee};
use super::report::Sample;
use super::usage::Meter;
use super::{Env, postgres_options};

/// The master of the hand-run rows.
pub(super) struct Master<'a> {
    pub(super) server: &'a PostgresServer,
    pub(super) pgid: u32,
}

/// The postmaster's pid (= its process group).
///
/// # Errors
///
/// [`Error::NotFound`] when the server does not run.
pub(super) async fn pgid(server: &PostgresServer) -> Result<u32> {
    server.service().pid().await.ok_or_else(|| Error::NotFound {
        what: "the PostgreSQL server's pid".into(),
    })
}

fn bin(server: &PostgresServer, program: &str) -> PathBuf {
    server
        .handle()
        .bin_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR))
        .join(program)
}

fn os_user(server: &PostgresServer) -> Result<OsUser> {
    server.handle().os_user.ok_or_else(|| Error::NotFound {
        what: "the PostgreSQL OS account of the test server".into(),
    })
}

/// `pg_basebackup` connecting to `master` over its socket as the local superuser, run on `side`
/// in the two-host mode (the replica's host when it writes the replica's directory, the
/// master's when it writes a file to keep).
fn basebackup(
    master: &PostgresServer,
    replica: &PostgresServer,
    side: Side,
    two_host: bool,
) -> Result<ToolCommand> {
    Ok(tool(bin(replica, "pg_basebackup"), side, two_host)
        .arg("-h")
        .arg(master.socket_dir())
        .arg("-p")
        .arg(master.port().to_string())
        .args(["-U", "postgres", "--checkpoint=fast"])
        .current_dir(replica.instance_dir())
        .run_as(Some(os_user(replica)?)))
}

/// Makes the replica's data directory empty, owned by the server account, 0700.
fn empty_data_dir(replica: &PostgresServer) -> Result<()> {
    let data = replica.data_dir();
    std::fs::remove_dir_all(&data)
        .map_err(|e| Error::io(format!("remove {}", data.display()), e))?;
    std::fs::create_dir(&data).map_err(|e| Error::io(format!("create {}", data.display()), e))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", data.display()), e))?;
    os_user(replica)?.chown(&data)
}

/// `standby.signal` and a `primary_conninfo` to the master's socket.
fn make_standby(replica: &PostgresServer, master: &PostgresServer) -> Result<()> {
    let user = os_user(replica)?;
    let signal = replica.data_dir().join("standby.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::io("write standby.signal", e))?;
    user.chown(&signal)?;
    let conf = replica.handle().config_dir.join("bench-standby.conf");
    std::fs::write(
        &conf,
        format!(
            "primary_conninfo = 'host={} port={} user=postgres application_name=bench'\n",
            master.socket_dir().display(),
            master.port()
        ),
    )
    .map_err(|e| Error::io("write the standby configuration", e))?;
    Ok(())
}

/// Waits until the standby streams and has replayed `lsn`.
async fn wait_streaming(replica: &PostgresServer, lsn: &str) -> Result<()> {
    if !lsn.bytes().all(|b| b.is_ascii_hexdigit() || b == b'/') {
        return Err(Error::invalid("LSN", lsn.to_owned()));
    }
    let deadline = trove_guest_core::deadline(Duration::from_secs(120)).into_std();
    loop {
        let row = replica
            .query(&format!(
                "SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, \
                 (SELECT status FROM pg_stat_wal_receiver)"
            ))
            .await;
        if let Ok(rows) = row
            && let Some(r) = rows.first()
            && r.first().cloned().flatten().as_deref() == Some("t")
            && r.get(1).cloned().flatten().as_deref() == Some("streaming")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::timeout(
                "the benchmark standby to stream and replay the backup",
                Duration::from_secs(120),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Physical provisioning by hand: `pg_basebackup -X stream` into the target directory (`gzip`
/// false) or the Trove-style `pg_basebackup -Ft | gzip > file`, `gunzip | tar -x` (true); then
/// start as a standby and wait until it streams.
pub(super) async fn physical(
    env: &Env,
    master: &Master<'_>,
    server_id: u32,
    via: Via,
) -> Result<Sample> {
    let gzip = via == Via::Gzip;
    let replica = PostgresServer::start(postgres_options(server_id)).await?;
    replica.stop().await?;
    empty_data_dir(&replica)?;
    let file = env.scratch.join(format!("trove-style-{server_id}.tar.gz"));
    let mut meter = Meter::start(&[master.pgid]);
    let mut stored = None;
    if gzip {
        let bb = basebackup(master.server, &replica, Side::Master, env.two_host)?
            .args(["-D", "-", "-F", "tar", "-X", "fetch"])
            .stdout_piped()
            .spawn()?;
        let gz = tool("gzip", Side::Master, env.two_host)
            .arg("-c")
            .stdin_piped()
            .stdout_to_file(&file)
            .spawn()?;
        pipeline(bb, gz, 0).await?;
        meter.phase("pg_basebackup -Ft | gzip > file");
        stored = std::fs::metadata(&file).ok().map(|m| m.len());
        let gunzip = ToolCommand::new("gzip")
            .args(["-d", "-c"])
            .arg(&file)
            .stdout_piped()
            .spawn()?;
        let tar = ToolCommand::new("tar")
            .args(["-x", "-f", "-", "-C"])
            .arg(replica.data_dir())
            .current_dir(replica.instance_dir())
            .run_as(Some(os_user(&replica)?))
            .stdin_piped()
            .spawn()?;
        pipeline(gunzip, tar, 0).await?;
        meter.phase("gunzip | tar -x");
    } else if via == Via::Tee {
        let tee = env.scratch.join(format!("raw-tee-{server_id}.tar"));
        let bb = basebackup(master.server, &replica, Side::Master, env.two_host)?
            .args(["-D", "-", "-F", "tar", "-X", "fetch"])
            .stdout_piped()
            .spawn()?;
        let tar = ToolCommand::new("tar")
            .args(["-x", "-f", "-", "-C"])
            .arg(replica.data_dir())
            .current_dir(replica.instance_dir())
            .run_as(Some(os_user(&replica)?))
            .stdin_piped()
            .spawn()?;
        let n = pipeline_tee(bb, tar, &tee).await?;
        meter.phase("pg_basebackup -Ft -X fetch | tee file | tar -x");
        stored = Some(n);
        let _ = std::fs::remove_file(&tee);
    } else {
        basebackup(master.server, &replica, Side::Replica, env.two_host)?
            .arg("-D")
            .arg(replica.data_dir())
            .args(["-X", "stream"])
            .run()
            .await?;
        meter.phase("pg_basebackup -X stream");
    }
    let lsn = master
        .server
        .query_one("SELECT pg_current_wal_lsn()")
        .await?;
    make_standby(&replica, master.server)?;
    replica.service().start().await?;
    meter.phase("start");
    wait_streaming(&replica, &lsn).await?;
    meter.phase("replicate");
    let cost = meter.finish(&[master.pgid, pgid(&replica).await?]);
    let _ = std::fs::remove_file(&file);
    drop(replica);
    Ok(Sample {
        cost,
        agent_peak_rss_kib: None,
        agent_cpu: None,
        stored_bytes: stored,
    })
}

/// `pg_dump | psql` into a fresh server (PostgreSQL cannot stream physical WAL to a logically
/// loaded copy; see the report's notes).
pub(super) async fn logical(env: &Env, master: &Master<'_>, server_id: u32) -> Result<Sample> {
    let replica = PostgresServer::start(postgres_options(server_id)).await?;
    let replica_pgid = pgid(&replica).await?;
    let mut meter = Meter::start(&[master.pgid, replica_pgid]);
    let dump = tool(bin(&replica, "pg_dump"), Side::Master, env.two_host)
        .arg("-h")
        .arg(master.server.socket_dir())
        .arg("-p")
        .arg(master.server.port().to_string())
        .args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "--no-owner",
            "--no-privileges",
        ])
        .stdout_piped()
        .spawn()?;
    let load = ToolCommand::new(bin(&replica, "psql"))
        .arg("-h")
        .arg(replica.socket_dir())
        .arg("-p")
        .arg(replica.port().to_string())
        .args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .stdin_piped()
        .spawn()?;
    let (bytes, _) = pipeline(dump, load, 0).await?;
    meter.phase("pg_dump | psql");
    let cost = meter.finish(&[master.pgid, replica_pgid]);
    drop(replica);
    Ok(Sample {
        cost,
        agent_peak_rss_kib: None,
        agent_cpu: None,
        stored_bytes: Some(bytes),
    })
}
