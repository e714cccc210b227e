//! File operations of the lifecycle: the staging directory, saved configuration files, the
//! swap and its undo. Synchronous (rename and small copies); trees are removed off the runtime.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::datastore::DatastoreHandle;
use crate::error::{Error, IoResultExt, Result};
use crate::staging::{remove_dir_if_exists, sync_dir, write_durable};

use super::journal::SavedFile;
use super::layout::WorkLayout;

/// Creates the empty staging directory (0700, owned by the server's account).
pub(crate) fn create_staging(layout: &WorkLayout, handle: &DatastoreHandle) -> Result<()> {
    let staging = layout.staging();
    remove_dir_if_exists(&staging)?;
    std::fs::create_dir_all(layout.work_dir())
        .context(|| format!("create {}", layout.work_dir().display()))?;
    std::fs::create_dir(&staging).context(|| format!("create {}", staging.display()))?;
    let made = (|| {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
            .context(|| format!("chmod {}", staging.display()))?;
        if let Some(owner) = handle.os_user {
            owner.chown(&staging)?;
        }
        Ok(())
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    made
}

/// Forgets any staged copy: the marker first (durably), then the directory.
pub(crate) fn discard_staging(layout: &WorkLayout) -> Result<()> {
    layout.marker().remove()?;
    remove_dir_if_exists(&layout.staging())
}

/// Removes a directory tree off the async runtime; a missing one is fine.
pub(crate) async fn remove_tree(dir: std::path::PathBuf) -> Result<()> {
    tokio::task::spawn_blocking(move || remove_dir_if_exists(&dir))
        .await
        .map_err(|e| Error::io("remove a directory", std::io::Error::other(e)))?
}

/// Copies each of `files` (those that exist) into the layout's saved directory (0700 directory,
/// 0600 copies, synced) and says what was there.
pub(crate) fn save_files(
    layout: &WorkLayout,
    files: &[std::path::PathBuf],
) -> Result<Vec<SavedFile>> {
    let dir = layout.saved();
    remove_dir_if_exists(&dir)?;
    std::fs::create_dir(&dir).context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .context(|| format!("chmod {}", dir.display()))?;
    let mut saved = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let copy = format!(
            "{i}-{}",
            path.file_name()
                .map_or_else(|| "file".into(), |n| n.to_string_lossy())
        );
        match std::fs::read(path) {
            Ok(bytes) => {
                let meta =
                    std::fs::metadata(path).context(|| format!("stat {}", path.display()))?;
                write_durable(&dir.join(&copy), &bytes)?;
                saved.push(SavedFile {
                    path: path.clone(),
                    existed: true,
                    copy,
                    mode: meta.permissions().mode() & 0o7777,
                    owner: Some((meta.uid(), meta.gid())),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => saved.push(SavedFile {
                path: path.clone(),
                existed: false,
                copy,
                mode: 0,
                owner: None,
            }),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
    sync_dir(&dir)?;
    Ok(saved)
}

/// Puts the saved files back as they were (removing those that did not exist), with their
/// mode and owner.
pub(crate) fn restore_files(layout: &WorkLayout, saved: &[SavedFile]) -> Result<()> {
    for f in saved {
        if f.existed {
            let bytes = std::fs::read(layout.saved().join(&f.copy))
                .context(|| format!("read the saved copy of {}", f.path.display()))?;
            write_durable(&f.path, &bytes)?;
            std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(f.mode))
                .context(|| format!("chmod {}", f.path.display()))?;
            if let Some((uid, gid)) = f.owner {
                std::os::unix::fs::chown(&f.path, Some(uid), Some(gid))
                    .context(|| format!("chown {}", f.path.display()))?;
            }
        } else {
            match std::fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", f.path.display()), e)),
            }
        }
    }
    Ok(())
}

/// Removes `path` if it is there; true when it was.
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

/// The swap: the data directory goes aside to the layout's old-data place and the staging
/// directory takes its place (two renames on one file system). On failure the data directory
/// is where it was.
pub(crate) fn swap_in(layout: &WorkLayout, data: &Path) -> Result<()> {
    let (staging, old) = (layout.staging(), layout.old_data());
    remove_dir_if_exists(&old)?;
    std::fs::rename(data, &old)
        .context(|| format!("move {} aside to {}", data.display(), old.display()))?;
    if let Err(e) = std::fs::rename(&staging, data) {
        let undo = std::fs::rename(&old, data);
        return Err(Error::io(
            match undo {
                Ok(()) => format!("move the restored data into {}", data.display()),
                Err(u) => format!(
                    "move the restored data into {} (and moving the previous data directory \
                     back failed: {u}; it is at {})",
                    data.display(),
                    old.display()
                ),
            },
            e,
        ));
    }
    sync_dir(layout.work_dir())?;
    if let Some(parent) = data.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Undoes [`swap_in`] in whatever state a crash or failure left it: when the old data is aside,
/// the restored directory (if any) goes to the failed place and the old data comes back. True
/// when something was moved.
pub(crate) fn put_back(layout: &WorkLayout, data: &Path) -> Result<bool> {
    let (old, failed) = (layout.old_data(), layout.failed());
    if !old.is_dir() {
        return Ok(false);
    }
    remove_dir_if_exists(&failed)?;
    match std::fs::rename(data, &failed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!(
                    "move the restored data directory {} aside (the previous one is at {})",
                    data.display(),
                    old.display()
                ),
                e,
            ));
        }
    }
    std::fs::rename(&old, data).context(|| {
        format!(
            "move the previous data directory {} back to {}",
            old.display(),
            data.display()
        )
    })?;
    sync_dir(layout.work_dir())?;
    if let Some(parent) = data.parent() {
        sync_dir(parent)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn handle(root: &Path) -> DatastoreHandle {
        let service = Arc::new(crate::service::LocalProcess::new(
            crate::ToolCommand::new("/bin/true"),
            crate::service::Readiness::Tcp("127.0.0.1:1".parse().unwrap()),
        ));
        DatastoreHandle::new(
            crate::AdminConnection::new("127.0.0.1", 1, "u", crate::Secret::new("p")),
            root.join("data"),
            root.join("conf"),
            service,
        )
        .with_work_dir(root.join("work"))
    }

    fn dir_with(path: &Path, marker: &str) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("PG_VERSION"), marker).unwrap();
    }

    fn marker(d: &Path) -> String {
        std::fs::read_to_string(d.join("PG_VERSION")).unwrap()
    }

    #[test]
    fn swap_then_put_back_restores_the_previous_data_directory() {
        let t = tempfile::tempdir().unwrap();
        let h = handle(t.path());
        let layout = WorkLayout::new(&h.work_dir);
        dir_with(&h.data_dir, "previous");
        create_staging(&layout, &h).unwrap();
        std::fs::write(layout.staging().join("PG_VERSION"), "restored").unwrap();
        swap_in(&layout, &h.data_dir).unwrap();
        assert_eq!(marker(&h.data_dir), "restored");
        assert_eq!(marker(&layout.old_data()), "previous");
        assert!(put_back(&layout, &h.data_dir).unwrap());
        assert_eq!(marker(&h.data_dir), "previous");
        assert!(!layout.old_data().exists());
        assert!(
            !put_back(&layout, &h.data_dir).unwrap(),
            "nothing left to put back"
        );
        assert_eq!(marker(&h.data_dir), "previous");
    }

    #[test]
    fn put_back_finishes_a_swap_cut_between_its_two_renames() {
        let t = tempfile::tempdir().unwrap();
        let h = handle(t.path());
        let layout = WorkLayout::new(&h.work_dir);
        std::fs::create_dir_all(&h.work_dir).unwrap();
        dir_with(&layout.old_data(), "previous");
        assert!(!h.data_dir.exists());
        assert!(put_back(&layout, &h.data_dir).unwrap());
        assert_eq!(marker(&h.data_dir), "previous");
    }

    #[test]
    fn a_failed_swap_leaves_the_data_directory_in_place() {
        let t = tempfile::tempdir().unwrap();
        let h = handle(t.path());
        let layout = WorkLayout::new(&h.work_dir);
        std::fs::create_dir_all(&h.work_dir).unwrap();
        dir_with(&h.data_dir, "previous");
        let err = swap_in(&layout, &h.data_dir).unwrap_err();
        assert!(err.to_string().contains("move the restored data"), "{err}");
        assert_eq!(marker(&h.data_dir), "previous");
        assert!(!layout.old_data().exists());
    }

    #[test]
    fn saved_files_come_back_with_their_mode_and_new_ones_go() {
        let t = tempfile::tempdir().unwrap();
        let h = handle(t.path());
        let layout = WorkLayout::new(&h.work_dir);
        std::fs::create_dir_all(&h.work_dir).unwrap();
        let a: PathBuf = t.path().join("a.pgpass");
        let b: PathBuf = t.path().join("b.conf");
        std::fs::write(&a, "old").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        let saved = save_files(&layout, &[a.clone(), b.clone()]).unwrap();
        std::fs::write(&a, "new").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&b, "x").unwrap();
        restore_files(&layout, &saved).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!b.exists());
        let copy_mode = std::fs::metadata(layout.saved().join(&saved[0].copy))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(copy_mode, 0o600, "saved copies are secret files");
    }
}
