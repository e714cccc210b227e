use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::Mutex;

use super::{ServiceControl, ServiceStatus};
use crate::error::{Error, IoResultExt, Result};
use crate::runner::{RunningTool, ToolCommand};

/// How [`LocalProcess`] knows the server is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// A TCP connection to this address succeeds.
    Tcp(SocketAddr),
    /// A connection to this Unix socket succeeds.
    Unix(PathBuf),
}

/// How long one readiness probe may take (a connect to an address that drops packets would
/// otherwise wait for the kernel's SYN retries, minutes).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    pub(crate) async fn probe(&self) -> bool {
        match self {
            Readiness::Tcp(addr) => matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            ),
            Readiness::Unix(path) => matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await,
                Ok(Ok(_))
            ),
        }
    }
}

/// A server run as a child process of the agent.
///
/// The child is kept (never polled by pid), so exits are seen at once; `stop` sends the
/// configured signal to its process group and waits.
///
/// With [`LocalProcess::with_pid_file`], the server outlives the agent that started it: the pid
/// file records the server's pid and start time, and a later `LocalProcess` (a restarted agent)
/// adopts that server instead of starting a second one on the same data directory, as long as
/// `/proc/<pid>` still shows the same start time and command line.
#[derive(Debug)]
pub struct LocalProcess {
    command: ToolCommand,
    readiness: Readiness,
    stop_signal: Signal,
    start_timeout: Duration,
    stop_timeout: Duration,
    pid_file: Option<PathBuf>,
    child: Mutex<Running>,
}

/// What this `LocalProcess` runs: its own child, or a server adopted from the pid file.
#[derive(Debug, Default)]
struct Running {
    child: Option<RunningTool>,
    adopted: Option<ProcessId>,
}

/// A process identified by pid and kernel start time (so a recycled pid is not mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessId {
    pid: u32,
    start_time: u64,
}

impl LocalProcess {
    /// A server started with `command`, ready when `readiness` succeeds, stopped with SIGTERM.
    pub fn new(command: ToolCommand, readiness: Readiness) -> Self {
        LocalProcess {
            command,
            readiness,
            stop_signal: Signal::SIGTERM,
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
            pid_file: None,
            child: Mutex::new(Running::default()),
        }
    }

    /// Records the server's pid in `path` when this starts it, and adopts a server still
    /// running from an earlier `LocalProcess` (a previous agent killed without stopping it):
    /// `start` returns once the adopted server is ready, `status` reports it running and `stop`
    /// signals its process group and waits (bounded) until it is gone. A pid is adopted only
    /// when `/proc/<pid>` shows the recorded start time and this command line; anything else in
    /// the file is stale and ignored.
    pub fn with_pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// How long `stop` waits for the server to exit before killing its process group.
    pub fn with_stop_timeout(mut self, t: Duration) -> Self {
        self.stop_timeout = t;
        self
    }

    /// The pid file, when one is configured.
    pub fn pid_file(&self) -> Option<&Path> {
        self.pid_file.as_deref()
    }

    /// The signal that stops the server cleanly (PostgreSQL: `SIGINT`, fast shutdown).
    pub fn with_stop_signal(mut self, signal: Signal) -> Self {
        self.stop_signal = signal;
        self
    }

    /// How long `start` waits for readiness.
    pub fn with_start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// The command that starts the server.
    pub fn command(&self) -> &ToolCommand {
        &self.command
    }

    /// The server's process id while it runs.
    ///
    /// # Errors
    ///
    /// None: `None` when the server is not running.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits for the internal lock.
    pub async fn pid(&self) -> Option<u32> {
        let mut guard = self.child.lock().await;
        if let Some(child) = guard.child.as_ref() {
            return child.id();
        }
        self.adopted(&mut guard).map(|p| p.pid)
    }

    /// The adopted server, if it still runs: the one adopted before, else the one the pid file
    /// names when `/proc` confirms it is this command's server.
    fn adopted(&self, running: &mut Running) -> Option<ProcessId> {
        if let Some(p) = running.adopted {
            if is_alive(p) {
                return Some(p);
            }
            running.adopted = None;
        }
        let p = self.recorded_server()?;
        tracing::info!(
            pid = p.pid,
            program = %self.command.program_name(),
            "adopting the server a previous agent started"
        );
        running.adopted = Some(p);
        Some(p)
    }

    fn recorded_server(&self) -> Option<ProcessId> {
        let path = self.pid_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let mut fields = text.split_whitespace();
        let pid: u32 = fields.next()?.parse().ok()?;
        let start_time: u64 = fields.next()?.parse().ok()?;
        let p = ProcessId { pid, start_time };
        (is_alive(p) && cmdline_matches(pid, &self.command)).then_some(p)
    }

    fn write_pid_file(&self, pid: u32) -> Result<()> {
        let Some(path) = &self.pid_file else {
            return Ok(());
        };
        let Some(start_time) = start_time(pid) else {
            return Ok(()); // already gone: the readiness wait reports it
        };
        let temp = path.with_extension("pid-new");
        std::fs::write(&temp, format!("{pid} {start_time}\n"))
            .context(|| format!("write {}", temp.display()))?;
        std::fs::rename(&temp, path).context(|| format!("rename to {}", path.display()))
    }

    fn remove_pid_file(&self) {
        if let Some(path) = &self.pid_file
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove the pid file");
        }
    }

    async fn wait_ready(&self, p: ProcessId) -> Result<()> {
        let started = Instant::now();
        loop {
            if self.readiness.probe().await {
                return Ok(());
            }
            if !is_alive(p) {
                return Err(Error::Service {
                    message: format!(
                        "the adopted {} (pid {}) exited before it was ready",
                        self.command.program_name(),
                        p.pid
                    ),
                });
            }
            if started.elapsed() > self.start_timeout {
                return Err(Error::Service {
                    message: format!(
                        "the adopted {} (pid {}) not ready after {:?}",
                        self.command.program_name(),
                        p.pid,
                        self.start_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops an adopted server: the stop signal to its process group (to the pid alone when it
    /// does not lead one), a bounded wait, then SIGKILL and another bounded wait.
    async fn stop_adopted(&self, p: ProcessId) -> Result<()> {
        let leads_group = process_group(p.pid) == Some(p.pid);
        let send = |signal: Signal| {
            let pid = Pid::from_raw(p.pid as i32);
            if !is_alive(p) {
                return;
            }
            let _ = if leads_group {
                killpg(pid, signal)
            } else {
                kill(pid, signal)
            };
        };
        send(self.stop_signal);
        if wait_gone(p, self.stop_timeout).await {
            return Ok(());
        }
        tracing::warn!(
            pid = p.pid,
            "the adopted server did not stop in time: killing it"
        );
        send(Signal::SIGKILL);
        if wait_gone(p, Duration::from_secs(10)).await {
            return Ok(());
        }
        Err(Error::Service {
            message: format!(
                "the adopted {} (pid {}) is still running after SIGKILL",
                self.command.program_name(),
                p.pid
            ),
        })
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), and the state field.
fn stat_fields(pid: u32) -> Option<(char, u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field n is fields[n - 3].
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start, pgrp))
}

fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, start, _)| start)
}

fn process_group(pid: u32) -> Option<u32> {
    stat_fields(pid).map(|(_, _, pgrp)| pgrp)
}

/// Whether `p` still runs: same start time, neither zombie nor dead.
fn is_alive(p: ProcessId) -> bool {
    stat_fields(p.pid)
        .is_some_and(|(state, start, _)| start == p.start_time && state != 'Z' && state != 'X')
}

/// Whether `/proc/<pid>/cmdline` is `command`'s program and arguments.
fn cmdline_matches(pid: u32, command: &ToolCommand) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut want: Vec<&[u8]> = vec![command.program().as_os_str().as_encoded_bytes()];
    want.extend(command.get_args().iter().map(|a| a.as_encoded_bytes()));
    let got: Vec<&[u8]> = raw
        .strip_suffix(b"\0")
        .unwrap_or(&raw)
        .split(|b| *b == 0)
        .collect();
    got == want
}

async fn wait_gone(p: ProcessId, limit: Duration) -> bool {
    let started = Instant::now();
    while is_alive(p) {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[async_trait]
impl ServiceControl for LocalProcess {
    async fn start(&self) -> Result<()> {
        let mut guard = self.child.lock().await;
        if let Some(child) = guard.child.as_mut() {
            if !child.has_exited() {
                return Ok(());
            }
            guard.child = None;
        }
        if let Some(p) = self.adopted(&mut guard) {
            return self.wait_ready(p).await;
        }
        let mut child = self.command.clone().spawn()?;
        if let Some(pid) = child.id()
            && let Err(e) = self.write_pid_file(pid)
        {
            let _ = child
                .terminate(Signal::SIGKILL, Duration::from_secs(5))
                .await;
            return Err(e);
        }
        let started = Instant::now();
        loop {
            if self.readiness.probe().await {
                guard.child = Some(child);
                return Ok(());
            }
            if child.has_exited() {
                self.remove_pid_file();
                let status = child.wait_status().await?;
                let tail = child.stderr_tail().await;
                return Err(Error::Service {
                    message: format!(
                        "{} exited during start ({status}): {tail}",
                        self.command.program_name()
                    ),
                });
            }
            if started.elapsed() > self.start_timeout {
                let _ = child
                    .terminate(Signal::SIGKILL, Duration::from_secs(5))
                    .await;
                self.remove_pid_file();
                return Err(Error::Service {
                    message: format!(
                        "{} not ready after {:?}",
                        self.command.program_name(),
                        self.start_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&self) -> Result<()> {
        let mut guard = self.child.lock().await;
        if let Some(mut child) = guard.child.take() {
            let status = child.terminate(self.stop_signal, self.stop_timeout).await?;
            tracing::debug!(program = %self.command.program_name(), %status, "server stopped");
            self.remove_pid_file();
            return Ok(());
        }
        if let Some(p) = self.adopted(&mut guard) {
            self.stop_adopted(p).await?;
            guard.adopted = None;
            tracing::debug!(program = %self.command.program_name(), pid = p.pid, "adopted server stopped");
        }
        self.remove_pid_file();
        Ok(())
    }

    async fn status(&self) -> Result<ServiceStatus> {
        let mut guard = self.child.lock().await;
        let running = match guard.child.as_mut() {
            Some(child) => !child.has_exited(),
            None => self.adopted(&mut guard).is_some(),
        };
        Ok(if running {
            ServiceStatus::Running
        } else {
            ServiceStatus::Stopped
        })
    }
}
