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
    /// The file could not be read.
    #[error("cannot read guest info: {0}")]
    Io(#[from] std::io::Error),
    /// The file holds the key but is readable by others than its owner.
    #[error("guest info holds the RPC key but its mode is {mode:o}, not 0600")]
    Permissions {
        /// The file mode.
        mode: u32,
    },
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

    /// Reads `path`; a file holding a key must be mode 0600 (or stricter).
    ///
    /// # Errors
    ///
    /// I/O errors, loose permissions on a file with a key, no `guest_id`.
    pub fn load(path: &Path) -> Result<Self, GuestInfoError> {
        use std::os::unix::fs::PermissionsExt;
        let text = std::fs::read_to_string(path)?;
        let info = Self::parse(&text)?;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if info.key.is_some() && mode & 0o077 != 0 {
            return Err(GuestInfoError::Permissions { mode });
        }
        Ok(info)
    }
}

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
