//! Trove's own RPC: the agent as an OpenStack Trove guest over oslo.messaging on RabbitMQ.
//!
//! A stock Trove control plane (taskmanager, `trove.guestagent.api.API`) sends each guest
//! oslo.messaging 2.0 messages on the `trove` topic exchange with routing key
//! `guestagent.<instance id>`. [`TroveRpcServer`] consumes them from the queue of that name,
//! decrypts them with Trove's SecureSerializer ([`SecureKey`]) when the instance has a key,
//! runs the replication calls on the strategy ([`dispatch`]), and answers calls on their
//! `_reply_q`. Trove's argument and result shapes are translated in one module, [`translate`].
//! What Trove's guest tells trove-conductor (heartbeats with the instance's status, the state of
//! a replication snapshot's backup record) is in [`conductor`].
//!
//! This front end sits next to the HTTP agent ([`crate::agent`]); both drive the same strategy.

pub mod conductor;
pub mod dispatch;
pub mod envelope;
pub mod guest_info;
pub mod secure;
pub mod server;
pub mod translate;

pub use conductor::{BackupState, BackupUpdate, ServiceStatus};
pub use envelope::Failure;
pub use guest_info::{GuestInfo, GuestInfoError};
pub use secure::{SecureError, SecureKey};
pub use server::{ReplyRetry, RpcError, RpcOptions, TroveRpcServer};
