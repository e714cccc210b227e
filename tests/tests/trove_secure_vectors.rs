//! Trove's SecureSerializer against ours, both ways: vectors made at test time by Trove's own
//! code (`trove.common.rpc.secure_serializer`, `trove.common.crypto_utils`) in the venv.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use trove_guest_agent::rpc::{SecureError, SecureKey};
use trove_guest_tests::trove::trove_venv;

const SCRIPT: &str = r#"
import json, sys
from trove.common import crypto_utils as cu
from trove.common.rpc.secure_serializer import SecureSerializer
from oslo_messaging import serializer as om
req = json.loads(sys.stdin.read())
key = req["key"]
ser = SecureSerializer(om.NoOpSerializer(), key)
out = {
    "entities": [ser.serialize_entity(None, v) for v in req["values"]],
    "context": ser.serialize_context({"user": "u1", "project_id": "p1"}),
    "decrypted": [json.loads(cu.decrypt_data(cu.decode_data(c), key)) for c in req["ours"]],
}
print(json.dumps(out))
"#;

fn python(req: &Value) -> Value {
    let venv = trove_venv();
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", SCRIPT])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run Trove's Python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("send to Python");
    let out = child.wait_with_output().expect("Python's answer");
    assert!(out.status.success(), "Trove's Python failed");
    serde_json::from_slice(&out.stdout).expect("JSON from Python")
}

#[test]
fn trove_and_ours_agree_both_ways() {
    let instance_key = "5f0e9c2d8a7b4e13a6c1d0f9e8b7a6c5";
    let key = SecureKey::from_instance_key(instance_key);
    let values = json!([
        null, true, 42, 2.5, "0-1-42", "é ünïcödé",
        {"id": "b1", "datastore": "mariadb", "nested": {"list": [1, 2, 3]}},
        "[mysqld]\nlog_bin = on\n",
        "x".repeat(1000),
    ]);
    let ours: Vec<String> = values
        .as_array()
        .expect("array")
        .iter()
        .map(|v| key.encrypt(v))
        .collect();
    let out = python(&json!({"key": instance_key, "values": values, "ours": ours}));
    // Trove's ciphertexts decrypt with ours.
    for (c, v) in out["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .zip(values.as_array().expect("values"))
    {
        assert_eq!(&key.decrypt(c).expect("decrypt Trove's ciphertext"), v);
    }
    // Ours decrypt with Trove's.
    assert_eq!(&out["decrypted"], &values);
    // Trove's context: {"context": <ciphertext>}.
    let ctx = key
        .decrypt(&out["context"]["context"])
        .expect("decrypt Trove's context");
    assert_eq!(ctx["user"], "u1");
    // A wrong key is a typed failure, never a panic; so is a truncated ciphertext.
    let wrong = SecureKey::from_instance_key("00000000000000000000000000000000");
    assert!(matches!(
        wrong.decrypt(&out["entities"][6]),
        Err(SecureError::Rejected)
    ));
    let c = out["entities"][6].as_str().expect("string");
    assert!(key.decrypt(&json!(&c[..c.len() - 8])).is_err());
}
