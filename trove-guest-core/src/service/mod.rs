//! Starting and stopping the database server.
//!
//! [`ServiceControl`] is what a strategy calls when a change needs a restart (binary logging,
//! restores). Implementations: [`LocalProcess`] (a server run as a child process: test servers,
//! the demo), [`SystemdUnit`] (real VMs) and, with feature `container`, `ContainerService` (a
//! server in a container, over the Docker Engine API). An embedding agent can plug in its own.

#[cfg(feature = "container")]
mod container;
mod local;
mod systemd;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The Docker Engine API client `ContainerService` uses, for callers that need more of the API.
#[cfg(feature = "container")]
pub use bollard;
#[cfg(feature = "container")]
pub use container::{CONTAINER_API_VERSION, ContainerError, ContainerService, ContainerSpec};
pub use local::{LocalProcess, Readiness};
/// The signal type of [`LocalProcess::with_stop_signal`], re-exported so callers need no `nix`.
pub use nix::sys::signal::Signal;
pub use systemd::{DEFAULT_SYSTEMCTL_TIMEOUT, SystemdUnit};

/// Whether the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServiceStatus {
    /// Running and accepting connections.
    Running,
    /// Not running.
    Stopped,
    /// In between, or unknown.
    Unknown,
}

/// Controls one database server.
#[async_trait]
pub trait ServiceControl: Send + Sync + std::fmt::Debug {
    /// Starts the server and returns once it accepts connections. Starting a running server
    /// succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::Service`](crate::Error::Service) when it does not start or become ready.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the server may be left starting.
    async fn start(&self) -> Result<()>;

    /// Stops the server cleanly and returns once it has exited. Stopping a stopped server
    /// succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::Service`](crate::Error::Service) when it does not stop.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the server may be left stopping.
    async fn stop(&self) -> Result<()>;

    /// Stops and starts the server.
    ///
    /// # Errors
    ///
    /// As [`ServiceControl::stop`] and [`ServiceControl::start`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Whether the server runs.
    ///
    /// # Errors
    ///
    /// [`Error::Service`](crate::Error::Service) when the state cannot be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn status(&self) -> Result<ServiceStatus>;
}
