//! `bench`: the provisioning benchmark. Builds replicas of a freshly loaded master with the raw
//! tools, trove-guest, a Trove-style gzip pipeline and a logical dump, in one run on the same
//! data, and prints the median wall time, throughput, CPU and agent memory of each.
//!
//! ```text
//! cargo run --release -p trove-guest-examples --bin bench -- --datastore all --size 1GiB --reps 3
//! cargo run -p trove-guest-examples --bin bench -- --quick --reps 1      # 64 MiB smoke run
//! cargo run --release -p trove-guest-examples --bin bench -- failover --reps 5   # switchover/failover
//! ```
//!
//! Needs root, MariaDB 10.11 with mariadb-backup and PostgreSQL 15 (the backends' testkits'
//! servers), `gzip` and `tar`. See `BENCHMARKS.md` for a real run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use trove_guest_core::DatastoreKind;
use trove_guest_examples::bench::{self, BenchOptions};

/// Which datastores to benchmark.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Datastore {
    Mariadb,
    Postgresql,
    All,
}

/// The data loaded on each master.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaArg {
    /// One wide table (MariaDB: with one secondary index).
    OneTable,
    /// Several tables with secondary indexes (sysbench-like on MariaDB, pgbench-like on
    /// PostgreSQL).
    Realistic,
}

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Replica provisioning benchmark: raw tools vs trove-guest vs Trove-style vs logical"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Datastore(s) to benchmark.
    #[arg(long, value_enum, default_value = "all", global = true)]
    datastore: Datastore,
    /// Data to load on the master (table + indexes): bytes or with a unit (64MiB, 1GiB, 4G).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    size: u64,
    /// Smoke-test mode: 64 MiB of data and a 64 MiB disk test.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every row; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Backup tool parallelism for the extra `--parallel` rows (MariaDB); 0 leaves them out.
    #[arg(long, default_value_t = 2)]
    parallel: u32,
    /// Leave out the zstd-compressed snapshot store rows.
    #[arg(long)]
    no_zstd: bool,
    /// Leave out the S3 store row (it starts a local moto server).
    #[arg(long)]
    no_s3: bool,
    /// Leave out the "download then extract" row.
    #[arg(long)]
    no_download_first: bool,
    /// Run only rows whose name contains this text, or is exactly the text after a leading `=`
    /// (repeatable); the raw-tools row always runs.
    #[arg(long)]
    only: Vec<String>,
    /// Write the Markdown report (machine, table, phases, notes) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write every sample as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Scratch directory (default: the temp directory; keep it on the servers' filesystem).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Run the master's side of every row (server, backup tool, upload) on CPU 0 and the
    /// replica's side (download, extractor, server) on CPU 1, as on two hosts.
    #[arg(long)]
    two_host: bool,
    /// The data loaded on each master.
    #[arg(long, value_enum, default_value = "one-table")]
    schema: SchemaArg,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Internal: one agent call for a trove-guest row (request on stdin, report on stdout).
    #[command(hide = true)]
    Agent,
    /// Switchover write-unavailability window and failover time (master + two replicas).
    Failover {
        /// Runs of each (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: u32,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(Command::Agent) = args.command {
        return match bench::agent::child_main().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench agent: {}", chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Failover { reps }) = args.command {
        return match failover(args.datastore, reps).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench failover: {}", chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn failover(datastore: Datastore, reps: u32) -> trove_guest_core::Result<()> {
    let kinds = match datastore {
        Datastore::Mariadb => vec![DatastoreKind::Mariadb],
        Datastore::Postgresql => vec![DatastoreKind::Postgresql],
        Datastore::All => vec![DatastoreKind::Mariadb, DatastoreKind::Postgresql],
    };
    let mut results = Vec::new();
    for kind in kinds {
        let r = bench::failover::run(kind, reps.max(1)).await?;
        eprintln!("{r:?}");
        results.push(r);
    }
    println!("{}", bench::failover::markdown(&results));
    Ok(())
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = BenchOptions::new()?;
    opts.datastores = match args.datastore {
        Datastore::Mariadb => vec![DatastoreKind::Mariadb],
        Datastore::Postgresql => vec![DatastoreKind::Postgresql],
        Datastore::All => vec![DatastoreKind::Mariadb, DatastoreKind::Postgresql],
    };
    opts.target_bytes = if args.quick { 64 << 20 } else { args.size };
    opts.disk_test_bytes = if args.quick { 64 << 20 } else { 1 << 30 };
    opts.reps = args.reps.max(1);
    opts.parallel = (args.parallel > 0).then_some(args.parallel);
    opts.zstd = !args.no_zstd;
    opts.s3 = !args.no_s3;
    opts.download_first = !args.no_download_first;
    opts.only = args.only;
    opts.two_host = args.two_host;
    opts.schema = match args.schema {
        SchemaArg::OneTable => bench::dataset::Schema::OneTable,
        SchemaArg::Realistic => bench::dataset::Schema::Realistic,
    };
    if let Some(s) = args.scratch {
        opts.scratch = s;
    }
    opts.command = std::env::args()
        .skip(1)
        .fold("bench".to_owned(), |acc, a| format!("{acc} {a}"));
    let report = bench::run(&opts).await?;
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = args.report {
        std::fs::write(&path, &markdown)?;
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
