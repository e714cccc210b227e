//! A database server in a container, controlled over the Docker Engine API (Docker, or Podman's
//! Docker-compatible service) with `bollard`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as ApiError;
use bollard::query_parameters::{
    InspectContainerOptions, LogsOptionsBuilder, StartContainerOptions, StopContainerOptions,
};
use futures::StreamExt;

use super::{Readiness, ServiceControl, ServiceStatus};
use crate::error::{Error, Result};

/// The Docker Engine API version requested: 1.41 is served by Docker 20.10+ and Podman 3+.
pub const CONTAINER_API_VERSION: (usize, usize) = (1, 41);

/// Why a container operation failed. Each variant says what to fix; none of them changed the
/// container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// Nothing answers on the configured socket.
    #[error(
        "no container engine answers on {socket}: {reason} (start the Docker daemon or \
         `podman system service`, or fix [service] socket)"
    )]
    DaemonUnreachable {
        /// The configured socket.
        socket: PathBuf,
        /// What the client saw.
        reason: String,
    },
    /// The engine knows no container of that name.
    #[error("no container named {container:?} (create it first, or fix [service] container)")]
    ContainerMissing {
        /// The configured name.
        container: String,
    },
    /// The engine knows no such image.
    #[error("no image {image:?} in the engine (build or load it first)")]
    ImageMissing {
        /// The image reference.
        image: String,
    },
    /// The container stopped while it was being started.
    #[error(
        "container {container:?} exited with status {exit_code} during start; its last log lines: {logs}"
    )]
    ExitedDuringStart {
        /// The container.
        container: String,
        /// Its exit code.
        exit_code: i64,
        /// The tail of its log.
        logs: String,
    },
    /// The container runs but the server did not accept connections in time.
    #[error("container {container:?} runs but the server was not ready after {waited:?}")]
    NotReady {
        /// The container.
        container: String,
        /// How long was waited.
        waited: Duration,
    },
    /// One API call took longer than its bound.
    #[error("container engine call {call} on {container:?} did not answer within {timeout:?}")]
    Timeout {
        /// The call.
        call: &'static str,
        /// The container.
        container: String,
        /// The bound.
        timeout: Duration,
    },
    /// Any other answer of the engine.
    #[error("container engine call {call} on {container:?} failed: {message}")]
    Api {
        /// The call.
        call: &'static str,
        /// The container.
        container: String,
        /// The engine's message.
        message: String,
    },
}

impl From<ContainerError> for Error {
    fn from(e: ContainerError) -> Self {
        Error::Service {
            message: e.to_string(),
        }
    }
}

/// What [`ContainerService::create`] creates: an image, its command, bind mounts, host
/// networking and explicit resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerSpec {
    /// The image reference (for example `localhost/trove-guest-mariadb:10.11`).
    pub image: String,
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// `HOST:CONTAINER` bind mounts.
    pub binds: Vec<String>,
    /// Share the host's network (the server's port is then the same inside and out; bind it
    /// to a loopback address).
    pub host_network: bool,
    /// `(name, soft, hard)` limits, such as `("nofile", 20000, 20000)`.
    pub ulimits: Vec<(String, i64, i64)>,
}

impl ContainerSpec {
    /// Runs `cmd` in `image`, with `nofile` 20000 and `nproc` 32768 (engines whose default
    /// limits exceed what an unprivileged runtime may set fail otherwise).
    pub fn new(image: impl Into<String>, cmd: Vec<String>) -> Self {
        ContainerSpec {
            image: image.into(),
            cmd,
            binds: Vec::new(),
            host_network: false,
            ulimits: vec![
                ("nofile".into(), 20000, 20000),
                ("nproc".into(), 32768, 32768),
            ],
        }
    }

    /// Adds the bind mount of host path `host` at `container`.
    #[must_use]
    pub fn with_bind(mut self, host: &Path, container: &Path) -> Self {
        self.binds
            .push(format!("{}:{}", host.display(), container.display()));
        self
    }

    /// Sets [`ContainerSpec::host_network`].
    #[must_use]
    pub fn with_host_network(mut self, on: bool) -> Self {
        self.host_network = on;
        self
    }
}

/// A server that runs in an existing, named container (created by the deployment with its image,
/// data volume and ports). `start` starts it and waits until it is ready, `stop` stops it with a
/// grace period. Nothing is created, removed or stopped on drop: an agent that stops leaves the
/// container as it is.
#[derive(Debug, Clone)]
pub struct ContainerService {
    /// Made on first use: the engine may come up after the agent.
    docker: std::sync::OnceLock<Docker>,
    socket: PathBuf,
    container: String,
    readiness: Option<Readiness>,
    start_timeout: Duration,
    stop_grace: Duration,
    api_timeout: Duration,
}

impl ContainerService {
    /// Controls container `container` through the engine listening on the Unix socket `socket`.
    /// No connection is made yet (the engine may start after the agent).
    ///
    /// # Errors
    ///
    /// [`ContainerError::Api`] for an empty or malformed container name.
    pub fn new(
        socket: impl Into<PathBuf>,
        container: impl Into<String>,
    ) -> std::result::Result<Self, ContainerError> {
        let socket = socket.into();
        let container = container.into();
        validate_name(&container)?;
        Ok(ContainerService {
            docker: std::sync::OnceLock::new(),
            socket,
            container,
            readiness: None,
            start_timeout: Duration::from_secs(120),
            stop_grace: Duration::from_secs(60),
            api_timeout: Duration::from_secs(30),
        })
    }

    /// After the container runs, also wait until `readiness` succeeds (a published port or a
    /// socket in a bind mount).
    #[must_use]
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Bounds `start` (default 120 s).
    #[must_use]
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long `stop` lets the server shut down before the engine kills it (default 60 s).
    #[must_use]
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Bounds each API call other than the stop itself (default 30 s).
    #[must_use]
    pub fn with_api_timeout(mut self, timeout: Duration) -> Self {
        self.api_timeout = timeout;
        self
    }

    /// The container's name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The engine's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The client, for callers that need more of the API (the test kit).
    ///
    /// # Errors
    ///
    /// [`ContainerError::DaemonUnreachable`] when the socket does not exist.
    pub fn client(&self) -> std::result::Result<&Docker, ContainerError> {
        if let Some(d) = self.docker.get() {
            return Ok(d);
        }
        let d = connect(&self.socket, self.api_timeout)?;
        Ok(self.docker.get_or_init(|| d))
    }

    async fn bounded<T>(
        &self,
        call: &'static str,
        timeout: Duration,
        fut: impl Future<Output = std::result::Result<T, ApiError>>,
    ) -> std::result::Result<T, ContainerError> {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(call, &self.container, &self.socket, e)),
            Err(_) => Err(ContainerError::Timeout {
                call,
                container: self.container.clone(),
                timeout,
            }),
        }
    }

    /// The container's state: running, and its exit code.
    ///
    /// # Errors
    ///
    /// [`ContainerError`]: daemon unreachable, container missing, timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn state(&self) -> std::result::Result<(bool, i64), ContainerError> {
        let mut attempts = 0;
        let info = loop {
            let got = self
                .bounded(
                    "inspect",
                    self.api_timeout,
                    self.client()?
                        .inspect_container(&self.container, None::<InspectContainerOptions>),
                )
                .await;
            match got {
                // Podman briefly reports a container that just exited as `stopped`, a state the
                // Docker API does not have, before it settles on `exited`: ask again.
                Err(ContainerError::Api { message, .. })
                    if message.contains("unknown variant `stopped`") =>
                {
                    attempts += 1;
                    if attempts >= 50 {
                        return Ok((false, -1));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        let state = info.state.unwrap_or_default();
        Ok((state.running.unwrap_or(false), state.exit_code.unwrap_or(0)))
    }

    /// Creates the container (not started) from `spec`.
    ///
    /// # Errors
    ///
    /// [`ContainerError::ImageMissing`] naming the image; daemon unreachable; an existing
    /// container of that name ([`ContainerError::Api`], HTTP 409): nothing is replaced.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the container may have been created.
    pub async fn create(&self, spec: &ContainerSpec) -> std::result::Result<(), ContainerError> {
        use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
        use bollard::query_parameters::CreateContainerOptions;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                network_mode: spec.host_network.then(|| "host".to_string()),
                ulimits: Some(
                    spec.ulimits
                        .iter()
                        .map(|(name, soft, hard)| ResourcesUlimits {
                            name: Some(name.clone()),
                            soft: Some(*soft),
                            hard: Some(*hard),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(self.container.clone()),
            ..Default::default()
        };
        match self
            .bounded(
                "create",
                self.api_timeout,
                self.client()?.create_container(Some(opts), body),
            )
            .await
        {
            Err(ContainerError::ImageMissing { .. }) => Err(ContainerError::ImageMissing {
                image: spec.image.clone(),
            }),
            other => other.map(|_| ()),
        }
    }

    /// Removes the container (stopped at once when running). Only for containers the caller
    /// created; a missing container is success.
    ///
    /// # Errors
    ///
    /// Daemon unreachable, timeout.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn remove(&self) -> std::result::Result<(), ContainerError> {
        use bollard::query_parameters::RemoveContainerOptions;
        let opts = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        match self
            .bounded(
                "remove",
                self.api_timeout,
                self.client()?.remove_container(&self.container, Some(opts)),
            )
            .await
        {
            Err(ContainerError::ContainerMissing { .. }) => Ok(()),
            other => other,
        }
    }

    /// Checks that host directory `host` is visible in the container at `container` through one
    /// of its bind mounts (the mount's source is `host` or one of its parents), so the data
    /// directory the agent swaps is the one the server uses.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Api`] naming both paths when no mount matches; daemon unreachable,
    /// container missing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn check_mount(
        &self,
        host: &Path,
        container: &Path,
    ) -> std::result::Result<(), ContainerError> {
        let info = self
            .bounded(
                "inspect",
                self.api_timeout,
                self.client()?
                    .inspect_container(&self.container, None::<InspectContainerOptions>),
            )
            .await?;
        let ok = info.mounts.unwrap_or_default().iter().any(|m| {
            let (Some(src), Some(dst)) = (&m.source, &m.destination) else {
                return false;
            };
            host.strip_prefix(src)
                .ok()
                .is_some_and(|rest| Path::new(dst).join(rest) == container)
        });
        if ok {
            Ok(())
        } else {
            Err(ContainerError::Api {
                call: "check mounts",
                container: self.container.clone(),
                message: format!(
                    "{} is not mounted at {} (the bind mount is not the directory the server                      uses; fix the container's mounts or the configured paths)",
                    host.display(),
                    container.display()
                ),
            })
        }
    }

    async fn log_tail(&self) -> String {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let Ok(docker) = self.client() else {
            return "(none)".into();
        };
        let mut stream = docker.logs(&self.container, Some(opts));
        let mut out = String::new();
        let collect = async {
            while let Some(Ok(chunk)) = stream.next().await {
                out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                if out.len() > 4096 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
        let out = out.trim();
        if out.is_empty() {
            "(none)".into()
        } else {
            out.replace('\n', " | ")
        }
    }

    /// Starts the container (a running one is left alone) and waits until it runs and, when
    /// configured, accepts connections.
    ///
    /// # Errors
    ///
    /// [`ContainerError`]: daemon unreachable, container missing, exited during start (with its
    /// last log lines), not ready in time.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the container may be left starting.
    pub async fn start_container(&self) -> std::result::Result<(), ContainerError> {
        let started = Instant::now();
        let (running, _) = self.state().await?;
        if !running {
            self.bounded(
                "start",
                self.api_timeout,
                self.client()?
                    .start_container(&self.container, None::<StartContainerOptions>),
            )
            .await?;
        }
        loop {
            let (running, exit_code) = self.state().await?;
            if !running {
                // Give a container that is still being set up a moment; one that stopped is
                // reported with its log.
                if started.elapsed() > Duration::from_secs(1) || exit_code != 0 {
                    return Err(ContainerError::ExitedDuringStart {
                        container: self.container.clone(),
                        exit_code,
                        logs: self.log_tail().await,
                    });
                }
            } else if match &self.readiness {
                Some(r) => r.probe().await,
                None => true,
            } {
                return Ok(());
            }
            if started.elapsed() > self.start_timeout {
                return Err(ContainerError::NotReady {
                    container: self.container.clone(),
                    waited: self.start_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the container, giving the server the grace period to shut down. Stopping a
    /// stopped container succeeds.
    ///
    /// # Errors
    ///
    /// [`ContainerError`]: daemon unreachable, container missing, timeout.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the container may be left stopping.
    pub async fn stop_container(&self) -> std::result::Result<(), ContainerError> {
        let grace = i32::try_from(self.stop_grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions {
            t: Some(grace),
            signal: None,
        };
        self.bounded(
            "stop",
            self.stop_grace + self.api_timeout,
            self.client()?.stop_container(&self.container, Some(opts)),
        )
        .await?;
        Ok(())
    }
}

fn validate_name(name: &str) -> std::result::Result<(), ContainerError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::Api {
            call: "name",
            container: name.to_string(),
            message: "a container name is [a-zA-Z0-9][a-zA-Z0-9_.-]*".into(),
        })
    }
}

/// A client for the engine on `socket`, every request bounded by `timeout`.
pub(crate) fn connect(
    socket: &Path,
    timeout: Duration,
) -> std::result::Result<Docker, ContainerError> {
    let version = bollard::ClientVersion {
        major_version: CONTAINER_API_VERSION.0,
        minor_version: CONTAINER_API_VERSION.1,
    };
    Docker::connect_with_unix(
        &socket.to_string_lossy(),
        timeout.as_secs().max(1),
        &version,
    )
    .map_err(|e| ContainerError::DaemonUnreachable {
        socket: socket.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Turns a client error into what to fix.
pub(crate) fn classify(
    call: &'static str,
    container: &str,
    socket: &Path,
    e: ApiError,
) -> ContainerError {
    match e {
        ApiError::DockerResponseServerError {
            status_code: 404,
            message,
        } => {
            if call == "create" || message.to_ascii_lowercase().contains("image") {
                ContainerError::ImageMissing { image: message }
            } else {
                ContainerError::ContainerMissing {
                    container: container.to_string(),
                }
            }
        }
        ApiError::DockerResponseServerError {
            status_code,
            message,
        } => ContainerError::Api {
            call,
            container: container.to_string(),
            message: format!("HTTP {status_code}: {message}"),
        },
        ApiError::RequestTimeoutError => ContainerError::Timeout {
            call,
            container: container.to_string(),
            timeout: Duration::ZERO,
        },
        ApiError::IOError { .. }
        | ApiError::HyperLegacyError { .. }
        | ApiError::SocketNotFoundError(_) => ContainerError::DaemonUnreachable {
            socket: socket.to_path_buf(),
            reason: e.to_string(),
        },
        other => ContainerError::Api {
            call,
            container: container.to_string(),
            message: other.to_string(),
        },
    }
}

#[async_trait]
impl ServiceControl for ContainerService {
    async fn start(&self) -> Result<()> {
        Ok(self.start_container().await?)
    }

    async fn stop(&self) -> Result<()> {
        // 304 (already stopped) is success.
        match self.stop_container().await {
            Ok(()) => Ok(()),
            Err(ContainerError::Api { message, .. }) if message.starts_with("HTTP 304") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn status(&self) -> Result<ServiceStatus> {
        let (running, _) = self.state().await?;
        if !running {
            return Ok(ServiceStatus::Stopped);
        }
        Ok(match &self.readiness {
            Some(r) if !r.probe().await => ServiceStatus::Unknown,
            _ => ServiceStatus::Running,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["m1", "trove-mariadb_1.x"] {
            assert!(ContainerService::new("/nonexistent.sock", good).is_ok());
        }
        for bad in ["", "-x", "a b", "a/b", "$(x)"] {
            assert!(ContainerService::new("/nonexistent.sock", bad).is_err());
        }
    }

    #[test]
    fn engine_answers_become_what_to_fix() {
        let s = Path::new("/x.sock");
        let missing = classify(
            "inspect",
            "m1",
            s,
            ApiError::DockerResponseServerError {
                status_code: 404,
                message: "no container with name or ID \"m1\" found".into(),
            },
        );
        assert!(matches!(missing, ContainerError::ContainerMissing { .. }));
        let image = classify(
            "create",
            "m1",
            s,
            ApiError::DockerResponseServerError {
                status_code: 404,
                message: "localhost/nope: image not known".into(),
            },
        );
        assert!(matches!(image, ContainerError::ImageMissing { .. }));
        let e: Error = missing.into();
        assert!(e.to_string().contains("no container named \"m1\""), "{e}");
    }

    #[tokio::test]
    async fn a_missing_daemon_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let svc = ContainerService::new(dir.path().join("none.sock"), "m1")
            .unwrap()
            .with_api_timeout(Duration::from_secs(2));
        let e = svc.state().await.unwrap_err();
        assert!(
            matches!(e, ContainerError::DaemonUnreachable { .. }),
            "{e:?}"
        );
        // Nothing answered, so nothing was stopped either.
        assert!(svc.stop().await.is_err());
    }
}
