//! Test support (feature `testing`): throwaway servers with an agent in front of them
//! ([`testbed`]), sample data and checksums ([`sample`]) and the kill -9 fault-matrix harness
//! ([`faults`]), and configuration sections for agents in front of test servers
//! ([`agent_config`]). Used by this crate's tests, the cross-crate tests and the examples.

pub mod agent_config;
pub mod faults;
pub mod sample;
pub mod testbed;
