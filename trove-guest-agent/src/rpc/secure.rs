//! Trove's `SecureSerializer`: AES-256-CBC over the JSON of each value.
//!
//! Trove (`enable_secure_rpc_messaging`, on by default) gives each guest a 32-character
//! `instance_rpc_encr_key`. The cipher key is the 32 ASCII bytes of the lowercase MD5 hex digest
//! of that key; every encrypted value is `base64(IV || AES-256-CBC(PKCS#7(json(value))))` with a
//! fresh random 16-byte IV. Encrypted: each argument value, the context (`_context_context`) and
//! each reply's result. Not encrypted: method, version, argument names, ids and failures.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use rand::RngCore;
use serde_json::Value;

type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

const IV_LEN: usize = 16;

/// Why a value could not be decrypted. Carries no key material and no plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// The value is not a string (Trove sends each encrypted value as a base64 string).
    #[error("encrypted value is not a string")]
    NotAString,
    /// The string is not standard base64.
    #[error("encrypted value is not valid base64")]
    BadBase64,
    /// Shorter than an IV plus one block, or not a whole number of blocks.
    #[error("encrypted value is truncated ({len} bytes after base64)")]
    Truncated {
        /// The decoded length.
        len: usize,
    },
    /// Bad padding or a plaintext that is not JSON: a wrong key or a corrupted ciphertext. The
    /// two are deliberately one answer, so that replies are no padding oracle.
    #[error("cannot decrypt: wrong instance key or corrupted ciphertext")]
    Rejected,
}

/// The per-instance cipher key. Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct SecureKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SecureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecureKey(<redacted>)")
    }
}

impl SecureKey {
    /// The cipher key for Trove's `instance_rpc_encr_key` (the MD5 hex digest of it, as ASCII).
    pub fn from_instance_key(instance_key: &str) -> Self {
        let digest = Md5::digest(instance_key.as_bytes());
        let hex = hex::encode(digest);
        let mut key = [0u8; 32];
        key.copy_from_slice(hex.as_bytes());
        SecureKey { key }
    }

    /// Encrypts the JSON of `value` with a fresh random IV.
    pub fn encrypt(&self, value: &Value) -> String {
        let mut iv = [0u8; IV_LEN];
        rand::rng().fill_bytes(&mut iv);
        self.encrypt_with_iv(value, &iv)
    }

    fn encrypt_with_iv(&self, value: &Value, iv: &[u8; IV_LEN]) -> String {
        let plain = python_json(value);
        let ct =
            Enc::new(&self.key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes());
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(iv);
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    /// Decrypts one encrypted value back to JSON.
    ///
    /// # Errors
    ///
    /// A typed [`SecureError`] for a non-string, bad base64, truncated ciphertext, or a wrong key
    /// / corrupted ciphertext ([`SecureError::Rejected`]); never panics.
    pub fn decrypt(&self, value: &Value) -> Result<Value, SecureError> {
        let s = value.as_str().ok_or(SecureError::NotAString)?;
        let raw = B64.decode(s.trim()).map_err(|_| SecureError::BadBase64)?;
        if raw.len() < 2 * IV_LEN || raw.len() % IV_LEN != 0 {
            return Err(SecureError::Truncated { len: raw.len() });
        }
        let (iv, ct) = raw.split_at(IV_LEN);
        let iv: [u8; IV_LEN] = iv
            .try_into()
            .map_err(|_| SecureError::Truncated { len: raw.len() })?;
        let plain = Dec::new(&self.key.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(|_| SecureError::Rejected);
        // One outcome for every failure past the length checks (no padding oracle).
        plain
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or(SecureError::Rejected)
    }
}

/// JSON text as Python's `json.dumps` writes it (`", "` and `": "` separators, ASCII escapes), so
/// that a Python peer sees exactly what its own guest would send.
pub(crate) fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_py(value, &mut out);
    out
}

fn write_py(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_str(k, out);
                out.push_str(": ");
                write_py(v, out);
            }
            out.push('}');
        }
        Value::String(s) => write_py_str(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_py_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_fresh_iv() {
        let k = SecureKey::from_instance_key("0123456789abcdef0123456789abcdef");
        let v = json!({"a": [1, 2.5, null, "é\n"], "b": true});
        let c1 = k.encrypt(&v);
        let c2 = k.encrypt(&v);
        assert_ne!(c1, c2);
        assert_eq!(k.decrypt(&Value::String(c1)).unwrap(), v);
        assert_eq!(k.decrypt(&Value::String(c2)).unwrap(), v);
        assert!(!format!("{k:?}").contains("0123"));
    }

    #[test]
    fn key_is_md5_hex_ascii() {
        let k = SecureKey::from_instance_key("abc");
        assert_eq!(&k.key, b"900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn python_separators() {
        assert_eq!(
            python_json(&json!({"a": [1, "x"], "b": null})),
            r#"{"a": [1, "x"], "b": null}"#
        );
        assert_eq!(python_json(&json!("é")), r#""\u00e9""#);
    }

    #[test]
    fn failures_are_typed() {
        let k = SecureKey::from_instance_key("right-key-right-key-right-key-12");
        let wrong = SecureKey::from_instance_key("wrong-key-wrong-key-wrong-key-12");
        let c = k.encrypt(&json!({"x": "some value long enough for two blocks"}));
        assert!(matches!(
            wrong.decrypt(&Value::String(c.clone())),
            Err(SecureError::Rejected)
        ));
        let raw = B64.decode(&c).unwrap();
        let short = B64.encode(&raw[..raw.len() - 5]);
        assert!(matches!(
            k.decrypt(&Value::String(short)),
            Err(SecureError::Truncated { .. })
        ));
        let iv_only = B64.encode(&raw[..16]);
        assert!(matches!(
            k.decrypt(&Value::String(iv_only)),
            Err(SecureError::Truncated { .. })
        ));
        assert_eq!(
            k.decrypt(&json!("***not base64***")),
            Err(SecureError::BadBase64)
        );
        assert_eq!(k.decrypt(&json!(5)), Err(SecureError::NotAString));
        assert_eq!(
            k.decrypt(&json!("")),
            Err(SecureError::Truncated { len: 0 })
        );
    }
}
