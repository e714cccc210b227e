//! The crash-safe replica lifecycle every backend runs on: the work-directory layout, the
//! staging marker, the on-disk journal of irreversible steps, the swap / put-back / sweep code,
//! and the recovery a strategy runs before it serves.
//!
//! A backend supplies narrow hooks; core drives the flows.

mod failpoint;
mod report;

pub use failpoint::failpoint;
pub use report::{RecoverOptions, RecoveryAction, RecoveryReport};
