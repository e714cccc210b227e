use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Readiness, ServiceControl, ServiceStatus};
use crate::error::{Error, Result};
use crate::runner::ToolCommand;

/// A server managed by a systemd unit (`systemctl start|stop|is-active <unit>`).
#[derive(Debug, Clone)]
pub struct SystemdUnit {
    unit: String,
    readiness: Option<Readiness>,
    start_timeout: Duration,
    command_timeout: Duration,
}

/// How long one `systemctl` call may take by default: longer than the start timeouts of the
/// database units (MariaDB's ships with 15 min), so systemd gives up first and says why.
pub const DEFAULT_SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

impl SystemdUnit {
    /// Controls `unit` (for example `mariadb.service`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a unit name with characters systemd does not allow.
    pub fn new(unit: impl Into<String>) -> Result<Self> {
        let unit = unit.into();
        let ok = !unit.is_empty()
            && !unit.starts_with('-')
            && unit
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
        if !ok {
            return Err(Error::invalid("systemd unit", format!("{unit:?}")));
        }
        Ok(SystemdUnit {
            unit,
            readiness: None,
            start_timeout: Duration::from_secs(120),
            command_timeout: DEFAULT_SYSTEMCTL_TIMEOUT,
        })
    }

    /// After `systemctl start` returns, also wait until `readiness` succeeds.
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Bounds each `systemctl` call (default [`DEFAULT_SYSTEMCTL_TIMEOUT`]): one still
    /// running after `timeout` is killed and the call fails with [`Error::Service`].
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The `systemctl` invocation for `verb`, bounded by the command timeout.
    pub fn command(&self, verb: &str) -> ToolCommand {
        ToolCommand::new("systemctl")
            .arg(verb)
            .arg(&self.unit)
            .timeout(self.command_timeout)
    }

    async fn systemctl(&self, verb: &str) -> Result<()> {
        self.command(verb).run().await.map_err(|e| Error::Service {
            message: format!("systemctl {verb} {}: {e}", self.unit),
        })
    }
}

#[async_trait]
impl ServiceControl for SystemdUnit {
    async fn start(&self) -> Result<()> {
        self.systemctl("start").await?;
        if let Some(r) = &self.readiness {
            let started = Instant::now();
            while !r.probe().await {
                if started.elapsed() > self.start_timeout {
                    return Err(Error::Service {
                        message: format!("{} not ready after {:?}", self.unit, self.start_timeout),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.systemctl("stop").await
    }

    async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    async fn status(&self) -> Result<ServiceStatus> {
        let mut tool = self.command("is-active").spawn()?;
        let status = tool.wait_status().await?;
        Ok(if status.success() {
            ServiceStatus::Running
        } else {
            match status.code() {
                Some(3) => ServiceStatus::Stopped,
                _ => ServiceStatus::Unknown,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_validated_and_commands_have_no_shell() {
        assert!(SystemdUnit::new("mariadb.service").is_ok());
        assert!(SystemdUnit::new("postgresql@15-main.service").is_ok());
        for bad in ["", "-x", "a b", "a;rm -rf /", "$(x)"] {
            assert!(SystemdUnit::new(bad).is_err(), "{bad:?} accepted");
        }
        let u = SystemdUnit::new("mariadb.service").unwrap();
        assert_eq!(
            u.command("start").display(),
            "systemctl start mariadb.service"
        );
    }

    #[test]
    fn every_systemctl_call_is_bounded() {
        let u = SystemdUnit::new("mariadb.service").unwrap();
        for verb in ["start", "stop", "is-active"] {
            assert_eq!(
                u.command(verb).get_timeout(),
                Some(DEFAULT_SYSTEMCTL_TIMEOUT)
            );
        }
        let u = u.with_command_timeout(Duration::from_secs(7));
        assert_eq!(
            u.command("start").get_timeout(),
            Some(Duration::from_secs(7))
        );
    }
}
