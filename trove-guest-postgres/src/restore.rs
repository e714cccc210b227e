//! Reading a snapshot from the store, verified, into a staging directory, and swapping it in.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use trove_guest_core::error::IoResultExt;
use trove_guest_core::progress::{Phase, Progress};
use trove_guest_core::store::{CHUNK_SIZE, Expected};
use trove_guest_core::{Error, OsUser, Result, Secret, SnapshotDocument, ToolCommand};

use crate::conf;
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

/// Moves the data directory `data` aside to `previous` and the restored `staging` directory
/// into its place (two renames on one file system). On failure `data` is where it was.
///
/// # Errors
///
/// [`Error::Io`] naming the rename that failed.
pub(crate) fn swap_in(data: &Path, staging: &Path, previous: &Path) -> Result<()> {
    std::fs::rename(data, previous)
        .context(|| format!("move {} aside to {}", data.display(), previous.display()))?;
    if let Err(e) = std::fs::rename(staging, data) {
        let undo = std::fs::rename(previous, data);
        return Err(Error::io(
            match undo {
                Ok(()) => format!("move the restored data into {}", data.display()),
                Err(u) => format!(
                    "move the restored data into {} (and moving the previous data directory \
                     back failed: {u}; it is at {})",
                    data.display(),
                    previous.display()
                ),
            },
            e,
        ));
    }
    Ok(())
}

/// Undoes [`swap_in`]: the restored directory at `data` (if any) goes to `failed` and is
/// removed, and `previous` becomes `data` again.
///
/// # Errors
///
/// [`Error::Io`] when a rename fails; the message says where the previous data directory is.
/// Failing to remove `failed` is only logged.
pub(crate) fn put_back(data: &Path, previous: &Path, failed: &Path) -> Result<()> {
    if !previous.is_dir() {
        return Err(Error::NotFound {
            what: format!("the previous data directory at {}", previous.display()),
        });
    }
    match std::fs::rename(data, failed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!(
                    "move the restored data directory {} aside (the previous one is at {})",
                    data.display(),
                    previous.display()
                ),
                e,
            ));
        }
    }
    std::fs::rename(previous, data).context(|| {
        format!(
            "move the previous data directory {} back to {}",
            previous.display(),
            data.display()
        )
    })?;
    if let Err(e) = std::fs::remove_dir_all(failed)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %failed.display(), "could not remove a failed restore");
    }
    Ok(())
}

/// Some files of a directory as they were (contents and mode, or absent), to put back after a
/// failed change. Contents are held as [`Secret`]s: a passfile is among them.
pub(crate) struct SavedFiles {
    files: Vec<(PathBuf, Option<(Secret, u32)>)>,
}

impl SavedFiles {
    /// Reads `names` in `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a file exists but cannot be read.
    pub(crate) fn read(dir: &Path, names: impl IntoIterator<Item = &'static str>) -> Result<Self> {
        let mut files = Vec::new();
        for name in names {
            let path = dir.join(name);
            let saved = match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let mode = std::fs::metadata(&path)
                        .context(|| format!("stat {}", path.display()))?
                        .permissions()
                        .mode()
                        & 0o777;
                    Some((Secret::new(text), mode))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
            };
            files.push((path, saved));
        }
        Ok(SavedFiles { files })
    }

    /// Writes every file back as it was (removing those that did not exist).
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub(crate) fn restore(&self, owner: Option<OsUser>) -> Result<()> {
        for (path, saved) in &self.files {
            match saved {
                Some((text, mode)) => conf::write_atomic(path, text.expose(), *mode, owner)?,
                None => {
                    conf::remove_if_exists(path)?;
                }
            }
        }
        Ok(())
    }
}

impl PostgresStrategy {
    /// Fails with [`Error::InvalidInput`] unless `href` is in this strategy's store.
    pub(crate) fn check_owned(&self, href: &str) -> Result<()> {
        if self.store.owns(href) {
            Ok(())
        } else {
            Err(Error::invalid(
                "snapshot href",
                format!("{href:?} is not in this agent's snapshot store"),
            ))
        }
    }

    /// Creates a new, empty staging directory (0700, owned by the server's account) in the work
    /// directory.
    pub(crate) fn new_staging_dir(&self) -> Result<PathBuf> {
        let staging = unique(&self.handle.work_dir, STAGING_PREFIX);
        std::fs::create_dir(&staging).context(|| format!("create {}", staging.display()))?;
        let made = (|| {
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
                .context(|| format!("chmod {}", staging.display()))?;
            if let Some(owner) = self.file_owner() {
                owner.chown(&staging)?;
            }
            Ok(())
        })();
        match made {
            Ok(()) => Ok(staging),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// Streams the complete snapshot `doc` names through verification (size and SHA-256 of the
    /// document and the store's manifest) into `tar -x` in a new staging directory. On any
    /// failure the staging directory is removed and nothing else is touched.
    pub(crate) async fn extract_verified(
        &self,
        doc: &SnapshotDocument,
        progress: &Progress,
    ) -> Result<(PathBuf, u64)> {
        let href = &doc.dataset.snapshot_href;
        self.check_owned(href)?;
        let expected = Expected {
            size: doc.dataset.size_bytes,
            sha256: doc.dataset.sha256.clone(),
        };
        let mut reader = self.store.get(href, &expected).await?;
        let total = reader.expected_size();
        let staging = self.new_staging_dir()?;
        let extracted = async {
            let n = self
                .extract_into(href, &mut reader, Some(total), &staging, progress)
                .await?;
            if !reader.verified() {
                return Err(Error::integrity(href, "snapshot stream ended unverified"));
            }
            Ok(n)
        }
        .await;
        match extracted {
            Ok(n) => Ok((staging, n)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// The one extraction loop: streams `reader` (the snapshot at `href`, `total` bytes when
    /// known) into `tar -x` in `staging`, to the reader's end. The reader verifies what it
    /// streams and fails its last read on a mismatch: a read error kills `tar` and becomes
    /// [`Error::Integrity`] (or the store's error). `tar` stops at its end-of-archive marker,
    /// so when it stops reading early the rest is still read to the verified end: a damaged
    /// snapshot is then reported as such. Reports [`Phase::Restore`] byte progress.
    pub(crate) async fn extract_into(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        staging: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let mut tool = ToolCommand::new(&self.opts.tar_program)
            .args(["-x", "-f", "-", "--no-same-owner", "-C"])
            .arg(staging)
            .current_dir(staging)
            .run_as(self.tool_user())
            .stdin_piped()
            .timeout(self.opts.extract_timeout)
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
                if let Err(e) = tokio::io::copy(reader, &mut tokio::io::sink()).await {
                    drop(tool);
                    return Err(Error::from_read(format!("read snapshot {href}"), e));
                }
                tool.wait().await?;
                return Err(Error::io("write to tar", write_err));
            }
            done += n as u64;
            progress.bytes(Phase::Restore, done, total);
        }
        drop(stdin);
        tool.wait().await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(root: &Path, name: &str, marker: &str) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("PG_VERSION"), marker).unwrap();
        d
    }

    fn marker(d: &Path) -> String {
        std::fs::read_to_string(d.join("PG_VERSION")).unwrap()
    }

    #[test]
    fn swap_then_put_back_restores_the_previous_data_directory() {
        let t = tempfile::tempdir().unwrap();
        let data = dir_with(t.path(), "data", "previous");
        let staging = dir_with(t.path(), "staging", "restored");
        let (previous, failed) = (t.path().join("prev"), t.path().join("failed"));
        swap_in(&data, &staging, &previous).unwrap();
        assert_eq!(marker(&data), "restored");
        assert_eq!(marker(&previous), "previous");
        assert!(!staging.exists());
        put_back(&data, &previous, &failed).unwrap();
        assert_eq!(marker(&data), "previous");
        assert!(
            !previous.exists() && !failed.exists(),
            "nothing left behind"
        );
    }

    #[test]
    fn a_failed_swap_leaves_the_data_directory_in_place() {
        let t = tempfile::tempdir().unwrap();
        let data = dir_with(t.path(), "data", "previous");
        let previous = t.path().join("prev");
        let err = swap_in(&data, &t.path().join("missing"), &previous).unwrap_err();
        assert!(err.to_string().contains("move the restored data"), "{err}");
        assert_eq!(marker(&data), "previous");
        assert!(!previous.exists());
    }

    #[test]
    fn put_back_works_when_the_restored_directory_is_gone_and_refuses_without_a_previous() {
        let t = tempfile::tempdir().unwrap();
        let previous = dir_with(t.path(), "prev", "previous");
        let data = t.path().join("data");
        put_back(&data, &previous, &t.path().join("failed")).unwrap();
        assert_eq!(marker(&data), "previous");
        // Nothing to put back: the data directory is left alone.
        let err = put_back(&data, &previous, &t.path().join("failed")).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert_eq!(marker(&data), "previous");
    }

    #[test]
    fn saved_files_come_back_with_their_mode_and_new_ones_go() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = tempfile::tempdir().unwrap();
        let pf = t.path().join("a.pgpass");
        conf::write_atomic(&pf, "*:*:*:u:old\n", 0o600, None).unwrap();
        let saved = SavedFiles::read(t.path(), ["a.pgpass", "b.conf"]).unwrap();
        conf::write_atomic(&pf, "*:*:*:u:new\n", 0o644, None).unwrap();
        conf::write_atomic(&t.path().join("b.conf"), "x = 1\n", 0o644, None).unwrap();
        saved.restore(None).unwrap();
        assert_eq!(std::fs::read_to_string(&pf).unwrap(), "*:*:*:u:old\n");
        let mode = std::fs::metadata(&pf).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!t.path().join("b.conf").exists());
    }
}
