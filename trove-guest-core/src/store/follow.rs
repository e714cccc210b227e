//! Reading a snapshot while it is still being uploaded ([`SnapshotStore::follow`]).

use std::time::Duration;

use super::{Expected, SnapshotRead, SnapshotStore};
use crate::error::{Error, Result};

/// Options for [`SnapshotStore::follow`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FollowOptions {
    /// How long to wait for the upload (or the complete snapshot) to appear. Stores that cannot
    /// see uploads wait this long for the commit. Default 10 minutes.
    pub start_timeout: Duration,
    /// How long an upload may go without growing before the read fails. Default 5 minutes.
    pub stall_timeout: Duration,
    /// How often to look for new data, an upload or a commit. Default 20 ms.
    pub poll_interval: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            start_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(20),
        }
    }
}

impl FollowOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`FollowOptions::start_timeout`].
    pub fn with_start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }
    /// Sets [`FollowOptions::stall_timeout`].
    pub fn with_stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }
    /// Sets [`FollowOptions::poll_interval`].
    pub fn with_poll_interval(mut self, t: Duration) -> Self {
        self.poll_interval = t;
        self
    }
}

/// The default [`SnapshotStore::follow`]: waits (polling [`SnapshotStore::stat`] with a growing
/// interval, at most one second) until the snapshot is complete, then [`SnapshotStore::get`].
pub(super) async fn wait_then_get<S: SnapshotStore + ?Sized>(
    store: &S,
    href: &str,
    expected: &Expected,
    opts: &FollowOptions,
) -> Result<SnapshotRead> {
    let deadline = crate::deadline::deadline(opts.start_timeout);
    let mut interval = opts.poll_interval.max(Duration::from_millis(1));
    loop {
        match store.stat(href).await {
            Ok(_) => return Ok(Box::new(store.get(href, expected).await?)),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NotFound {
                what: format!(
                    "snapshot {href} (not complete after {:?})",
                    opts.start_timeout
                ),
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(1));
    }
}
