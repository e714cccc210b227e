//! Results: samples, medians, the printed table and the Markdown report.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::machine::Machine;
use super::usage::Cost;

/// One measured provisioning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall time, CPU and phases.
    pub cost: Cost,
    /// Peak resident memory of the agent processes (trove-guest rows only), KiB.
    pub agent_peak_rss_kib: Option<u64>,
    /// Bytes of the intermediate copy (snapshot object, compressed file), when there is one.
    pub stored_bytes: Option<u64>,
    /// CPU seconds of the agent processes themselves (trove-guest rows only): their reading,
    /// hashing, checking and writing, without the tools they ran and the servers.
    #[serde(default)]
    pub agent_cpu: Option<f64>,
}

/// The samples of one method on one datastore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Short name of the method (`raw tools`, `trove-guest`, ...).
    pub method: String,
    /// What it runs.
    pub detail: String,
    /// Whether it is the raw-tools reference row.
    pub reference: bool,
    /// What kind of row it is, for the like-for-like comparison.
    #[serde(default)]
    pub role: RowRole,
    /// The backup tool's `--parallel` (`None`: the tool's or strategy's default).
    #[serde(default)]
    pub parallel: Option<u32>,
    /// The repetitions.
    pub samples: Vec<Sample>,
}

/// What a row is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RowRole {
    /// Raw tools piped into the extractor.
    Raw,
    /// Raw tools through `tee` into a file.
    RawFile,
    /// A trove-guest row (compared with the raw row at the same parallelism).
    TroveGuest,
    /// Anything else (compared with the reference row).
    #[default]
    Other,
}

/// The median of `v` (mean of the middle two for an even count); `None` when empty.
pub fn median(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = v.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Row {
    /// A row without samples yet.
    pub fn new(method: impl Into<String>, detail: impl Into<String>, reference: bool) -> Self {
        Row {
            method: method.into(),
            detail: detail.into(),
            reference,
            role: if reference {
                RowRole::Raw
            } else {
                RowRole::Other
            },
            parallel: None,
            samples: Vec::new(),
        }
    }

    /// Sets [`Row::role`] and [`Row::parallel`].
    pub fn with_role(mut self, role: RowRole, parallel: Option<u32>) -> Self {
        self.role = role;
        self.parallel = parallel;
        self
    }

    /// Median wall seconds.
    pub fn wall(&self) -> Option<f64> {
        median(self.samples.iter().map(|s| s.cost.wall))
    }

    /// Median CPU seconds.
    pub fn cpu(&self) -> Option<f64> {
        median(self.samples.iter().map(|s| s.cost.cpu))
    }

    /// Median CPU seconds of the agent processes alone.
    pub fn agent_cpu(&self) -> Option<f64> {
        median(self.samples.iter().filter_map(|s| s.agent_cpu))
    }

    /// Median agent peak RSS in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        median(
            self.samples
                .iter()
                .filter_map(|s| s.agent_peak_rss_kib.map(|k| k as f64 / 1024.0)),
        )
    }

    /// Median size of the intermediate copy in MB.
    pub fn stored_mb(&self) -> Option<f64> {
        median(
            self.samples
                .iter()
                .filter_map(|s| s.stored_bytes.map(|b| b as f64 / 1e6)),
        )
    }

    /// Median seconds of each phase, in first-seen order.
    pub fn phases(&self) -> Vec<(String, f64)> {
        let mut names: Vec<String> = Vec::new();
        for s in &self.samples {
            for (n, _) in &s.cost.phases {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
            .into_iter()
            .map(|n| {
                let m = median(self.samples.iter().map(|s| {
                    s.cost
                        .phases
                        .iter()
                        .filter(|(p, _)| *p == n)
                        .map(|(_, t)| *t)
                        .sum::<f64>()
                }))
                .unwrap_or(0.0);
                (n, m)
            })
            .collect()
    }
}

/// All rows of one datastore, on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatastoreReport {
    /// `mariadb` or `postgresql`.
    pub datastore: String,
    /// The server version.
    pub server_version: String,
    /// Bytes of the master's data directory (PostgreSQL: without `pg_wal`).
    pub data_dir_bytes: u64,
    /// Rows in the benchmark table.
    pub rows_in_table: u64,
    /// Seconds spent loading the data (not part of any row).
    pub load_seconds: f64,
    /// The rows, reference first.
    pub rows: Vec<Row>,
    /// Notes on what a row does or does not include.
    pub notes: Vec<String>,
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.prec$}"))
}

impl DatastoreReport {
    fn reference_wall(&self) -> Option<f64> {
        self.rows.iter().find(|r| r.reference).and_then(Row::wall)
    }

    /// The wall time `r` is compared with: for a trove-guest row, the raw row at the same
    /// parallelism (else the reference row); for every other row, the reference row.
    fn baseline_wall(&self, r: &Row) -> Option<f64> {
        if r.role == RowRole::TroveGuest
            && let Some(w) = self
                .rows
                .iter()
                .find(|x| x.role == RowRole::Raw && x.parallel == r.parallel)
                .and_then(Row::wall)
        {
            return Some(w);
        }
        self.reference_wall()
    }

    fn best(&self, role: RowRole) -> Option<(&Row, f64)> {
        self.rows
            .iter()
            .filter(|r| r.role == role)
            .filter_map(|r| r.wall().map(|w| (r, w)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The like-for-like summary: the best trove-guest row against the best raw row and
    /// against raw tools through a file, with CPU seconds.
    pub fn summary(&self) -> String {
        let Some((tg, tw)) = self.best(RowRole::TroveGuest) else {
            return String::new();
        };
        let mut out = String::new();
        let cpu = |r: &Row| fmt_opt(r.cpu(), 1);
        if let Some((raw, rw)) = self.best(RowRole::Raw) {
            let _ = write!(
                out,
                "Best trove-guest row **{}** {tw:.2} s against the best raw row **{}** \
                 {rw:.2} s: **{:.2}×** (CPU {} s against {} s)",
                tg.method,
                raw.method,
                tw / rw.max(1e-9),
                cpu(tg),
                cpu(raw),
            );
        }
        if let Some((file, fw)) = self.best(RowRole::RawFile) {
            let _ = write!(
                out,
                "; against **{}** {fw:.2} s: **{:.2}×**",
                file.method,
                tw / fw.max(1e-9)
            );
        }
        out.push_str(".\n");
        out
    }

    /// The result table (Markdown, also readable as plain text).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mb = self.data_dir_bytes as f64 / 1e6;
        out.push_str(
            "| method | wall s | × raw | MB/s | CPU s | agent CPU s | agent peak RSS MiB | copy MB \
             | reps |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let wall = r.wall();
            let ratio = match (wall, self.baseline_wall(r)) {
                (Some(w), Some(rf)) if rf > 0.0 => Some(w / rf),
                _ => None,
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.method,
                fmt_opt(wall, 2),
                ratio.map_or_else(|| "—".into(), |x| format!("{x:.2}×")),
                fmt_opt(wall.map(|w| mb / w.max(1e-9)), 0),
                fmt_opt(r.cpu(), 1),
                fmt_opt(r.agent_cpu(), 1),
                fmt_opt(r.rss_mib(), 1),
                fmt_opt(r.stored_mb(), 0),
                r.samples.len(),
            );
        }
        out
    }

    /// Median per-phase timings of every row.
    pub fn phase_table(&self) -> String {
        let mut out = String::new();
        out.push_str("| method | phases (median s) |\n|---|---|\n");
        for r in &self.rows {
            let phases: Vec<String> = r
                .phases()
                .iter()
                .map(|(n, t)| format!("{} {t:.2}", n.replace('|', "\\|")))
                .collect();
            let _ = writeln!(out, "| {} | {} |", r.method, phases.join(" · "));
        }
        out
    }

    /// What each row runs.
    pub fn method_list(&self) -> String {
        let mut out = String::new();
        for r in &self.rows {
            let _ = writeln!(out, "- **{}**: {}", r.method, r.detail);
        }
        out
    }
}

/// A whole benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When it ran (UTC, RFC 3339-ish).
    pub started_utc: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Requested dataset size in bytes.
    pub target_bytes: u64,
    /// Repetitions per row.
    pub reps: u32,
    /// Per datastore.
    pub datastores: Vec<DatastoreReport>,
}

impl Report {
    /// The Markdown report: machine, then per datastore the table, the phases and the notes.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run: `{}` at {} UTC.\n",
            self.command, self.started_utc
        );
        let _ = writeln!(
            out,
            "Machine: {} cores ({}), {} MiB memory ({} MiB available at start), disk {:.0} MB/s \
             sequential write of {} MiB with one fdatasync, Linux {}.\n",
            m.cores,
            m.cpu_model,
            m.memory_mib,
            m.memory_available_mib,
            m.disk_write_mb_s,
            m.disk_test_bytes >> 20,
            m.kernel
        );
        for d in &self.datastores {
            let _ = writeln!(
                out,
                "### {} ({})\n\nData directory {:.0} MB ({} rows, loaded in {:.0} s, not timed); \
                 median of {} repetitions; × raw is wall time relative to the raw-tools row at \
                 the same `--parallel` for trove-guest rows, to the raw-tools row for the others; \
                 MB/s is data-directory bytes per wall second.\n",
                d.datastore,
                d.server_version,
                d.data_dir_bytes as f64 / 1e6,
                d.rows_in_table,
                d.load_seconds,
                self.reps,
            );
            out.push_str(&d.table());
            let summary = d.summary();
            if !summary.is_empty() {
                out.push('\n');
                out.push_str(&summary);
            }
            out.push_str("\nPer phase:\n\n");
            out.push_str(&d.phase_table());
            out.push_str("\nMethods:\n\n");
            out.push_str(&d.method_list());
            if !d.notes.is_empty() {
                out.push_str("\nNotes:\n\n");
                for n in &d.notes {
                    let _ = writeln!(out, "- {n}");
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::<f64>::new()), None);
    }

    #[test]
    fn the_table_has_ratios_to_the_reference_row() {
        let mut raw = Row::new("raw tools", "", true);
        let mut tg = Row::new("trove-guest", "", false);
        let overlap = vec![
            ("snapshot backup".to_owned(), 8.0),
            ("attach restore".to_owned(), 6.0),
        ];
        for w in [10.0, 11.0, 9.0] {
            raw.samples.push(Sample {
                cost: Cost {
                    wall: w,
                    cpu: 1.0,
                    phases: vec![("a".into(), w)],
                    ..Cost::default()
                },
                ..Sample::default()
            });
            tg.samples.push(Sample {
                cost: Cost {
                    wall: 2.0 * w,
                    cpu: 2.0,
                    phases: overlap.clone(),
                    ..Cost::default()
                },
                agent_peak_rss_kib: Some(20 * 1024),
                stored_bytes: Some(1_000_000),
                agent_cpu: Some(0.5),
            });
        }
        let d = DatastoreReport {
            datastore: "mariadb".into(),
            server_version: "x".into(),
            data_dir_bytes: 1_000_000_000,
            rows_in_table: 1,
            load_seconds: 1.0,
            rows: vec![raw, tg],
            notes: vec![],
        };
        let t = d.table();
        assert!(t.contains("| raw tools | 10.00 | 1.00× | 100 |"), "{t}");
        assert!(
            t.contains("| trove-guest | 20.00 | 2.00× | 50 | 2.0 | 0.5 | 20.0 | 1 | 3 |"),
            "{t}"
        );
        assert!(d.phase_table().contains("a 10.00"));
        assert!(
            d.phase_table()
                .contains("snapshot backup 8.00 · attach restore 6.00")
        );
    }

    #[test]
    fn trove_guest_rows_compare_with_the_raw_row_at_their_parallelism() {
        let row = |name: &str, role, parallel, wall: f64| {
            let mut r = Row::new(name, "", name == "raw tools").with_role(role, parallel);
            r.samples.push(Sample {
                cost: Cost {
                    wall,
                    cpu: wall,
                    phases: vec![],
                    ..Cost::default()
                },
                ..Sample::default()
            });
            r
        };
        let d = DatastoreReport {
            datastore: "mariadb".into(),
            server_version: "x".into(),
            data_dir_bytes: 1_000_000_000,
            rows_in_table: 1,
            load_seconds: 1.0,
            rows: vec![
                row("raw tools", RowRole::Raw, None, 4.0),
                row("raw tools --parallel=2", RowRole::Raw, Some(2), 2.0),
                row("raw tools through a file", RowRole::RawFile, None, 5.0),
                row("trove-guest", RowRole::TroveGuest, None, 5.0),
                row(
                    "trove-guest --parallel=2",
                    RowRole::TroveGuest,
                    Some(2),
                    3.0,
                ),
            ],
            notes: vec![],
        };
        let t = d.table();
        assert!(t.contains("| trove-guest | 5.00 | 1.25× |"), "{t}");
        assert!(
            t.contains("| trove-guest --parallel=2 | 3.00 | 1.50× |"),
            "{t}"
        );
        assert!(
            t.contains("| raw tools through a file | 5.00 | 1.25× |"),
            "{t}"
        );
        let s = d.summary();
        assert!(s.contains("**trove-guest --parallel=2** 3.00 s"), "{s}");
        assert!(
            s.contains("**raw tools --parallel=2** 2.00 s: **1.50×**"),
            "{s}"
        );
        assert!(s.contains("5.00 s: **0.60×**"), "{s}");
    }
}
