//! Throwaway real database servers for tests, and the backend conformance suite.
//!
//! Servers are local processes in short temp directories on free loopback ports; they stop and
//! their directories are removed on drop. They work as root (MariaDB with `--user=root`,
//! PostgreSQL as the `postgres` OS account).

pub mod conformance;
pub mod mariadb;
pub mod postgres;
mod proxy;
mod service;

pub use mariadb::{MariaDbOptions, MariaDbServer};
pub use postgres::{ClusterInit, PostgresOptions, PostgresServer};
pub use proxy::TcpProxy;
