//! Replication positions: MariaDB GTID lists, MySQL GTID sets, LSNs, binlog coordinates and
//! the position forms of the RPC translation.

use rand::Rng;
use rand::rngs::SmallRng;
use trove_guest_core::{DatastoreKind, Lsn, MariaDbGtidList, MysqlGtidSet, ReplicationPosition};

use crate::inputs;

/// Two inputs in one: split at the first `\x01`.
pub(crate) fn two(data: &[u8]) -> (String, String) {
    let t = inputs::text(data);
    match t.split_once('\u{1}') {
        Some((a, b)) => (a.to_owned(), b.to_owned()),
        None => (t.into_owned(), String::new()),
    }
}

fn num(rng: &mut SmallRng) -> String {
    match rng.random_range(0..8) {
        0 => inputs::token(rng).to_owned(),
        1 => u64::MAX.to_string(),
        2 => u32::MAX.to_string(),
        _ => rng.random_range(0..1000u64).to_string(),
    }
}

fn gtid_list(rng: &mut SmallRng) -> String {
    (0..rng.random_range(0..5))
        .map(|_| format!("{}-{}-{}", num(rng), num(rng), num(rng)))
        .collect::<Vec<_>>()
        .join(if rng.random_bool(0.9) { "," } else { ", " })
}

pub(crate) fn gen_gtid_list(rng: &mut SmallRng) -> Vec<u8> {
    let doc = format!("{}\u{1}{}", gtid_list(rng), gtid_list(rng));
    inputs::finish(rng, doc.into_bytes())
}

pub(crate) fn run_gtid_list(data: &[u8]) {
    let (a, b) = two(data);
    let a: Option<MariaDbGtidList> = a.parse().ok();
    let b: Option<MariaDbGtidList> = b.parse().ok();
    for l in [&a, &b].into_iter().flatten() {
        let back: MariaDbGtidList = l.to_string().parse().expect("a printed GTID list parses");
        assert_eq!(&back, l, "GTID list round trip");
        assert!(l.contains(l));
    }
    if let (Some(a), Some(b)) = (&a, &b) {
        let _ = (a.contains(b), b.contains(a));
    }
}

const UUIDS: &[&str] = &[
    "3E11FA47-71CA-11E1-9E33-C80AA9429562",
    "3e11fa47-71ca-11e1-9e33-c80aa9429562",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "3E11FA47-71CA-11E1-9E33-C80AA942956",
];

fn gtid_set(rng: &mut SmallRng) -> String {
    (0..rng.random_range(0..4))
        .map(|_| {
            let mut s = UUIDS[rng.random_range(0..UUIDS.len())].to_owned();
            for _ in 0..rng.random_range(1..4) {
                s.push(':');
                if rng.random_bool(0.2) {
                    s.push_str(&inputs::word(rng));
                    s.push(':');
                }
                let a = num(rng);
                s.push_str(&a);
                if rng.random_bool(0.6) {
                    s.push('-');
                    s.push_str(&num(rng));
                }
            }
            s
        })
        .collect::<Vec<_>>()
        .join(if rng.random_bool(0.8) { "," } else { ",\n" })
}

pub(crate) fn gen_gtid_set(rng: &mut SmallRng) -> Vec<u8> {
    let doc = format!("{}\u{1}{}", gtid_set(rng), gtid_set(rng));
    inputs::finish(rng, doc.into_bytes())
}

pub(crate) fn run_gtid_set(data: &[u8]) {
    let (a, b) = two(data);
    let a: Option<MysqlGtidSet> = a.parse().ok();
    let b: Option<MysqlGtidSet> = b.parse().ok();
    for s in [&a, &b].into_iter().flatten() {
        let back: MysqlGtidSet = s.to_string().parse().expect("a printed GTID set parses");
        assert_eq!(&back, s, "GTID set round trip");
        assert!(s.contains(s));
        assert!(s.difference(s).is_empty());
    }
    if let (Some(a), Some(b)) = (&a, &b) {
        let d = a.difference(b);
        assert!(a.contains(&d), "a set contains its difference with another");
        let _ = (a.contains(b), b.difference(a));
    }
}

fn lsn(rng: &mut SmallRng) -> String {
    match rng.random_range(0..6) {
        0 => format!("{:X}/{:X}", rng.random::<u32>(), rng.random::<u32>()),
        1 => format!("{:x}/{:08x}", rng.random::<u64>(), rng.random::<u64>()),
        2 => format!("{}/{}", num(rng), num(rng)),
        _ => format!(
            "{:X}/{:X}",
            rng.random_range(0..16u32),
            rng.random_range(0..1u32 << 28)
        ),
    }
}

pub(crate) fn gen_lsn(rng: &mut SmallRng) -> Vec<u8> {
    let doc = lsn(rng);
    inputs::finish(rng, doc.into_bytes())
}

pub(crate) fn run_lsn(data: &[u8]) {
    if let Ok(l) = inputs::text(data).parse::<Lsn>() {
        let back: Lsn = l.to_string().parse().expect("a printed LSN parses");
        assert_eq!(back, l, "LSN round trip");
    }
}

const KINDS: &[&str] = &[
    "mariadb",
    "mysql",
    "postgresql",
    "redis",
    "cassandra",
    "",
    "MySQL",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

pub(crate) fn gen_positions(rng: &mut SmallRng) -> Vec<u8> {
    let kind = KINDS[rng.random_range(0..KINDS.len())];
    let text = match rng.random_range(0..6) {
        0 => gtid_list(rng),
        1 => gtid_set(rng),
        2 => lsn(rng),
        3 => format!(
            "mysql-bin.{:06}:{}",
            rng.random_range(0..1_000_000u32),
            num(rng)
        ),
        4 => {
            let v = match rng.random_range(0..6) {
                0 => {
                    serde_json::json!({"binlog": {"log_file": "mysql-bin.000001", "log_position": rng.random::<u64>()}})
                }
                1 => serde_json::json!({"mysql_gtid": gtid_set(rng)}),
                2 => serde_json::json!({"mariadb_gtid": gtid_list(rng)}),
                3 => serde_json::json!({"postgresql_lsn": lsn(rng)}),
                4 => {
                    serde_json::json!({"postgresql_wal": {"lsn": lsn(rng), "timeline": rng.random::<u32>()}})
                }
                _ => serde_json::json!({"opaque": {"datastore": kind, "value": inputs::word(rng)}}),
            };
            v.to_string()
        }
        _ => inputs::word(rng),
    };
    inputs::finish(rng, format!("{kind}\u{1}{text}").into_bytes())
}

pub(crate) fn run_positions(data: &[u8]) {
    let (kind, text) = two(data);
    if let Ok(kind) = kind.parse::<DatastoreKind>() {
        assert_eq!(kind.as_str().parse::<DatastoreKind>().ok(), Some(kind));
        if let Ok(p) = trove_guest_agent::rpc::translate::txn_from_trove(&kind, &text) {
            let _ = (
                p.to_string(),
                trove_guest_agent::rpc::translate::txn_to_trove(&p),
            );
        }
    }
    let _ = text.parse::<trove_guest_core::BinlogFile>();
    if let Ok(p) = serde_json::from_str::<ReplicationPosition>(&text) {
        let json = serde_json::to_string(&p).expect("a position serialises");
        let back: ReplicationPosition = serde_json::from_str(&json).expect("a position reads back");
        assert_eq!(back, p, "position JSON round trip");
    }
}
