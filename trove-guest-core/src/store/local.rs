use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use super::stream::UploadChunks;
use super::{
    CHUNK_SIZE, Expected, FollowOptions, PendingUpload, SnapshotRead, SnapshotStore,
    StoredSnapshot, VerifyingReader, check_expected, validate_snapshot_name,
};
use crate::error::{Error, IoResultExt, Result};
use crate::progress::Progress;

pub(super) const DATA_SUFFIX: &str = ".snap";

/// Snapshots as files in a local directory, addressed by `file://` hrefs.
///
/// Layout: `<root>/<name>.snap` (data) and `<root>/<name>.snap.manifest.json` (size and
/// SHA-256, written last). Uploads stream into `<root>/.partial-<name>-<random>`, are fsynced,
/// and linked into place on commit; a snapshot without a manifest does not exist for readers.
///
/// The uploading process holds an exclusive `flock` on its partial file until the commit or the
/// abort, which lets [`follow`](SnapshotStore::follow) read an upload as it grows (on this
/// host, or any file system with coherent `flock`) and tell a live upload from an abandoned one.
#[derive(Debug, Clone)]
pub struct LocalSnapshotStore {
    root: PathBuf,
    durability: Durability,
}

/// Whether a [`LocalSnapshotStore`] makes snapshots durable before it publishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Data, manifest and directory are fsynced before the commit returns (written back while
    /// the snapshot streams, so little is left for the end). The default.
    #[default]
    Synced,
    /// Left to the kernel's write-back: the commit does not wait for the disk. A crash soon
    /// after can leave a published snapshot unreadable, never wrong: every read is verified
    /// against the manifest's size and SHA-256 and refuses it with an integrity error. For
    /// stores that serve as a transfer area (a snapshot taken to provision replicas right
    /// away), where writing the snapshot to disk only competes with the restore.
    PageCache,
}

impl LocalSnapshotStore {
    /// A store rooted at `root` (created if missing; made absolute).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be created or resolved.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).context(|| format!("create {}", root.display()))?;
        let root = root
            .canonicalize()
            .context(|| format!("resolve {}", root.display()))?;
        Ok(LocalSnapshotStore {
            root,
            durability: Durability::default(),
        })
    }

    /// Sets how durable snapshots are before they are published (default
    /// [`Durability::Synced`]).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The href of a snapshot named `name` in this store.
    pub fn href_for(&self, name: &str) -> String {
        format!("file://{}/{name}{DATA_SUFFIX}", self.root.display())
    }

    /// The data file path behind an href, if this store owns it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an href that is not a `file://` URL naming a snapshot
    /// directly inside this store's directory.
    pub fn path_for(&self, href: &str) -> Result<PathBuf> {
        let bad = |reason: &str| Error::invalid("snapshot href", format!("{href:?}: {reason}"));
        let path = href
            .strip_prefix("file://")
            .ok_or_else(|| bad("not a file:// URL"))?;
        let path = Path::new(path);
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| bad("no file name"))?;
        if path.parent() != Some(self.root.as_path()) {
            return Err(bad("outside this snapshot store"));
        }
        let name = file
            .strip_suffix(DATA_SUFFIX)
            .ok_or_else(|| bad("not a snapshot file"))?;
        validate_snapshot_name(name)?;
        // `.` segments, doubled or trailing slashes would name the same file by another href.
        if href != self.href_for(name) {
            return Err(bad("not in canonical form"));
        }
        Ok(path.to_path_buf())
    }

    pub(super) fn manifest_path(data: &Path) -> PathBuf {
        let mut s = data.as_os_str().to_owned();
        s.push(".manifest.json");
        PathBuf::from(s)
    }

    pub(super) async fn read_manifest(&self, href: &str) -> Result<StoredSnapshot> {
        let data = self.path_for(href)?;
        let mpath = Self::manifest_path(&data);
        let bytes = match tokio::fs::read(&mpath).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    what: format!("snapshot {href}"),
                });
            }
            Err(e) => return Err(Error::io(format!("read {}", mpath.display()), e)),
        };
        let m: StoredSnapshot = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity(href, format!("unreadable manifest: {e}")))?;
        if m.href != href {
            return Err(Error::integrity(href, "manifest names another snapshot"));
        }
        Ok(m)
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("fsync {}", dir.display()))
}

/// Prefix of upload files: `.partial-<name>-<PARTIAL_RANDOM random alphanumerics>`.
pub(super) const PARTIAL_PREFIX: &str = ".partial-";
/// Prefix of a manifest being written by a commit.
pub(super) const MANIFEST_PARTIAL_PREFIX: &str = ".manifest-partial-";
/// Length of the random part of upload file names.
pub(super) const PARTIAL_RANDOM: usize = 12;

#[derive(Debug)]
struct LocalPending {
    temp: Option<PathBuf>,
    /// The open upload file: holding it holds the upload's exclusive lock.
    lock: Option<std::fs::File>,
    data: PathBuf,
    root: PathBuf,
    snapshot: StoredSnapshot,
    synced: bool,
}

#[async_trait]
impl PendingUpload for LocalPending {
    fn snapshot(&self) -> &StoredSnapshot {
        &self.snapshot
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredSnapshot> {
        let temp = self.temp.take().expect("pending upload has its temp file");
        let data = self.data.clone();
        let root = self.root.clone();
        let snapshot = self.snapshot.clone();
        let synced = self.synced;
        tokio::task::spawn_blocking(move || -> Result<StoredSnapshot> {
            let taken = || {
                let _ = std::fs::remove_file(&temp);
                Error::invalid(
                    "snapshot name",
                    format!("{} already exists", data.display()),
                )
            };
            // A hard link publishes atomically and never replaces a snapshot another upload
            // committed meanwhile; file systems without hard links fall back to a rename.
            match std::fs::hard_link(&temp, &data) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&temp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(taken()),
                Err(_) => {
                    if data.exists() {
                        return Err(taken());
                    }
                    std::fs::rename(&temp, &data)
                        .context(|| format!("rename {} to {}", temp.display(), data.display()))?;
                }
            }
            let mpath = LocalSnapshotStore::manifest_path(&data);
            let mtemp = root.join(format!(
                "{MANIFEST_PARTIAL_PREFIX}{}",
                crate::secret::Secret::random(12).expose()
            ));
            let json = serde_json::to_vec_pretty(&snapshot).expect("manifest serializes");
            {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&mtemp)
                    .context(|| format!("create {}", mtemp.display()))?;
                f.write_all(&json)
                    .and_then(|_| if synced { f.sync_all() } else { Ok(()) })
                    .context(|| format!("write {}", mtemp.display()))?;
            }
            std::fs::rename(&mtemp, &mpath)
                .context(|| format!("rename {} to {}", mtemp.display(), mpath.display()))?;
            if synced {
                fsync_dir(&root)?;
            }
            Ok(snapshot)
        })
        .await
        .map_err(|e| Error::Store {
            message: format!("commit task failed: {e}"),
            source: None,
        })?
    }
}

impl Drop for LocalPending {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
        // Releases the upload lock: followers now see a commit (manifest) or an abort.
        self.lock.take();
    }
}

/// Bytes written between two background flushes of an upload.
const FLUSH_EVERY: u64 = 64 << 20;

/// Writes an upload back to disk while it streams: every [`FLUSH_EVERY`] bytes a helper thread
/// `fdatasync`s the file (requests coalesce while one runs), so the fsync before the commit
/// finds little left to do instead of the whole snapshot (the kernel would otherwise start
/// writing back only at its dirty-page threshold). The writer never waits for it.
struct Flusher {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    path: PathBuf,
    flushed_at: std::cell::Cell<u64>,
}

impl Flusher {
    fn start(file: &std::fs::File, path: &Path) -> Result<Self> {
        let clone = file
            .try_clone()
            .context(|| format!("duplicate {}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tg-store-flush".into())
            .spawn(move || {
                // An error must reach the committer: the shared file description's error state
                // would not report it again to the final fsync.
                while rx.recv().is_ok() {
                    clone.sync_data()?;
                }
                Ok(())
            })
            .context(|| "spawn the store flusher thread".to_owned())?;
        Ok(Flusher {
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_path_buf(),
            flushed_at: std::cell::Cell::new(0),
        })
    }

    fn wrote(&self, total: u64) {
        if total - self.flushed_at.get() >= FLUSH_EVERY {
            if let Some(tx) = &self.tx {
                // Full: a flush is pending and will cover these bytes too.
                let _ = tx.try_send(());
            }
            self.flushed_at.set(total);
        }
    }

    fn finish(mut self) -> Result<()> {
        self.tx.take();
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r.context(|| format!("fdatasync {}", self.path.display())),
            Some(Err(_)) => Err(Error::Store {
                message: "the store flusher thread panicked".into(),
                source: None,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Removes a temp file unless disarmed (cancel safety of `put`).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[async_trait]
impl SnapshotStore for LocalSnapshotStore {
    fn owns(&self, href: &str) -> bool {
        self.path_for(href).is_ok()
    }

    fn snapshot_href(&self, name: &str) -> Result<String> {
        validate_snapshot_name(name)?;
        Ok(self.href_for(name))
    }

    async fn put(
        &self,
        name: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
        progress: &Progress,
    ) -> Result<Box<dyn PendingUpload>> {
        validate_snapshot_name(name)?;
        let href = self.href_for(name);
        let final_path = self.path_for(&href)?;
        if final_path.exists() {
            return Err(Error::invalid(
                "snapshot name",
                format!("{name:?} already exists in {}", self.root.display()),
            ));
        }
        let temp = self.root.join(format!(
            "{PARTIAL_PREFIX}{name}-{}",
            crate::secret::Secret::random(PARTIAL_RANDOM).expose()
        ));
        let mut guard = TempGuard(Some(temp.clone()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .context(|| format!("create {}", temp.display()))?;
        // Held until commit or abort; followers wait while it is held.
        file.lock().context(|| format!("lock {}", temp.display()))?;

        // Writes happen on a blocking thread fed by a bounded channel: the async side reads and
        // hashes, the blocking side writes; at most 4 chunks are in flight.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        // Written chunks go back to the reading side to be filled again.
        let (recycle, recycled) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let temp_for_writer = temp.clone();
        let synced = self.durability == Durability::Synced;
        let writer = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            use std::io::Write as _;
            let mut file = file;
            let flusher = if synced {
                Some(Flusher::start(&file, &temp_for_writer)?)
            } else {
                None
            };
            let mut written = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)
                    .context(|| format!("write {}", temp_for_writer.display()))?;
                written += chunk.len() as u64;
                let _ = recycle.send(chunk);
                if let Some(f) = &flusher {
                    f.wrote(written);
                }
            }
            if let Some(f) = flusher {
                f.finish()?;
                file.sync_all()
                    .context(|| format!("fsync {}", temp_for_writer.display()))?;
            }
            Ok(file)
        });

        let mut chunks = UploadChunks::new(data, name, progress).with_recycling(recycled);
        let read_result: Result<()> = async {
            let mut sent = 0u64;
            while let Some(chunk) = chunks.next().await? {
                if tx.send(chunk).await.is_err() {
                    return Ok(()); // writer failed; its error is reported below
                }
                sent += 1;
                if sent == 1 {
                    // Test-only: parks a snapshot mid-upload (bytes in the partial file).
                    crate::lifecycle::failpoint("snapshot.streaming").await;
                }
            }
            Ok(())
        }
        .await;
        drop(tx);
        let write_result = writer.await.map_err(|e| Error::Store {
            message: format!("writer task failed: {e}"),
            source: None,
        })?;
        read_result?;
        let lock = write_result?;
        let (size, sha256) = chunks.finish();
        guard.0 = None;
        Ok(Box::new(LocalPending {
            temp: Some(temp),
            lock: Some(lock),
            data: final_path,
            root: self.root.clone(),
            snapshot: StoredSnapshot { href, size, sha256 },
            synced,
        }))
    }

    async fn stat(&self, href: &str) -> Result<StoredSnapshot> {
        self.read_manifest(href).await
    }

    async fn get(&self, href: &str, expected: &Expected) -> Result<VerifyingReader<SnapshotRead>> {
        let m = self.read_manifest(href).await?;
        check_expected(href, &m, expected)?;
        let path = self.path_for(href)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::integrity(
                    href,
                    "manifest present but data file missing",
                ));
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let reader: SnapshotRead = Box::new(tokio::io::BufReader::with_capacity(CHUNK_SIZE, file));
        Ok(VerifyingReader::new(reader, href, m.size, m.sha256))
    }

    async fn follow(
        &self,
        href: &str,
        expected: &Expected,
        opts: &FollowOptions,
    ) -> Result<SnapshotRead> {
        super::tail::follow_local(self, href, expected, opts).await
    }

    /// Removes upload files (`.partial-*`) whose uploader is gone (their `flock` can be taken:
    /// a live uploader holds it until commit or abort), half-written manifests, and data files
    /// without a manifest, each only when it last changed more than `older_than` ago. Returns
    /// their file names.
    async fn sweep_incomplete(&self, older_than: Duration) -> Result<Vec<String>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || super::sweep::sweep_local(&store, older_than))
            .await
            .map_err(|e| Error::Store {
                message: format!("sweep task failed: {e}"),
                source: None,
            })?
    }

    async fn delete(&self, href: &str) -> Result<()> {
        let data = self.path_for(href)?;
        for p in [Self::manifest_path(&data), data] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", p.display()), e)),
            }
        }
        Ok(())
    }
}
