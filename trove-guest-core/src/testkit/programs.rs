//! Server programs a test needs: a missing one fails with the package to install, never skips.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// [`Error::NotFound`] naming `program` and the Debian `package` that provides it.
pub fn missing_program(program: impl AsRef<Path>, package: &str) -> Error {
    Error::NotFound {
        what: format!(
            "{} (install the Debian package {package}: apt-get install -y {package})",
            program.as_ref().display()
        ),
    }
}

/// `program` when it is a file.
///
/// # Errors
///
/// [`missing_program`] when it is not.
pub fn require_program(program: impl AsRef<Path>, package: &str) -> Result<PathBuf> {
    let p = program.as_ref();
    if p.is_file() {
        Ok(p.to_path_buf())
    } else {
        Err(missing_program(p, package))
    }
}
