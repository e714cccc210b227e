//! The one way to read a private file (a password, a token, a private key, credentials).
//!
//! [`read_private_file`] opens the path with `O_NOFOLLOW | O_CLOEXEC`, examines the *open*
//! descriptor with `fstat` (so the file checked is the file read: no race with a rename or a
//! symlink swapped in between), and refuses anything that is not a regular file, not owned by
//! the agent's effective uid (or by root), open to group or others in any way, or larger than
//! the caller's bound. Only then are the bytes read, at most `max_len` of them. Errors name the
//! path and the reason, never the content.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretSlice};

use crate::Secret;

/// What a private file held. `Debug` prints only the length; the bytes are zeroed on drop.
pub struct PrivateBytes(SecretSlice<u8>);

impl PrivateBytes {
    /// The bytes. Hand them only to what needs them (a parser, a server); never log them.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The content as a [`Secret`] string.
    ///
    /// # Errors
    ///
    /// [`PrivateFileProblem::NotUtf8`] (with `path` named) when the file is not UTF-8.
    pub fn into_text(self, path: &Path) -> Result<Secret, PrivateFileError> {
        match std::str::from_utf8(self.expose()) {
            Ok(s) => Ok(Secret::new(s)),
            Err(_) => Err(PrivateFileError::new(path, PrivateFileProblem::NotUtf8)),
        }
    }
}

impl fmt::Debug for PrivateBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateBytes({} bytes, [REDACTED])", self.expose().len())
    }
}

/// Why a private file was refused or could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateFileProblem {
    /// The path does not exist.
    #[error("it does not exist")]
    Missing,
    /// The path is a symbolic link (refused, never followed).
    #[error("it is a symbolic link; name the file itself")]
    Symlink,
    /// Opening, examining or reading failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// A directory, socket, FIFO or device.
    #[error("it is not a regular file")]
    NotRegular,
    /// Owned by another account than the agent's (or root).
    #[error("it is owned by uid {owner}, not by the agent's uid {euid} (or root)")]
    WrongOwner {
        /// The file's owner.
        owner: u32,
        /// The agent's effective uid.
        euid: u32,
    },
    /// Group or others have some permission on it.
    #[error("its mode {mode:04o} lets group or others at it; chmod 600 it")]
    OpenToOthers {
        /// The file's permission bits.
        mode: u32,
    },
    /// Larger than the caller's bound.
    #[error("it is larger than {max} bytes")]
    TooLarge {
        /// The bound.
        max: u64,
    },
    /// The content is not UTF-8 (for a caller wanting text).
    #[error("it is not UTF-8 text")]
    NotUtf8,
}

/// A private file refused or unreadable: the path and the reason, never the content.
#[derive(Debug, thiserror::Error)]
#[error("private file {}: {problem}", path.display())]
#[non_exhaustive]
pub struct PrivateFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: PrivateFileProblem,
}

impl PrivateFileError {
    fn new(path: &Path, problem: PrivateFileProblem) -> Self {
        PrivateFileError {
            path: path.to_owned(),
            problem,
        }
    }

    /// Whether the file does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self.problem, PrivateFileProblem::Missing)
    }
}

impl PrivateFileError {
    /// This error as a [`crate::Error`] about the setting `what` (for example
    /// `"token_file"`): I/O failures become [`crate::Error::Io`], a refused file
    /// [`crate::Error::InvalidInput`]; both name the path.
    pub fn into_error(self, what: &str) -> crate::Error {
        match self.problem {
            PrivateFileProblem::Io(io) => {
                crate::Error::io(format!("{what}: read {}", self.path.display()), io)
            }
            PrivateFileProblem::Missing => crate::Error::io(
                format!("{what}: read {}", self.path.display()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ),
            other => crate::Error::invalid(what, format!("{}: {other}", self.path.display())),
        }
    }
}

impl From<PrivateFileError> for crate::Error {
    /// [`PrivateFileError::into_error`] about a `"private file"`.
    fn from(e: PrivateFileError) -> Self {
        e.into_error("private file")
    }
}

/// How a file may be examined before reading: [`read_private_file`] uses
/// [`FileChecks::Private`]; [`FileChecks::RegularOnly`] is for a file that is private only
/// when it holds a secret (the caller checks [`FileFacts::check_private`] after parsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileChecks {
    /// Regular, owned by the agent's uid (or root), no group/other bits, bounded.
    Private,
    /// As [`FileChecks::Private`], and also accepted when owned by this uid: for a secret
    /// another account must read too (a database server's own TLS key, owned by the
    /// datastore's OS account).
    PrivateAlsoTo(u32),
    /// Regular and bounded only.
    RegularOnly,
}

/// What `fstat` said about an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    /// The permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// The owner's uid.
    pub owner: u32,
}

impl FileFacts {
    /// Refuses a file not owned by the effective uid (root's files are accepted: only root
    /// could have written them) or with any permission for group or others.
    ///
    /// # Errors
    ///
    /// [`PrivateFileProblem::WrongOwner`] or [`PrivateFileProblem::OpenToOthers`], naming `path`.
    pub fn check_private(&self, path: &Path) -> Result<(), PrivateFileError> {
        self.check_private_also_to(path, None)
    }

    /// [`FileFacts::check_private`], also accepting a file owned by `also_owner`.
    ///
    /// # Errors
    ///
    /// As [`FileFacts::check_private`].
    pub fn check_private_also_to(
        &self,
        path: &Path,
        also_owner: Option<u32>,
    ) -> Result<(), PrivateFileError> {
        let euid = nix::unistd::geteuid().as_raw();
        if self.owner != euid && self.owner != 0 && Some(self.owner) != also_owner {
            return Err(PrivateFileError::new(
                path,
                PrivateFileProblem::WrongOwner {
                    owner: self.owner,
                    euid,
                },
            ));
        }
        if self.mode & 0o077 != 0 {
            return Err(PrivateFileError::new(
                path,
                PrivateFileProblem::OpenToOthers { mode: self.mode },
            ));
        }
        Ok(())
    }
}

/// Reads a private file: see the [module docs](self). `max_len` bounds the size in bytes.
///
/// # Errors
///
/// [`PrivateFileError`] naming the path and the [`PrivateFileProblem`].
pub fn read_private_file(path: &Path, max_len: u64) -> Result<PrivateBytes, PrivateFileError> {
    read_file_checked(path, max_len, FileChecks::Private).map(|(bytes, _)| bytes)
}

/// [`read_private_file`] for a secret the datastore's own account must read too (the
/// server's TLS key): also accepted when owned by `also_owner` (that account's uid); every
/// other check is the same (no symlink, regular, no permission for group or others, bounded).
///
/// # Errors
///
/// As [`read_private_file`].
pub fn read_private_file_also_to(
    path: &Path,
    max_len: u64,
    also_owner: Option<u32>,
) -> Result<PrivateBytes, PrivateFileError> {
    let checks = match also_owner {
        Some(uid) => FileChecks::PrivateAlsoTo(uid),
        None => FileChecks::Private,
    };
    read_file_checked(path, max_len, checks).map(|(bytes, _)| bytes)
}

/// [`read_private_file`] as text: the content as a [`Secret`].
///
/// # Errors
///
/// As [`read_private_file`]; [`PrivateFileProblem::NotUtf8`] for a file that is not UTF-8.
pub fn read_private_text(path: &Path, max_len: u64) -> Result<Secret, PrivateFileError> {
    read_private_file(path, max_len)?.into_text(path)
}

/// Opens `path` without following a symlink, examines the open descriptor per `checks`, and
/// reads at most `max_len` bytes; returns them with what `fstat` said.
///
/// # Errors
///
/// [`PrivateFileError`] naming the path and the [`PrivateFileProblem`].
pub fn read_file_checked(
    path: &Path,
    max_len: u64,
    checks: FileChecks,
) -> Result<(PrivateBytes, FileFacts), PrivateFileError> {
    let fail = |p| PrivateFileError::new(path, p);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            fail(match e.kind() {
                std::io::ErrorKind::NotFound => PrivateFileProblem::Missing,
                _ if e.raw_os_error() == Some(nix::libc::ELOOP) => PrivateFileProblem::Symlink,
                _ => PrivateFileProblem::Io(e),
            })
        })?;
    let meta = file
        .metadata()
        .map_err(|e| fail(PrivateFileProblem::Io(e)))?;
    if !meta.file_type().is_file() {
        return Err(fail(PrivateFileProblem::NotRegular));
    }
    let facts = FileFacts {
        mode: meta.mode() & 0o7777,
        owner: meta.uid(),
    };
    match checks {
        FileChecks::Private => facts.check_private(path)?,
        FileChecks::PrivateAlsoTo(uid) => facts.check_private_also_to(path, Some(uid))?,
        FileChecks::RegularOnly => {}
    }
    if meta.len() > max_len {
        return Err(fail(PrivateFileProblem::TooLarge { max: max_len }));
    }
    // The file may grow between fstat and read: read one byte past the bound to notice.
    let mut buf = Vec::with_capacity(meta.len() as usize);
    (&file)
        .take(max_len.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| fail(PrivateFileProblem::Io(e)))?;
    let bytes = PrivateBytes(SecretSlice::from(buf));
    if bytes.expose().len() as u64 > max_len {
        return Err(fail(PrivateFileProblem::TooLarge { max: max_len }));
    }
    Ok((bytes, facts))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_0600_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "pw", "s3cret\n", 0o600);
        assert_eq!(read_private_file(&p, 64).unwrap().expose(), b"s3cret\n");
        assert_eq!(read_private_text(&p, 64).unwrap().expose(), "s3cret\n");
        let p = file(dir.path(), "ro", "x", 0o400);
        assert_eq!(read_private_file(&p, 64).unwrap().expose(), b"x");
    }

    #[test]
    fn a_symlink_is_refused_even_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = file(dir.path(), "pw", "s3cret", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_private_file(&link, 64).unwrap_err();
        assert!(matches!(e.problem, PrivateFileProblem::Symlink), "{e}");
        assert_eq!(e.path, link);
    }

    #[test]
    fn a_file_open_to_group_or_others_is_refused_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o610, 0o602] {
            let p = file(dir.path(), "pw", "s3cret-content", mode);
            let e = read_private_file(&p, 64).unwrap_err();
            assert!(
                matches!(e.problem, PrivateFileProblem::OpenToOthers { mode: m } if m == mode),
                "{mode:o}: {e}"
            );
            let text = e.to_string();
            assert!(text.contains(&p.display().to_string()), "{text}");
            assert!(!text.contains("s3cret-content"), "{text}");
            assert!(!format!("{e:?}").contains("s3cret-content"));
        }
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = read_private_file(&d, 64).unwrap_err();
        assert!(matches!(e.problem, PrivateFileProblem::NotRegular), "{e}");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "big", &"x".repeat(65), 0o600);
        let e = read_private_file(&p, 64).unwrap_err();
        assert!(
            matches!(e.problem, PrivateFileProblem::TooLarge { max: 64 }),
            "{e}"
        );
        let p = file(dir.path(), "fits", &"x".repeat(64), 0o600);
        assert_eq!(read_private_file(&p, 64).unwrap().expose().len(), 64);
    }

    #[test]
    fn a_missing_file_is_named_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_private_file(&dir.path().join("none"), 64).unwrap_err();
        assert!(e.is_missing(), "{e}");
    }

    #[test]
    fn a_file_of_another_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "pw", "s3cret", 0o600);
        let facts = FileFacts {
            mode: 0o600,
            owner: nix::unistd::geteuid().as_raw().wrapping_add(4242),
        };
        let e = facts.check_private(&p).unwrap_err();
        assert!(
            matches!(e.problem, PrivateFileProblem::WrongOwner { .. }),
            "{e}"
        );
        // As root the test can make the file really belong to someone else.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            let e = read_private_file(&p, 64).unwrap_err();
            assert!(
                matches!(
                    e.problem,
                    PrivateFileProblem::WrongOwner { owner: 65534, .. }
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn a_file_of_the_named_account_is_accepted_but_still_only_when_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "key", "k3y-content", 0o600);
        let other = nix::unistd::geteuid().as_raw().wrapping_add(4242);
        let facts = FileFacts {
            mode: 0o600,
            owner: other,
        };
        assert!(facts.check_private_also_to(&p, Some(other)).is_ok());
        assert!(facts.check_private_also_to(&p, None).is_err());
        assert!(facts.check_private_also_to(&p, Some(other + 1)).is_err());
        let open = FileFacts {
            mode: 0o640,
            owner: other,
        };
        let e = open.check_private_also_to(&p, Some(other)).unwrap_err();
        assert!(
            matches!(e.problem, PrivateFileProblem::OpenToOthers { mode: 0o640 }),
            "{e}"
        );
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            assert!(read_private_file(&p, 64).is_err());
            assert_eq!(
                read_private_file_also_to(&p, 64, Some(65534))
                    .unwrap()
                    .expose(),
                b"k3y-content"
            );
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = read_private_file_also_to(&p, 64, Some(65534)).unwrap_err();
            assert!(!e.to_string().contains("k3y-content"), "{e}");
        }
    }

    #[test]
    fn regular_only_reads_a_shared_file_and_reports_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(dir.path(), "info", "guest_id=x\n", 0o644);
        let (bytes, facts) = read_file_checked(&p, 64, FileChecks::RegularOnly).unwrap();
        assert_eq!(bytes.expose(), b"guest_id=x\n");
        assert_eq!(facts.mode, 0o644);
        assert!(facts.check_private(&p).is_err());
    }
}
