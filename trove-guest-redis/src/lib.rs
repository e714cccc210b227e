//! Redis replication for trove-guest, written against the public contract of
//! `trove-guest-core` only.
//!
//! * **Snapshot**: the strategy makes a replication ACL user (`+psync +replconf +ping`, no keys,
//!   a random password sent as its SHA-256) and, logged in as it, sends `PSYNC ? -1`; the
//!   master answers `+FULLRESYNC <replid> <offset>` and streams a consistent RDB, which goes
//!   straight into the snapshot store (hash-verified there). The position is
//!   `<replid>:<offset>` (an [`OpaquePosition`](trove_guest_core::OpaquePosition)); the RDB
//!   records the same pair in its `repl-id` / `repl-offset` fields.
//! * **Attach**: core's lifecycle ([`trove_guest_core::lifecycle::attach`]) over this crate's
//!   hooks: the verified RDB is written into the staging directory, checked (header,
//!   `redis-check-rdb`, the replication id and offset of the document), swapped in; a 0600
//!   override file in the handle's `config_dir` gets `replicaof`, `masteruser`, `masterauth`
//!   and `replica-read-only yes` (`replicaof` read at start rather than a `REPLICAOF` command
//!   after it: only then does Redis take the RDB's replication id and offset as the point to
//!   continue from); the server starts on the RDB and continues from the
//!   snapshot's offset (a partial resync, while the master's `repl-backlog-size` still holds
//!   everything written since the snapshot; otherwise Redis falls back to a full resync on its
//!   own, just as consistent), and the attach waits, bounded, until the link is up and the
//!   offset reached.
//! * **Positions** compare as numbers within one replication id (or the previous id of a
//!   promoted server, up to where it was promoted).
//! * **Detach**: `REPLICAOF NO ONE`, the login forgotten, the override file removed.
//!   **Cleanup** drops the ACL user on the master (disconnecting the replica). **Demote** drops
//!   every `trove_repl_*` user and the write fence. **make_read_only** is a fence:
//!   `min-replicas-to-write` above any replica count.
//!
//! The server's configuration must end with `include <config_dir>/*.conf`, use `dbfilename
//! dump.rdb` and `appendonly no`, and should keep users in an `aclfile` (replication users are
//! then saved with `ACL SAVE`).
//!
//! Commands sent to Redis are built in one module (`commands.rs`), which validates every name
//! and value in them; passwords never appear on a command line, in the environment, in logs,
//! in `Debug` output or in errors, and on disk only in the 0600 override file.
//!
//! Ran live: core's conformance suite and this crate's tests against Redis 7.0 (Debian
//! `redis-server`).

mod commands;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod master;
mod rdb;
mod replica;
mod resp;
mod strategy;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use commands::USER_PREFIX;
pub use replica::{AttachPlan, RDB_FILE};
pub use strategy::{OVERRIDE_FILE, RedisStrategy, RedisStrategyOptions};
