//! # trove-guest-postgres
//!
//! PostgreSQL streaming replication for trove-guest (PostgreSQL 12 and later):
//!
//! * **snapshots** are `pg_basebackup` tar streams (fast checkpoint, WAL fetched into the
//!   stream) written straight into the [`SnapshotStore`](trove_guest_core::SnapshotStore); a
//!   physical replication slot for the replica is created *before* the backup, so no WAL it
//!   needs is recycled;
//! * **replicas** restore a verified snapshot into a staging directory, swap it in only on
//!   success, and stream from the master through their slot with a passfile (no password in any
//!   configuration file, command line or log);
//! * **staging** (`stage_snapshot`) follows a snapshot while the master still uploads it,
//!   verifies, extracts, prepares and syncs it into the work directory's staging area (named by
//!   the marker `.tg-staged.json`), without touching the running server; an attach from the
//!   document naming that snapshot swaps the staged copy in instead of reading it again;
//! * **detach** promotes (`pg_promote`, then a checkpoint) and drops the slot it streamed
//!   through on its master over its own replication login (best effort, for control planes
//!   that never call the cleanup); **cleanup** drops the replica's slot and login on the
//!   master; **demote** removes every slot, role, `pg_hba` entry and
//!   setting made for replication;
//! * a **former primary rejoins** a promoted replica with `pg_rewind`
//!   ([`PostgresStrategy::rejoin_as_standby`]); a standby stays rewindable after a promotion
//!   too (`wal_log_hints` and the master's WAL retention in an override file of its own, which
//!   a detach for failover keeps and a plain detach or demote removes).
//!
//! Settings go into override files in the handle's `config_dir`, which the server's main
//! configuration must include (`include_dir`, last); the main configuration should live outside
//! the data directory, since `pg_basebackup` copies and `pg_rewind` overwrites the data
//! directory's `postgresql.conf` (the data directory's `postgresql.auto.conf` is put back to the
//! instance's own after both). Settings are applied with a reload; the server is restarted only
//! when PostgreSQL reports `pending_restart` (`wal_log_hints`, `wal_level`, ...).
//!
//! Replication logins are per snapshot (`trove_repl_<replica id>`, REPLICATION and LOGIN only,
//! never superuser; the password is sent to the server only as a SCRAM-SHA-256 verifier) and
//! belong to the NOLOGIN group `trove_replication`, which the `pg_hba` block names and which
//! holds the four function grants `pg_rewind` needs. A new snapshot for the same replica id
//! gives its login a new password, once its backup is in the store (a retry that fails leaves
//! the earlier document's password valid); a standby already streaming as that login gets the
//! new one in its passfile as soon as an attach from that snapshot has proven it on the master,
//! so it keeps streaming even if that attach then fails.
//!
//! Slots: a snapshot creates `trove_snap_<replica id>` before the backup starts (and
//! `grant_standby` one a rejoining standby streams through). A replica
//! attaching from it copies that slot into its own, `trove_slot_<replica id>_<server id>`
//! (`pg_copy_physical_replication_slot`, as the replication login), streams through its own,
//! and drops the snapshot's slot once it streams, so no slot keeps WAL nobody reads. Several
//! replicas may attach from one snapshot as long as each copies the slot before the first one
//! finishes; later ones get a clear error asking for a fresh snapshot. Server ids must be
//! unique among one master's replicas. The two prefixes differ and a server id is digits after
//! the last `_`, so no two replica ids and server ids ever share a slot name.
//!
//! Positions: [`get_latest_txn_id`](trove_guest_core::ReplicationStrategy::get_latest_txn_id)
//! returns the LSN *with its timeline* on a primary
//! ([`ReplicationPosition::PostgresqlWal`](trove_guest_core::ReplicationPosition)), so a promoted
//! replica knows it will never reach its former master's later positions; on a standby, the
//! replayed LSN.
//!
//! Restores never cost a replica its data: a snapshot is verified (size and SHA-256) while it
//! is extracted into a staging directory, so a damaged one is refused before the server is
//! touched; a restored data directory that then fails to start (or refuses the handle's
//! administrator login) is swapped out again, and the previous data directory and standby
//! files are put back and the server started on them. A standby's roles are its primary's,
//! the administrator's password included: a replica's handle must carry the primary's
//! administrator credentials (or use local peer or trust authentication). The administrator
//! password reaches `pg_basebackup` only through a 0600 passfile.
//!
//! TLS: replication over verified TLS comes from the handle's `ServerTls` (`hostssl` hba
//! lines, `sslmode=verify-full`). The administrator connection uses TLS when its
//! [`AdminConnection::tls`](trove_guest_core::AdminConnection::tls) is
//! [`AdminTls::Verify`](trove_guest_core::tls::AdminTls) and it goes over TCP (a socket
//! directory never uses TLS): tokio-postgres with rustls requires TLS and verifies the server's
//! certificate against that CA only for that server name (whatever address it connects to),
//! and `pg_basebackup` gets `sslmode=verify-full`, `sslrootcert` and the server name as `host`
//! (the admin address as `hostaddr`). A certificate that does not verify, or a server without
//! TLS, is `Error::Tls`. Live-tested against a `hostssl`-only hba (`tests/admin_tls.rs`).
//!
//! ## PostgreSQL versions
//!
//! Everything that differs between major versions is chosen in one place, by the server's
//! `server_version_num`: the WAL kept for `pg_rewind` (`wal_keep_segments` on 12,
//! `wal_keep_size` from 13), the WAL receiver's flushed position (`received_lsn` on 12,
//! `flushed_lsn` from 13), `pg_basebackup --no-manifest` (13+) and whether the standby
//! connection settings are reloadable (13+). Servers before 12 are refused.
//!
//! Only PostgreSQL 15 is installed where this crate is tested, so:
//!
//! * **ran live (PostgreSQL 15)**: every operation above, through the 13-and-later choices
//!   (`wal_keep_size`, `flushed_lsn`, `--no-manifest`, reloaded standby settings);
//! * **covered by snapshot tests only**: the PostgreSQL 12 choices (`wal_keep_segments` from
//!   the WAL segment size, `received_lsn`, no `--no-manifest`, no reload of standby settings
//!   on detach), and the settings, SQL and command lines of 13, 14 and 16, which are pinned
//!   per version (`src/snapshots/`) but were never run against those servers.
//!
//! ```no_run
//! # async fn demo(handle: trove_guest_core::DatastoreHandle) -> trove_guest_core::Result<()> {
//! use std::sync::Arc;
//! use trove_guest_core::{LocalSnapshotStore, ReplicationStrategy, EnableMasterOptions};
//! use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};
//!
//! let store = Arc::new(LocalSnapshotStore::new("/var/lib/trove/snapshots")?);
//! let master = PostgresStrategy::new(handle, store, PostgresStrategyOptions::new());
//! master.enable_as_master(&EnableMasterOptions::new()).await?;
//! # Ok(()) }
//! ```

mod client;
mod commands;
mod conf;
mod error;
mod failover;
mod flavor;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hooks;
mod master;
mod names;
mod replica;
mod restore;
mod sql;
mod staged;
mod status;
mod strategy;
#[cfg(feature = "testkit")]
pub mod testkit;
mod timeline;
mod tls;
mod uncommitted;
#[cfg(test)]
mod version_snapshots;

pub use replica::AttachPlan;
pub use strategy::{PostgresStrategy, PostgresStrategyOptions, RejoinOptions, StandbySource};

/// Names of the objects this crate makes on a server, for operators and tests.
pub mod objects {
    /// The NOLOGIN group every replication login belongs to.
    pub const REPLICATION_GROUP: &str = crate::names::GROUP_ROLE;
    /// Prefix of per-replica replication logins.
    pub const ROLE_PREFIX: &str = crate::names::ROLE_PREFIX;
    /// Prefix of a replica's own physical replication slot (`trove_slot_<id>_<server id>`).
    pub const SLOT_PREFIX: &str = crate::names::SLOT_PREFIX;
    /// Prefix of the slot a snapshot (or `grant_standby`) makes (`trove_snap_<id>`).
    pub const SNAPSHOT_SLOT_PREFIX: &str = crate::names::SNAPSHOT_SLOT_PREFIX;
    /// The master's override file in the config directory.
    pub const MASTER_FILE: &str = crate::conf::MASTER_FILE;
    /// A standby's override file in the config directory.
    pub const STANDBY_FILE: &str = crate::conf::STANDBY_FILE;
    /// The override file that keeps a standby rewindable after a promotion.
    pub const REWIND_FILE: &str = crate::conf::REWIND_FILE;
    /// A standby's passfile in the config directory.
    pub const PASSFILE: &str = crate::conf::PASSFILE;
    /// The override file of `make_read_only(true)`.
    pub const READ_ONLY_FILE: &str = crate::conf::READ_ONLY_FILE;
    /// First line of the replication block in the hba file.
    pub const HBA_BEGIN: &str = crate::conf::HBA_BEGIN;
}
