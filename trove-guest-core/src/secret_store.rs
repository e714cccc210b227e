//! Where replication passwords wait for their replica: the [`SecretStore`] contract and the
//! built-in [`DirectorySecretStore`].
//!
//! A master puts the password it made for a replica into its secret store and hands out only the
//! reference (`replication.password_ref` of the snapshot document); the replica resolves the
//! reference through its own secret store. In a deployment both point at one shared store (Vault,
//! Barbican, a KMS-backed service: embedders implement [`SecretStore`]); the directory store
//! serves a shared file system, and tests.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::Error;
use crate::secret::Secret;

/// The longest reference the directory store accepts.
pub const MAX_REFERENCE_LEN: usize = 128;

/// Why a secret store could not do what was asked. Messages name the reference, never the
/// secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStoreError {
    /// No secret is stored under the reference.
    #[error("no secret under reference {reference:?}")]
    Missing {
        /// The reference looked up.
        reference: String,
    },
    /// The reference is not one this store can hold (empty, too long, a path, odd characters).
    #[error("bad secret reference {reference:?}: {reason}")]
    BadReference {
        /// The reference given (shortened when long).
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The secret exists but cannot be read (permissions, I/O, not UTF-8, too open a mode).
    #[error("secret {reference:?} is unreadable: {reason}")]
    Unreadable {
        /// The reference.
        reference: String,
        /// Why (never the content).
        reason: String,
    },
    /// Storing or deleting failed.
    #[error("secret store failed to {action} {reference:?}: {reason}")]
    Backend {
        /// `put` or `delete`.
        action: &'static str,
        /// The reference.
        reference: String,
        /// What went wrong.
        reason: String,
    },
}

impl From<SecretStoreError> for Error {
    fn from(e: SecretStoreError) -> Self {
        match e {
            SecretStoreError::Missing { reference } => Error::NotFound {
                what: format!("secret {reference:?} in the secret store"),
            },
            SecretStoreError::BadReference { .. } => {
                Error::invalid("secret reference", e.to_string())
            }
            other => Error::Store {
                message: other.to_string(),
                source: None,
            },
        }
    }
}

/// A store of secrets addressed by reference. Object safe: agents hold an
/// `Arc<dyn SecretStore>`.
#[async_trait]
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// Stores `secret` under a reference derived from `name` (replacing what was there) and
    /// returns the reference to hand out.
    ///
    /// # Errors
    ///
    /// [`SecretStoreError::BadReference`] for a name the store cannot hold;
    /// [`SecretStoreError::Backend`] when storing fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a cancelled put leaves either the old secret or the new one.
    async fn put(&self, name: &str, secret: &Secret) -> Result<String, SecretStoreError>;

    /// The secret stored under `reference`.
    ///
    /// # Errors
    ///
    /// [`SecretStoreError::Missing`], [`SecretStoreError::Unreadable`],
    /// [`SecretStoreError::BadReference`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn get(&self, reference: &str) -> Result<Secret, SecretStoreError>;

    /// Deletes the secret under `reference`. Idempotent: deleting a missing secret succeeds.
    ///
    /// # Errors
    ///
    /// [`SecretStoreError::BadReference`], [`SecretStoreError::Backend`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a repeated call finishes the work.
    async fn delete(&self, reference: &str) -> Result<(), SecretStoreError>;

    /// The references of the secrets whose reference starts with `prefix`, so that a demoted
    /// master can delete every secret it handed out.
    ///
    /// # Errors
    ///
    /// [`SecretStoreError::Backend`] when listing fails or (the default) is not supported.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, SecretStoreError> {
        Err(SecretStoreError::Backend {
            action: "list",
            reference: prefix.to_owned(),
            reason: "this secret store cannot list its secrets".into(),
        })
    }
}

/// Checks a reference of the directory store: 1 to [`MAX_REFERENCE_LEN`] ASCII letters, digits,
/// `_`, `-` and `.`, not starting with `.` (no paths, no hidden or temporary files).
///
/// # Errors
///
/// [`SecretStoreError::BadReference`].
pub fn validate_reference(reference: &str) -> Result<(), SecretStoreError> {
    let bad = |reason: &str| SecretStoreError::BadReference {
        reference: reference.chars().take(40).collect(),
        reason: reason.to_owned(),
    };
    if reference.is_empty() {
        return Err(bad("empty"));
    }
    if reference.len() > MAX_REFERENCE_LEN {
        return Err(bad("too long"));
    }
    if reference.starts_with('.') {
        return Err(bad("starts with '.'"));
    }
    if !reference
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(bad(
            "only ASCII letters, digits, '_', '-' and '.' are allowed",
        ));
    }
    Ok(())
}

/// The built-in secret store: one 0600 file per secret in a 0700 directory, written atomically
/// (temporary file, fsync, rename). The reference is the file name.
#[derive(Debug, Clone)]
pub struct DirectorySecretStore {
    dir: PathBuf,
}

impl DirectorySecretStore {
    /// A store in `dir`, created 0700 when missing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be created; [`Error::InvalidInput`] when it
    /// exists with access for group or others.
    pub fn open(dir: impl Into<PathBuf>) -> crate::Result<Self> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create secret directory {}", dir.display()), e))?;
        let mode = std::fs::metadata(&dir)
            .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::invalid(
                "secret directory",
                format!(
                    "{} has mode {:o}; it must not be open to group or others (0700)",
                    dir.display(),
                    mode & 0o777
                ),
            ));
        }
        Ok(DirectorySecretStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, reference: &str) -> Result<PathBuf, SecretStoreError> {
        validate_reference(reference)?;
        Ok(self.dir.join(reference))
    }
}

fn backend(action: &'static str, reference: &str, e: impl fmt::Display) -> SecretStoreError {
    SecretStoreError::Backend {
        action,
        reference: reference.to_owned(),
        reason: e.to_string(),
    }
}

/// The largest secret [`DirectorySecretStore::get`] reads.
const MAX_SECRET_LEN: u64 = 64 << 10;

#[async_trait]
impl SecretStore for DirectorySecretStore {
    async fn put(&self, name: &str, secret: &Secret) -> Result<String, SecretStoreError> {
        let path = self.path(name)?;
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            // A stale temp file (an earlier put that died) may have other permissions: the
            // secret goes only into a file this call creates, 0600 from the start.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(secret.expose().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            backend("put", name, e)
        })?;
        Ok(name.to_owned())
    }

    async fn get(&self, reference: &str) -> Result<Secret, SecretStoreError> {
        let path = self.path(reference)?;
        let unreadable = |reason: String| SecretStoreError::Unreadable {
            reference: reference.to_owned(),
            reason,
        };
        match crate::private_file::read_private_text(&path, MAX_SECRET_LEN) {
            Ok(secret) => Ok(secret),
            Err(e) if e.is_missing() => Err(SecretStoreError::Missing {
                reference: reference.to_owned(),
            }),
            Err(e) => Err(unreadable(e.problem.to_string())),
        }
    }

    async fn delete(&self, reference: &str) -> Result<(), SecretStoreError> {
        let path = self.path(reference)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend("delete", reference, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SecretStoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| backend("list", prefix, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| backend("list", prefix, e))?;
            if let Some(name) = entry.file_name().to_str()
                && name.starts_with(prefix)
                && validate_reference(name).is_ok()
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_round_trip_in_0600_files_of_a_0700_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::open(tmp.path().join("secrets")).unwrap();
        let dir_mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let r = store.put("repl_a", &Secret::new("pw-1")).await.unwrap();
        let mode = std::fs::metadata(store.dir().join(&r))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.get(&r).await.unwrap().expose(), "pw-1");
        store.put("repl_a", &Secret::new("pw-2")).await.unwrap();
        assert_eq!(store.get(&r).await.unwrap().expose(), "pw-2");
        assert_eq!(
            store.list("repl_").await.unwrap(),
            vec!["repl_a".to_owned()]
        );
        store.delete(&r).await.unwrap();
        store.delete(&r).await.unwrap();
        assert!(matches!(
            store.get(&r).await,
            Err(SecretStoreError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn references_that_could_leave_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::open(tmp.path().join("s")).unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "..", "a\0b", &"x".repeat(200)] {
            assert!(
                matches!(
                    store.get(bad).await,
                    Err(SecretStoreError::BadReference { .. })
                ),
                "{bad:?}"
            );
            assert!(store.put(bad, &Secret::new("s")).await.is_err(), "{bad:?}");
            assert!(store.delete(bad).await.is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_secret_open_to_others_is_unreadable_and_errors_never_show_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirectorySecretStore::open(tmp.path().join("s")).unwrap();
        store
            .put("open", &Secret::new("do-not-show-me"))
            .await
            .unwrap();
        std::fs::set_permissions(
            store.dir().join("open"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let e = store.get("open").await.unwrap_err();
        assert!(matches!(e, SecretStoreError::Unreadable { .. }));
        assert!(!e.to_string().contains("do-not-show-me"));
        assert!(!format!("{e:?}").contains("do-not-show-me"));
    }

    #[test]
    fn an_open_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(DirectorySecretStore::open(&dir).is_err());
    }
}
