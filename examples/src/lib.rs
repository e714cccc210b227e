//! # trove-guest-examples
//!
//! The demo and the benchmark of trove-guest, built on the deployable agent
//! (`trove-guest-agent`):
//!
//! * [`bench`]: the provisioning benchmark (trove-guest rows against the raw tools, like for
//!   like).
//! * [`control`]: the few control-plane pieces the demo plays (instance ids, the instance-create
//!   request with `slaveOf`, the `topology` document).
//!
//! Binaries: `replication_demo` (the whole design on real local servers), `bench` and
//! `reliability_report` (renders the agent's kill -9 fault matrix as `RELIABILITY.md`).

pub mod bench;
pub mod control;
