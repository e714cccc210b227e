//! Typed replication positions: parse and display are inverse, order is numeric (never textual,
//! including across the 32-bit boundary), and garbage is refused with `InvalidInput`.

use proptest::prelude::*;
use trove_guest_core::wire::DatastoreKind;
use trove_guest_core::{
    BinlogCoordinates, BinlogFile, ErrorKind, Lsn, MariaDbGtidList, MysqlGtidSet,
    ReplicationPosition, WalPosition,
};

/// Values clustered around the 32-bit boundary (where text and numeric order disagree), plus
/// anything at all.
fn around_u32_boundary() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..1 << 16).prop_map(|d| (1u64 << 32).wrapping_sub(1 << 15).wrapping_add(d)),
        (0u64..1 << 16).prop_map(|d| ((1u64 << 32) - 1).wrapping_sub(d)),
        (1u64..1 << 10).prop_map(|d| d * 1_000_000_007),
        any::<u64>(),
    ]
}

fn uuid() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
}

proptest! {
    #[test]
    fn lsn_display_then_parse_is_identity(v in around_u32_boundary()) {
        let lsn = Lsn(v);
        let text = lsn.to_string();
        prop_assert_eq!(text.parse::<Lsn>().unwrap(), lsn);
        // And the server's own spelling (lowercase hex, leading zeros) reads the same.
        let lower = format!("{:x}/{:08x}", v >> 32, v & 0xFFFF_FFFF);
        prop_assert_eq!(lower.parse::<Lsn>().unwrap(), lsn);
    }

    #[test]
    fn lsn_order_is_numeric(a in around_u32_boundary(), b in around_u32_boundary()) {
        let (la, lb): (Lsn, Lsn) = (Lsn(a).to_string().parse().unwrap(), Lsn(b).to_string().parse().unwrap());
        prop_assert_eq!(la.cmp(&lb), a.cmp(&b));
    }

    #[test]
    fn mariadb_gtid_list_display_then_parse_is_identity(
        gtids in proptest::collection::btree_map(any::<u32>(), (any::<u32>(), around_u32_boundary()), 0..5)
    ) {
        let text = gtids
            .iter()
            .map(|(d, (s, q))| format!("{d}-{s}-{q}"))
            .collect::<Vec<_>>()
            .join(",");
        let list: MariaDbGtidList = text.parse().unwrap();
        prop_assert_eq!(list.to_string(), text.clone());
        prop_assert_eq!(list.to_string().parse::<MariaDbGtidList>().unwrap(), list.clone());
        let json = serde_json::to_string(&list).unwrap();
        prop_assert_eq!(serde_json::from_str::<MariaDbGtidList>(&json).unwrap(), list);
    }

    #[test]
    fn mariadb_gtid_list_containment_is_numeric(a in around_u32_boundary(), b in around_u32_boundary(), domain in any::<u32>()) {
        let la: MariaDbGtidList = format!("{domain}-1-{a}").parse().unwrap();
        let lb: MariaDbGtidList = format!("{domain}-1-{b}").parse().unwrap();
        prop_assert_eq!(la.contains(&lb), a >= b);
        prop_assert_eq!(lb.contains(&la), b >= a);
    }

    #[test]
    fn mysql_gtid_set_display_is_canonical_and_parses_back(
        members in proptest::collection::vec(
            (uuid(), proptest::collection::vec((1u64..u64::MAX / 2, 0u64..1 << 33), 1..4)),
            1..4,
        )
    ) {
        let text = members
            .iter()
            .map(|(u, ivs)| {
                let ivs: Vec<String> = ivs.iter().map(|(a, len)| format!("{a}-{}", a + len)).collect();
                format!("{u}:{}", ivs.join(":"))
            })
            .collect::<Vec<_>>()
            .join(",\n");
        let set: MysqlGtidSet = text.parse().unwrap();
        let canonical = set.to_string();
        let again: MysqlGtidSet = canonical.parse().unwrap();
        prop_assert_eq!(&again, &set);
        prop_assert_eq!(again.to_string(), canonical);
        prop_assert!(set.contains(&again) && again.contains(&set));
        prop_assert!(set.difference(&again).is_empty());
    }

    #[test]
    fn mysql_gtid_set_containment_is_numeric(a in 1u64..u64::MAX, b in 1u64..u64::MAX, u in uuid()) {
        let sa: MysqlGtidSet = format!("{u}:1-{a}").parse().unwrap();
        let sb: MysqlGtidSet = format!("{u}:1-{b}").parse().unwrap();
        prop_assert_eq!(sa.contains(&sb), a >= b);
        prop_assert_eq!(sb.difference(&sa).is_empty(), b <= a);
    }

    #[test]
    fn parsers_never_panic_on_garbage(s in "\\PC{0,40}") {
        let _ = s.parse::<Lsn>();
        let _ = s.parse::<MariaDbGtidList>();
        let _ = s.parse::<MysqlGtidSet>();
        let _ = s.parse::<BinlogFile>();
    }
}

#[test]
fn lsn_orders_across_the_32_bit_boundary() {
    let below: Lsn = "0/FFFFFFFF".parse().unwrap();
    let above: Lsn = "1/0".parse().unwrap();
    let far: Lsn = "A/0".parse().unwrap();
    let near: Lsn = "9/FFFFFFFF".parse().unwrap();
    assert!(below < above);
    assert!(near < far, "9/FFFFFFFF < A/0");
    let text_order = "10/0".cmp("9/0");
    let lsn_order = "10/0"
        .parse::<Lsn>()
        .unwrap()
        .cmp(&"9/0".parse::<Lsn>().unwrap());
    assert_ne!(text_order, lsn_order, "text order would be wrong here");
}

#[test]
fn gtid_sequences_order_numerically_not_textually() {
    let big: MariaDbGtidList = "0-1-4294967296".parse().unwrap();
    let small: MariaDbGtidList = "0-1-999999999".parse().unwrap();
    assert!(big.contains(&small) && !small.contains(&big));
    let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let big: MysqlGtidSet = format!("{u}:1-4294967296").parse().unwrap();
    let small: MysqlGtidSet = format!("{u}:1-999999999").parse().unwrap();
    assert!(big.contains(&small) && !small.contains(&big));
}

fn assert_all_invalid<T: std::str::FromStr<Err = trove_guest_core::Error> + std::fmt::Debug>(
    what: &str,
    inputs: &[&str],
) {
    for input in inputs {
        let err = input
            .parse::<T>()
            .expect_err(&format!("{what}: {input:?} accepted"));
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidInput,
            "{what}: {input:?}: {err}"
        );
        assert!(err.to_string().contains(what), "{err} does not name {what}");
    }
}

#[test]
fn malformed_positions_are_refused_with_invalid_input() {
    assert_all_invalid::<Lsn>(
        "PostgreSQL LSN",
        &[
            "",
            "0",
            "0/",
            "/0",
            "0/0/0",
            "-1/0",
            "0x1/0",
            "1/ 0",
            "G/0",
            "100000000/0",
            "0/100000000",
            "0/3000060; DROP",
        ],
    );
    assert_all_invalid::<MariaDbGtidList>(
        "MariaDB GTID list",
        &[
            "0",
            "0-1",
            "0-1-",
            "0-1-2-3",
            "a-1-2",
            "0-1-2,0-2-3",
            "0-1-2,,1-1-1",
            "4294967296-1-1",
            "0-1-18446744073709551616",
            "0-1-2'",
            "0 -1-2",
        ],
    );
    assert_all_invalid::<MysqlGtidSet>(
        "MySQL GTID set",
        &[
            "3e11fa47-71ca-11e1-9e33-c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:0",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:5-3",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-x",
            "3e11fa47-71ca-11e1-9e33:1-5",
            "not-a-uuid:1-5",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-99999999999999999999",
        ],
    );
    assert_all_invalid::<BinlogFile>(
        "binlog file name",
        &[
            "",
            "binlog",
            "binlog.",
            ".000001",
            "../mysql-bin.000001",
            "/var/log/mysql-bin.000001",
            "bin log.1",
            "bin'log.1",
            "bin\nlog.1",
            "bin.log.x",
        ],
    );
    // Well-formed names of datastores core does not know parse (`DatastoreKind::Other`).
    assert_all_invalid::<DatastoreKind>(
        "datastore",
        &["", "MySQL", "mongo db", "9lives", "oracle;"],
    );
}

#[test]
fn positions_serialize_as_the_servers_text() {
    let pos = ReplicationPosition::Binlog(BinlogCoordinates {
        log_file: "mariadb-bin.000002".parse().unwrap(),
        log_position: 342,
    });
    assert_eq!(
        serde_json::to_value(&pos).unwrap(),
        serde_json::json!({"binlog": {"log_file": "mariadb-bin.000002", "log_position": 342}})
    );
    assert_eq!(pos.to_string(), "mariadb-bin.000002:342");
    let pos = ReplicationPosition::PostgresqlLsn("16/B374D848".parse().unwrap());
    assert_eq!(
        serde_json::to_string(&pos).unwrap(),
        r#"{"postgresql_lsn":"16/B374D848"}"#
    );
    let pos = ReplicationPosition::MariadbGtid("0-1-42,1-2-7".parse().unwrap());
    assert_eq!(
        serde_json::to_string(&pos).unwrap(),
        r#"{"mariadb_gtid":"0-1-42,1-2-7"}"#
    );
    let wal = WalPosition {
        lsn: "0/3000060".parse().unwrap(),
        timeline: 2,
    };
    assert_eq!(
        serde_json::to_value(wal).unwrap(),
        serde_json::json!({"lsn": "0/3000060", "timeline": 2})
    );
    let bad: Result<ReplicationPosition, _> =
        serde_json::from_str(r#"{"postgresql_lsn":"nonsense"}"#);
    assert!(bad.is_err());
}
