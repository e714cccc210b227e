//! The tool runner: cancelled runs leave no process behind, failures carry stderr's tail, exit
//! status is checked, captured output is bounded, and secret files are private and temporary.
//!
//! `/bin/sh -c` appears here only as the tool under test (something that starts children).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trove_guest_core::{Error, ErrorKind, OsUser, SecretFile, ToolCommand};

/// Live (non-zombie) processes, as (pid, process group).
fn live_processes() -> Vec<(i32, i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() < 3 || fields[0] == "Z" || fields[0] == "X" {
            continue;
        }
        let Ok(pgrp) = fields[2].parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push((pid, pgrp, cmdline));
    }
    out
}

fn group_members(pgrp: i32) -> BTreeSet<i32> {
    live_processes()
        .into_iter()
        .filter(|(_, g, _)| *g == pgrp)
        .map(|(p, _, _)| p)
        .collect()
}

/// Waits (bounded) until a process whose command line holds `marker` runs with at least
/// `members` live processes in its group; returns the group id.
async fn wait_for_group(marker: &str, members: usize) -> i32 {
    for _ in 0..1000 {
        if let Some((_, pgrp, _)) = live_processes()
            .into_iter()
            .find(|(_, _, c)| c.contains(marker))
            && group_members(pgrp).len() >= members
        {
            return pgrp;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no process group for {marker} with {members} members appeared");
}

/// Waits (bounded) for the group to have no live process; panics naming the survivors.
async fn assert_group_gone(pgrp: i32) {
    for _ in 0..1000 {
        if group_members(pgrp).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "processes left behind in group {pgrp}: {:?}",
        group_members(pgrp)
    );
}

fn marker(tag: &str) -> String {
    format!("tg-{tag}-{}", trove_guest_core::Secret::random(10).expose())
}

/// A shell that starts a background child and a foreground child, both sleeping.
fn sleepers(marker: &str) -> ToolCommand {
    ToolCommand::new("/bin/sh").args(["-c", "sleep 300 & sleep 300; wait", marker])
}

#[tokio::test]
async fn cancelled_run_leaves_no_process_behind() {
    let m = marker("cancel-run");
    let run = sleepers(&m).run();
    let pgrp = tokio::select! {
        r = run => panic!("the sleepers exited: {r:?}"),
        pgrp = wait_for_group(&m, 3) => pgrp,
    };
    // `run` was dropped by `select!`: that is the cancellation.
    assert_group_gone(pgrp).await;
}

#[tokio::test]
async fn run_dropped_by_timeout_leaves_no_process_behind() {
    let m = marker("timeout");
    let watcher = tokio::spawn({
        let m = m.clone();
        async move { wait_for_group(&m, 3).await }
    });
    let r = tokio::time::timeout(Duration::from_secs(2), sleepers(&m).run()).await;
    assert!(r.is_err(), "the sleepers cannot finish within the timeout");
    let pgrp = watcher.await.unwrap();
    assert_group_gone(pgrp).await;
}

#[tokio::test]
async fn dropped_running_tool_kills_its_process_group() {
    let m = marker("drop");
    let tool = sleepers(&m).spawn().unwrap();
    let pgrp = wait_for_group(&m, 3).await;
    assert_eq!(
        tool.id(),
        Some(pgrp as u32),
        "the tool leads its own process group"
    );
    assert_ne!(pgrp, nix::unistd::getpgrp().as_raw(), "not our own group");
    drop(tool);
    assert_group_gone(pgrp).await;
}

#[tokio::test]
async fn failure_carries_exit_status_and_stderr_tail() {
    let script = r#"i=0; while [ $i -lt 2000 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo "fatal: tg-stderr-marker" >&2; exit 7"#;
    let err = ToolCommand::new("/bin/sh")
        .args(["-c", script])
        .run()
        .await
        .unwrap_err();
    let Error::ToolFailed {
        tool,
        status,
        stderr_tail,
    } = &err
    else {
        panic!("expected ToolFailed, got {err:?}");
    };
    assert_eq!(tool, "sh");
    assert!(status.contains('7'), "{status}");
    assert!(
        stderr_tail.ends_with("fatal: tg-stderr-marker"),
        "{stderr_tail}"
    );
    assert!(
        stderr_tail.len() <= 4096 + 64,
        "only the tail is kept: {} bytes",
        stderr_tail.len()
    );
    assert!(
        !stderr_tail.contains("noise line 0\n"),
        "the head was dropped"
    );
    assert_eq!(err.kind(), ErrorKind::ToolFailed);
    assert!(err.to_string().contains("tg-stderr-marker"));
}

#[tokio::test]
async fn non_zero_exit_is_an_error_and_zero_is_not() {
    ToolCommand::new("true").run().await.expect("true succeeds");
    let err = ToolCommand::new("false").run().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ToolFailed, "{err}");
    let err = ToolCommand::new("/bin/sh")
        .args(["-c", "kill -9 $$"])
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ToolFailed { status, .. } if status.contains('9')),
        "{err}"
    );
    let err = ToolCommand::new("/nonexistent/tg-tool")
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn run_capture_returns_output_within_its_limit() {
    let out = ToolCommand::new("/bin/sh")
        .args(["-c", "printf 'a%.0s' $(seq 1 1000)"])
        .run_capture(1000)
        .await
        .unwrap();
    assert_eq!(out.len(), 1000);
    let err = ToolCommand::new("/bin/sh")
        .args(["-c", "printf 'a%.0s' $(seq 1 1001)"])
        .run_capture(1000)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ToolFailed { stderr_tail, .. } if stderr_tail.contains("exceeded 1000 bytes")),
        "{err:?}"
    );
}

#[tokio::test]
async fn run_capture_stops_an_endless_tool_at_its_limit() {
    let m = marker("capture");
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    // The tool waits for `go` so the test can find its process group before it floods stdout.
    let capture = tokio::spawn(
        ToolCommand::new("/bin/sh")
            .args([
                "-c",
                "while [ ! -e \"$1\" ]; do sleep 0.01; done; yes; sleep 300",
                &m,
            ])
            .arg(&go)
            .run_capture(64 * 1024),
    );
    let pgrp = wait_for_group(&m, 1).await;
    std::fs::write(&go, b"").unwrap();
    let err = capture.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ToolFailed, "{err}");
    assert!(err.to_string().contains("exceeded"), "{err}");
    assert_group_gone(pgrp).await;
}

#[tokio::test]
async fn stdin_and_stdout_stream_without_collecting() {
    let mut tool = ToolCommand::new("cat")
        .stdin_piped()
        .stdout_piped()
        .spawn()
        .unwrap();
    let mut stdin = tool.take_stdin().unwrap();
    let mut stdout = tool.take_stdout().unwrap();
    let total = 16 * 1024 * 1024usize;
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..total / chunk.len() {
            stdin.write_all(&chunk).await.unwrap();
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = 0usize;
    loop {
        let n = stdout.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 0x5a));
        seen += n;
    }
    writer.await.unwrap();
    tool.wait().await.unwrap();
    assert_eq!(seen, total);
}

#[test]
fn secret_file_is_private_and_removed_on_drop() {
    let f = SecretFile::new("my.cnf", "[client]\npassword=tg-file-secret\n", None).unwrap();
    let path = f.path().to_path_buf();
    let dir = path.parent().unwrap().to_path_buf();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "[client]\npassword=tg-file-secret\n"
    );
    assert!(!format!("{f:?}").contains("tg-file-secret"));
    drop(f);
    assert!(!path.exists(), "file removed");
    assert!(!dir.exists(), "directory removed");
}

#[test]
fn secret_file_can_be_given_to_another_account() {
    let me = OsUser::current();
    let f = SecretFile::new("pgpass", "*:*:*:*:x\n", Some(me)).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(f.path()).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (me.uid, me.gid));
    assert!(OsUser::lookup("no-such-user-tg").is_err());
}

#[tokio::test]
async fn stderr_tail_is_bounded_even_for_one_endless_line() {
    // 1 MiB on stderr without a newline, then a last line.
    let script =
        "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'last: tg-end' >&2; exit 2";
    let err = ToolCommand::new("/bin/sh")
        .args(["-c", script])
        .run()
        .await
        .unwrap_err();
    let Error::ToolFailed { stderr_tail, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        stderr_tail.len() <= 4096,
        "{} bytes kept",
        stderr_tail.len()
    );
    assert!(stderr_tail.ends_with("last: tg-end"), "{stderr_tail}");
    // Binary (non-UTF-8) stderr is kept, lossily.
    let err = ToolCommand::new("/bin/sh")
        .args([
            "-c",
            "printf '\\377\\376 bad bytes\\nreal error\\n' >&2; exit 1",
        ])
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("real error"), "{err}");
}

#[tokio::test]
async fn a_tool_outliving_its_timeout_is_killed_with_its_group_and_reports_timeout() {
    let m = marker("deadline");
    let run = tokio::spawn(sleepers(&m).timeout(Duration::from_millis(300)).run());
    let pgrp = wait_for_group(&m, 3).await;
    // A generous guard only so that a missing deadline fails instead of hanging the suite.
    let err = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the tool's own timeout ends the run")
        .unwrap()
        .expect_err("the sleepers cannot finish within their timeout");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_group_gone(pgrp).await;
}

#[tokio::test]
async fn a_timed_out_tool_closes_its_stdout_so_a_streaming_reader_ends() {
    let m = marker("deadline-stream");
    let mut tool = sleepers(&m)
        .timeout(Duration::from_millis(300))
        .stdout_piped()
        .spawn()
        .unwrap();
    let mut out = tool.take_stdout().unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), out.read_to_end(&mut buf))
        .await
        .expect("stdout reaches EOF once the group is killed")
        .unwrap();
    let err = tool.wait().await.expect_err("killed at its deadline");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn a_tool_finishing_within_its_timeout_succeeds_even_with_a_huge_one() {
    for timeout in [Duration::from_secs(120), Duration::MAX] {
        ToolCommand::new("true")
            .timeout(timeout)
            .run()
            .await
            .unwrap_or_else(|e| panic!("timeout {timeout:?}: {e}"));
    }
    let err = ToolCommand::new("false")
        .timeout(Duration::from_secs(120))
        .run()
        .await
        .expect_err("a failing tool still fails");
    assert_eq!(err.kind(), ErrorKind::ToolFailed, "{err}");
}
