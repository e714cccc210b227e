//! What a measured step costs: wall time, CPU seconds (this process, its reaped children and
//! the live server processes involved) and peak resident memory, all read from `/proc`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Kernel clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Fields 14–17 of a `/proc/<pid>/stat` line: utime, stime, cutime, cstime (ticks).
fn stat_times(stat: &str) -> Option<(u64, u64, u64, u64, i64)> {
    // The command name (field 2) may hold spaces; everything after its ')' is space separated,
    // starting at field 3.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let pgrp = f.get(5 - 3).and_then(|v| v.parse::<i64>().ok())?;
    Some((num(14)?, num(15)?, num(16)?, num(17)?, pgrp))
}

/// Converts `/proc` clock ticks to seconds.
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND
}

/// CPU ticks of this process plus all its children it has reaped (`RUSAGE_SELF` +
/// `RUSAGE_CHILDREN`, as `/proc/self/stat` reports them).
pub fn self_and_children_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_times(&s))
        .map_or(0, |(u, s, cu, cs, _)| u + s + cu + cs)
}

/// CPU ticks of this process alone (`RUSAGE_SELF`: every thread, none of its children).
pub fn self_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_times(&s))
        .map_or(0, |(u, s, ..)| u + s)
}

/// CPU ticks of every live process in process group `pgid` (a server and the backends it
/// forked), including children they reaped.
pub fn group_ticks(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some((u, s, cu, cs, pgrp)) = stat_times(&stat)
            && pgrp == i64::from(pgid)
        {
            total += u + s + cu + cs;
        }
    }
    total
}

/// The live processes of process group `pgid`.
pub fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (.., pgrp) = stat_times(&stat)?;
            (pgrp == i64::from(pgid)).then_some(pid)
        })
        .collect()
}

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Measures one step: wall clock, CPU of this process tree, and CPU of server process groups.
///
/// CPU = Δ(self + reaped children) + Δ(Σ live server groups). A server stopped (and reaped by
/// us) during the step leaves the live sum and enters the children sum with all its CPU, so the
/// two deltas add up without double counting.
#[derive(Debug)]
pub struct Meter {
    started: Instant,
    own: u64,
    alone: u64,
    groups: BTreeMap<u32, u64>,
    phase_started: Instant,
    phases: Vec<(String, f64)>,
}

impl Meter {
    /// Starts measuring; `servers` are the process groups of servers already running.
    pub fn start(servers: &[u32]) -> Self {
        let groups = servers.iter().map(|&p| (p, group_ticks(p))).collect();
        let now = Instant::now();
        Meter {
            started: now,
            own: self_and_children_ticks(),
            alone: self_ticks(),
            groups,
            phase_started: now,
            phases: Vec::new(),
        }
    }

    /// Ends the current phase, naming it.
    pub fn phase(&mut self, name: &str) {
        let now = Instant::now();
        self.phases
            .push((name.to_owned(), (now - self.phase_started).as_secs_f64()));
        self.phase_started = now;
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Stops: `servers` are the server process groups live now (new ones included).
    pub fn finish(self, servers: &[u32]) -> Cost {
        let wall = self.started.elapsed().as_secs_f64();
        let own = self_and_children_ticks().saturating_sub(self.own) as i64;
        let now: i64 = servers.iter().map(|&p| group_ticks(p) as i64).sum();
        let before: i64 = self.groups.values().map(|&t| t as i64).sum();
        let ticks = (own + now - before).max(0);
        Cost {
            wall,
            cpu: ticks as f64 / TICKS_PER_SECOND,
            own_cpu: ticks_to_seconds(self_ticks().saturating_sub(self.alone)),
            phases: self.phases,
        }
    }
}

/// What a step cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Wall-clock seconds.
    pub wall: f64,
    /// CPU seconds (user + system).
    pub cpu: f64,
    /// CPU seconds of the measuring process alone (an agent: its reading, hashing, checking
    /// and writing, without its tools and servers).
    #[serde(default)]
    pub own_cpu: f64,
    /// Named phases and their wall-clock seconds, in order.
    pub phases: Vec<(String, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line = "4242 (my prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 12 34 5 6 20 0 1 0";
        assert_eq!(stat_times(line), Some((12, 34, 5, 6, 4242)));
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        assert!(peak_rss_kib().unwrap() > 0);
    }
}
