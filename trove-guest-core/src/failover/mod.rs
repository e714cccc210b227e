//! Switchover (planned) and failover (unplanned): the guest calls' documents and options
//! ([`ReplicaContext`], [`LastTxn`], ...), position comparison, and the orchestration over the
//! strategies of several servers ([`switchover`], [`failover`]).
//!
//! The flows are written once, here, over [`ReplicationStrategy`](crate::ReplicationStrategy)
//! calls that each backend implements: `fence_writes` / `unfence_writes` on the old master,
//! `get_last_txn`, `stop_receiver`, `detach_replication_slave` with
//! [`DetachOptions::for_failover`](crate::DetachOptions::for_failover),
//! `get_replica_context` on the new master and `attach_replica` on the others. An agent's HTTP
//! client runs the same flows over agents (`trove_guest_agent::client`).

mod compare;
mod orchestrate;
mod types;

pub use compare::{covers, missing};
pub use orchestrate::{
    FailoverOptions, FailoverReport, Member, NotRepointed, SwitchoverOptions, SwitchoverReport,
    Unrecovered, failover, switchover,
};
pub use types::{FenceOptions, LastTxn, ReplicaContext, ReplicaContextOptions, RepointOptions};
