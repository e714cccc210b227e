//! Entry points for the `trove-guest-fuzz` harness (feature `fuzzing`): the agent's private
//! request-body parser. The RPC envelope, secure serializer, `guest_info.conf` and configuration
//! parsers are public already. Not an API.

pub use crate::agent::fuzz_body::{Body, request_body};
