//! The run report (`--report PATH`), committed as `fuzz/report.json` and rendered into
//! RELIABILITY.md by `reliability_report`.

use serde::{Deserialize, Serialize};

/// One run of the harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The command that produced it.
    pub command: String,
    /// The seed.
    pub seed: u64,
    /// Cases asked for per target.
    pub cases_per_target: u64,
    /// A case running longer than this many milliseconds failed as a hang.
    pub hang_limit_ms: u64,
    /// A case holding more than this many bytes at once failed.
    pub max_alloc_bytes: u64,
    /// Per target.
    pub targets: Vec<TargetReport>,
    /// How the run departed from `command`, if it did (rendered under the table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What one target's run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    /// The target.
    pub name: String,
    /// The parsers it drives.
    pub parsers: String,
    /// Cases completed without failure.
    pub cases: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Failures (the run of a target stops at its first).
    pub failures: u64,
    /// The failure, if any: what happened and the file holding the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}
