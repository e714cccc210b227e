//! The two-host mode (`--two-host`): the master's side of every row (its server, the backup tool,
//! the snapshot agent and its upload) runs on [`MASTER_CPU`], the replica's side (its server, the
//! download, the extractor and prepare, the attaching agent) on [`REPLICA_CPU`], so a row is no
//! longer charged both machines' work on one pair of shared cores.
//!
//! Processes the benchmark starts from now on are placed with `taskset -c N` (they and every
//! thread and child they make inherit the mask); servers already running are moved with
//! `taskset -a -p -c N` on every process of their process group. The benchmark process itself
//! is moved to the replica's CPU, so whatever it starts unwrapped (replica servers, extractors,
//! the `|` copies between two tools) lands there.

use std::ffi::OsStr;

use trove_guest_core::{Error, Result, ToolCommand};

/// The CPU of the master's side.
pub const MASTER_CPU: usize = 0;
/// The CPU of the replica's side.
pub const REPLICA_CPU: usize = 1;

/// Which side of a provisioning a process belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The master's machine.
    Master,
    /// The replica's machine.
    Replica,
}

impl Side {
    /// The CPU this side runs on in the two-host mode.
    pub fn cpu(self) -> usize {
        match self {
            Side::Master => MASTER_CPU,
            Side::Replica => REPLICA_CPU,
        }
    }
}

/// A command for `program`, run on `side`'s CPU when `two_host` is set (through
/// `taskset -c N`), as it is otherwise.
pub fn tool(program: impl AsRef<OsStr>, side: Side, two_host: bool) -> ToolCommand {
    if two_host {
        ToolCommand::new("taskset")
            .arg("-c")
            .arg(side.cpu().to_string())
            .arg(program)
    } else {
        ToolCommand::new(program.as_ref())
    }
}

/// Moves every thread of process `pid` to `side`'s CPU.
///
/// # Errors
///
/// [`Error::ToolFailed`] / [`Error::NotFound`] from `taskset`.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn pin_process(pid: u32, side: Side) -> Result<()> {
    ToolCommand::new("taskset")
        .args(["-a", "-p", "-c"])
        .arg(side.cpu().to_string())
        .arg(pid.to_string())
        .run()
        .await
}

/// Moves every process of process group `pgid` (a server and what it forked) to `side`'s CPU.
/// Processes that exit meanwhile are skipped.
///
/// # Errors
///
/// [`Error::NotFound`] when the group has no process.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn pin_group(pgid: u32, side: Side) -> Result<()> {
    let pids = super::usage::group_pids(pgid);
    if pids.is_empty() {
        return Err(Error::NotFound {
            what: format!("processes of group {pgid} to pin"),
        });
    }
    for pid in pids {
        // A backend may exit between the listing and the call.
        let _ = pin_process(pid, side).await;
    }
    Ok(())
}

/// The CPUs process `pid` may run on, as `/proc/<pid>/status` lists them (`0`, `0-1`).
pub fn allowed_cpus(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_wrapped_in_taskset_only_in_two_host_mode() {
        let t = tool("mariabackup", Side::Master, true).arg("--backup");
        assert_eq!(t.display(), "taskset -c 0 mariabackup --backup");
        let t = tool("mbstream", Side::Replica, true);
        assert_eq!(t.display(), "taskset -c 1 mbstream");
        let t = tool("mbstream", Side::Replica, false).arg("-x");
        assert_eq!(t.display(), "mbstream -x");
    }

    #[test]
    fn this_process_has_an_allowed_cpu_list() {
        assert!(allowed_cpus(std::process::id()).is_some_and(|l| !l.is_empty()));
    }
}
