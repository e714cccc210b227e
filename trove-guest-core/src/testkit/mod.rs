//! The generic half of testing a backend against real servers, and the backend conformance
//! suite.
//!
//! Each backend owns its throwaway servers, behind its own `testkit` feature
//! (`trove_guest_mysql::testkit::MariaDbServer`, `trove_guest_postgres::testkit::PostgresServer`),
//! the way database drivers own their test servers. They are built from the pieces here: a
//! [`TestService`] around the server's [`LocalProcess`](crate::LocalProcess) that `Drop` can stop
//! without a runtime ([`stop_blocking`]), free loopback ports ([`free_port`],
//! [`is_port_conflict`]), short instance directories ([`short_tempdir`]) and programs that fail
//! with the package to install when missing ([`require_program`]).
//!
//! [`conformance`] runs the replication lifecycle against any backend through its
//! [`ConformanceBackend`](conformance::ConformanceBackend) implementation; it names no datastore.
//! [`tls_checks`] holds the TLS refusals every backend's live tests check the same way.

mod captured_log;
mod certs;
pub mod conformance;
mod dirs;
mod ports;
mod process;
mod programs;
mod proxy;
#[cfg(feature = "s3")]
pub mod s3;
mod service;
mod small_disk;
pub mod tls_checks;

pub use captured_log::CapturedLog;
pub use certs::{TestCa, TestCertificate};
pub use dirs::{short_tempdir, tail};
pub use ports::{PORT_ATTEMPTS, free_port, is_port_conflict};
pub use process::{StopOptions, has_exited, is_root, stop_blocking};
pub use programs::{missing_program, require_program};
pub use proxy::TcpProxy;
pub use service::TestService;
pub use small_disk::SmallDisk;
