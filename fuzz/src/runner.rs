//! Runs a target's cases: each inside `catch_unwind`, on a worker thread with the stack a tokio
//! worker has (2 MiB), watched for hangs, with the bytes it holds at once measured.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::targets::Target;

/// Stack of the thread running the cases: tokio's default for its worker threads, where the
/// agent runs these parsers.
pub const CASE_STACK: usize = 2 << 20;

/// What counts as a failure besides a panic.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A case running longer than this is a hang.
    pub hang: Duration,
    /// A case holding more than this many bytes at once is a runaway allocation.
    pub max_alloc: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hang: Duration::from_secs(10),
            max_alloc: 256 << 20,
        }
    }
}

/// Which cases to run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// The run's seed.
    pub seed: u64,
    /// First case index.
    pub from: u64,
    /// How many cases.
    pub count: u64,
    /// Limits.
    pub limits: Limits,
    /// Print `case <index>` on stdout before each case (finds the case that crashed a worker).
    pub trace: Trace,
}

/// Whether to print each case index before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// Silent.
    Off,
    /// `case <index>` lines on stdout.
    Cases,
}

/// How a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The parser panicked (message).
    Panic(String),
    /// The case ran past [`Limits::hang`].
    Hang,
    /// The case held this many bytes at once, over [`Limits::max_alloc`].
    Allocation(usize),
    /// The worker process died (stack overflow, abort, refused allocation).
    Crash(String),
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureKind::Panic(m) => write!(f, "panic: {m}"),
            FailureKind::Hang => write!(f, "hang"),
            FailureKind::Allocation(n) => write!(f, "allocation of {n} bytes held at once"),
            FailureKind::Crash(m) => write!(f, "crash: {m}"),
        }
    }
}

/// A failing case.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its index (regenerated from the seed with [`crate::targets::input`]).
    pub index: u64,
    /// What happened.
    pub kind: FailureKind,
    /// The input.
    pub input: Vec<u8>,
}

/// What a run of one target found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Cases completed without failure.
    pub cases: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The first failure, which stopped the run.
    pub failure: Option<Failure>,
}

enum Msg {
    Done,
    Failed(Failure),
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Runs `opts.count` cases of `target` from `opts.from`, stopping at the first failure.
/// `progress` is called with the number of cases completed, about every 50 ms.
pub fn run_target(
    target: &'static Target,
    opts: RunOptions,
    mut progress: impl FnMut(u64),
) -> Outcome {
    let started = Instant::now();
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let current_since = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    {
        let (current, current_since, done) = (current.clone(), current_since.clone(), done.clone());
        std::thread::Builder::new()
            .name(format!("fuzz-{}", target.name))
            .stack_size(CASE_STACK)
            .spawn(move || {
                for index in opts.from..opts.from.saturating_add(opts.count) {
                    // Generating the input counts towards the case's time.
                    current_since.store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                    current.store(index, Ordering::SeqCst);
                    if opts.trace == Trace::Cases {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "case {index}");
                        let _ = out.flush();
                    }
                    let input = crate::targets::input(target, opts.seed, index);
                    let base = crate::alloc::begin();
                    let r = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
                    let peak = crate::alloc::peak_since(base);
                    let kind = match r {
                        Err(p) => Some(FailureKind::Panic(panic_message(&*p))),
                        Ok(()) if peak > opts.limits.max_alloc => {
                            Some(FailureKind::Allocation(peak))
                        }
                        Ok(()) => None,
                    };
                    if let Some(kind) = kind {
                        let _ = tx.send(Msg::Failed(Failure { index, kind, input }));
                        return;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send(Msg::Done);
            })
            .expect("spawn the case thread");
    }
    let poll = Duration::from_millis(50);
    loop {
        match rx.recv_timeout(poll) {
            Ok(Msg::Done) => {
                return Outcome {
                    cases: done.load(Ordering::Relaxed),
                    elapsed: started.elapsed(),
                    failure: None,
                };
            }
            Ok(Msg::Failed(f)) => {
                return Outcome {
                    cases: done.load(Ordering::Relaxed),
                    elapsed: started.elapsed(),
                    failure: Some(f),
                };
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Outcome {
                    cases: done.load(Ordering::Relaxed),
                    elapsed: started.elapsed(),
                    failure: Some(Failure {
                        index: current.load(Ordering::SeqCst),
                        kind: FailureKind::Crash("the case thread ended without a result".into()),
                        input: Vec::new(),
                    }),
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                progress(done.load(Ordering::Relaxed));
                let index = current.load(Ordering::SeqCst);
                let since = Duration::from_millis(current_since.load(Ordering::SeqCst));
                if index != u64::MAX
                    && started.elapsed().saturating_sub(since) > opts.limits.hang
                    && current.load(Ordering::SeqCst) == index
                {
                    // The case thread is left running: the caller reports and exits.
                    return Outcome {
                        cases: done.load(Ordering::Relaxed),
                        elapsed: started.elapsed(),
                        failure: Some(Failure {
                            index,
                            kind: FailureKind::Hang,
                            input: crate::targets::input(target, opts.seed, index),
                        }),
                    };
                }
            }
        }
    }
}

/// Seed for `--seed` when none is given (the report records it).
pub const DEFAULT_SEED: u64 = 0x7472_6f76_6531;

/// [`catch_unwind`] around one input, for `--input FILE` reproduction.
///
/// # Errors
///
/// The panic message.
pub fn run_one(target: &Target, input: &[u8]) -> Result<usize, String> {
    let base = crate::alloc::begin();
    catch_unwind(AssertUnwindSafe(|| (target.run)(input)))
        .map_err(|p| panic_message(&*p))
        .map(|()| crate::alloc::peak_since(base))
}
