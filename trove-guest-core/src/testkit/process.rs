//! Processes of test servers: who we run as, whether a process is gone, and stopping one from a
//! `Drop` (no async runtime there).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Whether this process runs as root (servers that refuse root then run as another account).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `pid` has exited: there is no such process, or it is a zombie waiting to be reaped.
pub fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// How [`stop_blocking`] stops a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopOptions {
    /// The signal asking the server to shut down.
    pub signal: Signal,
    /// Send `signal` to the server's whole process group (default) or only to the server.
    pub whole_group: bool,
    /// How long the server may take before its process group is killed.
    pub grace: Duration,
}

impl StopOptions {
    /// `signal` to the whole process group, `grace` to exit.
    pub fn new(signal: Signal, grace: Duration) -> Self {
        StopOptions {
            signal,
            whole_group: true,
            grace,
        }
    }
    /// Sends the signal to the server process only (its children get it from the server).
    pub fn to_leader_only(mut self) -> Self {
        self.whole_group = false;
        self
    }
}

/// Stops the server `pid`, which leads its process group (as [`LocalProcess`] spawns it):
/// sends the signal, waits (bounded by [`StopOptions::grace`]) for the server to exit, then kills
/// whatever is left of the group. For `Drop`: blocks the thread, needs no runtime and no lock.
///
/// [`LocalProcess`]: crate::service::LocalProcess
pub fn stop_blocking(pid: u32, opts: &StopOptions) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if raw <= 0 {
        return;
    }
    let target = Pid::from_raw(raw);
    let _ = if opts.whole_group {
        killpg(target, opts.signal)
    } else {
        kill(target, opts.signal)
    };
    let started = Instant::now();
    while !has_exited(pid) && started.elapsed() < opts.grace {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = killpg(target, Signal::SIGKILL);
}
