//! The oslo.messaging 2.0 envelope: requests as Trove's client sends them, replies as Trove's
//! client expects them.

use std::collections::{HashSet, VecDeque};

use serde_json::{Map, Value, json};

use super::secure::{SecureError, SecureKey};

/// Why a delivery is not a request this server can decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not JSON, not envelope 2.0, or without a method.
    #[error("malformed oslo.messaging message: {0}")]
    Malformed(&'static str),
    /// An argument or the context could not be decrypted.
    #[error("cannot decrypt {what}: {source}")]
    Decrypt {
        /// `argument <name>` or `context`.
        what: String,
        /// The typed cause.
        source: SecureError,
    },
}

/// One decoded request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// The method name.
    pub method: String,
    /// The keyword arguments, decrypted.
    pub args: Map<String, Value>,
    /// The requested API version (`1.0`, `1.1` for `prepare`).
    pub version: Option<String>,
    /// For a call: the id to answer with.
    pub msg_id: Option<String>,
    /// For a call: the queue to answer to.
    pub reply_q: Option<String>,
    /// The message's unique id, for dropping redeliveries and duplicates.
    pub unique_id: Option<String>,
}

impl Request {
    /// A cast of `method` with `args` (an object), for tests.
    #[cfg(test)]
    pub(crate) fn cast_for_test(method: &str, args: Value) -> Request {
        let Value::Object(args) = args else {
            panic!("arguments are an object")
        };
        Request {
            method: method.into(),
            args,
            version: None,
            msg_id: None,
            reply_q: None,
            unique_id: None,
        }
    }

    /// A call (wants a reply) rather than a cast.
    pub fn is_call(&self) -> bool {
        self.msg_id.is_some() && self.reply_q.is_some()
    }
}

/// What could be read of a request that failed to decode: enough to answer a call.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReplyTo {
    /// The request's method, if readable.
    pub method: Option<String>,
    /// The request's `_msg_id`.
    pub msg_id: Option<String>,
    /// The request's `_reply_q`.
    pub reply_q: Option<String>,
    /// The request's `_unique_id`.
    pub unique_id: Option<String>,
}

/// Decodes an AMQP body. On failure returns what is needed to answer a call with a failure.
///
/// # Errors
///
/// [`EnvelopeError`] with the [`ReplyTo`] read so far.
pub fn decode(
    body: &[u8],
    key: Option<&SecureKey>,
) -> Result<Request, (EnvelopeError, Box<ReplyTo>)> {
    let outer: Value = serde_json::from_slice(body)
        .map_err(|_| (EnvelopeError::Malformed("body is not JSON"), Box::default()))?;
    let inner: Value = match (outer.get("oslo.version"), outer.get("oslo.message")) {
        (Some(Value::String(v)), Some(Value::String(m))) if v == "2.0" => serde_json::from_str(m)
            .map_err(|_| {
            (
                EnvelopeError::Malformed("oslo.message is not JSON"),
                Box::default(),
            )
        })?,
        _ => {
            return Err((
                EnvelopeError::Malformed("not an oslo.messaging 2.0 envelope"),
                Box::default(),
            ));
        }
    };
    let s = |k: &str| inner.get(k).and_then(Value::as_str).map(str::to_owned);
    let reply_to = ReplyTo {
        method: s("method"),
        msg_id: s("_msg_id"),
        reply_q: s("_reply_q"),
        unique_id: s("_unique_id"),
    };
    let Some(method) = reply_to.method.clone() else {
        return Err((EnvelopeError::Malformed("no method"), Box::new(reply_to)));
    };
    let mut args = match inner.get("args") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err((
                EnvelopeError::Malformed("args is not a dict"),
                Box::new(reply_to),
            ));
        }
    };
    if let Some(key) = key {
        // The context is decrypted to check the key even though the agent uses none of it.
        if let Some(ctx) = inner.get("_context_context") {
            key.decrypt(ctx).map_err(|source| {
                (
                    EnvelopeError::Decrypt {
                        what: "context".into(),
                        source,
                    },
                    Box::new(reply_to.clone()),
                )
            })?;
        }
        for (name, value) in args.iter_mut() {
            *value = key.decrypt(value).map_err(|source| {
                (
                    EnvelopeError::Decrypt {
                        what: format!("argument {name}"),
                        source,
                    },
                    Box::new(reply_to.clone()),
                )
            })?;
        }
    }
    Ok(Request {
        method,
        args,
        version: s("version"),
        msg_id: reply_to.msg_id,
        reply_q: reply_to.reply_q,
        unique_id: reply_to.unique_id,
    })
}

/// A new 32-hex-digit id.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    hex::encode(b)
}

/// An oslo.messaging 2.0 envelope around `inner`.
pub(crate) fn wrap(inner: Value) -> Vec<u8> {
    let msg = json!({"oslo.version": "2.0", "oslo.message": inner.to_string()});
    msg.to_string().into_bytes()
}

/// The body of a successful reply; `result` is encrypted when `key` is set (even `null`).
pub fn reply_body(msg_id: &str, result: &Value, key: Option<&SecureKey>) -> Vec<u8> {
    let result = match key {
        Some(k) => Value::String(k.encrypt(result)),
        None => result.clone(),
    };
    wrap(json!({
        "result": result,
        "failure": null,
        "ending": true,
        "_msg_id": msg_id,
        "_unique_id": new_id(),
    }))
}

/// A failure as Trove's client deserializes it (`failure` is a JSON string, never encrypted).
/// A `module` of `trove.common.exception` rebuilds that class; any other gives `RemoteError`;
/// Trove's guest API turns both into `GuestError`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failure {
    /// The exception class name.
    pub class: String,
    /// The Python module of the class.
    pub module: String,
    /// The message (never contains a secret).
    pub message: String,
}

impl Failure {
    /// A failure of class `class` in `trove.common.exception`.
    pub fn trove(class: &str, message: impl Into<String>) -> Self {
        Failure {
            class: class.into(),
            module: "trove.common.exception".into(),
            message: message.into(),
        }
    }

    /// A failure that Trove's client reports as `RemoteError` (a class it cannot rebuild).
    pub fn remote(class: &str, message: impl Into<String>) -> Self {
        Failure {
            class: class.into(),
            module: "trove_guest_agent.rpc".into(),
            message: message.into(),
        }
    }
}

/// The body of a failure reply.
pub fn failure_body(msg_id: &str, failure: &Failure) -> Vec<u8> {
    let f = json!({
        "class": failure.class,
        "module": failure.module,
        "message": failure.message,
        "tb": [format!("{}: {}", failure.class, failure.message)],
        "args": [failure.message],
        "kwargs": {},
    });
    wrap(json!({
        "result": null,
        "failure": f.to_string(),
        "ending": true,
        "_msg_id": msg_id,
        "_unique_id": new_id(),
    }))
}

/// The `_unique_id`s seen recently, to drop duplicates (bounded).
#[derive(Debug)]
pub struct SeenIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    cap: usize,
}

impl SeenIds {
    /// Remembers at most `cap` ids.
    pub fn new(cap: usize) -> Self {
        SeenIds {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// True the first time `id` is seen, false for a duplicate.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(inner: Value) -> Vec<u8> {
        wrap(inner)
    }

    #[test]
    fn decodes_plain_call_and_cast() {
        let body = envelope(
            json!({"method": "wait_for_txn", "args": {"txn": "0-1-5"}, "version": "1.0",
            "_msg_id": "m1", "_reply_q": "reply_x", "_timeout": null, "_unique_id": "u1",
            "_context_auth_token": "tok"}),
        );
        let r = decode(&body, None).unwrap();
        assert!(r.is_call());
        assert_eq!(r.args["txn"], "0-1-5");
        let cast = decode(
            &envelope(json!({"method": "prepare", "args": {}, "_unique_id": "u2"})),
            None,
        )
        .unwrap();
        assert!(!cast.is_call());
    }

    #[test]
    fn decodes_secure_and_reports_wrong_key() {
        let k = SecureKey::from_instance_key("k1");
        let body = envelope(
            json!({"method": "make_read_only", "args": {"read_only": k.encrypt(&json!(true))},
            "_context_context": k.encrypt(&json!({"user": "u"})), "_msg_id": "m", "_reply_q": "q"}),
        );
        assert_eq!(decode(&body, Some(&k)).unwrap().args["read_only"], true);
        let wrong = SecureKey::from_instance_key("k2");
        let (err, to) = decode(&body, Some(&wrong)).unwrap_err();
        assert!(matches!(err, EnvelopeError::Decrypt { .. }));
        assert_eq!(to.msg_id.as_deref(), Some("m"));
    }

    #[test]
    fn replies_round_trip() {
        let k = SecureKey::from_instance_key("k1");
        let body: Value = serde_json::from_slice(&reply_body("m", &json!(null), Some(&k))).unwrap();
        let inner: Value = serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
        assert_eq!(k.decrypt(&inner["result"]).unwrap(), Value::Null);
        assert_eq!(inner["_msg_id"], "m");
        assert_eq!(inner["ending"], true);
        let body: Value =
            serde_json::from_slice(&failure_body("m", &Failure::trove("GuestError", "x"))).unwrap();
        let inner: Value = serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
        let f: Value = serde_json::from_str(inner["failure"].as_str().unwrap()).unwrap();
        assert_eq!(f["module"], "trove.common.exception");
    }

    #[test]
    fn duplicates_dropped_bounded() {
        let mut s = SeenIds::new(2);
        assert!(s.first_time("a"));
        assert!(!s.first_time("a"));
        assert!(s.first_time("b"));
        assert!(s.first_time("c"));
        assert!(s.first_time("a"));
    }
}
