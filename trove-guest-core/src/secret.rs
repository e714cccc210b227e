//! Secrets that cannot leak by accident.
//!
//! [`Secret`] has a redacted `Debug`/`Display` and no `Serialize` impl, so a password cannot end
//! up in a log line, an error or a stored file unless code asks for it explicitly with
//! [`Secret::expose`]. Where a credential must travel to a replica inside a wire document, the
//! document holds a [`TransportSecret`], whose field names say so.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A password or other secret string. `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// A random alphanumeric secret of `len` characters from the OS-seeded thread RNG.
    ///
    /// Alphanumeric passwords need no quoting in option files or connection strings; 32
    /// characters carry about 190 bits.
    pub fn random(len: usize) -> Self {
        let value: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect();
        Secret::new(value)
    }

    /// The secret value. Call this only where the value is handed to a server or written to a
    /// 0600 file; never log the result.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        // Length leak only; these are compared in tests, never for authentication.
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

/// A secret that is deliberately carried inside a wire document (for example the replication
/// password a replica needs, inside the snapshot document handed to it by the control plane).
///
/// It serializes as a plain string: use it only in fields whose name says the value is a
/// credential in transit. Its `Debug` is redacted like [`Secret`]. Snapshot files at rest never
/// contain it.
#[derive(Clone, PartialEq, Eq)]
pub struct TransportSecret(pub Secret);

impl fmt::Debug for TransportSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportSecret([REDACTED])")
    }
}

impl Serialize for TransportSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

impl<'de> Deserialize<'de> for TransportSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TransportSecret(Secret::new(String::deserialize(d)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        let t = TransportSecret(s.clone());
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn random_secrets_are_long_distinct_and_alphanumeric() {
        let a = Secret::random(32);
        let b = Secret::random(32);
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a, b);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
