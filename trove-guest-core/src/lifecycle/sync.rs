//! Writing a staged copy back to disk: while it is extracted ([`BackgroundSync`]) and as a
//! whole before its marker ([`sync_tree`]), so that the server's own sync at start finds little
//! left. Only the staging area is synced, never the whole file system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Flushes every file and directory under `root` (and `root`) to disk.
///
/// # Errors
///
/// The first I/O error.
pub fn sync_tree(root: &Path) -> std::io::Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                std::fs::File::open(e.path())?.sync_all()?;
            }
        }
        std::fs::File::open(&dir)?.sync_all()?;
    }
    Ok(())
}

/// A thread that `fdatasync`s the files under a directory that grew since it last looked,
/// every [`BackgroundSync::EVERY`], until dropped. Errors are ignored here: the final
/// [`sync_tree`] reports them.
pub struct BackgroundSync {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundSync {
    /// How often the thread looks.
    pub const EVERY: Duration = Duration::from_millis(250);

    /// Starts syncing `dir` in the background.
    pub fn start(dir: &Path) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("tg-stage-sync".into())
            .spawn(move || {
                let mut synced = HashMap::<PathBuf, u64>::new();
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Self::EVERY) {
                    sync_grown_files(&dir, &mut synced);
                }
            })
            .ok();
        BackgroundSync {
            stop: Some(tx),
            thread,
        }
    }
}

impl std::fmt::Debug for BackgroundSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundSync").finish_non_exhaustive()
    }
}

fn sync_grown_files(root: &Path, synced: &mut HashMap<PathBuf, u64>) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(e.path());
            } else if meta.is_file() {
                let path = e.path();
                let len = meta.len();
                if synced.get(&path).is_none_or(|&l| l < len)
                    && let Ok(f) = std::fs::File::open(&path)
                    && f.sync_data().is_ok()
                {
                    synced.insert(path, len);
                }
            }
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
