//! `fuzz`: runs the fuzz targets of every parser of untrusted bytes (see the crate docs).
//!
//! Each target runs in a worker process of this binary, so a stack overflow or an abort is
//! found too: the case that crashed a worker is found by running the rest of its cases again,
//! tracing each index. A failing input is written to `--failures DIR` and can be replayed with
//! `--target NAME --input FILE` (or regenerated with `--seed S --from INDEX --cases 1`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use trove_guest_fuzz::report::{Report, TargetReport};
use trove_guest_fuzz::runner::{self, Limits, RunOptions, Trace};
use trove_guest_fuzz::targets::{self, TARGETS, Target};

#[derive(Debug, Parser)]
#[command(
    name = "fuzz",
    about = "Fuzz every parser of untrusted bytes (trove-guest)"
)]
struct Args {
    /// Cases per target.
    #[arg(long, default_value_t = 1_000_000)]
    cases: u64,
    /// Run only these targets (repeatable); all by default.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// The run's seed.
    #[arg(long, default_value_t = runner::DEFAULT_SEED)]
    seed: u64,
    /// First case index.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Directory for failing inputs.
    #[arg(long, default_value = "target/fuzz-failures")]
    failures: PathBuf,
    /// A case running longer than this (milliseconds, wall clock) is a hang. On a shared, loaded
    /// machine a parse of microseconds was seen to take over a second of wall time.
    #[arg(long, default_value_t = 10_000)]
    hang_ms: u64,
    /// Targets run at once (each in its own worker process).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Replay this input file through the one `--target` given.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Internal: run in this process (a worker of the supervising process).
    #[arg(long, hide = true)]
    worker: bool,
    /// Internal: print each case index before running it.
    #[arg(long, hide = true)]
    trace: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for t in TARGETS {
            println!("{:<20} {}", t.name, t.parsers);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<&'static Target> = if args.targets.is_empty() {
        TARGETS.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in &args.targets {
            match targets::find(name) {
                Some(t) => v.push(t),
                None => {
                    eprintln!("unknown target {name:?}; --list shows them");
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    let limits = Limits {
        hang: Duration::from_millis(args.hang_ms),
        ..Limits::default()
    };
    if let Some(file) = &args.input {
        let [target] = chosen[..] else {
            eprintln!("--input needs exactly one --target");
            return ExitCode::from(2);
        };
        let data = match std::fs::read(file) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        return match runner::run_one(target, &data) {
            Ok(peak) => {
                println!("{}: no panic ({peak} bytes held at most)", target.name);
                ExitCode::SUCCESS
            }
            Err(m) => {
                println!("{}: panic: {m}", target.name);
                ExitCode::FAILURE
            }
        };
    }
    if args.worker {
        return worker(&args, chosen[0], limits);
    }
    supervise(&args, &chosen, limits)
}

fn save(dir: &Path, target: &str, seed: u64, index: u64, input: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{target}-{seed}-{index}.bin"));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("write {}: {e}", path.display());
    }
    path
}

/// Runs one target in this process, reporting on stdout: `progress <done>` lines, then
/// `ok <cases>` or `fail <index> <file> <what>`.
fn worker(args: &Args, target: &'static Target, limits: Limits) -> ExitCode {
    let opts = RunOptions {
        seed: args.seed,
        from: args.from,
        count: args.cases,
        limits,
        trace: if args.trace { Trace::Cases } else { Trace::Off },
    };
    let mut last = Instant::now();
    let out = runner::run_target(target, opts, |done| {
        if last.elapsed() >= Duration::from_millis(500) && !args.trace {
            last = Instant::now();
            println!("progress {done}");
        }
    });
    let mut stdout = std::io::stdout().lock();
    match out.failure {
        None => {
            let _ = writeln!(stdout, "ok {}", out.cases);
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Some(f) => {
            let path = save(&args.failures, target.name, args.seed, f.index, &f.input);
            let what = f.kind.to_string().replace('\n', " ");
            let _ = writeln!(stdout, "fail {} {} {what}", f.index, path.display());
            let _ = stdout.flush();
            // A hung case thread is still running: leave without waiting for it.
            std::process::exit(1);
        }
    }
}

/// What a worker process said before it ended.
struct Heard {
    done: u64,
    last_case: Option<u64>,
    result: Option<String>,
}

fn spawn_worker(
    args: &Args,
    target: &Target,
    from: u64,
    count: u64,
    trace: bool,
) -> (Heard, String) {
    let exe = std::env::current_exe().expect("the harness's own path");
    let mut cmd = Command::new(exe);
    cmd.arg("--worker")
        .args(["--target", target.name])
        .args(["--seed", &args.seed.to_string()])
        .args(["--from", &from.to_string()])
        .args(["--cases", &count.to_string()])
        .args(["--hang-ms", &args.hang_ms.to_string()])
        .arg("--failures")
        .arg(&args.failures)
        .stdout(Stdio::piped())
        .stderr(if trace {
            Stdio::null()
        } else {
            Stdio::inherit()
        });
    if trace {
        cmd.arg("--trace");
    }
    let mut child = cmd.spawn().expect("start a worker");
    let mut heard = Heard {
        done: 0,
        last_case: None,
        result: None,
    };
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("progress ") {
            heard.done = n.parse().unwrap_or(heard.done);
        } else if let Some(n) = line.strip_prefix("case ") {
            heard.last_case = n.parse().ok();
        } else if line.starts_with("ok ") || line.starts_with("fail ") {
            heard.result = Some(line);
        }
    }
    let status = child.wait().expect("wait for the worker");
    let how = match (status.code(), status.signal()) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended".to_owned(),
    };
    (heard, how)
}

fn supervise(args: &Args, chosen: &[&'static Target], limits: Limits) -> ExitCode {
    let mut report = Report {
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        seed: args.seed,
        cases_per_target: args.cases,
        hang_limit_ms: args.hang_ms,
        max_alloc_bytes: limits.max_alloc as u64,
        targets: Vec::new(),
        note: None,
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; chosen.len()]);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(target) = chosen.get(i) else { break };
                    let r = supervise_one(args, target);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    report.targets = results
        .into_inner()
        .expect("results")
        .into_iter()
        .flatten()
        .collect();
    let failed = report.targets.iter().filter(|t| t.failures > 0).count();
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).expect("a report serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let total: u64 = report.targets.iter().map(|t| t.cases).sum();
    println!(
        "{} targets, {total} cases, {failed} failed",
        report.targets.len()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one target in worker processes and says what it found.
fn supervise_one(args: &Args, target: &Target) -> TargetReport {
    let started = Instant::now();
    let (heard, how) = spawn_worker(args, target, args.from, args.cases, false);
    let (cases, failure) = match heard.result.as_deref() {
        Some(ok) if ok.starts_with("ok ") => (ok[3..].parse().unwrap_or(0), None),
        Some(fail) => {
            let mut w = fail.splitn(3, ' ').skip(1);
            let index: u64 = w.next().and_then(|i| i.parse().ok()).unwrap_or(args.from);
            (
                index - args.from,
                Some(w.next().unwrap_or_default().to_owned()),
            )
        }
        None => {
            // The worker died: run the rest again, tracing each case, to find the one.
            let from = args.from + heard.done;
            let (trace, _) = spawn_worker(args, target, from, args.cases - heard.done, true);
            let failure = match trace.last_case {
                Some(index) if trace.result.is_none() => {
                    let input = targets::input(target, args.seed, index);
                    let path = save(&args.failures, target.name, args.seed, index, &input);
                    format!("{} crash: the worker {how}", path.display())
                }
                _ => format!("crash: the worker {how} (not reproduced when traced)"),
            };
            (heard.done, Some(failure))
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    match &failure {
        None => println!(
            "{:<20} {cases} cases, 0 failures, {seconds:.1} s ({:.0} cases/s)",
            target.name,
            cases as f64 / seconds.max(1e-9)
        ),
        Some(f) => {
            println!("{:<20} FAILED after {cases} cases: {f}", target.name);
        }
    }
    TargetReport {
        name: target.name.to_owned(),
        parsers: target.parsers.to_owned(),
        cases,
        seconds: (seconds * 10.0).round() / 10.0,
        failures: u64::from(failure.is_some()),
        failure,
    }
}
