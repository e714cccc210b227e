//! The service wrapper every test server uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use crate::error::Result;
use crate::service::{LocalProcess, ServiceControl, ServiceStatus};

/// [`LocalProcess`] plus the pid of the running server, kept up to date on start and stop, so a
/// test server's `Drop` can stop it without an async runtime and without waiting for the
/// process's lock (which another task may hold, on the very thread `Drop` runs on).
///
/// Hand it to the server's [`DatastoreHandle`](crate::DatastoreHandle) as its
/// [`ServiceControl`]; in `Drop`, stop the server with [`TestService::pid`] and
/// [`stop_blocking`](super::stop_blocking).
#[derive(Debug)]
pub struct TestService {
    inner: Arc<LocalProcess>,
    pid: AtomicU32,
}

impl TestService {
    /// Wraps the server's process (not started yet).
    pub fn new(inner: LocalProcess) -> Self {
        TestService {
            inner: Arc::new(inner),
            pid: AtomicU32::new(0),
        }
    }

    /// The server's process.
    pub fn process(&self) -> &Arc<LocalProcess> {
        &self.inner
    }

    /// The pid of the server as last started through this service; 0 when it was stopped
    /// through it or never started.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
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
