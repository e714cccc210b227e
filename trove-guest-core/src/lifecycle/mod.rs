//! The crash-safe replica lifecycle every backend runs on: the work-directory layout, the
//! staging marker, the on-disk journal of irreversible steps, the swap / put-back / sweep code,
//! and the recovery a strategy runs before it serves. Written once, here.
//!
//! A backend implements [`RestoreHooks`] (extract, prepare, check, configure, start,
//! replicate) and calls [`attach`], [`stage`] and [`recover`] from its
//! [`ReplicationStrategy`](crate::ReplicationStrategy) methods, under a [`ChangeLock`].
//!
//! ## Concurrency
//!
//! A strategy runs one change at a time: every call that changes the server (enable as master,
//! snapshot, stage, attach, detach, cleanup, demote, make read-only, recover) takes the
//! strategy's [`ChangeLock`] and fails at once with [`Error::Busy`](crate::Error::Busy) while
//! another holds it; it never queues. Read-only calls (status, positions, waits) run at any
//! time.
//!
//! ## Crash safety
//!
//! Before each irreversible step the [`Journal`] in the work directory is replaced durably with
//! the step about to be taken. If the process dies, [`recover`] (run by the agent at start, and
//! by the next change) reads it and rolls the server forward to the complete replica, once the
//! journal proves replication ran, or back to its previous data and configuration otherwise;
//! the server never serves a mixture.

mod attach;
mod failpoint;
pub(crate) mod files;
mod guard;
mod hooks;
mod journal;
mod layout;
mod recover;
mod report;
mod stage;
mod sync;

pub use attach::attach;
pub use failpoint::{failpoint, failpoint_armed};
pub use guard::{ChangeGuard, ChangeLock, OwnedChangeGuard};
pub use hooks::RestoreHooks;
pub use journal::{Journal, JournalEntry, Operation, SavedFile, Step};
pub use layout::{BACKUP_SCRATCH_PREFIX, WorkLayout};
pub use recover::recover;
pub use report::{RecoverOptions, RecoveryAction, RecoveryReport};
pub use stage::stage;
pub use sync::{BackgroundSync, sync_tree};
