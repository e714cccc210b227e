//! `LocalProcess::with_pid_file`: a server left running by an agent that was killed is adopted
//! by the next one (status, start, stop act on it) instead of being started a second time, and
//! a pid file naming some other process is ignored.

use std::path::Path;

use trove_guest_core::{LocalProcess, Readiness, ServiceControl, ServiceStatus, ToolCommand};

/// A stand-in server: `sleep` (never ready by itself; readiness is a listener the test holds).
fn server() -> ToolCommand {
    ToolCommand::new("sleep").arg("300")
}

fn ready(listener: &std::net::TcpListener) -> Readiness {
    Readiness::Tcp(listener.local_addr().expect("listener address"))
}

/// Whether `pid` runs (exists and is not a zombie).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Waits (bounded) until `pid` has exec'd `sleep`: the stand-in is "ready" at once (the test
/// holds its listener), possibly before its exec finished, which a real server never is.
async fn wait_exec(pid: u32) {
    for _ in 0..500 {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0")) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{pid} never ran sleep");
}

fn start_time(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat fields");
    rest.split_whitespace()
        .nth(19)
        .expect("start time")
        .to_owned()
}

fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .expect("pid file")
        .split_whitespace()
        .next()
        .expect("pid")
        .parse()
        .expect("numeric pid")
}

#[tokio::test]
async fn server_left_by_a_killed_agent_is_adopted_and_stopped_not_started_twice() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pid_file = dir.path().join("server.pid");

    let first = LocalProcess::new(server(), ready(&listener)).with_pid_file(&pid_file);
    first.start().await.expect("start the server");
    let pid = first.pid().await.expect("the server's pid");
    wait_exec(pid).await;
    assert_eq!(pid_in(&pid_file), pid, "the pid file records the server");
    // The agent dies without stopping its server: nothing of `first` runs its destructor.
    std::mem::forget(first);
    assert!(runs(pid));

    let second = LocalProcess::new(server(), ready(&listener)).with_pid_file(&pid_file);
    assert_eq!(second.status().await.unwrap(), ServiceStatus::Running);
    second
        .start()
        .await
        .expect("start adopts the running server");
    assert_eq!(
        second.pid().await,
        Some(pid),
        "no second server was started"
    );
    second.stop().await.expect("stop the adopted server");
    assert!(
        !runs(pid),
        "stop signalled the adopted server's group and waited"
    );
    assert_eq!(second.status().await.unwrap(), ServiceStatus::Stopped);
    assert!(!pid_file.exists(), "a stopped server leaves no pid file");

    // Started again, it is this agent's own child, recorded anew.
    second.start().await.expect("start a fresh server");
    let fresh = second.pid().await.expect("pid");
    assert_ne!(fresh, pid);
    assert_eq!(pid_in(&pid_file), fresh);
    second.stop().await.unwrap();
    assert!(!runs(fresh));
}

#[tokio::test]
async fn pid_file_naming_another_live_process_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pid_file = dir.path().join("server.pid");
    // A live process with the right start time, but its command line is not the server's.
    let me = std::process::id();
    std::fs::write(&pid_file, format!("{me} {}\n", start_time(me))).unwrap();
    let p = LocalProcess::new(server(), ready(&listener)).with_pid_file(&pid_file);
    assert_eq!(p.status().await.unwrap(), ServiceStatus::Stopped);
    p.start().await.expect("start a server of its own");
    let pid = p.pid().await.expect("pid");
    assert_ne!(pid, me);
    assert_eq!(pid_in(&pid_file), pid, "the stale record was replaced");
    p.stop().await.unwrap();
    assert!(runs(me));

    // A recycled pid (same number, other start time) is not adopted either.
    std::fs::write(&pid_file, format!("{me} 1\n")).unwrap();
    let p = LocalProcess::new(server(), ready(&listener)).with_pid_file(&pid_file);
    assert_eq!(p.status().await.unwrap(), ServiceStatus::Stopped);
}
