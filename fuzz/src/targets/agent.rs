//! The agent's own parsers: HTTP request bodies, the oslo.messaging envelope, Trove's
//! SecureSerializer, `guest_info.conf` and the agent's configuration.

use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};
use trove_guest_agent::config::AgentConfig;
use trove_guest_agent::fuzzing::{Body, request_body};
use trove_guest_agent::rpc::{GuestInfo, SecureKey, envelope};

use super::documents::snapshot_json;
use crate::inputs;

const FIELDS: &[&str] = &[
    "replica_id",
    "replica_host",
    "snapshot_name",
    "parallel",
    "snapshot_href",
    "size_bytes",
    "sha256",
    "timeout_secs",
    "for_failover",
    "purge_logs",
    "read_only",
    "txn",
    "context",
    "stream",
    "replication_user",
    "detach_replication",
];

pub(crate) fn gen_body(rng: &mut SmallRng) -> Vec<u8> {
    let which = rng.random_range(0..Body::ALL.len());
    let doc = match Body::ALL[which] {
        Body::Attach => snapshot_json(rng),
        Body::Action => json!({"detach_replication": {}}),
        Body::Wait => {
            json!({"txn": {"mariadb_gtid": "0-1-42"}, "timeout_secs": rng.random::<f64>() * 100.0})
        }
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                let f = FIELDS[rng.random_range(0..FIELDS.len())];
                m.insert(f.into(), inputs::json_value(rng, 2));
            }
            Value::Object(m)
        }
    };
    let mut doc = doc;
    if rng.random_bool(0.5) {
        inputs::mutate_json(rng, &mut doc);
    }
    let mut out = vec![which as u8];
    out.extend(inputs::finish(rng, doc.to_string().into_bytes()));
    out
}

/// The first byte picks the endpoint, the rest is the body.
pub(crate) fn run_body(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let which = Body::ALL[usize::from(*first) % Body::ALL.len()];
    if let Err(status) = request_body(which, body) {
        assert!(status == 400 || status == 422, "unexpected status {status}");
    }
}

/// The fixed key the serializer targets use.
fn key() -> SecureKey {
    SecureKey::from_instance_key("fuzzing-instance-key")
}

fn inner(rng: &mut SmallRng, key: &SecureKey, encrypt: bool) -> Value {
    let mut args = serde_json::Map::new();
    for _ in 0..rng.random_range(0..4) {
        let v = match rng.random_range(0..3) {
            0 => json!({"id": inputs::word(rng), "trove_guest": snapshot_json(rng)}),
            1 => json!(inputs::word(rng)),
            _ => inputs::json_value(rng, 2),
        };
        args.insert(
            inputs::word(rng),
            if encrypt {
                Value::String(key.encrypt(&v))
            } else {
                v
            },
        );
    }
    let method = [
        "attach_replica",
        "get_replication_snapshot",
        "detach_replica",
        "get_last_txn",
    ][rng.random_range(0..4)];
    let mut m = json!({"method": method,
        "args": args, "version": "1.0", "_msg_id": inputs::word(rng), "_reply_q": "reply_x", "_unique_id": inputs::word(rng)});
    if encrypt && rng.random_bool(0.5) {
        m["_context_context"] = Value::String(key.encrypt(&json!({"user": "u"})));
    }
    m
}

pub(crate) fn gen_envelope(rng: &mut SmallRng) -> Vec<u8> {
    let key = key();
    let encrypt = rng.random_bool(0.5);
    let mut inner = inner(rng, &key, encrypt);
    if rng.random_bool(0.3) {
        inputs::mutate_json(rng, &mut inner);
    }
    let mut inner_text = inner.to_string().into_bytes();
    if rng.random_bool(0.2) {
        inputs::mutate(rng, &mut inner_text);
    }
    let outer = json!({"oslo.version": if rng.random_bool(0.9) { "2.0" } else { "1.0" },
        "oslo.message": String::from_utf8_lossy(&inner_text)});
    inputs::finish(rng, outer.to_string().into_bytes())
}

pub(crate) fn run_envelope(data: &[u8]) {
    let key = key();
    let _ = envelope::decode(data, None);
    if let Ok(req) = envelope::decode(data, Some(&key)) {
        let _ = req.is_call();
    }
}

pub(crate) fn gen_secure(rng: &mut SmallRng) -> Vec<u8> {
    let key = key();
    let v = inputs::json_value(rng, 3);
    let mut ct = key.encrypt(&v).into_bytes();
    match rng.random_range(0..5) {
        0 => {
            inputs::mutate(rng, &mut ct);
            ct
        }
        1 => {
            // Valid base64 of mutated raw bytes (reaches the cipher and the padding check).
            use std::fmt::Write;
            let mut raw: Vec<u8> = (0..rng.random_range(0..8) * 16)
                .map(|_| rng.random())
                .collect();
            inputs::mutate(rng, &mut raw);
            let mut s = String::new();
            let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            for c in raw.chunks(3) {
                let n = c.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - c.len()));
                for i in 0..=c.len() {
                    let _ = s.write_char(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
                for _ in c.len()..3 {
                    s.push('=');
                }
            }
            s.into_bytes()
        }
        2 => inputs::random_bytes(rng),
        _ => ct,
    }
}

pub(crate) fn run_secure(data: &[u8]) {
    let key = key();
    let text = inputs::text(data).into_owned();
    if let Ok(v) = key.decrypt(&Value::String(text)) {
        // Whatever decrypts encrypts back to the same value.
        assert_eq!(key.decrypt(&Value::String(key.encrypt(&v))).ok(), Some(v));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = key.decrypt(&v);
    }
}

pub(crate) fn gen_guest_info(rng: &mut SmallRng) -> Vec<u8> {
    let mut s = String::from("[DEFAULT]\n");
    for _ in 0..rng.random_range(0..5) {
        let k = [
            "guest_id",
            "instance_rpc_encr_key",
            "datastore_manager",
            "tenant_id",
            "# x",
            "; y",
        ][rng.random_range(0..6)];
        let sep = [" = ", "=", ": ", " "][rng.random_range(0..4)];
        s.push_str(&format!("{k}{sep}{}\n", inputs::word(rng)));
    }
    inputs::finish(rng, s.into_bytes())
}

pub(crate) fn run_guest_info(data: &[u8]) {
    if let Ok(g) = GuestInfo::parse(&inputs::text(data)) {
        assert!(!g.guest_id.is_empty());
    }
}

const CONFIGS: &[&str] = &[
    include_str!("../../../docs/examples/agent-container.toml"),
    "instance_id = \"i1\"\nlisten = \"127.0.0.1:8780\"\n\n[datastore]\ntype = \"postgresql\"\ndata_dir = \"/srv/pg/data\"\nconfig_dir = \"/srv/pg/conf.d\"\nwork_dir = \"/srv/pg/work\"\nserver_id = 2\n\n[datastore.admin]\nhost = \"127.0.0.1\"\nport = 5432\nuser = \"postgres\"\n\n[service]\nkind = \"systemd\"\nunit = \"postgresql.service\"\n\n[snapshot_store]\nurl = \"file:///srv/snapshots\"\n",
];

pub(crate) fn gen_config(rng: &mut SmallRng) -> Vec<u8> {
    let base = CONFIGS[rng.random_range(0..CONFIGS.len())];
    let mut doc = base.to_owned();
    if rng.random_bool(0.3) {
        // A whole-line change keeps the rest valid TOML.
        let mut lines: Vec<String> = doc.lines().map(str::to_owned).collect();
        let i = rng.random_range(0..lines.len());
        if let Some((k, _)) = lines[i].clone().split_once(" = ") {
            let v = match rng.random_range(0..5) {
                0 => format!("{}", rng.random::<i64>()),
                1 => format!("\"{}\"", inputs::token(rng).escape_default()),
                2 => "[1, [2, [3]]]".into(),
                3 => "{ a = 1 }".into(),
                _ => "\"0.0.0.0:80\"".into(),
            };
            lines[i] = format!("{k} = {v}");
        }
        doc = lines.join("\n");
    }
    if rng.random_bool(0.1) {
        let depth = inputs::deep(rng);
        doc = format!("a = {}1{}", "[".repeat(depth), "]".repeat(depth));
    }
    inputs::finish(rng, doc.into_bytes())
}

pub(crate) fn run_config(data: &[u8]) {
    let text = inputs::text(data);
    let _ = AgentConfig::parse(&text);
    if text.starts_with('{') {
        let _ = AgentConfig::parse_json(&text);
    }
}
