//! Reading a snapshot from the store, verified, into a staging directory, and swapping it in.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trove_guest_core::error::IoResultExt;
use trove_guest_core::progress::{Phase, Progress};
use trove_guest_core::store::{CHUNK_SIZE, Expected};
use trove_guest_core::{Error, Result, SnapshotDocument, ToolCommand};

use crate::strategy::PostgresStrategy;

/// Prefix of staging directories (under the work directory).
pub(crate) const STAGING_PREFIX: &str = ".tg-pg-staging-";
/// Prefix of the previous data directory kept until the restored one runs.
pub(crate) const PREVIOUS_PREFIX: &str = ".tg-pg-previous-";

pub(crate) fn unique(dir: &Path, prefix: &str) -> PathBuf {
    let suffix = trove_guest_core::Secret::random(8)
        .expose()
        .to_ascii_lowercase();
    dir.join(format!("{prefix}{suffix}"))
}

/// Removes staging directories left by interrupted attaches.
pub(crate) fn remove_stale(work_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(work_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

impl PostgresStrategy {
    /// Streams the snapshot through verification into `tar -x` in a new staging directory.
    /// On any failure the staging directory is removed and nothing else is touched.
    pub(crate) async fn extract_verified(
        &self,
        doc: &SnapshotDocument,
        progress: &Progress,
    ) -> Result<(PathBuf, u64)> {
        let staging = unique(&self.handle.work_dir, STAGING_PREFIX);
        std::fs::create_dir(&staging).context(|| format!("create {}", staging.display()))?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
            .context(|| format!("chmod {}", staging.display()))?;
        if let Some(owner) = self.file_owner() {
            owner.chown(&staging)?;
        }
        match self.extract_into(doc, &staging, progress).await {
            Ok(n) => Ok((staging, n)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    async fn extract_into(
        &self,
        doc: &SnapshotDocument,
        staging: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let href = &doc.dataset.snapshot_href;
        if !self.store.owns(href) {
            return Err(Error::invalid(
                "snapshot href",
                format!("{href:?} is not in this agent's snapshot store"),
            ));
        }
        let expected = Expected {
            size: doc.dataset.size_bytes,
            sha256: doc.dataset.sha256.clone(),
        };
        let mut reader = self.store.get(href, &expected).await?;
        let total = reader.expected_size();
        let mut tool = ToolCommand::new(&self.opts.tar_program)
            .args(["-x", "-f", "-", "--no-same-owner", "-C"])
            .arg(staging)
            .current_dir(staging)
            .run_as(self.tool_user())
            .stdin_piped()
            .spawn()?;
        let mut stdin = tool.take_stdin().expect("stdin is piped");
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut done = 0u64;
        loop {
            // A read error is a damaged snapshot (or a store failure): abort, never swap.
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    drop(stdin);
                    drop(tool);
                    return Err(Error::from_read(format!("read snapshot {href}"), e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(write_err) = stdin.write_all(&buf[..n]).await {
                // tar stopped reading. Finish verifying: a damaged snapshot is the real cause
                // when the data does not match.
                drop(stdin);
                if let Err(e) = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await {
                    drop(tool);
                    return Err(Error::from_read(format!("read snapshot {href}"), e));
                }
                tool.wait().await?;
                return Err(Error::io("write to tar", write_err));
            }
            done += n as u64;
            progress.bytes(Phase::Restore, done, Some(total));
        }
        drop(stdin);
        if !reader.verified() {
            return Err(Error::integrity(href, "snapshot stream ended unverified"));
        }
        tool.wait().await?;
        Ok(done)
    }
}
