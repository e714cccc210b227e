//! The provisioning benchmark's smoke test: `bench --quick --reps 1` runs every row on both
//! datastores against real servers and prints the whole table. No timing is asserted.

use std::process::Command;

/// Rows every datastore's table must hold.
const COMMON_ROWS: [&str; 10] = [
    "| raw tools |",
    "| raw tools through a file |",
    "| trove-guest, S3 store |",
    "| trove-guest |",
    "| trove-guest, transient store |",
    "| trove-guest, snapshot then attach |",
    "| trove-guest + zstd store |",
    "| trove-guest, download then extract |",
    "| Trove-style gzip pipeline |",
    "| logical dump |",
];

/// Rows only MariaDB has (the backup tool's `--parallel`).
const MARIADB_ROWS: [&str; 2] = ["| raw tools --parallel=2 |", "| trove-guest --parallel=2 |"];

fn section<'a>(out: &'a str, heading: &str) -> &'a str {
    let start = out
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} section in the output:\n{out}"));
    let rest = &out[start + heading.len()..];
    // The result table ends where the per-phase table starts.
    let end = rest.find("Per phase:").map_or(rest.len(), |i| i);
    &rest[..end]
}

#[test]
fn quick_benchmark_completes_and_prints_every_row_for_both_datastores() {
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--reps", "1", "--datastore", "all", "--report"])
        .arg(report.path())
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("Machine: "), "{stdout}");
    let maria = section(&stdout, "### mariadb");
    let pg = section(&stdout, "### postgresql");
    for row in COMMON_ROWS.iter().chain(MARIADB_ROWS.iter()) {
        assert!(maria.contains(row), "MariaDB table lacks {row}:\n{maria}");
    }
    for row in COMMON_ROWS {
        assert!(pg.contains(row), "PostgreSQL table lacks {row}:\n{pg}");
    }
    // Every trove-guest row reports the agents' peak memory; the reference row is 1.00×.
    for table in [maria, pg] {
        assert!(
            table.contains("Best trove-guest row **") && table.contains("against the best raw row"),
            "no like-for-like summary:\n{table}"
        );
        let raw = table
            .lines()
            .find(|l| l.starts_with("| raw tools |"))
            .expect("raw tools row");
        assert!(raw.contains("| 1.00× |"), "{raw}");
        for line in table.lines().filter(|l| l.starts_with("| trove-guest")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let rss: f64 = cells[7]
                .parse()
                .unwrap_or_else(|_| panic!("no RSS in {line}"));
            assert!(rss > 0.0, "{line}");
        }
    }
    let written = std::fs::read_to_string(report.path()).unwrap();
    assert_eq!(written.trim(), stdout.trim());
}
