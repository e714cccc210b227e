//! Building the strategy of a datastore: the one place the examples name the backend crates.

use std::sync::Arc;

use trove_guest_core::{DatastoreHandle, DatastoreKind, Result, SharedStrategy, SnapshotStore};
use trove_guest_mysql::{MysqlOptions, MysqlStrategy};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};

use crate::config::MysqlSection;

/// The strategy for `kind` acting on `handle`, storing snapshots in `store`.
///
/// # Errors
///
/// What the backend's constructor reports.
pub fn strategy(
    kind: DatastoreKind,
    handle: DatastoreHandle,
    store: Arc<dyn SnapshotStore>,
    mysql: &MysqlSection,
) -> Result<SharedStrategy> {
    Ok(match kind {
        DatastoreKind::Postgresql => Arc::new(PostgresStrategy::new(
            handle,
            store,
            PostgresStrategyOptions::new(),
        )),
        _ => Arc::new(MysqlStrategy::new(
            handle,
            store,
            mysql_options(mysql).with_expected_datastore(kind),
        )),
    })
}

/// The MySQL/MariaDB backend options the `[mysql]` section describes.
pub fn mysql_options(section: &MysqlSection) -> MysqlOptions {
    let mut o = MysqlOptions::new();
    if let Some(d) = &section.binlog_dir {
        o = o.with_binlog_dir(d);
    }
    if let Some(d) = &section.relay_log_dir {
        o = o.with_relay_log_dir(d);
    }
    if let Some(f) = &section.server_config {
        o = o.with_server_config(f);
    }
    o
}
