//! The replication demo binary runs end to end on real servers, exits 0 and leaves no process
//! or directory behind; interrupted, it still cleans up.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use trove_guest_agent::testing::testbed::left_behind;

const DEMO: &str = env!("CARGO_BIN_EXE_replication_demo");

/// Every directory the demo says it made (servers' `dir ...`, the snapshot store).
fn dirs_in(stdout: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for line in stdout.lines() {
        if let Some((_, d)) = line.split_once(" dir ") {
            dirs.push(PathBuf::from(d.trim()));
        }
        if let Some((_, d)) = line.split_once("snapshot store  file://") {
            dirs.push(PathBuf::from(d.trim()));
        }
    }
    dirs
}

fn assert_nothing_left(stdout: &str, pid: u32, expected_dirs: usize) {
    let dirs = dirs_in(stdout);
    assert_eq!(
        dirs.len(),
        expected_dirs,
        "the demo names its directories:\n{stdout}"
    );
    for d in &dirs {
        let left = left_behind(d);
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    let prefix = format!("tg-pgtpl-{pid}-");
    let templates: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(
        templates.is_empty(),
        "the demo's PostgreSQL template is left: {templates:?}"
    );
}

fn run_demo(args: &[&str]) -> (String, u32) {
    let child = Command::new(DEMO)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run replication_demo");
    let pid = child.id();
    let out = child.wait_with_output().expect("demo output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "demo {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, pid)
}

fn assert_whole_flow(stdout: &str) {
    for marker in [
        "\"slaveOf\"",
        "== 4. get_replication_snapshot",
        "\"password\": \"[REDACTED]\"",
        "\"topology\"",
        "== 7. Writes on the master arrive",
        "all replicas hold exactly the master's data",
        "{\"detach_replication\":{}}",
        "cleanup_source_on_replica_detach on products-m: done",
        "products-m is back to standalone",
        "summary (",
    ] {
        assert!(stdout.contains(marker), "missing {marker:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("DIFFERENT"), "{stdout}");
}

#[test]
fn mariadb_demo_with_two_replicas_runs_end_to_end_and_cleans_up() {
    let (stdout, pid) = run_demo(&["--replicas", "2", "--rows", "3000"]);
    assert_whole_flow(&stdout);
    assert!(stdout.contains("products-s2 attach"), "{stdout}");
    assert_nothing_left(&stdout, pid, 4);
}

#[test]
fn postgresql_demo_runs_end_to_end_and_cleans_up() {
    let (stdout, pid) = run_demo(&["--datastore", "postgresql", "--rows", "3000"]);
    assert_whole_flow(&stdout);
    assert!(stdout.contains("\"wal_position\""), "{stdout}");
    assert_nothing_left(&stdout, pid, 3);
}

#[test]
fn mariadb_switchover_demo_switches_over_and_back_and_cleans_up() {
    let (stdout, pid) = run_demo(&["--switchover", "--rows", "2000"]);
    for marker in [
        "== 3. Switchover: db-2 becomes the master",
        "== 4. And back: db-1 is the master again",
        "writes refused for",
    ] {
        assert!(stdout.contains(marker), "missing {marker:?} in:\n{stdout}");
    }
    assert_eq!(
        stdout.matches("\"topology\"").count(),
        3,
        "the topology after each step:\n{stdout}"
    );
    assert_nothing_left(&stdout, pid, 4);
}

#[test]
fn postgresql_failover_demo_promotes_a_replica_and_the_survivor_converges() {
    let (stdout, pid) = run_demo(&["--failover", "--datastore", "postgresql", "--rows", "2000"]);
    assert!(stdout.contains("lost: []"), "{stdout}");
    let counts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("db-") && l.ends_with(" rows"))
        .collect();
    assert_eq!(counts.len(), 2, "{stdout}");
    assert_eq!(
        counts[0].split(": ").nth(1),
        counts[1].split(": ").nth(1),
        "the survivor holds the new master's rows:\n{stdout}"
    );
    assert_nothing_left(&stdout, pid, 4);
}

#[test]
fn interrupted_demo_exits_130_and_cleans_up() {
    let mut child = Command::new(DEMO)
        .args(["--rows", "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run replication_demo");
    let pid = child.id();
    let mut stdout = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.expect("demo output");
        stdout.push_str(&line);
        stdout.push('\n');
        if line.starts_with("== 4.") {
            // Mid-flow: the snapshot is being taken.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            )
            .expect("send SIGINT");
            break;
        }
    }
    for line in lines {
        stdout.push_str(&line.expect("demo output"));
        stdout.push('\n');
    }
    let status = child.wait().expect("demo exits");
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert_nothing_left(&stdout, pid, 3);
}

#[test]
fn missing_backup_tool_names_the_debian_package_and_exits_2() {
    let out = Command::new(DEMO)
        .env("PATH", "/nonexistent")
        .output()
        .expect("run replication_demo");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mariabackup  (Debian package mariadb-backup)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("apt-get install -y mariadb-backup"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing was started");
}
