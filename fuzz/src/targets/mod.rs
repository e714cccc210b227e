//! Every fuzz target: a parser of untrusted bytes, a generator of near-valid inputs for it, and
//! the call (with the properties checked on what it accepts).

use rand::rngs::SmallRng;

mod agent;
mod archive;
mod documents;
mod mysql;
mod positions;
mod postgres;
mod redis;

/// One fuzz target.
#[derive(Debug)]
pub struct Target {
    /// Name for `--target`.
    pub name: &'static str,
    /// The parsers it drives.
    pub parsers: &'static str,
    /// Builds case input from the case's RNG.
    pub generate: fn(&mut SmallRng) -> Vec<u8>,
    /// Runs the parsers on an input; panics on a violated property.
    pub run: fn(&[u8]),
}

/// All targets, in report order.
pub static TARGETS: &[Target] = &[
    Target {
        name: "xbstream_chunks",
        parsers: "trove-guest-core archive::xbstream::ChunkParser and Inspector(Xbstream)",
        generate: archive::gen_xbstream,
        run: archive::run_xbstream,
    },
    Target {
        name: "tar_members",
        parsers: "trove-guest-core archive Inspector(Tar): ustar/GNU/pax headers, link checks",
        generate: archive::gen_tar,
        run: archive::run_tar,
    },
    Target {
        name: "binlog_info",
        parsers: "trove-guest-mysql xbstream::BinlogInfo::parse and BinlogInfoTap (xtrabackup_binlog_info / mariadb_backup_binlog_info)",
        generate: mysql::gen_binlog_info,
        run: mysql::run_binlog_info,
    },
    Target {
        name: "gtid_list",
        parsers: "trove-guest-core MariaDbGtidList (parse, print, contains)",
        generate: positions::gen_gtid_list,
        run: positions::run_gtid_list,
    },
    Target {
        name: "gtid_set",
        parsers: "trove-guest-core MysqlGtidSet (parse, print, contains, difference)",
        generate: positions::gen_gtid_set,
        run: positions::run_gtid_set,
    },
    Target {
        name: "lsn",
        parsers: "trove-guest-core Lsn (parse, print)",
        generate: positions::gen_lsn,
        run: positions::run_lsn,
    },
    Target {
        name: "positions",
        parsers: "DatastoreKind, BinlogFile, ReplicationPosition JSON, RPC txn_from_trove",
        generate: positions::gen_positions,
        run: positions::run_positions,
    },
    Target {
        name: "slave_status_row",
        parsers: "trove-guest-mysql replica status row (SHOW SLAVE/REPLICA STATUS)",
        generate: mysql::gen_status_row,
        run: mysql::run_status_row,
    },
    Target {
        name: "pg_stat_row",
        parsers: "trove-guest-postgres pg_stat_* LSN columns, WAL file names",
        generate: postgres::gen_stat_row,
        run: postgres::run_stat_row,
    },
    Target {
        name: "pg_timeline",
        parsers: "trove-guest-postgres timeline history files, pg_basebackup WAL range",
        generate: postgres::gen_history,
        run: postgres::run_history,
    },
    Target {
        name: "snapshot_document",
        parsers: "trove-guest-core SnapshotDocument::from_json (serde + validate)",
        generate: documents::gen_snapshot,
        run: documents::run_snapshot,
    },
    Target {
        name: "topology_document",
        parsers: "trove-guest-core TopologyDocument (serde, replication(kind))",
        generate: documents::gen_topology,
        run: documents::run_topology,
    },
    Target {
        name: "rpc_translate",
        parsers: "trove-guest-agent rpc::translate (Trove snapshot / replica dicts)",
        generate: documents::gen_translate,
        run: documents::run_translate,
    },
    Target {
        name: "request_bodies",
        parsers: "trove-guest-agent HTTP request bodies (every endpoint)",
        generate: agent::gen_body,
        run: agent::run_body,
    },
    Target {
        name: "oslo_envelope",
        parsers: "trove-guest-agent rpc::envelope::decode (with and without a key)",
        generate: agent::gen_envelope,
        run: agent::run_envelope,
    },
    Target {
        name: "secure_serializer",
        parsers: "trove-guest-agent rpc::SecureKey::decrypt (arbitrary ciphertext, fixed key)",
        generate: agent::gen_secure,
        run: agent::run_secure,
    },
    Target {
        name: "guest_info",
        parsers: "trove-guest-agent rpc::GuestInfo::parse (guest_info.conf)",
        generate: agent::gen_guest_info,
        run: agent::run_guest_info,
    },
    Target {
        name: "agent_config",
        parsers: "trove-guest-agent AgentConfig::parse / parse_json (TOML, JSON)",
        generate: agent::gen_config,
        run: agent::run_config,
    },
    Target {
        name: "redis_resp",
        parsers: "trove-guest-redis RESP replies and the PSYNC reply lines",
        generate: redis::gen_resp,
        run: redis::run_resp,
    },
    Target {
        name: "redis_rdb",
        parsers: "trove-guest-redis RDB header/aux fields (LZF), positions, replica override file",
        generate: redis::gen_rdb,
        run: redis::run_rdb,
    },
];

/// The target named `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The input of case `index` of `target` in a run seeded with `seed`.
pub fn input(target: &Target, seed: u64, index: u64) -> Vec<u8> {
    let mut rng = crate::inputs::case_rng(target.name, seed, index);
    (target.generate)(&mut rng)
}
