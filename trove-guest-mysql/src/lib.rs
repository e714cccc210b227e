//! # trove-guest-mysql
//!
//! The MySQL and MariaDB [`ReplicationStrategy`](trove_guest_core::ReplicationStrategy) of
//! trove-guest: physical snapshots taken with `mariabackup` (MariaDB) or `xtrabackup` (MySQL)
//! that carry their binlog position, replicas attached from them by GTID or by binlog
//! file/offset, detach, cleanup on the master, and demote.
//!
//! ```no_run
//! # async fn demo(handle: trove_guest_core::DatastoreHandle) -> trove_guest_core::Result<()> {
//! use std::sync::Arc;
//! use trove_guest_core::{LocalSnapshotStore, ReplicationStrategy, SnapshotRequest};
//! use trove_guest_mysql::{MysqlOptions, MysqlStrategy};
//!
//! let store = Arc::new(LocalSnapshotStore::new("/var/lib/trove/snapshots")?);
//! let master = MysqlStrategy::new(handle, store, MysqlOptions::new());
//! let doc = master
//!     .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("replica-1"))
//!     .await?;
//! println!("{}", serde_json::to_string_pretty(&doc).unwrap());
//! # Ok(()) }
//! ```
//!
//! ## What ran live, and what did not
//!
//! * **MariaDB 10.11 with `mariabackup`/`mbstream`: exercised live.** The tests in `tests/`
//!   start real throwaway MariaDB servers (module `testkit`, feature `testkit`) and run the
//!   whole backend conformance suite against them (`tests/mariadb_conformance.rs`): snapshot under
//!   continuous writes, attach by GTID and by binlog file/offset with row counts and
//!   `CHECKSUM TABLE` equal on every table, two replicas from one snapshot, detach (twice) and
//!   cleanup on the master, demote (twice), a snapshot with one flipped byte and a truncated one
//!   refused with an integrity error while the replica's previous datadir stays intact and
//!   served, bounded `wait_for_txn`, provisioning that stages the snapshot while the master
//!   takes it, a staged snapshot used only by the document naming it, and a damaged snapshot
//!   never staged. `tests/staging.rs` adds that attach really uses the staged copy (once), and
//!   that a stage cancelled mid-extraction leaves the replica serving and is never used. Beside it (`tests/mariadb_live.rs`,
//!   `tests/secrets_and_status.rs`): refusal of another datastore or release series, refusal of
//!   a server with errant GTIDs, a repeated attach, `replication_status` on master, replica and
//!   detached server, least-privilege host-restricted accounts, an admin password full of
//!   quotes and backslashes, no password in logs, errors, `Debug` output or the stored
//!   snapshot, hostile strings round-tripping through the server, and `pt-table-checksum`
//!   agreeing that a replica matches (and catching one changed row).
//! * **MySQL 5.7 / 8.0 / 8.4 with `xtrabackup`/`xbstream`: SQL and command lines only.**
//!   Debian 12 packages neither a MySQL server nor Percona XtraBackup, so those paths have not
//!   run against a server. Their exact SQL (per version: `CHANGE MASTER TO` vs
//!   `CHANGE REPLICATION SOURCE TO`, `START SLAVE` vs `START REPLICA`, `SHOW BINARY LOG STATUS`,
//!   `RESET BINARY LOGS AND GTIDS`, `gtid_purged` and auto-position, `super_read_only`,
//!   `WAIT_FOR_EXECUTED_GTID_SET`, `SOURCE_POS_WAIT`), their override files and the
//!   `xtrabackup` command lines are pinned by snapshot tests (`tests/sql_snapshots.rs`); treat
//!   them as reviewed, not proven. MariaDB 11.x is handled by the same code as 10.11
//!   (including its `mariadb_backup_binlog_info` file name) but only 10.11 ran here.

//! ## Design notes
//!
//! * **Flavor** ([`Flavor`]) is detected from `SELECT VERSION()` and `@@version_comment`.
//! * **All SQL** is in [`sql`]; values are validated and quoted by tested helpers; statements
//!   carrying a password are redacted in every `Display`/`Debug`, log line and error (the
//!   server's message for such a statement is withheld too).
//! * **Snapshot**: the backup tool's stdout goes straight into the store (hashed on the way),
//!   the tool's exit status is checked before the upload is committed. The binlog position is
//!   read from the backup's own `xtrabackup_binlog_info` / `mariadb_backup_binlog_info` while
//!   the stream passes by ([`xbstream::BinlogInfoTap`]); the replica re-reads the extracted
//!   file and refuses a document that disagrees with it. Credentials reach the tool in a 0600
//!   option file given as the first argument, `--defaults-file=`.
//! * **Accounts**: `trove_repl_<replica id>` with `REPLICATION SLAVE` only, a random 32
//!   character password, restricted to the replica's host when known; created after the backup
//!   with `sql_log_bin = 0`, so replicas never receive them. Demote drops every account with the
//!   prefix.
//! * **Override files** in the handle's `config_dir` (see [`config`]): the server's main
//!   configuration is never edited. Demote removes the master override and restarts; when
//!   binary logging was already on before `enable_as_master` (the operator's configuration, or
//!   MySQL 8's default) it stays on, as found, and only the accounts and our binlog files go.
//! * **Attach** verifies while extracting into a staging directory, prepares there, and swaps
//!   datadirs by rename only afterwards; a failed start puts the old datadir back. Before
//!   restoring it refuses a server holding GTIDs its master lacks (asking the master with the
//!   replication account, or comparing with the snapshot's position when the master cannot be
//!   reached).
//! * **Staging** (`stage_snapshot`) restores into the same staging directory attach uses,
//!   following the upload while the master is still taking it (`SnapshotStore::follow`), and
//!   prepares it there without touching the running server. A marker file
//!   (`<work_dir>/.tg-staged.json`, a `StagedSnapshot`) is written durably only after
//!   `--prepare` finished and removed before the directory is touched again, so attach uses a
//!   staging directory only when the marker names the document's snapshot and the store still
//!   holds exactly that snapshot; the binlog info cross-check runs on either path before the
//!   swap. The staging, marker, journal, swap and recovery are the core lifecycle's
//!   (`trove_guest_core::lifecycle`); this crate supplies its hooks (`hooks.rs`).
//! * **Parallelism**: the backup tool and the extractor run with
//!   [`MysqlOptions::backup_parallel`] / [`MysqlOptions::extract_parallel`] threads (default
//!   half the available cores, 1 to 4) unless the snapshot request says otherwise.
//! * **Admin account across a restore**: a physical restore brings the master's privilege
//!   tables. Before restoring, attach records how this server's own admin account is defined
//!   (`SHOW CREATE USER`, `SHOW GRANTS`) and replays it on the first start of the restored data
//!   through a one-start `init_file` (0600, removed once the admin login works), so the agent
//!   keeps its own credentials.
//! * **TLS**: replication over verified TLS comes from the handle's `ServerTls` (`REQUIRE SSL`
//!   accounts, `MASTER_SSL_VERIFY_SERVER_CERT=1`); before attaching, a replica asks the master
//!   for its GTID state over TLS verified with the document's CA and server name (the account
//!   is TLS-only), falling back to the snapshot's position only when that login really fails.
//!   The administrator connection uses TLS when its
//!   [`AdminConnection::tls`](trove_guest_core::AdminConnection::tls) is
//!   [`AdminTls::Verify`](trove_guest_core::tls::AdminTls) and it goes over TCP (a socket
//!   never uses TLS): mysql_async with rustls verifies the server's certificate against that
//!   CA only, for that server name; the backup tool's option file gets `ssl-ca` and
//!   `ssl-verify-server-cert`, which checks the certificate for the admin host (the client
//!   cannot be given another name, so the certificate must name that host too). A certificate
//!   that does not verify, or a server without TLS, is `Error::Tls`. Live-tested with a
//!   `REQUIRE SSL` admin account (`tests/admin_tls.rs`).

mod attach;
mod client;
pub mod commands;
pub mod config;
mod demote;
mod detach;
mod error;
mod failover;
pub mod flavor;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hooks;
mod options;
mod restore;
mod snapshot;
pub mod sql;
mod staging;
mod status;
mod strategy;
#[cfg(feature = "testkit")]
pub mod testkit;
mod tls;
mod unreturned;
pub mod xbstream;

pub use attach::{
    AttachPlan, errant_mariadb, errant_mariadb_vs_snapshot, errant_mysql, errant_mysql_vs_snapshot,
};
pub use flavor::{Flavor, FlavorKind, Version};
pub use options::{MysqlOptions, default_parallel};
pub use snapshot::replication_user;
pub use strategy::MysqlStrategy;
