//! The service wrapper both test servers use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use crate::error::Result;
use crate::service::{LocalProcess, ServiceControl, ServiceStatus};

/// [`LocalProcess`] plus the pid of the running server, kept up to date on start and stop, so a
/// test server's `Drop` can stop it without an async runtime and without waiting for the
/// process's lock (which another task may hold, on the very thread `Drop` runs on).
#[derive(Debug)]
pub(crate) struct TestService {
    pub(crate) inner: Arc<LocalProcess>,
    pub(crate) pid: AtomicU32,
}

impl TestService {
    pub(crate) fn new(inner: LocalProcess) -> Self {
        TestService {
            inner: Arc::new(inner),
            pid: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl ServiceControl for TestService {
    async fn start(&self) -> Result<()> {
        self.inner.start().await?;
        self.pid
            .store(self.inner.pid().await.unwrap_or(0), Ordering::SeqCst);
        Ok(())
    }
    async fn stop(&self) -> Result<()> {
        self.inner.stop().await?;
        self.pid.store(0, Ordering::SeqCst);
        Ok(())
    }
    async fn status(&self) -> Result<ServiceStatus> {
        self.inner.status().await
    }
}
