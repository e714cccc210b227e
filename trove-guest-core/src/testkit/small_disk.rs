//! A small file system for disk-full tests: a tmpfs mounted over a directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoResultExt, Result};

/// A tmpfs of a given size mounted at a directory, unmounted on drop. Mounting needs root (as
/// the whole live suite does); a failure is an error, never a skip.
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount`'s syntax: `2m`) at `dir`, created when missing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be made or `mount` cannot run;
    /// [`Error::Service`] when the mount fails.
    pub fn mount(dir: &Path, size: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .context(|| "run mount (Debian package mount)".to_owned())?;
        if !status.success() {
            return Err(Error::Service {
                message: format!("mount a {size} tmpfs at {} ({status})", dir.display()),
            });
        }
        Ok(SmallDisk {
            dir: dir.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}
