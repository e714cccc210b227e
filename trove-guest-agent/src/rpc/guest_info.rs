//! Trove's `guest_info.conf`: the instance id and the per-instance RPC key.

use std::path::Path;

use super::secure::SecureKey;

/// What the agent reads from Trove's `guest_info.conf` (`[DEFAULT]` section:
/// `guest_id`, `instance_rpc_encr_key`). `Debug` never shows the key.
#[derive(Clone)]
#[non_exhaustive]
pub struct GuestInfo {
    /// The instance id: the queue is `guestagent.<guest_id>`.
    pub guest_id: String,
    /// The cipher key, when the instance has one; without it messages are plaintext.
    pub key: Option<SecureKey>,
}

impl std::fmt::Debug for GuestInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestInfo")
            .field("guest_id", &self.guest_id)
            .field("secure", &self.key.is_some())
            .finish()
    }
}

/// Why `guest_info.conf` could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestInfoError {
    /// The file could not be read, or was refused: a symlink, not a regular file, too large,
    /// or (holding the key) not private.
    #[error("cannot use guest info: {0}")]
    File(#[from] trove_guest_core::private_file::PrivateFileError),
    /// The file is not UTF-8.
    #[error("guest info is not UTF-8 text")]
    NotUtf8,
    /// No `guest_id`.
    #[error("guest info has no guest_id")]
    NoGuestId,
}

impl GuestInfo {
    /// An instance `guest_id` with the instance key `instance_key` (none: plaintext).
    pub fn new(guest_id: impl Into<String>, instance_key: Option<&str>) -> Self {
        GuestInfo {
            guest_id: guest_id.into(),
            key: instance_key.map(SecureKey::from_instance_key),
        }
    }

    /// Parses the text of a `guest_info.conf` (INI; `key = value` or `key: value`; comments).
    ///
    /// # Errors
    ///
    /// [`GuestInfoError::NoGuestId`] without a `guest_id`.
    pub fn parse(text: &str) -> Result<Self, GuestInfoError> {
        let mut guest_id = None;
        let mut key = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty()
                || line.starts_with('#')
                || line.starts_with(';')
                || line.starts_with('[')
            {
                continue;
            }
            let Some((k, v)) = line.split_once(['=', ':']) else {
                continue;
            };
            match k.trim() {
                "guest_id" => guest_id = Some(v.trim().to_owned()),
                "instance_rpc_encr_key" if !v.trim().is_empty() => {
                    key = Some(SecureKey::from_instance_key(v.trim()))
                }
                _ => {}
            }
        }
        Ok(GuestInfo {
            guest_id: guest_id
                .filter(|g| !g.is_empty())
                .ok_or(GuestInfoError::NoGuestId)?,
            key,
        })
    }

    /// Reads `path` (no symlink, a regular file of at most 64 KiB); a file holding a key must
    /// also be private: owned by the agent's uid (or root), mode 0600 or stricter (see
    /// [`trove_guest_core::private_file`]).
    ///
    /// # Errors
    ///
    /// A refused or unreadable file, loose permissions on a file with a key, no `guest_id`.
    pub fn load(path: &Path) -> Result<Self, GuestInfoError> {
        use trove_guest_core::private_file::{FileChecks, read_file_checked};
        let (bytes, facts) = read_file_checked(path, MAX_GUEST_INFO_LEN, FileChecks::RegularOnly)?;
        let text = std::str::from_utf8(bytes.expose()).map_err(|_| GuestInfoError::NotUtf8)?;
        let info = Self::parse(text)?;
        if info.key.is_some() {
            facts.check_private(path)?;
        }
        Ok(info)
    }
}

/// The largest `guest_info.conf` read.
const MAX_GUEST_INFO_LEN: u64 = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trove_file() {
        let g = GuestInfo::parse("[DEFAULT]\nguest_id=abc-1\ndatastore_manager = mariadb\ninstance_rpc_encr_key = k123\n").unwrap();
        assert_eq!(g.guest_id, "abc-1");
        assert!(g.key.is_some());
        assert!(!format!("{g:?}").contains("k123"));
        assert!(GuestInfo::parse("guest_id = x\n").unwrap().key.is_none());
        assert!(GuestInfo::parse("").is_err());
    }
}
