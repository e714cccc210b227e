//! [`LocalSnapshotStore`]'s `follow`: reading an upload's partial file as it grows.
//!
//! The uploader holds an exclusive `flock` on `.partial-<name>-<random>` from its creation until
//! it commits or aborts. A follower finds the locked partial file, reads it to its current end,
//! and waits while the lock is held. Once the lock is free the upload is over: the follower reads
//! what is left and checks size and SHA-256 against the manifest the commit wrote. No manifest
//! means the upload was abandoned, and the read fails; a complete stream is never reported for
//! data the store did not publish.

use std::fs::{File, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::local::{LocalSnapshotStore, PARTIAL_PREFIX, PARTIAL_RANDOM};
use super::stream::ChunkCarver;
use super::{
    Expected, FollowOptions, IntegrityFailure, SnapshotRead, SnapshotStore, StoredSnapshot,
    validate_snapshot_name,
};
use crate::error::{Error, Result};

pub(super) async fn follow_local(
    store: &LocalSnapshotStore,
    href: &str,
    expected: &Expected,
    opts: &FollowOptions,
) -> Result<SnapshotRead> {
    let data = store.path_for(href)?;
    let name = data
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_suffix(".snap"))
        .expect("path_for checked the name")
        .to_owned();
    validate_snapshot_name(&name)?;
    let deadline = crate::deadline::deadline(opts.start_timeout);
    loop {
        match store.read_manifest(href).await {
            Ok(_) => return Ok(Box::new(store.get(href, expected).await?)),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let root = store.root().to_path_buf();
        let n = name.clone();
        let found = tokio::task::spawn_blocking(move || active_upload(&root, &n))
            .await
            .map_err(|e| Error::Store {
                message: format!("follow task failed: {e}"),
                source: None,
            })??;
        if let Some((path, file)) = found {
            tracing::debug!(upload = %path.display(), "following an upload in progress");
            return Ok(spawn_tail(Tail {
                file,
                path,
                manifest: LocalSnapshotStore::manifest_path(&data),
                href: href.to_owned(),
                expected: expected.clone(),
                opts: opts.clone(),
            }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NotFound {
                what: format!(
                    "snapshot {href} (neither complete nor uploading after {:?})",
                    opts.start_timeout
                ),
            });
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}

/// The partial file of a live upload of `name` (one whose lock is held), opened for reading.
fn active_upload(root: &Path, name: &str) -> Result<Option<(PathBuf, File)>> {
    let prefix = format!("{PARTIAL_PREFIX}{name}-");
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root.display().to_string(), e))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        if rest.len() != PARTIAL_RANDOM || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        let path = entry.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        match file.try_lock_shared() {
            // Locked by its writer: a live upload.
            Err(TryLockError::WouldBlock) => return Ok(Some((path, file))),
            // Left by a crashed or finished upload (or one not locked yet): not followable.
            Ok(()) => {
                let _ = file.unlock();
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
    }
    Ok(None)
}

struct Tail {
    file: File,
    path: PathBuf,
    manifest: PathBuf,
    href: String,
    expected: Expected,
    opts: FollowOptions,
}

type Chunk = std::io::Result<Bytes>;

fn spawn_tail(tail: Tail) -> SnapshotRead {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = tail.run(&tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

impl Tail {
    /// Streams the partial file into `tx` until the upload ends, then verifies it. Returns the
    /// error to deliver as the stream's last item; `Ok` after a verified end (or when the reader
    /// went away).
    fn run(mut self, tx: &mpsc::Sender<Chunk>) -> std::io::Result<()> {
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        let mut carver = ChunkCarver::new();
        let mut last_growth = Instant::now();
        let mut writer_done = false;
        loop {
            let n = self.file.read(carver.spare())?;
            if n > 0 {
                let chunk = carver.take(n);
                hasher.update(&chunk);
                count += n as u64;
                if let Some(limit) = self.expected.size
                    && count > limit
                {
                    return Err(self.fail(format!("more than the expected {limit} bytes")));
                }
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return Ok(()); // the reader went away
                }
                last_growth = Instant::now();
                continue;
            }
            if writer_done {
                break;
            }
            if tx.is_closed() {
                return Ok(());
            }
            match self.file.try_lock_shared() {
                Err(TryLockError::WouldBlock) => {
                    if last_growth.elapsed() > self.opts.stall_timeout {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "the upload of {} has not grown for {:?}",
                                self.href, self.opts.stall_timeout
                            ),
                        ));
                    }
                    std::thread::sleep(self.opts.poll_interval);
                }
                Ok(()) => {
                    // The writer committed or gave up; read whatever is left, then judge.
                    let _ = self.file.unlock();
                    writer_done = true;
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        let manifest: StoredSnapshot = match std::fs::read(&self.manifest) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| self.fail(format!("unreadable manifest: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Incomplete data: an integrity failure, so no consumer can take it for a
                // snapshot.
                return Err(self.fail(format!(
                    "the upload was abandoned after {count} bytes ({} is gone without a \
                     commit)",
                    self.path.display()
                )));
            }
            Err(e) => return Err(e),
        };
        if manifest.href != self.href {
            return Err(self.fail("manifest names another snapshot".into()));
        }
        if manifest.size != count || !manifest.sha256.eq_ignore_ascii_case(&sha256) {
            return Err(self.fail(format!(
                "read {count} bytes with SHA-256 {sha256}, the committed snapshot has {} bytes \
                 with {}",
                manifest.size, manifest.sha256
            )));
        }
        if let Some(size) = self.expected.size
            && size != count
        {
            return Err(self.fail(format!("expected {size} bytes, read {count}")));
        }
        if let Some(h) = &self.expected.sha256
            && !h.eq_ignore_ascii_case(&sha256)
        {
            return Err(self.fail("expected SHA-256 differs from the data".into()));
        }
        Ok(())
    }

    fn fail(&self, reason: String) -> std::io::Error {
        IntegrityFailure {
            href: self.href.clone(),
            reason,
        }
        .into()
    }
}
