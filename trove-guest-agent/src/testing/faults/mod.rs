//! The kill -9 fault matrix harness: real `guest_agent` processes parked at a failpoint, killed
//! there, and restarted, with what is left checked.
//!
//! An [`Instance`] is a throwaway server (core's testkit) handed over to a `guest_agent` process
//! started from a generated configuration file: the agent runs the server as its own child
//! (`[service] kind = "process"` with a `pid_file`, so a restarted agent adopts a server that
//! survived), keeps staging in the instance's work directory and snapshots in a store directory
//! shared by the master's and the replica's agents. The agent is started with the test-only
//! failpoint variables (`TROVE_GUEST_FAILPOINTS`, `TROVE_GUEST_FAILPOINT_DIR`; the binary must
//! be built with the `failpoints` feature) and its temporary directory (`TMPDIR`: where secret
//! option files live) inside the instance, so nothing it leaves escapes the check.
//!
//! A cell ([`run_cell`]) sets the scene for its step, calls the agent, waits (bounded) until the
//! agent is parked at the failpoint, then applies its [`Fault`]: the agent alone is SIGKILLed,
//! or the whole "host" goes (the agent, the server's process group, every tool the agent ran
//! and every process naming the instance directory). It then "reboots": after a host crash the
//! server is started again the way a boot would (failure ignored: its data directory may be
//! aside), and a fresh agent without failpoints starts, which recovers before it serves. The
//! cell then checks that the server answers and holds either its old data or the complete new
//! replica (never a mixture), that no staging / old-data / secret / partial-upload / stale
//! override file is left, that the master keeps no slot of a snapshot that never committed,
//! and that the interrupted call, repeated, succeeds. [`CellRecord`]s are appended as JSON
//! lines to `$TROVE_GUEST_MATRIX_REPORT` when it is set; the `reliability_report` binary turns
//! them into the table of `RELIABILITY.md`.

mod cell;
mod instance;

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use trove_guest_core::{DatastoreKind, Error, Result};

pub use cell::{CellSpec, park_limit, run_cell};
pub use instance::{Instance, InstanceOptions, pids_mentioning};

/// Environment variable naming the JSON-lines file cells append their [`CellRecord`] to.
pub const REPORT_ENV: &str = "TROVE_GUEST_MATRIX_REPORT";
/// Environment variable overriding how long a cell waits for the agent to park (seconds).
pub const PARK_LIMIT_ENV: &str = "TROVE_GUEST_MATRIX_PARK_SECS";

/// Failpoints the core lifecycle places in the attach flow (both backends).
pub const ATTACH_STEPS: [&str; 6] = [
    "attach.staged",
    "attach.stopped",
    "attach.swapped",
    "attach.configured",
    "attach.started",
    "attach.replicating",
];
/// Failpoints the core lifecycle places in the stage flow.
pub const STAGE_STEPS: [&str; 2] = ["stage.extracting", "stage.prepared"];
/// Failpoints the backends place in their other flows.
pub const OTHER_STEPS: [&str; 5] = [
    "snapshot.streaming",
    "snapshot.uploaded",
    "detach.begun",
    "demote.begun",
    "enable_master.begun",
];

/// Every failpoint of the matrix, in table order.
pub fn all_steps() -> Vec<&'static str> {
    ATTACH_STEPS
        .iter()
        .chain(STAGE_STEPS.iter())
        .chain(OTHER_STEPS.iter())
        .copied()
        .collect()
}

/// What is killed while the agent is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// `kill -9` of the agent alone; the server (its own process group) keeps running.
    AgentKilled,
    /// The host dies: the agent, the server's process group and every tool process of the
    /// instance are SIGKILLed; at "boot" the server is started again if it can be.
    HostKilled,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::AgentKilled => "agent killed",
            Fault::HostKilled => "host killed",
        })
    }
}

/// What a cell found, one JSON line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CellRecord {
    /// The failpoint.
    pub step: String,
    /// The fault applied there.
    pub fault: Fault,
    /// `mariadb` or `postgresql`.
    pub datastore: String,
    /// `old data`, `new replica`, or `failed: ...`.
    pub result: String,
    /// Leftovers found after recovery (empty when clean).
    pub leftovers: Vec<String>,
    /// Whether the interrupted call, repeated, succeeded.
    pub retry_ok: bool,
    /// What the restarted agent's recovery reported.
    pub recovery: Vec<String>,
    /// Why the cell failed, when it did (first problem found).
    pub problem: Option<String>,
}

impl CellRecord {
    fn new(step: &str, fault: Fault, kind: DatastoreKind) -> Self {
        CellRecord {
            step: step.to_owned(),
            fault,
            datastore: kind.to_string(),
            result: "failed: not run".into(),
            leftovers: Vec::new(),
            retry_ok: false,
            recovery: Vec::new(),
            problem: None,
        }
    }

    /// Whether the cell passed: an allowed data outcome, nothing left over, the retry worked.
    pub fn passed(&self) -> bool {
        self.problem.is_none()
            && !self.result.starts_with("failed")
            && self.leftovers.is_empty()
            && self.retry_ok
    }

    fn fail(&mut self, problem: impl Into<String>) {
        let problem = problem.into();
        tracing::warn!(step = %self.step, fault = %self.fault, %problem, "cell problem");
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }

    /// Appends this record to `$TROVE_GUEST_MATRIX_REPORT` when it is set.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be written.
    pub fn append_to_report(&self) -> Result<()> {
        let Some(path) = std::env::var_os(REPORT_ENV) else {
            return Ok(());
        };
        let mut line = serde_json::to_string(self)
            .map_err(|e| Error::invalid("cell record", e.to_string()))?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", Path::new(&path).display()), e))?;
        // One write of one line: appends from concurrent cells do not interleave.
        f.write_all(line.as_bytes())
            .map_err(|e| Error::io(format!("append to {}", Path::new(&path).display()), e))
    }
}
