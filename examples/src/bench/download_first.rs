//! A store wrapper for the benchmark's "download then extract" row: `get` first copies the whole
//! snapshot out of the store into a local file (the download), and only then hands a reader over
//! that copy to the restore (verified while it is read, as always). Comparing it with the plain
//! store, whose reader feeds the extractor while the data arrives, measures what overlapping
//! extraction with the download saves.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use trove_guest_core::error::IoResultExt;
use trove_guest_core::store::{
    CHUNK_SIZE, Expected, PendingUpload, SnapshotRead, StoredSnapshot, VerifyingReader,
};
use trove_guest_core::{Error, LocalSnapshotStore, Progress, Result, SnapshotStore};

/// Downloads a snapshot completely before letting the restore read it.
#[derive(Debug)]
pub struct DownloadFirst {
    local: Arc<LocalSnapshotStore>,
    dir: PathBuf,
}

impl DownloadFirst {
    /// Wraps `local`; downloads go into `dir` (created if missing).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `dir` cannot be created.
    pub fn new(local: Arc<LocalSnapshotStore>, dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
        Ok(DownloadFirst { local, dir })
    }
}

#[async_trait]
impl SnapshotStore for DownloadFirst {
    fn snapshot_href(&self, name: &str) -> trove_guest_core::Result<String> {
        self.local.snapshot_href(name)
    }

    fn owns(&self, href: &str) -> bool {
        self.local.owns(href)
    }

    async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>> {
        self.local.put(name, data, progress).await
    }

    async fn stat(&self, href: &str) -> Result<StoredSnapshot> {
        self.local.stat(href).await
    }

    async fn get(&self, href: &str, expected: &Expected) -> Result<VerifyingReader<SnapshotRead>> {
        let m = self.local.stat(href).await?;
        for (want, have) in [
            (expected.size.map(|s| s.to_string()), m.size.to_string()),
            (expected.sha256.clone(), m.sha256.clone()),
        ] {
            if want.is_some_and(|w| !w.eq_ignore_ascii_case(&have)) {
                return Err(Error::integrity(
                    href,
                    "the store's manifest differs from the expected",
                ));
            }
        }
        let source = self.local.path_for(href)?;
        let copy = self.dir.join(format!(
            "download-{}",
            trove_guest_core::Secret::random(8).expose()
        ));
        tokio::fs::copy(&source, &copy)
            .await
            .context(|| format!("download {} to {}", source.display(), copy.display()))?;
        let file = tokio::fs::File::open(&copy)
            .await
            .context(|| format!("open {}", copy.display()))?;
        // The open file stays readable; the name goes now.
        let _ = tokio::fs::remove_file(&copy).await;
        let reader: SnapshotRead = Box::new(tokio::io::BufReader::with_capacity(CHUNK_SIZE, file));
        Ok(VerifyingReader::new(reader, href, m.size, m.sha256))
    }

    async fn delete(&self, href: &str) -> Result<()> {
        self.local.delete(href).await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn reads_back_the_snapshot_from_a_download_that_is_gone_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalSnapshotStore::new(dir.path().join("store")).unwrap());
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let stored = local
            .put("s1", &mut data.as_slice(), &Progress::none())
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        let downloads = dir.path().join("dl");
        let store = DownloadFirst::new(local, &downloads).unwrap();
        let expected = Expected {
            size: Some(stored.size),
            sha256: Some(stored.sha256.clone()),
        };
        let mut r = store.get(&stored.href, &expected).await.unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert!(r.verified());
        assert_eq!(back, data);
        assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);

        let wrong = Expected {
            size: Some(stored.size + 1),
            sha256: None,
        };
        assert!(matches!(
            store.get(&stored.href, &wrong).await,
            Err(Error::Integrity { .. })
        ));
    }
}
