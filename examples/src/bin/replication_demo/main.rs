//! `replication_demo`: the replication design, for real, on local servers.
//!
//! Starts a master and `--replicas N` replica servers (MariaDB by default, `--datastore
//! postgresql` for PostgreSQL) as local processes, one HTTP guest agent per server, loads sample
//! data and drives the design's flow through the agents with the design's documents: the
//! instance-create request with `slaveOf`, `get_replication_snapshot` on the master,
//! `attach_replication_slave` on each replica, the `topology` document, live writes arriving,
//! a checksum comparison, the `detach_replication` action (detach on the replica, cleanup on the
//! master) and `demote_replication_master`. Everything it started is stopped and removed at the
//! end, also on Ctrl-C.
//!
//! Exit status: 0 done, 1 a step failed, 2 a program is missing, 130 interrupted.

mod failover_flow;
mod flow;
mod ui;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use trove_guest_agent::testing::testbed::{Node, TestServer, left_behind};
use trove_guest_core::DatastoreKind;

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Run the trove replication design on real local servers"
)]
pub(crate) struct Args {
    /// mariadb, postgresql or redis.
    #[arg(long, default_value = "mariadb", value_parser = parse_kind)]
    pub(crate) datastore: DatastoreKind,
    /// Replicas to attach from the one snapshot.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub(crate) replicas: u32,
    /// Sample rows per table loaded on the master before the snapshot.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) rows: u64,
    /// Rows per table written on the master after the replicas are attached.
    #[arg(long, default_value_t = 600)]
    pub(crate) writes: u64,
    /// Instead of the design's flow: a master and two replicas, a switchover and back.
    #[arg(long, conflicts_with = "failover")]
    pub(crate) switchover: bool,
    /// Instead of the design's flow: a master and two replicas, the master's server killed,
    /// a failover, the survivor converging.
    #[arg(long)]
    pub(crate) failover: bool,
    /// MariaDB servers in containers of the local engine (Podman or Docker, over the Docker
    /// API; `TROVE_GUEST_CONTAINER_SOCKET`, or a private `podman system service`), the backup
    /// tools run by `exec` in them.
    #[arg(long, conflicts_with_all = ["switchover", "failover"])]
    pub(crate) container: bool,
}

fn parse_kind(s: &str) -> Result<DatastoreKind, String> {
    match s.parse::<DatastoreKind>() {
        Ok(DatastoreKind::Mysql) => Err(
            "mysql: the demo runs MariaDB and PostgreSQL test servers; Oracle MySQL is served by \
             the library but has no local test server here"
                .into(),
        ),
        Ok(k @ (DatastoreKind::Mariadb | DatastoreKind::Postgresql)) => Ok(k),
        Ok(k) if k.as_str() == "redis" => Ok(k),
        Ok(other) => Err(format!(
            "{other}: the demo runs MariaDB, PostgreSQL and Redis test servers only"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Everything the demo started, so it can all be stopped and removed.
#[derive(Default)]
pub(crate) struct Env {
    /// Servers being started (awaited and removed at teardown if the demo stops early).
    pub(crate) starting: Vec<tokio::task::JoinHandle<trove_guest_core::Result<TestServer>>>,
    /// Servers with their agents.
    pub(crate) nodes: Vec<Node>,
    /// The snapshot store's directory.
    pub(crate) store_dir: Option<tempfile::TempDir>,
    /// Every directory the demo made, to check at the end.
    pub(crate) dirs: Vec<PathBuf>,
    /// MariaDB template datadirs (a per-machine cache of the testkit) present before the demo.
    pub(crate) templates_before: Vec<PathBuf>,
}

impl Env {
    async fn teardown(&mut self) -> Vec<String> {
        for start in self.starting.drain(..) {
            if let Ok(Ok(server)) = start.await {
                self.dirs.push(server.dir());
                let _ = tokio::task::spawn_blocking(move || drop(server)).await;
            }
        }
        for node in self.nodes.drain(..) {
            node.shutdown().await;
        }
        if let Some(store) = self.store_dir.take() {
            self.dirs.push(store.path().to_path_buf());
            let _ = store.close();
        }
        remove_own_templates(&self.templates_before);
        let mut problems = Vec::new();
        for d in &self.dirs {
            problems.extend(left_behind(d));
        }
        problems
    }
}

/// The testkit's MariaDB template datadirs (kept across runs as a per-machine cache).
fn mariadb_templates() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("tg-mariadb-tpl-")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the template datadirs this run made: the PostgreSQL template of this process (the
/// testkit leaves it to the next process to sweep) and a MariaDB template cache that did not
/// exist before the demo started.
fn remove_own_templates(mariadb_before: &[PathBuf]) {
    let prefix = format!("tg-pgtpl-{}-", std::process::id());
    for root in [PathBuf::from("/tmp"), std::env::temp_dir()] {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    for t in mariadb_templates() {
        if !mariadb_before.contains(&t) {
            let _ = std::fs::remove_dir_all(&t);
        }
    }
}

/// Programs the demo needs and the Debian package providing each.
fn missing_programs(kind: DatastoreKind) -> Vec<(String, &'static str)> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    let mut missing = Vec::new();
    match kind {
        DatastoreKind::Postgresql => {
            let bin = Path::new(trove_guest_postgres::testkit::DEFAULT_BIN_DIR);
            for p in ["postgres", "initdb", "pg_basebackup", "pg_ctl"] {
                if !bin.join(p).is_file() {
                    missing.push((bin.join(p).display().to_string(), "postgresql-15"));
                }
            }
        }
        k if k.as_str() == "redis" => {
            for (p, package) in [
                ("/usr/bin/redis-server", "redis-server"),
                ("/usr/bin/redis-check-rdb", "redis-tools"),
            ] {
                if !Path::new(p).is_file() {
                    missing.push((p.to_owned(), package));
                }
            }
        }
        _ => {
            for p in [
                trove_guest_mysql::testkit::MARIADBD,
                trove_guest_mysql::testkit::MARIADB_INSTALL_DB,
            ] {
                if !Path::new(p).is_file() {
                    missing.push((p.to_owned(), "mariadb-server"));
                }
            }
            if !on_path("mariabackup") && !on_path("mariadb-backup") {
                missing.push(("mariabackup".into(), "mariadb-backup"));
            }
            if !on_path("mbstream") {
                missing.push(("mbstream".into(), "mariadb-backup"));
            }
        }
    }
    missing
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let missing = missing_programs(args.datastore);
    if !missing.is_empty() {
        let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        eprintln!(
            "replication_demo: cannot run the {} demo, programs are missing:",
            args.datastore
        );
        for (prog, pkg) in &missing {
            eprintln!("  {prog}  (Debian package {pkg})");
        }
        eprintln!(
            "install them with:  apt-get install -y {}\n(or run scripts/demo, which installs what is missing)",
            packages.join(" ")
        );
        return ExitCode::from(2);
    }

    let mut env = Env {
        templates_before: mariadb_templates(),
        ..Env::default()
    };
    let outcome = tokio::select! {
        r = async {
            if args.switchover || args.failover {
                failover_flow::run(&args, &mut env, args.failover).await
            } else {
                flow::run(&args, &mut env).await
            }
        } => Some(r),
        _ = interrupted() => None,
    };
    if outcome.is_none() {
        eprintln!("\ninterrupted: stopping the agents and servers and removing their files ...");
    }
    let problems = env.teardown().await;
    println!();
    if problems.is_empty() {
        println!(
            "cleanup: {} servers stopped, their directories and the snapshot store removed",
            env.dirs.len().saturating_sub(1)
        );
    } else {
        for p in &problems {
            eprintln!("cleanup problem: {p}");
        }
    }
    match outcome {
        None => ExitCode::from(130),
        Some(Err(e)) => {
            eprintln!("replication_demo failed: {e}");
            ExitCode::FAILURE
        }
        Some(Ok(summary)) => {
            println!("{summary}");
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
