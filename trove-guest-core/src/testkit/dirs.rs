//! Instance directories of test servers.

use std::os::unix::fs::PermissionsExt;

use crate::error::{IoResultExt, Result};

/// A fresh directory `/tmp/<prefix>XXXXXX`, mode 0755 (so a server running as another account
/// can reach its files). Short on purpose: Unix socket paths inside it must stay under 107
/// bytes, whatever `TMPDIR` says.
///
/// # Errors
///
/// [`Error::Io`](crate::Error::Io) when it cannot be made.
pub fn short_tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .context(|| "create a directory under /tmp".to_owned())?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .context(|| format!("chmod {}", dir.path().display()))?;
    Ok(dir)
}

/// The last `n` bytes of `s` (at a character boundary): the end of a server log for an error.
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
