use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::sync::Mutex;

use super::{ServiceControl, ServiceStatus};
use crate::error::{Error, Result};
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
#[derive(Debug)]
pub struct LocalProcess {
    command: ToolCommand,
    readiness: Readiness,
    stop_signal: Signal,
    start_timeout: Duration,
    stop_timeout: Duration,
    child: Mutex<Option<RunningTool>>,
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
            child: Mutex::new(None),
        }
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
        self.child.lock().await.as_ref().and_then(|c| c.id())
    }
}

#[async_trait]
impl ServiceControl for LocalProcess {
    async fn start(&self) -> Result<()> {
        let mut guard = self.child.lock().await;
        if let Some(child) = guard.as_mut() {
            if !child.has_exited() {
                return Ok(());
            }
            *guard = None;
        }
        let mut child = self.command.clone().spawn()?;
        let started = Instant::now();
        loop {
            if self.readiness.probe().await {
                *guard = Some(child);
                return Ok(());
            }
            if child.has_exited() {
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
        let Some(mut child) = guard.take() else {
            return Ok(());
        };
        let status = child.terminate(self.stop_signal, self.stop_timeout).await?;
        tracing::debug!(program = %self.command.program_name(), %status, "server stopped");
        Ok(())
    }

    async fn status(&self) -> Result<ServiceStatus> {
        let mut guard = self.child.lock().await;
        let running = guard.as_mut().is_some_and(|child| !child.has_exited());
        Ok(if running {
            ServiceStatus::Running
        } else {
            ServiceStatus::Stopped
        })
    }
}
