//! Who extracted files belong to.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{IoResultExt, Result};
use crate::runner::OsUser;

/// The account extraction and preparation tools run as: the database's OS account
/// (`os_user`) when this process is root, else `None` (the tools run as this process's own
/// account, which is not root).
pub fn extraction_user(os_user: Option<OsUser>) -> Option<OsUser> {
    if OsUser::current().uid == 0 {
        os_user
    } else {
        None
    }
}

/// Gives everything under `root` (and `root` itself) that is not owned by `owner` to it,
/// by uid and gid. Symbolic links are changed themselves and never followed; the walk does not
/// leave `root`. Returns how many entries were changed. Blocking: call it from
/// `spawn_blocking` in async code.
///
/// # Errors
///
/// [`crate::Error::Io`] naming the path that could not be read or changed.
pub fn own_tree(root: &Path, owner: OsUser) -> Result<u64> {
    let mut changed = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta =
            std::fs::symlink_metadata(&path).context(|| format!("stat {}", path.display()))?;
        if meta.uid() != owner.uid || meta.gid() != owner.gid {
            std::os::unix::fs::lchown(&path, Some(owner.uid), Some(owner.gid))
                .context(|| format!("chown {}", path.display()))?;
            changed += 1;
        }
        if meta.file_type().is_dir() {
            for entry in std::fs::read_dir(&path).context(|| format!("read {}", path.display()))? {
                let entry = entry.context(|| format!("read {}", path.display()))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(changed)
}
